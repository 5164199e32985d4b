"""What token limits charge a request, what it really used, and giving back later.

Shared by the limit stage (limits by api key, user, …) and the router's deployment
capacity, so that both charge and reconcile a request the same way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from aigw.limits.tokens import TokenCounter
from aigw.observability.metrics import Metrics
from aigw.providers.base import settle_usage
from aigw.state.base import StateUnavailable
from aigw.types import Endpoint, GatewayRequest

USAGE_ON_REQUEST = (Endpoint.CHAT, Endpoint.COMPLETION)  # streams that report usage if asked


def reservation(req: GatewayRequest, counter: TokenCounter, model: str, answer: int) -> int:
    """Tokens to charge before the call: the prompt, counted for the upstream ``model``,
    plus the answer's ``max_tokens`` (or ``answer`` when the request sets none)."""
    if req.stream and req.endpoint in USAGE_ON_REQUEST:
        req.needs_usage = True  # to reconcile the stream at its end
    if req.prompt_estimate < 0:
        req.prompt_estimate = counter.prompt_tokens(req.endpoint, req.body, model)
    if req.endpoint is Endpoint.EMBEDDING:
        return req.prompt_estimate
    limit = req.body.get("max_completion_tokens") or req.body.get("max_tokens")
    wanted = limit if isinstance(limit, int) and limit > 0 else answer
    return req.prompt_estimate + wanted


def tokens_used(req: GatewayRequest, status: int) -> float | None:
    """What a complete answer used; None when unknown (the charge then stands)."""
    if req.cache.startswith("HIT"):
        return 0.0  # answered from the cache: no tokens were spent
    usage = settle_usage(req)
    if usage is not None:
        return float(usage.prompt_tokens + usage.completion_tokens)
    if status >= 400 and status != 499:
        return 0.0  # a failed call gives its charge back (a client that left may not)
    return None


class GiveBacks:
    """Runs corrections to shared counters off the request path, never raising."""

    def __init__(self, metrics: Metrics, feature: str) -> None:
        self.metrics = metrics
        self.feature = feature
        self._tasks: set[asyncio.Task[None]] = set()

    def run(self, jobs: list[Coroutine[Any, Any, None]]) -> None:
        if not jobs:
            return
        task = asyncio.get_running_loop().create_task(self._settle(jobs))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _settle(self, jobs: list[Coroutine[Any, Any, None]]) -> None:
        for job in jobs:
            try:
                await job
            except StateUnavailable:  # a lost give-back only errs on the safe side
                self.metrics.state_errors.labels(self.feature).inc()
