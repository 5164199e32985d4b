"""A per-deployment circuit breaker: closed → open → half-open → closed.

Pure: every method takes ``now`` (monotonic seconds) and nothing awaits. Time-driven
changes (open → half-open when the open period ends) happen lazily, on whichever
call first observes them, and fire ``on_change`` then.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

State = Literal["closed", "open", "half-open"]
CLOSED: State = "closed"
OPEN: State = "open"
HALF_OPEN: State = "half-open"


class CircuitBreaker:
    """Stops sending to a deployment after ``failure_threshold`` consecutive failures.

    * closed: every request is allowed; a success resets the failure count, and
      ``failure_threshold`` consecutive failures open the breaker.
    * open: nothing is allowed for the open period (``open_s`` at first), then the
      breaker turns half-open.
    * half-open: at most ``half_open_requests`` trial requests are in flight at once.
      A failed trial reopens it with the open period doubled (capped at
      ``max_open_s``); ``half_open_requests`` successful trials close it and reset
      the open period to ``open_s``. A trial that ends with no verdict (cancelled,
      or failed for a reason that says nothing about the deployment) must be
      ``release``d so its slot frees.

    Results that arrive while open belong to requests allowed before it opened and
    are ignored. In half-open the breaker cannot tell such a straggler from a trial,
    so a straggler counts as one; it is a real answer from the deployment.

    ``on_change(old, new)`` is called on every state change (metrics hang off it).
    """

    def __init__(
        self,
        failure_threshold: int = 5,
        open_s: float = 5.0,
        max_open_s: float = 60.0,
        half_open_requests: int = 1,
        on_change: Callable[[str, str], None] | None = None,
    ) -> None:
        if failure_threshold < 1 or half_open_requests < 1:
            raise ValueError("failure_threshold and half_open_requests must be >= 1")
        if not 0 < open_s <= max_open_s:
            raise ValueError("need 0 < open_s <= max_open_s")
        self.failure_threshold = failure_threshold
        self.open_s = open_s
        self.max_open_s = max_open_s
        self.half_open_requests = half_open_requests
        self.on_change = on_change
        self._state: State = CLOSED
        self._failures = 0
        self._open_for = open_s
        self._open_until = 0.0
        self._trials = 0
        self._successes = 0

    def allow(self, now: float) -> bool:
        """Whether a request may go to the deployment now; in half-open it takes a slot."""
        state = self.state(now)
        if state == CLOSED:
            return True
        if state == OPEN or self._trials >= self.half_open_requests:
            return False
        self._trials += 1
        return True

    def record(self, success: bool, now: float) -> None:
        """The verdict of a request that ``allow`` let through."""
        state = self.state(now)
        if state == CLOSED:
            self._record_closed(success, now)
        elif state == HALF_OPEN:
            self._record_trial(success, now)

    def release(self, now: float) -> None:
        """A request ended with no verdict; in half-open its trial slot frees."""
        if self.state(now) == HALF_OPEN and self._trials > 0:
            self._trials -= 1

    def state(self, now: float) -> State:
        """``"closed"``, ``"open"`` or ``"half-open"`` at ``now``."""
        if self._state == OPEN and now >= self._open_until:
            self._trials = 0
            self._successes = 0
            self._move(HALF_OPEN)
        return self._state

    def retry_after(self, now: float) -> float:
        """Seconds until the breaker turns half-open; 0 unless it is open."""
        if self.state(now) != OPEN:
            return 0.0
        return self._open_until - now

    @property
    def open_period(self) -> float:
        """How long the next (or current) open period lasts."""
        return self._open_for

    def _record_closed(self, success: bool, now: float) -> None:
        if success:
            self._failures = 0
            return
        self._failures += 1
        if self._failures >= self.failure_threshold:
            self._open(now)

    def _record_trial(self, success: bool, now: float) -> None:
        if self._trials > 0:
            self._trials -= 1
        if not success:
            self._open_for = min(self._open_for * 2, self.max_open_s)
            self._open(now)
            return
        self._successes += 1
        if self._successes >= self.half_open_requests:
            self._failures = 0
            self._open_for = self.open_s
            self._move(CLOSED)

    def _open(self, now: float) -> None:
        self._open_until = now + self._open_for
        self._failures = 0
        self._move(OPEN)

    def _move(self, new: State) -> None:
        old, self._state = self._state, new
        if self.on_change is not None and old != new:
            self.on_change(old, new)
