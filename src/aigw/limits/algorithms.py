"""Pure rate-limiter cores: each takes ``now`` (seconds) and does no I/O.

Every limiter answers ``check(key, now, cost) -> Decision``. A denied check never
consumes. State is kept per key in a dict bounded by ``max_keys``: past it, the least
recently consumed keys are dropped, which resets them to full (fail-open per key).

A ``cost`` larger than the limit can never be allowed; its ``retry_after_s`` is ``inf``.
``redis_scripts`` holds the same arithmetic as Lua so the answers agree.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

# Float slack so that sums of emission intervals (0.1 + 0.1 + ...) do not deny a request
# that arrives exactly on time.
EPS = 1e-9
DEFAULT_MAX_KEYS = 100_000

S = TypeVar("S")


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to one check.

    ``reset_s``: seconds until the limit is fully available again when allowed; when
    denied, seconds until this check's ``cost`` would fit (same as ``retry_after_s``).
    ``retry_after_s`` is 0 when allowed.
    """

    allowed: bool
    limit: float
    remaining: float
    reset_s: float
    retry_after_s: float


def _denied(limit: float, remaining: float, wait_s: float) -> Decision:
    return Decision(False, limit, max(0.0, remaining), wait_s, wait_s)


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")


def _check_cost(cost: float) -> None:
    if cost < 0:
        raise ValueError(f"cost must be >= 0, got {cost!r}")


class _Keyed(Generic[S]):
    """Per-key state in insertion order; the least recently stored key goes first."""

    def __init__(self, max_keys: int) -> None:
        if max_keys < 1:
            raise ValueError(f"max_keys must be >= 1, got {max_keys!r}")
        self.max_keys = max_keys
        self._state: dict[str, S] = {}

    def __len__(self) -> int:
        return len(self._state)

    def _store(self, key: str, value: S) -> None:
        state = self._state
        state.pop(key, None)
        state[key] = value
        while len(state) > self.max_keys:
            del state[next(iter(state))]


class TokenBucket(_Keyed[tuple[float, float]]):
    """``burst`` tokens, refilled at ``rate_per_s``; a check takes ``cost`` tokens."""

    def __init__(self, rate_per_s: float, burst: float, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        _positive("rate_per_s", rate_per_s)
        _positive("burst", burst)
        super().__init__(max_keys)
        self.rate_per_s = rate_per_s
        self.burst = burst

    def check(self, key: str, now: float, cost: float = 1) -> Decision:
        _check_cost(cost)
        tokens, last = self._state.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - last) * self.rate_per_s)
        if cost > self.burst:
            return _denied(self.burst, tokens, math.inf)
        if tokens + EPS < cost:
            return _denied(self.burst, tokens, (cost - tokens) / self.rate_per_s)
        tokens = max(0.0, tokens - cost)
        self._store(key, (tokens, now))
        reset_s = (self.burst - tokens) / self.rate_per_s
        return Decision(True, self.burst, tokens, reset_s, 0.0)


class GCRA(_Keyed[float]):
    """Generic cell rate algorithm: one float per key, the theoretical arrival time.

    Behaves like a token bucket of ``burst`` refilled at ``rate_per_s``, with less state.
    """

    def __init__(self, rate_per_s: float, burst: float, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        _positive("rate_per_s", rate_per_s)
        _positive("burst", burst)
        super().__init__(max_keys)
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.interval_s = 1.0 / rate_per_s
        self.tolerance_s = burst * self.interval_s

    def check(self, key: str, now: float, cost: float = 1) -> Decision:
        _check_cost(cost)
        tat = max(self._state.get(key, now), now)
        available = self.burst - (tat - now) / self.interval_s
        if cost > self.burst:
            return _denied(self.burst, available, math.inf)
        new_tat = tat + cost * self.interval_s
        allow_at = new_tat - self.tolerance_s
        if now + EPS < allow_at:
            return _denied(self.burst, available, allow_at - now)
        self._store(key, new_tat)
        remaining = max(0.0, self.burst - (new_tat - now) / self.interval_s)
        return Decision(True, self.burst, remaining, new_tat - now, 0.0)


def sliding_wait_s(
    previous: float, current: float, limit: float, need: float, elapsed_s: float, window_s: float
) -> float:
    """Seconds until ``previous * weight + current + need <= limit`` as the weight decays.

    The previous window's count weighs ``1 - elapsed/window`` within the current window;
    at the next window the current count becomes the previous one. Needs ``need <= limit``.
    """
    budget = limit - need
    if current <= budget + EPS:
        if previous <= 0:
            return 0.0
        at = window_s * (1.0 - (budget - current) / previous)
        return max(0.0, at - elapsed_s)
    return (window_s - elapsed_s) + window_s * (1.0 - budget / current)


class SlidingWindowCounter(_Keyed[tuple[int, float, float]]):
    """Two fixed windows, the previous one weighted by how much of it still overlaps.

    Approximate (assumes the previous window's requests were evenly spread) but O(1)
    memory per key: (window index, current count, previous count).
    """

    def __init__(self, limit: float, window_s: float, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        _positive("limit", limit)
        _positive("window_s", window_s)
        super().__init__(max_keys)
        self.limit = limit
        self.window_s = window_s

    def _counts(self, key: str, index: int) -> tuple[float, float]:
        stored = self._state.get(key)
        if stored is None:
            return 0.0, 0.0
        stored_index, current, previous = stored
        if stored_index == index:
            return current, previous
        if stored_index == index - 1:
            return 0.0, current
        return 0.0, 0.0

    def check(self, key: str, now: float, cost: float = 1) -> Decision:
        _check_cost(cost)
        index = math.floor(now / self.window_s)
        elapsed_s = now - index * self.window_s
        current, previous = self._counts(key, index)
        estimate = previous * (1.0 - elapsed_s / self.window_s) + current
        if cost > self.limit:
            return _denied(self.limit, self.limit - estimate, math.inf)
        if estimate + cost > self.limit + EPS:
            wait_s = sliding_wait_s(previous, current, self.limit, cost, elapsed_s, self.window_s)
            return _denied(self.limit, self.limit - estimate, wait_s)
        current += cost
        self._store(key, (index, current, previous))
        reset_s = sliding_wait_s(
            previous, current, self.limit, self.limit, elapsed_s, self.window_s
        )
        remaining = max(0.0, self.limit - estimate - cost)
        return Decision(True, self.limit, remaining, reset_s, 0.0)


class _Log:
    __slots__ = ("entries", "used")

    def __init__(self) -> None:
        self.entries: deque[tuple[float, float]] = deque()
        self.used = 0.0


class SlidingWindowLog(_Keyed[_Log]):
    """Exact sliding window: a request counts while ``now - window_s < t <= now``.

    Memory: one ``(timestamp, cost)`` entry per allowed check still in the window, so up
    to ``limit`` entries per key (about 100 bytes each in CPython) when cost is 1 —
    ``max_keys * limit`` entries in the worst case. Prefer the counter for large limits.
    """

    def __init__(self, limit: float, window_s: float, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        _positive("limit", limit)
        _positive("window_s", window_s)
        super().__init__(max_keys)
        self.limit = limit
        self.window_s = window_s

    def _expire(self, log: _Log, now: float) -> None:
        entries = log.entries
        while entries and entries[0][0] + self.window_s <= now:
            log.used -= entries.popleft()[1]
        if not entries:
            log.used = 0.0  # drop accumulated float error

    def _wait_s(self, log: _Log, now: float, cost: float) -> float:
        """Seconds until enough of the oldest entries expire for ``cost`` to fit."""
        used = log.used
        for stamp, spent in log.entries:
            used -= spent
            if used + cost <= self.limit + EPS:
                return stamp + self.window_s - now
        return 0.0

    def check(self, key: str, now: float, cost: float = 1) -> Decision:
        _check_cost(cost)
        log = self._state.get(key) or _Log()
        self._expire(log, now)
        if cost > self.limit:
            return _denied(self.limit, self.limit - log.used, math.inf)
        if log.used + cost > self.limit + EPS:
            return _denied(self.limit, self.limit - log.used, self._wait_s(log, now, cost))
        if cost > 0:
            log.entries.append((now, cost))
            log.used += cost
        self._store(key, log)
        reset_s = log.entries[-1][0] + self.window_s - now if log.entries else 0.0
        return Decision(True, self.limit, max(0.0, self.limit - log.used), reset_s, 0.0)
