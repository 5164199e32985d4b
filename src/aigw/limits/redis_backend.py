"""The Redis twins of the local limits: one atomic Lua script per call, on the server's
clock, every call bounded by ``timeout_s``; any Redis trouble raises ``StateUnavailable``.
Imported only when a limit is shared, so a gateway without Redis never loads redis-py.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from redis import asyncio as aioredis
from redis.commands.core import AsyncScript as Script
from redis.exceptions import NoScriptError, RedisError

from aigw.limits import redis_scripts
from aigw.limits.algorithms import Decision
from aigw.limits.backend import PREFIX, LimitSpec, check_cost, positive_timeout
from aigw.state.base import StateUnavailable

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Call:
    """A script call waiting for a pipeline; ``decides``: it answers with a Decision."""

    script: Script
    keys: list[str]
    args: list[str]
    decides: bool


async def run_batch(
    client: aioredis.Redis, timeout_s: float, calls: Sequence[Call], limits: Sequence[float]
) -> list[Decision | None]:
    """Several script calls in one pipeline: one round trip for all of a request's
    limits, not one each. ``limits[i]`` is the limit ``calls[i]`` reports against.
    A script Redis does not know yet (a restarted Redis) is loaded and the batch sent
    once more; the scripts are idempotent only as a whole batch that never ran, which is
    the case when Redis answers NOSCRIPT (it ran none of them)."""

    async def send() -> list[Any]:
        pipe = client.pipeline(transaction=False)
        for c in calls:
            pipe.evalsha(c.script.sha, len(c.keys), *c.keys, *c.args)
        return list(await pipe.execute(raise_on_error=False))

    async def load() -> None:
        for script in {c.script.sha: c.script for c in calls}.values():
            await client.script_load(script.script)

    try:
        async with asyncio.timeout(timeout_s):
            replies = await send()
            if any(isinstance(r, NoScriptError) for r in replies):
                await load()
                replies = await send()
    except (TimeoutError, RedisError, OSError) as exc:
        raise StateUnavailable(f"redis: {type(exc).__name__}: {exc}") from None
    out: list[Decision | None] = []
    for call, reply, limit in zip(calls, replies, limits, strict=True):
        if isinstance(reply, Exception):
            raise StateUnavailable(f"redis: {type(reply).__name__}: {reply}")
        out.append(_decision(limit, reply) if call.decides else None)
    return out


async def _bounded(timeout_s: float, call: Awaitable[Any]) -> Any:
    """``call`` within ``timeout_s`` (connecting included), Redis failures translated."""
    try:
        async with asyncio.timeout(timeout_s):
            return await call
    except (TimeoutError, RedisError, OSError) as exc:
        raise StateUnavailable(f"redis: {type(exc).__name__}: {exc}") from None


def _decision(limit: float, reply: Sequence[Any]) -> Decision:
    allowed, remaining, reset_s, retry_after_s = reply
    return Decision(bool(allowed), limit, float(remaining), float(reset_s), float(retry_after_s))


def _script_shape(spec: LimitSpec) -> list[str]:
    """ARGV[3:] of the spec's scripts."""
    match spec.algorithm:
        case "token_bucket" | "gcra":
            return [repr(spec.rate_per_s), repr(spec.limit)]
        case "calendar":
            return [repr(spec.limit), spec.period]
        case _:
            return [repr(spec.limit), repr(spec.window_s)]


def _now_arg(now: float | None) -> str:
    return "" if now is None else repr(now)


class RedisLimit:
    """One limit shared through Redis. ``now`` is a test seam: leave it ``None`` to use
    the server's clock."""

    def __init__(
        self, spec: LimitSpec, client: aioredis.Redis, timeout_s: float, prefix: str = PREFIX
    ) -> None:
        positive_timeout(timeout_s)
        self.spec = spec
        self.limit = spec.limit
        self.timeout_s = timeout_s
        scripts = redis_scripts.SCRIPTS[spec.algorithm]
        self._check = client.register_script(scripts.check)
        self._adjust = client.register_script(scripts.adjust)
        self._two_keys = scripts.keys == 2
        self._prefix = f"{prefix}{spec.algorithm}:"
        self._shape = _script_shape(spec)

    def redis_keys(self, key: str) -> list[str]:
        """The Redis keys holding ``key``'s state."""
        main = f"{self._prefix}{{{key}}}"
        return [main, f"{main}:meta"] if self._two_keys else [main]

    def _args(self, now: float | None, amount: float) -> list[str]:
        return [_now_arg(now), repr(amount), *self._shape]

    def call(self, verb: str, key: str, amount: float) -> Call:
        """One ``check`` or ``adjust`` as a pipeline entry (see ``run_batch``)."""
        script = self._check if verb == "check" else self._adjust
        return Call(script, self.redis_keys(key), self._args(None, amount), verb == "check")

    async def check(self, key: str, cost: float = 1, *, now: float | None = None) -> Decision:
        check_cost(cost)
        call = self._check(keys=self.redis_keys(key), args=self._args(now, cost))
        return _decision(self.limit, await _bounded(self.timeout_s, call))

    async def adjust(self, key: str, delta: float, *, now: float | None = None) -> None:
        if not math.isfinite(delta):
            raise ValueError(f"delta must be finite, got {delta!r}")
        if delta:
            call = self._adjust(keys=self.redis_keys(key), args=self._args(now, delta))
            await _bounded(self.timeout_s, call)


class RedisConcurrency:
    """Leases shared through Redis, expiring on the server's clock. ``now`` is a test
    seam, as for ``RedisLimit``."""

    def __init__(
        self, limit: int, client: aioredis.Redis, timeout_s: float, prefix: str = PREFIX
    ) -> None:
        if not limit >= 1:
            raise ValueError(f"limit must be >= 1, got {limit!r}")
        positive_timeout(timeout_s)
        self.limit = float(limit)
        self.timeout_s = timeout_s
        self._prefix = f"{prefix}concurrency:"
        self._acquire = client.register_script(redis_scripts.CONCURRENCY_ACQUIRE)
        self._release = client.register_script(redis_scripts.CONCURRENCY_RELEASE)

    def redis_key(self, key: str) -> str:
        return f"{self._prefix}{{{key}}}"

    async def acquire(
        self, key: str, lease: str, ttl_s: float, *, now: float | None = None
    ) -> Decision:
        if not ttl_s > 0:
            raise ValueError(f"ttl_s must be > 0, got {ttl_s!r}")
        args = [_now_arg(now), lease, repr(self.limit), repr(ttl_s)]
        call = self._acquire(keys=[self.redis_key(key)], args=args)
        return _decision(self.limit, await _bounded(self.timeout_s, call))

    def call(self, verb: str, key: str, lease: str, ttl_s: float = 0.0) -> Call:
        """One ``acquire`` or ``release`` as a pipeline entry (see ``run_batch``)."""
        if verb == "acquire":
            args = ["", lease, repr(self.limit), repr(ttl_s)]
            return Call(self._acquire, [self.redis_key(key)], args, True)
        return Call(self._release, [self.redis_key(key)], ["", lease], False)

    async def release(self, key: str, lease: str, *, now: float | None = None) -> None:
        call = self._release(keys=[self.redis_key(key)], args=[_now_arg(now), lease])
        await _bounded(self.timeout_s, call)
