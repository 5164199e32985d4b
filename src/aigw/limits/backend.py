"""The limits the pipeline enforces, behind one async interface with two backends.

``local_limit`` / ``local_concurrency`` wrap the pure cores of ``algorithms`` with a
clock: one process, never unavailable. ``redis_limit`` / ``redis_concurrency`` run the
``redis_scripts`` twins: shared by every process, one atomic round trip per call on the
server's clock, bounded by ``timeout_s``; a Redis that is down, slow or failing raises
``StateUnavailable`` and the caller applies its fail-open or fail-closed policy.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from redis import asyncio as aioredis
from redis.exceptions import RedisError

from aigw.limits import redis_scripts
from aigw.limits.algorithms import (
    DEFAULT_MAX_KEYS,
    GCRA,
    PERIODS,
    CalendarQuota,
    ConcurrencyLimit,
    Decision,
    SlidingWindowCounter,
    SlidingWindowLog,
    TokenBucket,
)
from aigw.state.base import StateUnavailable

ALGORITHMS = tuple(redis_scripts.SCRIPTS)
PREFIX = "aigw:rl:"


@dataclass(frozen=True, slots=True)
class LimitSpec:
    """One limit: ``limit`` units (requests or tokens) per ``window_s``.

    For ``token_bucket`` and ``gcra`` ``limit`` is the burst, refilled at
    ``limit / window_s`` per second. For ``calendar`` the window is the UTC ``period``
    ("day" or "month") and ``window_s`` is ignored.
    """

    algorithm: str
    limit: float
    window_s: float
    period: str = ""

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {self.algorithm!r}; one of {ALGORITHMS}")
        if not (self.limit > 0 and math.isfinite(self.limit)):
            raise ValueError(f"{self.algorithm}: limit must be a number > 0, got {self.limit!r}")
        if self.algorithm == "calendar":
            if self.period not in PERIODS:
                raise ValueError(f"calendar: period must be one of {PERIODS}, got {self.period!r}")
            return
        if not (self.window_s > 0 and math.isfinite(self.window_s)):
            raise ValueError(
                f"{self.algorithm}: window_s must be a number > 0, got {self.window_s!r}"
            )
        if self.period:
            raise ValueError(f"{self.algorithm}: period is for calendar only, got {self.period!r}")

    @property
    def rate_per_s(self) -> float:
        return self.limit / self.window_s


class Limit(Protocol):
    limit: float

    async def check(self, key: str, cost: float = 1) -> Decision:
        """Consume ``cost`` units of ``key`` if they fit; a denied check takes nothing."""
        ...

    async def adjust(self, key: str, delta: float) -> None:
        """Charge ``delta`` more units (or give ``-delta`` back); never denies."""
        ...


class Concurrency(Protocol):
    limit: float

    async def acquire(self, key: str, lease: str, ttl_s: float) -> Decision:
        """Hold one of ``limit`` slots of ``key`` as ``lease`` for at most ``ttl_s``."""
        ...

    async def release(self, key: str, lease: str) -> None:
        """Give the slot back; releasing a lease not held does nothing."""
        ...


class _Core(Protocol):
    def check(self, key: str, now: float, cost: float = 1) -> Decision: ...

    def adjust(self, key: str, now: float, delta: float) -> None: ...


def _core(spec: LimitSpec, max_keys: int) -> _Core:
    match spec.algorithm:
        case "token_bucket":
            return TokenBucket(spec.rate_per_s, spec.limit, max_keys)
        case "gcra":
            return GCRA(spec.rate_per_s, spec.limit, max_keys)
        case "sliding_window_counter":
            return SlidingWindowCounter(spec.limit, spec.window_s, max_keys)
        case "sliding_window_log":
            return SlidingWindowLog(spec.limit, spec.window_s, max_keys)
        case _:
            return CalendarQuota(spec.limit, spec.period, max_keys)


def _check_cost(cost: float) -> None:
    if not cost >= 0:
        raise ValueError(f"cost must be >= 0, got {cost!r}")


class LocalLimit:
    """A pure core driven by ``clock``."""

    def __init__(self, spec: LimitSpec, clock: Callable[[], float], max_keys: int) -> None:
        self.spec = spec
        self.limit = spec.limit
        self._core = _core(spec, max_keys)
        self._clock = clock

    async def check(self, key: str, cost: float = 1) -> Decision:
        return self._core.check(key, self._clock(), cost)

    async def adjust(self, key: str, delta: float) -> None:
        if delta:
            self._core.adjust(key, self._clock(), delta)


class LocalConcurrency:
    def __init__(self, limit: int, clock: Callable[[], float], max_keys: int) -> None:
        self._core = ConcurrencyLimit(limit, max_keys)
        self.limit = float(limit)
        self._clock = clock

    async def acquire(self, key: str, lease: str, ttl_s: float) -> Decision:
        return self._core.acquire(key, lease, self._clock(), ttl_s)

    async def release(self, key: str, lease: str) -> None:
        self._core.release(key, lease, self._clock())


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
        _positive_timeout(timeout_s)
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
        _check_cost(cost)
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
        _positive_timeout(timeout_s)
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


def _positive_timeout(timeout_s: float) -> None:
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")


def local_limit(
    spec: LimitSpec, clock: Callable[[], float], max_keys: int = DEFAULT_MAX_KEYS
) -> Limit:
    """``spec`` in this process on ``clock`` (wall-clock seconds, for calendar periods);
    at most ``max_keys`` keys are remembered, the least recently used dropped first."""
    return LocalLimit(spec, clock, max_keys)


def redis_limit(spec: LimitSpec, client: aioredis.Redis, timeout_s: float) -> Limit:
    """``spec`` shared through Redis; every call bounded by ``timeout_s``."""
    return RedisLimit(spec, client, timeout_s)


def local_concurrency(
    limit: int, clock: Callable[[], float], max_keys: int = DEFAULT_MAX_KEYS
) -> Concurrency:
    """At most ``limit`` leases per key in this process, expiring on ``clock``."""
    return LocalConcurrency(limit, clock, max_keys)


def redis_concurrency(limit: int, client: aioredis.Redis, timeout_s: float) -> Concurrency:
    """At most ``limit`` leases per key across processes; every call bounded by
    ``timeout_s``."""
    return RedisConcurrency(limit, client, timeout_s)
