"""Two event counts over a sliding time window, kept in a fixed ring of time buckets.

The outlier detector counts (requests, failures) and the retry budget counts
(requests, retries) this way: memory is fixed, adding is O(1), and reading the
totals is O(1) because running sums are kept and expired buckets are subtracted
as the clock moves past them.
"""

from __future__ import annotations

import math

_NEVER = -(1 << 62)


class SlidingCounts:
    """Counts ``a`` and ``b`` over the last ``window_s`` seconds, in ``buckets`` buckets.

    Time is cut into buckets of ``window_s / buckets`` seconds; the totals cover the
    current bucket and the ``buckets - 1`` before it, so an event is forgotten between
    ``window_s - width`` and ``window_s`` seconds after it happened. A clock that goes
    backwards counts into the newest bucket.
    """

    __slots__ = ("_a", "_b", "_head", "a", "b", "buckets", "width")

    def __init__(self, window_s: float, buckets: int = 10) -> None:
        if window_s <= 0 or buckets < 1:
            raise ValueError("window_s must be > 0 and buckets >= 1")
        self.width = window_s / buckets
        self.buckets = buckets
        self._a = [0] * buckets
        self._b = [0] * buckets
        self._head = _NEVER
        self.a = 0
        self.b = 0

    def add(self, now: float, a: int = 0, b: int = 0) -> None:
        """Count ``a`` and ``b`` events at ``now``."""
        i = self._advance(now)
        self._a[i] += a
        self._b[i] += b
        self.a += a
        self.b += b

    def totals(self, now: float) -> tuple[int, int]:
        """The ``(a, b)`` totals within the window ending at ``now``."""
        self._advance(now)
        return self.a, self.b

    def clear(self) -> None:
        """Forget every event."""
        for i in range(self.buckets):
            self._a[i] = 0
            self._b[i] = 0
        self.a = 0
        self.b = 0

    def _advance(self, now: float) -> int:
        """Expire the buckets the clock has moved past; the index of ``now``'s bucket."""
        epoch = math.floor(now / self.width)
        head = self._head
        if epoch > head:
            for step in range(1, min(epoch - head, self.buckets) + 1):
                self._expire((head + step) % self.buckets)
            self._head = head = epoch
        return head % self.buckets

    def _expire(self, i: int) -> None:
        self.a -= self._a[i]
        self.b -= self._b[i]
        self._a[i] = 0
        self._b[i] = 0
