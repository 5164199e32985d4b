"""The admit stage: every limit that applies to a request is charged before it goes on.

Requests and tokens limits are checked, concurrency slots taken, all at once (one
round trip's time on Redis). If any says no, what the others took is given back and
the client gets 429 with ``Retry-After`` — or, for a model group with
``on_limited: cache``, a cached answer when there is one. Token limits are charged an
estimate first (prompt tokens counted here plus the completion tokens the request may
use), then reconciled with the usage the upstream reports once the answer is complete;
a failed call gives its whole reservation back. OpenAI's ``x-ratelimit-*`` headers go
on every answer.

A limit whose shared backend cannot be reached follows its policy: fail open (count in
this process instead) or fail closed (503). After a failure the backend is left alone
for a second, so an outage costs each request nothing but the local check.
"""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aigw.errors import LimitsUnavailable, RateLimited
from aigw.limits.accounting import GiveBacks, reservation, tokens_used
from aigw.limits.algorithms import Decision
from aigw.limits.rules import Rule
from aigw.limits.tokens import TokenCounter
from aigw.observability.logs import JsonLog
from aigw.observability.metrics import Metrics
from aigw.state.base import StateUnavailable
from aigw.types import GatewayRequest, Next, Result

if TYPE_CHECKING:
    from redis import asyncio as aioredis

BACKEND_PAUSE_S = 1.0
# A concurrency slot outlives its request by this much at most if the process dies.
LEASE_SLACK_S = 30.0
Stale = Callable[[GatewayRequest], Awaitable[Result | None]]


@dataclass(slots=True)
class _Taken:
    rule: Rule
    key: str
    cost: float
    decision: Decision
    local: bool  # charged in this process (memory, or the twin of a Redis that is down)
    lease: str = ""  # the concurrency slot's id

    @property
    def rule_limit(self) -> float:
        rule = self.rule
        counter = rule.shared_gate if rule.kind == "concurrent" else rule.shared
        return counter.limit if counter is not None else 0.0


_PENDING = Decision(False, 0.0, 0.0, 0.0, 0.0)  # not charged yet


class LimitStage:
    def __init__(
        self,
        rules: list[Rule],
        counter: TokenCounter,
        upstream_models: dict[str, str],
        completion_tokens: int,
        metrics: Metrics,
        log: JsonLog,
        stale: Stale | None = None,
        stale_models: frozenset[str] = frozenset(),
        *,
        redis: aioredis.Redis | None = None,
        timeout_s: float = 0.005,
        request_timeout_s: float = 600.0,
    ) -> None:
        self.rules = rules
        self.redis = redis
        self.timeout_s = timeout_s
        self.request_timeout_s = request_timeout_s
        self.counter = counter
        self.upstream_models = upstream_models  # model group → the name its tokenizer knows
        self.completion_tokens = completion_tokens
        self.metrics = metrics
        self.log = log
        self.stale = stale
        self.stale_models = stale_models
        self.loop = asyncio.get_running_loop()
        self.backend_down_until = 0.0
        self.outage_logged = False
        self.give_backs = GiveBacks(metrics, "limits")
        self._plans: dict[str, tuple[list[Rule], bool]] = {}
        for model in upstream_models:  # every model group, worked out once
            self._plans[model] = self._plan(model)
        self._leases = 0
        self._process = os.urandom(8).hex()

    def _plan(self, model: str) -> tuple[list[Rule], bool]:
        """The rules that apply to ``model``, and whether any counts tokens."""
        plan = self._plans.get(model)
        if plan is None:  # a model this gateway does not serve: the executor answers 404
            rules = [r for r in self.rules if r.applies(model)]
            plan = rules, any(r.kind == "tokens" for r in rules)
        return plan

    async def __call__(self, req: GatewayRequest, call_next: Next) -> Result:
        rules, counts_tokens = self._plan(req.model)
        if not rules:
            return await call_next(req)
        reserve = self._reservation(req) if counts_tokens else 0
        taken: list[_Taken] = []
        remote: list[_Taken] = []  # to be charged on Redis, in one round trip
        shared_up = self.redis is not None and self.loop.time() >= self.backend_down_until
        try:
            for rule in rules:
                value = rule.key_of(req)
                if value is None:
                    continue  # no key, no charge: like nginx's empty limit_req key
                key = f"{rule.name}:{value}"
                cost = reserve if rule.kind == "tokens" else 1
                lease = self._lease() if rule.kind == "concurrent" else ""
                t = _Taken(rule, key, cost, _PENDING, local=not rule.is_shared, lease=lease)
                if rule.is_shared and shared_up:
                    remote.append(t)
                else:
                    self._charge_here(t)
                taken.append(t)
            if remote:
                await self._charge_remote(remote)
        except BaseException:
            self._give_back(taken, requests=True, tokens_used=0.0)
            raise
        if not taken:
            return await call_next(req)
        req.reply_headers += _headers(taken)
        self._count(taken)
        denied = [t for t in taken if not t.decision.allowed]
        if denied:
            self._give_back(taken, requests=True, tokens_used=0.0)
            return await self._limited(req, denied)
        req.finishers.append(lambda r, status: self._finish(r, status, taken))
        return await call_next(req)

    def _reservation(self, req: GatewayRequest) -> int:
        model = self.upstream_models.get(req.model, req.model)
        return reservation(req, self.counter, model, self.completion_tokens)

    # -- charging

    def _charge_here(self, t: _Taken) -> None:
        """Charge this process's counter: the rule's own (memory), or the twin of a
        shared one whose backend is down, if the rule fails open."""
        rule = t.rule
        if rule.is_shared:
            if not rule.fail_open:
                raise LimitsUnavailable(
                    f"limit {rule.name!r} cannot be checked now", retry_after=BACKEND_PAUSE_S
                )
            t.local = True
        if rule.kind == "concurrent":
            assert rule.local_gate is not None
            t.decision = rule.local_gate.acquire_now(t.key, t.lease, self._lease_ttl())
        else:
            assert rule.local is not None
            t.decision = rule.local.check_now(t.key, t.cost)

    async def _charge_remote(self, remote: list[_Taken]) -> None:
        from aigw.limits.redis_backend import Call, run_batch

        calls: list[Call] = []
        for t in remote:
            if t.rule.kind == "concurrent":
                assert t.rule.shared_gate is not None
                calls.append(t.rule.shared_gate.call("acquire", t.key, t.lease, self._lease_ttl()))
            else:
                assert t.rule.shared is not None
                calls.append(t.rule.shared.call("check", t.key, t.cost))
        assert self.redis is not None
        started = self.loop.time()
        try:
            replies = await run_batch(
                self.redis, self.timeout_s, calls, [t.rule_limit for t in remote]
            )
        except StateUnavailable as exc:
            self._backend_failed(remote[0].rule, exc)
            for t in remote:
                self._charge_here(t)  # fail open here, or LimitsUnavailable
            return
        self.metrics.limit_backend_seconds.observe(self.loop.time() - started)
        if self.outage_logged:
            self._backend_ok()
        for t, reply in zip(remote, replies, strict=True):
            assert reply is not None
            t.decision = reply

    def _lease_ttl(self) -> float:
        return self.request_timeout_s + LEASE_SLACK_S

    def _lease(self) -> str:
        """Unique across processes: request ids come from clients and may repeat."""
        self._leases += 1
        return f"{self._process}:{self._leases}"

    # -- refusing

    async def _limited(self, req: GatewayRequest, denied: list[_Taken]) -> Result:
        if self.stale is not None and req.model in self.stale_models:
            cached = await self.stale(req)
            if cached is not None:
                self.metrics.limit_stale_answers.labels(self.metrics.model_label(req.model)).inc()
                return cached
        worst = max(denied, key=lambda t: t.decision.retry_after_s)
        wait = worst.decision.retry_after_s
        rule = worst.rule
        if rule.kind == "concurrent":
            message = f"Too many concurrent requests ({rule.name}): limit {worst.decision.limit:g}."
        elif math.isinf(wait):
            message = (
                f"Request too large for {rule.name}: it needs {worst.cost:g} {rule.kind} "
                f"and the limit is {worst.decision.limit:g}."
            )
        else:
            message = (
                f"Rate limit reached for {rule.kind} ({rule.name}): limit "
                f"{worst.decision.limit:g}, remaining {worst.decision.remaining:g}. "
                f"Please try again in {_duration(wait)}."
            )
        kind = "tokens" if rule.kind == "tokens" else "requests"
        raise RateLimited(message, kind=kind, retry_after=None if math.isinf(wait) else wait)

    # -- giving back

    def _finish(self, req: GatewayRequest, status: int, taken: list[_Taken]) -> None:
        """The answer is complete: free the slots, reconcile tokens with the usage."""
        self._give_back(taken, requests=False, tokens_used=tokens_used(req, status))

    def _give_back(self, taken: list[_Taken], requests: bool, tokens_used: float | None) -> None:
        """Free concurrency slots; with ``requests`` refund request counts too (the request
        was refused after all); reconcile token charges to ``tokens_used`` when known.
        This process's counters now; Redis's in one pipeline, off the request path."""
        from_redis: list[tuple[_Taken, float]] = []
        for t in taken:
            if t.decision is _PENDING or not t.decision.allowed:
                continue
            rule = t.rule
            if rule.kind == "concurrent":
                delta = 0.0
            elif rule.kind == "tokens":
                delta = 0.0 if tokens_used is None else tokens_used - t.cost
                if not delta:
                    continue
            else:
                if not requests:
                    continue
                delta = -t.cost
            if not t.local:
                from_redis.append((t, delta))
            elif rule.kind == "concurrent":
                assert rule.local_gate is not None
                rule.local_gate.release_now(t.key, t.lease)
            else:
                assert rule.local is not None
                rule.local.adjust_now(t.key, delta)
        if from_redis:
            self.give_backs.run([self._give_back_remote(from_redis)])

    async def _give_back_remote(self, items: list[tuple[_Taken, float]]) -> None:
        from aigw.limits.redis_backend import Call, run_batch

        calls: list[Call] = []
        for t, delta in items:
            if t.rule.kind == "concurrent":
                assert t.rule.shared_gate is not None
                calls.append(t.rule.shared_gate.call("release", t.key, t.lease))
            else:
                assert t.rule.shared is not None
                calls.append(t.rule.shared.call("adjust", t.key, delta))
        assert self.redis is not None
        await run_batch(self.redis, self.timeout_s, calls, [t.rule_limit for t, _ in items])

    # -- backend health, metrics

    def _backend_failed(self, rule: Rule, exc: StateUnavailable) -> None:
        self.backend_down_until = self.loop.time() + BACKEND_PAUSE_S
        policy = "open" if rule.fail_open else "closed"
        self.metrics.limit_backend_errors.labels(rule.name, policy).inc()
        if not self.outage_logged:
            self.outage_logged = True
            self.log.error("limits: backend unavailable", error=str(exc), policy=policy)

    def _backend_ok(self) -> None:
        if self.outage_logged:
            self.outage_logged = False
            self.log.info("limits: backend available again")

    def _count(self, taken: list[_Taken]) -> None:
        for t in taken:
            d = t.decision
            self.metrics.limit_checked(t.rule.name, t.rule.dimension, d.allowed, d.remaining)


def _headers(taken: list[_Taken]) -> list[tuple[bytes, bytes]]:
    """OpenAI's rate-limit headers, from the tightest requests and tokens limits."""
    out: list[tuple[bytes, bytes]] = []
    for kind in ("requests", "tokens"):
        decisions = [t.decision for t in taken if t.rule.kind == kind]
        if not decisions:
            continue
        tight = min(decisions, key=lambda d: d.remaining)
        out += [
            (b"x-ratelimit-limit-" + kind.encode(), b"%d" % tight.limit),
            (b"x-ratelimit-remaining-" + kind.encode(), b"%d" % math.floor(tight.remaining)),
            (b"x-ratelimit-reset-" + kind.encode(), _duration(tight.reset_s).encode()),
        ]
    return out


def _duration(seconds: float) -> str:
    """Go-style durations as OpenAI sends them: ``20ms``, ``1.5s``, ``6m0s``."""
    if math.isinf(seconds):
        return "0s"
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    minutes, secs = divmod(seconds, 60)
    secs_text = f"{secs:.3f}".rstrip("0").rstrip(".")
    if minutes < 1:
        return f"{secs_text}s"
    hours, minutes = divmod(int(minutes), 60)
    return (f"{hours}h" if hours else "") + f"{minutes}m{secs_text}s"
