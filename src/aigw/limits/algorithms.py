"""Pure rate-limiter cores: each takes ``now`` (seconds) and does no I/O.

Every limiter answers ``check(key, now, cost) -> Decision``. A denied check never
consumes. ``adjust(key, now, delta)`` charges ``delta`` more units (or gives ``-delta``
back) without checking the limit: a request that used more tokens than it reserved
goes into debt, a failed one returns its reservation. ``ConcurrencyLimit`` counts
leases held at once instead of units per window.

State is kept per key in a dict bounded by ``max_keys``: past it, the least recently
stored keys are dropped, which resets them to full (fail-open per key).

A ``cost`` larger than the limit can never be allowed; its ``retry_after_s`` is ``inf``.
``redis_scripts`` holds the same arithmetic as Lua so the answers agree.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from datetime import date
from typing import Generic, TypeVar

# Float slack so that sums of emission intervals (0.1 + 0.1 + ...) do not deny a request
# that arrives exactly on time.
EPS = 1e-9
DEFAULT_MAX_KEYS = 100_000
PERIODS = ("day", "month")
# A denied lease has no known time of release: ask the client to come back in a second.
CONCURRENCY_RETRY_S = 1.0

_DAY_S = 86_400
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()

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
    if not cost >= 0:
        raise ValueError(f"cost must be >= 0, got {cost!r}")


def _check_delta(delta: float) -> None:
    if not math.isfinite(delta):
        raise ValueError(f"delta must be finite, got {delta!r}")


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
    """``burst`` tokens, refilled at ``rate_per_s``; a check takes ``cost`` tokens.

    ``adjust`` may take the bucket below zero (debt, repaid by the refill before the next
    check fits) and never fills it past ``burst``.
    """

    def __init__(self, rate_per_s: float, burst: float, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        _positive("rate_per_s", rate_per_s)
        _positive("burst", burst)
        super().__init__(max_keys)
        self.rate_per_s = rate_per_s
        self.burst = burst

    def _tokens(self, key: str, now: float) -> float:
        tokens, last = self._state.get(key, (self.burst, now))
        return min(self.burst, tokens + max(0.0, now - last) * self.rate_per_s)

    def check(self, key: str, now: float, cost: float = 1) -> Decision:
        _check_cost(cost)
        tokens = self._tokens(key, now)
        if cost > self.burst:
            return _denied(self.burst, tokens, math.inf)
        if tokens + EPS < cost:
            return _denied(self.burst, tokens, (cost - tokens) / self.rate_per_s)
        tokens = max(0.0, tokens - cost)
        self._store(key, (tokens, now))
        reset_s = (self.burst - tokens) / self.rate_per_s
        return Decision(True, self.burst, tokens, reset_s, 0.0)

    def adjust(self, key: str, now: float, delta: float) -> None:
        _check_delta(delta)
        tokens = min(self.burst, self._tokens(key, now) - delta)
        self._store(key, (tokens, now))


class GCRA(_Keyed[float]):
    """Generic cell rate algorithm: one float per key, the theoretical arrival time.

    Behaves like a token bucket of ``burst`` refilled at ``rate_per_s``, with less state;
    ``adjust`` moves the arrival time, never before ``now`` (a full bucket).
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

    def adjust(self, key: str, now: float, delta: float) -> None:
        _check_delta(delta)
        tat = max(self._state.get(key, now), now)
        self._store(key, max(tat + delta * self.interval_s, now))


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
    memory per key: (window index, current count, previous count). A give-back larger
    than the current count takes the rest from the previous one; neither goes below 0.
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

    def adjust(self, key: str, now: float, delta: float) -> None:
        _check_delta(delta)
        index = math.floor(now / self.window_s)
        current, previous = self._counts(key, index)
        current += delta
        if current < 0:
            previous = max(0.0, previous + current)
            current = 0.0
        self._store(key, (index, current, previous))


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
    ``adjust`` appends an entry, or gives back from the newest entries first.
    """

    def __init__(self, limit: float, window_s: float, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        _positive("limit", limit)
        _positive("window_s", window_s)
        super().__init__(max_keys)
        self.limit = limit
        self.window_s = window_s

    def _log(self, key: str, now: float) -> _Log:
        """The key's log with the entries that left the window dropped."""
        log = self._state.get(key) or _Log()
        entries, cutoff = log.entries, now - self.window_s
        while entries and entries[0][0] <= cutoff:
            log.used -= entries.popleft()[1]
        if not entries:
            log.used = 0.0  # drop accumulated float error
        return log

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
        log = self._log(key, now)
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

    def adjust(self, key: str, now: float, delta: float) -> None:
        _check_delta(delta)
        log = self._log(key, now)
        if delta > 0:
            log.entries.append((now, delta))
            log.used += delta
        give = -delta
        while give > 0 and log.entries:
            stamp, spent = log.entries.pop()
            if spent > give:
                log.entries.append((stamp, spent - give))
                log.used -= give
                break
            log.used -= spent
            give -= spent
        if not log.entries:
            log.used = 0.0
        self._store(key, log)


def _period_span(now: float, period: str) -> tuple[str, float, float]:
    """``(period_id, start, end)`` of the UTC day or month holding ``now``.

    Whole days since the epoch, as the Lua twin computes them, so both sides agree to
    the last float at a boundary (``datetime.fromtimestamp`` rounds microseconds).
    """
    days = math.floor(now / _DAY_S)
    day = date.fromordinal(_EPOCH_ORDINAL + days)
    if period == "day":
        return day.isoformat(), float(days * _DAY_S), float((days + 1) * _DAY_S)
    if period != "month":
        raise ValueError(f"period must be one of {PERIODS}, got {period!r}")
    first = day.replace(day=1)
    following = date(day.year + 1, 1, 1) if day.month == 12 else first.replace(month=day.month + 1)
    start = (first.toordinal() - _EPOCH_ORDINAL) * _DAY_S
    end = (following.toordinal() - _EPOCH_ORDINAL) * _DAY_S
    return f"{day.year:04d}-{day.month:02d}", float(start), float(end)


def period_bounds(now: float, period: str) -> tuple[str, float]:
    """The UTC calendar ``period`` ("day" or "month") holding ``now``: its id
    ("2026-11-22" or "2026-11") and the epoch second it ends at."""
    period_id, _start, end = _period_span(now, period)
    return period_id, end


class CalendarQuota(_Keyed[tuple[str, float]]):
    """``limit`` units per UTC calendar day or month, all back at the boundary.

    A denied check waits for the period's end. ``adjust`` may take ``used`` past the
    limit (denying the rest of the period), never below 0.
    """

    def __init__(self, limit: float, period: str, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        _positive("limit", limit)
        if period not in PERIODS:
            raise ValueError(f"period must be one of {PERIODS}, got {period!r}")
        super().__init__(max_keys)
        self.limit = limit
        self.period = period
        self._span = ("", math.inf, -math.inf)  # the last period seen, to skip the dates

    def _used(self, key: str, now: float) -> tuple[str, float, float]:
        """``(period_id, end, used in that period)``."""
        period_id, start, end = self._span
        if not start <= now < end:
            self._span = period_id, start, end = _period_span(now, self.period)
        stored = self._state.get(key)
        used = stored[1] if stored is not None and stored[0] == period_id else 0.0
        return period_id, end, used

    def check(self, key: str, now: float, cost: float = 1) -> Decision:
        _check_cost(cost)
        period_id, end, used = self._used(key, now)
        reset_s = end - now
        if cost > self.limit:
            return _denied(self.limit, self.limit - used, math.inf)
        if used + cost > self.limit + EPS:
            return _denied(self.limit, self.limit - used, reset_s)
        used += cost
        self._store(key, (period_id, used))
        return Decision(True, self.limit, max(0.0, self.limit - used), reset_s, 0.0)

    def adjust(self, key: str, now: float, delta: float) -> None:
        _check_delta(delta)
        period_id, _end, used = self._used(key, now)
        self._store(key, (period_id, max(0.0, used + delta)))


class ConcurrencyLimit(_Keyed[dict[str, float]]):
    """At most ``limit`` leases held at once per key.

    A lease expires ``ttl_s`` after it was (re)acquired, so a holder that crashed cannot
    keep its slot forever; expired leases are dropped on each call for the key (a scan
    of the key's leases, at most ``limit``). Acquiring a lease already held renews it.
    A denied acquire has no known release time: ``retry_after_s`` is one second.
    """

    def __init__(self, limit: int, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        if not limit >= 1:
            raise ValueError(f"limit must be >= 1, got {limit!r}")
        super().__init__(max_keys)
        self.limit = limit

    def _leases(self, key: str, now: float) -> dict[str, float]:
        leases = self._state.get(key)
        if leases is None:
            return {}
        for lease in [lease for lease, expiry in leases.items() if expiry <= now]:
            del leases[lease]
        if not leases:
            del self._state[key]
        return leases

    def acquire(self, key: str, lease: str, now: float, ttl_s: float) -> Decision:
        _positive("ttl_s", ttl_s)
        leases = self._leases(key, now)
        if lease not in leases and len(leases) >= self.limit:
            return _denied(self.limit, self.limit - len(leases), CONCURRENCY_RETRY_S)
        leases[lease] = now + ttl_s
        self._store(key, leases)
        return Decision(True, self.limit, self.limit - len(leases), 0.0, 0.0)

    def release(self, key: str, lease: str, now: float) -> None:
        leases = self._leases(key, now)
        if leases.pop(lease, None) is not None and not leases:
            del self._state[key]

    def held(self, key: str, now: float) -> int:
        """Leases of ``key`` still held at ``now``."""
        return len(self._leases(key, now))
