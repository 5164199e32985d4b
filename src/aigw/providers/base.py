"""What every provider is: pure request/response transforms for one dialect.

A provider instance is built once per deployment (at start-up or reload) and keeps
what never changes per request: the origin, path prefix and ready header lines. It
never does I/O; the executor sends what ``build`` returns through the shared upstream
client and hands the answer back to ``parse``, ``error`` or ``relay``.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson

from aigw.errors import GatewayError, UpstreamError, UpstreamRejected
from aigw.providers.sse import SSEDecoder, frame
from aigw.settings import DeploymentSettings
from aigw.types import GatewayRequest, Usage
from aigw.upstream.client import Origin, Timeouts, parse_base_url


@dataclass(frozen=True, slots=True)
class UpstreamCall:
    target: bytes
    headers: bytes
    body: bytes
    method: bytes = b"POST"


def header_lines(headers: dict[str, str]) -> bytes:
    return b"".join(b"%b: %b\r\n" % (k.encode(), v.encode()) for k, v in headers.items())


class Provider(ABC):
    kind = ""

    def __init__(self, settings: DeploymentSettings) -> None:
        self.settings = settings
        self.id = settings.id
        self.upstream_model = settings.model
        self.origin: Origin
        self.origin, self.prefix = parse_base_url(settings.base_url, settings.ca_file)
        t = settings.timeouts
        self.timeouts = Timeouts(t.connect_s, t.first_byte_s, t.total_s)
        key = settings.api_key.get_secret_value() if settings.api_key else ""
        self.headers = header_lines({**self.auth_headers(key), **settings.headers})
        self.load_header = settings.load_header.lower().encode()

    def auth_headers(self, api_key: str) -> dict[str, str]:
        return {"content-type": "application/json"}

    @abstractmethod
    def build(self, req: GatewayRequest) -> UpstreamCall:
        """The upstream request for ``req``."""

    @abstractmethod
    def parse(self, req: GatewayRequest, body: bytes) -> bytes:
        """A successful upstream body as OpenAI-dialect JSON; sets ``req.usage``."""

    @abstractmethod
    def relay(self, req: GatewayRequest, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """Upstream stream bytes as OpenAI-dialect SSE; sets ``req.usage`` when known."""

    def error(self, status: int, body: bytes) -> GatewayError:
        """An upstream error answer as a gateway error, keeping the provider's message."""
        message, err_type, code = _error_fields(body)
        text = message or f"upstream returned HTTP {status}"
        if 400 <= status < 500:
            return UpstreamRejected(
                text, status=status, type=err_type or "invalid_request_error", code=code
            )
        return UpstreamError(
            f"upstream {self.id} failed with HTTP {status}: {text}", upstream_status=status
        )


def _error_fields(body: bytes) -> tuple[str, str | None, str | None]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:500].decode("utf-8", "replace").strip(), None, None
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        message = err.get("message")
        err_type, code = err.get("type"), err.get("code")
        return (
            str(message) if message else "",
            err_type if isinstance(err_type, str) else None,
            code if isinstance(code, str) else None,
        )
    if isinstance(err, str):
        return err, None, None
    return "", None, None


def forwarded_body(req: GatewayRequest, upstream_model: str | None) -> bytes:
    """The fast path: the body as received, re-encoded only when the model name changes
    (``None``: the model is not in the body) or a stream's usage must be asked for."""
    if req.needs_usage and _asks_usage(req.body):
        req.needs_usage = False  # the client asked for it too: relay it as is
    ask_usage = req.needs_usage
    if (upstream_model is None or req.model == upstream_model) and not ask_usage:
        return req.raw
    body = dict(req.body)
    if upstream_model is not None:
        body["model"] = upstream_model
    if ask_usage:
        options = body.get("stream_options")
        body["stream_options"] = {**(options if isinstance(options, dict) else {}),
                                  "include_usage": True}  # fmt: skip
    return orjson.dumps(body)


def _asks_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


async def relay_noting_usage(
    req: GatewayRequest, chunks: AsyncIterator[bytes]
) -> AsyncIterator[bytes]:
    """Relay an SSE stream byte for byte, reading usage from the events that carry it.

    OpenAI sends it once (top-level ``usage``); Anthropic in parts (``message.usage`` in
    message_start, ``usage`` in message_delta), so the counts seen are merged by maximum.
    When the gateway asked for usage the client did not (``needs_usage``), the events are
    re-framed and OpenAI's usage-only chunk is left out.
    """
    decoder = SSEDecoder()
    if req.needs_usage:
        async for chunk in chunks:
            kept = []
            for event in decoder.feed(chunk):
                if b'"usage"' in event.data:
                    _note_usage(req, event.data)
                    if _usage_only(event.data):
                        continue
                kept.append(frame(event.data))
            if kept:
                yield b"".join(kept)
        return
    async for chunk in chunks:
        for event in decoder.feed(chunk):
            if b'"usage"' in event.data:
                _note_usage(req, event.data)
        yield chunk


def _usage_only(data: bytes) -> bool:
    """OpenAI's last chunk under include_usage: no choices, only usage."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return isinstance(value, dict) and value.get("choices") == [] and "usage" in value


def _note_usage(req: GatewayRequest, data: bytes) -> None:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return
    if not isinstance(value, dict):
        return
    message = value.get("message")
    found = usage_from(message if isinstance(message, dict) else value)
    if found is None:
        return
    seen = req.usage or Usage()
    req.usage = Usage(
        max(seen.prompt_tokens, found.prompt_tokens),
        max(seen.completion_tokens, found.completion_tokens),
    )


def settle_usage(req: GatewayRequest) -> Usage | None:
    """``req.usage``, reading it from ``req.usage_body`` first if that was deferred."""
    if req.usage is None and req.usage_body is not None:
        # A body that is not JSON was relayed as is: the client saw what the upstream sent.
        with contextlib.suppress(orjson.JSONDecodeError):
            req.usage = usage_from(orjson.loads(req.usage_body))
        req.usage_body = None
    return req.usage


def usage_from(data: Any) -> Usage | None:
    """The ``usage`` that ``data`` carries, in OpenAI's shape or Anthropic's."""
    usage = data.get("usage") if isinstance(data, dict) else None
    if not isinstance(usage, dict):
        return None
    if "input_tokens" in usage or "output_tokens" in usage:  # Anthropic counts cache apart
        prompt = sum(
            _int(usage.get(k))
            for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
        )
        return Usage(prompt, _int(usage.get("output_tokens")))
    return Usage(_int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens")))


def _int(value: Any) -> int:
    return value if isinstance(value, int) else 0
