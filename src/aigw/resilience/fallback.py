"""When a failure should move a request to the next model group of its fallback chain."""

from __future__ import annotations

import re

from aigw.errors import CapacityExhausted, GatewayError, NoDeploymentAvailable, UpstreamRejected
from aigw.resilience.retry import is_retryable
from aigw.types import GatewayResponse

_CONTEXT = re.compile(
    r"context[ _-]?(length|window)|maximum context|prompt is too long|too many tokens"
    r"|input is too long|reduce the length",
    re.IGNORECASE,
)
_POLICY = re.compile(
    r"content[ _-]?(management )?polic|content[ _-]?filter|safety system|responsible ai",
    re.IGNORECASE,
)
_CONTEXT_CODES = {"context_length_exceeded", "string_above_max_length"}
_POLICY_CODES = {"content_policy_violation", "content_filter", "content_filtered"}


def fallback_trigger(err: GatewayError) -> str | None:
    """``exhausted``, ``context_window``, ``content_policy``, or None (no fallback)."""
    if isinstance(err, NoDeploymentAvailable | CapacityExhausted) or is_retryable(err):
        return "exhausted"
    if isinstance(err, UpstreamRejected):
        if err.code in _CONTEXT_CODES or _CONTEXT.search(err.message):
            return "context_window"
        if err.code in _POLICY_CODES or _POLICY.search(err.message):
            return "content_policy"
    return None


def content_filtered(result: GatewayResponse) -> bool:
    """An answer whose content the upstream's filter stopped (Azure's finish_reason)."""
    return b'"finish_reason":"content_filter"' in result.body.replace(b" ", b"")
