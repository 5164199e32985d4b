"""The Redis twins of the local limits: one atomic Lua script per call, on the server's
clock, every call bounded by ``timeout_s``; any Redis trouble raises ``StateUnavailable``.
Imported only when a limit is shared, so a gateway without Redis never loads redis-py.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

from redis import asyncio as aioredis
from redis.exceptions import RedisError

from aigw.limits import redis_scripts
from aigw.limits.algorithms import Decision
from aigw.limits.backend import PREFIX, LimitSpec, check_cost, positive_timeout
from aigw.state.base import StateUnavailable

T = TypeVar("T")


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

    async def release(self, key: str, lease: str, *, now: float | None = None) -> None:
        call = self._release(keys=[self.redis_key(key)], args=[_now_arg(now), lease])
        await _bounded(self.timeout_s, call)
