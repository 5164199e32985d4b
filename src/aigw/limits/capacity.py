"""Each deployment's own capacity: its ``rpm`` and ``tpm``, respected by the router.

Before an attempt goes to a deployment with a capacity, the attempt is charged to it:
one request, and the request's estimated tokens. A deployment that is full is passed
over for another one before its provider would answer 429. An attempt that fails
gives its tokens back (the request stays counted: the provider saw it); one that
succeeds is reconciled with the usage the upstream reports when the answer is done.

The counters are shared through Redis when the state backend is Redis, so the sum
over every gateway process stays under the provider's limit. Capacity is a courtesy
to the provider, so a backend failure always fails open (counted in this process).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aigw.limits.accounting import GiveBacks, reservation, tokens_used
from aigw.limits.algorithms import Decision
from aigw.limits.backend import LimitSpec, LocalLimit, local_limit, redis_limit
from aigw.limits.tokens import TokenCounter
from aigw.observability.metrics import Metrics
from aigw.settings import DeploymentSettings
from aigw.state.base import StateUnavailable

if TYPE_CHECKING:
    from redis import asyncio as aioredis

    from aigw.limits.redis_backend import RedisLimit

from aigw.types import GatewayRequest

WINDOW_S = 60.0


@dataclass(slots=True)
class _Meter:
    """One deployment's rpm or tpm: the shared counter and its local twin."""

    name: str  # rpm | tpm
    local: LocalLimit  # the counter with the memory backend; the twin while Redis is down
    shared: RedisLimit | None


class Capacity:
    def __init__(
        self,
        deployments: list[DeploymentSettings],
        redis: aioredis.Redis | None,
        timeout_s: float,
        counter: TokenCounter,
        completion_tokens: int,
        metrics: Metrics,
    ) -> None:
        self.meters: dict[str, list[_Meter]] = {}
        self.models: dict[str, str] = {}
        for d in deployments:
            meters = []
            for name, amount in (("rpm", d.rpm), ("tpm", d.tpm)):
                if amount:
                    spec = LimitSpec("sliding_window_counter", float(amount), WINDOW_S)
                    shared = redis_limit(spec, redis, timeout_s) if redis else None
                    meters.append(_Meter(name, local_limit(spec, time.time), shared))
            if meters:
                self.meters[d.id] = meters
                self.models[d.id] = d.model
        self.redis = redis
        self.timeout_s = timeout_s
        self.counter = counter
        self.completion_tokens = completion_tokens
        self.metrics = metrics
        self.loop = asyncio.get_running_loop()
        self.down_until = 0.0
        self.give_backs = GiveBacks(metrics, "capacity")

    def limits(self, deployment: str) -> bool:
        return deployment in self.meters

    async def take(self, req: GatewayRequest, deployment: str) -> tuple[Hold | None, float]:
        """Charge one attempt to ``deployment``: a ``Hold`` to settle later, or ``None``
        and the seconds until it has room again."""
        meters = self.meters[deployment]
        tokens = 0.0
        if any(m.name == "tpm" for m in meters):
            model = self.models[deployment]
            tokens = float(reservation(req, self.counter, model, self.completion_tokens))
        key = f"deployment:{deployment}"
        costs = [1.0 if m.name == "rpm" else tokens for m in meters]
        shared = self.redis is not None and self.loop.time() >= self.down_until
        decisions: list[Decision] = []
        if shared:
            try:
                decisions = await self._check_shared(meters, key, costs)
            except StateUnavailable:
                self.down_until = self.loop.time() + 1.0
                self.metrics.state_errors.labels("capacity").inc()
                shared = False
        if not shared:
            decisions = [m.local.check_now(key, c) for m, c in zip(meters, costs, strict=True)]
        full = [(m, d) for m, d in zip(meters, decisions, strict=True) if not d.allowed]
        hold = Hold(self, key, meters, decisions, costs, shared)
        if full:
            hold.give_back(requests=True, tokens_used=0.0)
            for meter, _ in full:
                self.metrics.capacity_skips.labels(deployment, meter.name).inc()
            return None, max(d.retry_after_s for _, d in full)
        return hold, 0.0

    async def _check_shared(
        self, meters: list[_Meter], key: str, costs: list[float]
    ) -> list[Decision]:
        """Every meter's check in one pipeline, as the admit stage does."""
        from aigw.limits.redis_backend import run_batch

        calls = [_shared(m).call("check", key, c) for m, c in zip(meters, costs, strict=True)]
        assert self.redis is not None
        replies = await run_batch(
            self.redis, self.timeout_s, calls, [m.local.limit for m in meters]
        )
        return [r for r in replies if r is not None]

    async def adjust_shared(self, key: str, items: list[tuple[_Meter, float]]) -> None:
        from aigw.limits.redis_backend import run_batch

        calls = [_shared(m).call("adjust", key, delta) for m, delta in items]
        assert self.redis is not None
        await run_batch(self.redis, self.timeout_s, calls, [m.local.limit for m, _ in items])


def _shared(meter: _Meter) -> RedisLimit:
    assert meter.shared is not None
    return meter.shared


class Hold:
    """One attempt's charge to a deployment, settled once."""

    __slots__ = ("capacity", "costs", "decisions", "key", "meters", "settled", "shared")

    def __init__(
        self,
        capacity: Capacity,
        key: str,
        meters: list[_Meter],
        decisions: list[Decision],
        costs: list[float],
        shared: bool,
    ) -> None:
        self.capacity = capacity
        self.key = key
        self.meters = meters
        self.decisions = decisions
        self.costs = costs
        self.shared = shared
        self.settled = False

    def failed(self) -> None:
        """The attempt failed: its tokens come back; the request stays counted."""
        self.give_back(requests=False, tokens_used=0.0)

    def finish(self, req: GatewayRequest, status: int) -> None:
        """The answer is complete: reconcile tokens with the reported usage, if any."""
        self.give_back(False, tokens_used(req, status))

    def give_back(self, requests: bool, tokens_used: float | None) -> None:
        if self.settled:
            return
        self.settled = True
        remote: list[tuple[_Meter, float]] = []
        for meter, decision, cost in zip(self.meters, self.decisions, self.costs, strict=True):
            if not decision.allowed:
                continue
            if meter.name == "rpm":
                delta = -cost if requests else 0.0
            else:
                delta = 0.0 if tokens_used is None else tokens_used - cost
            if not delta:
                continue
            if self.shared:
                remote.append((meter, delta))
            else:
                meter.local.adjust_now(self.key, delta)
        if remote:
            self.capacity.give_backs.run([self.capacity.adjust_shared(self.key, remote)])
