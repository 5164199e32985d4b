"""Passive outlier detection: eject a deployment whose recent error ratio is too high.

Pure: every method takes ``now`` (monotonic seconds). Outcomes are counted in a
fixed ring of time buckets (``SlidingCounts``), so memory is constant and recording
allocates nothing.
"""

from __future__ import annotations

from aigw.resilience.window import SlidingCounts


class OutlierDetector:
    """Ejects a deployment when too many of its recent requests failed.

    Within the last ``window_s`` seconds (10 buckets, so to within ``window_s / 10``),
    once at least ``min_requests`` outcomes were recorded and the failed share is
    above ``max_error_ratio``, the deployment is ejected for ``eject_s``. Each
    consecutive ejection doubles that, up to ``max_eject_s``. An ejection is
    consecutive when it starts within a clean period after the previous one ended;
    the clean period is as long as the previous ejection (at least ``window_s``).
    After a clean period the next ejection lasts ``eject_s`` again.

    Ejection clears the window, so the deployment starts afresh when it returns;
    outcomes recorded while ejected (stragglers from before) are ignored. What counts
    as failed is the caller's call: upstream 5xx, connect errors and timeouts, not
    the client's own 4xx.
    """

    def __init__(
        self,
        window_s: float = 10.0,
        min_requests: int = 10,
        max_error_ratio: float = 0.5,
        eject_s: float = 30.0,
        max_eject_s: float = 300.0,
    ) -> None:
        if min_requests < 1 or not 0 <= max_error_ratio < 1:
            raise ValueError("need min_requests >= 1 and 0 <= max_error_ratio < 1")
        if not 0 < eject_s <= max_eject_s:
            raise ValueError("need 0 < eject_s <= max_eject_s")
        self.window_s = window_s
        self.min_requests = min_requests
        self.max_error_ratio = max_error_ratio
        self.eject_s = eject_s
        self.max_eject_s = max_eject_s
        self._counts = SlidingCounts(window_s)
        self._ejected_until = 0.0
        self._last_eject_s = 0.0

    def record(self, failed: bool, now: float) -> bool:
        """Count one outcome; True if it ejected the deployment."""
        if now < self._ejected_until:
            return False
        self._counts.add(now, 1, 1 if failed else 0)
        if not failed:
            return False
        total, failures = self._counts.totals(now)
        if total < self.min_requests or failures <= self.max_error_ratio * total:
            return False
        self._eject(now)
        return True

    def ejected(self, now: float) -> bool:
        """Whether the deployment is ejected at ``now``."""
        return now < self._ejected_until

    def error_ratio(self, now: float) -> float:
        """The failed share of the outcomes in the window; 0.0 when there are none."""
        total, failures = self._counts.totals(now)
        return failures / total if total else 0.0

    @property
    def ejected_until(self) -> float:
        """When the current (or last) ejection ends; 0.0 if never ejected."""
        return self._ejected_until

    def _eject(self, now: float) -> None:
        clean_s = max(self._last_eject_s, self.window_s)
        consecutive = self._last_eject_s > 0 and now - self._ejected_until < clean_s
        duration = min(self._last_eject_s * 2, self.max_eject_s) if consecutive else self.eject_s
        self._last_eject_s = duration
        self._ejected_until = now + duration
        self._counts.clear()
