"""The limits the pipeline enforces, behind one async interface with two backends.

``local_limit`` / ``local_concurrency`` wrap the pure cores of ``algorithms`` with a
clock: one process, never unavailable. ``redis_limit`` / ``redis_concurrency`` run the
``redis_scripts`` twins: shared by every process, one atomic round trip per call on the
server's clock, bounded by ``timeout_s``; a Redis that is down, slow or failing raises
``StateUnavailable`` and the caller applies its fail-open or fail-closed policy.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

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

if TYPE_CHECKING:
    from redis import asyncio as aioredis

    from aigw.limits.redis_backend import RedisConcurrency, RedisLimit

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


def check_cost(cost: float) -> None:
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
        self.adjust_now(key, delta)

    def check_now(self, key: str, cost: float = 1) -> Decision:
        """``check`` without a coroutine: nothing here ever waits."""
        return self._core.check(key, self._clock(), cost)

    def adjust_now(self, key: str, delta: float) -> None:
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
        self.release_now(key, lease)

    def acquire_now(self, key: str, lease: str, ttl_s: float) -> Decision:
        return self._core.acquire(key, lease, self._clock(), ttl_s)

    def release_now(self, key: str, lease: str) -> None:
        self._core.release(key, lease, self._clock())


def positive_timeout(timeout_s: float) -> None:
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")


def local_limit(
    spec: LimitSpec, clock: Callable[[], float], max_keys: int = DEFAULT_MAX_KEYS
) -> LocalLimit:
    """``spec`` in this process on ``clock`` (wall-clock seconds, for calendar periods);
    at most ``max_keys`` keys are remembered, the least recently used dropped first."""
    return LocalLimit(spec, clock, max_keys)


def redis_limit(spec: LimitSpec, client: aioredis.Redis, timeout_s: float) -> RedisLimit:
    """``spec`` shared through Redis; every call bounded by ``timeout_s``."""
    from aigw.limits.redis_backend import RedisLimit  # redis-py loads only when used

    return RedisLimit(spec, client, timeout_s)


def local_concurrency(
    limit: int, clock: Callable[[], float], max_keys: int = DEFAULT_MAX_KEYS
) -> LocalConcurrency:
    """At most ``limit`` leases per key in this process, expiring on ``clock``."""
    return LocalConcurrency(limit, clock, max_keys)


def redis_concurrency(limit: int, client: aioredis.Redis, timeout_s: float) -> RedisConcurrency:
    """At most ``limit`` leases per key across processes; every call bounded by
    ``timeout_s``."""
    from aigw.limits.redis_backend import RedisConcurrency

    return RedisConcurrency(limit, client, timeout_s)
