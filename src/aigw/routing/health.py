"""The state of a deployment's active health check: up or down, with hysteresis.

Pure: the async prober feeds it each probe's result; it decides nothing about time.
"""

from __future__ import annotations


class HealthState:
    """Up or down from consecutive probe results.

    While up, ``unhealthy_after`` consecutive failed probes mark it down; while down,
    ``healthy_after`` consecutive good probes mark it up. A result that agrees with
    the current state resets the opposite streak, so one good probe among failures
    (or one failure among good probes) does not flip it.
    """

    __slots__ = ("_streak", "healthy", "healthy_after", "unhealthy_after")

    def __init__(
        self, unhealthy_after: int = 3, healthy_after: int = 2, start_healthy: bool = True
    ) -> None:
        if unhealthy_after < 1 or healthy_after < 1:
            raise ValueError("unhealthy_after and healthy_after must be >= 1")
        self.unhealthy_after = unhealthy_after
        self.healthy_after = healthy_after
        self.healthy = start_healthy
        self._streak = 0

    def record(self, ok: bool) -> bool:
        """Count one probe result; True if it changed ``healthy``."""
        if ok == self.healthy:
            self._streak = 0
            return False
        self._streak += 1
        if self._streak < (self.healthy_after if ok else self.unhealthy_after):
            return False
        self.healthy = ok
        self._streak = 0
        return True
