"""What routing knows about one deployment right now, fed by every attempt's outcome.

``DeploymentState`` is the ``Candidate`` balancers read (in-flight count, peak-EWMA
latency, error rate, reported load) and the gate routing asks (healthy by active
checks, not ejected as an outlier, breaker not open, under its concurrency cap, not
cooling down after a ``Retry-After``). The decisions live in the pure cores it holds.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from aigw.providers.base import Provider
from aigw.resilience.breaker import CircuitBreaker
from aigw.resilience.outlier import OutlierDetector
from aigw.routing.ewma import DecayingRate, PeakEwma
from aigw.routing.health import HealthState
from aigw.settings import ModelSettings

BreakerHook = Callable[[str, str, str], None]  # deployment id, old state, new state


class DeploymentState:
    def __init__(
        self,
        provider: Provider,
        model: ModelSettings,
        clock: Callable[[], float] = time.monotonic,
        on_breaker_change: BreakerHook | None = None,
    ) -> None:
        settings = provider.settings
        self.provider = provider
        self.id = provider.id
        self.weight = settings.weight
        self.priority = settings.priority
        self.max_concurrency = settings.max_concurrency
        self.clock = clock
        self.in_flight = 0
        self.load = 0.0
        self.requests = 0
        self.failures = 0
        self.cool_until = 0.0
        self._latency = PeakEwma()
        self._errors = DecayingRate()
        b, o, h = model.breaker, model.outlier, model.health_check
        self.breaker = (
            CircuitBreaker(b.failure_threshold, b.open_s, b.max_open_s, b.half_open_requests)
            if b.enabled
            else None
        )
        if self.breaker is not None and on_breaker_change is not None:
            hook = on_breaker_change
            self.breaker.on_change = lambda old, new: hook(self.id, old, new)
        self.outlier = (
            OutlierDetector(o.window_s, o.min_requests, o.max_error_ratio, o.eject_s, o.max_eject_s)
            if o.enabled
            else None
        )
        self.health = HealthState(h.unhealthy_after, h.healthy_after)

    # -- Candidate

    @property
    def error_rate(self) -> float:
        return self._errors.value(self.clock())

    def latency(self, now: float) -> float:
        return self._latency.value(now)

    # -- the gate

    def usable(self, now: float) -> bool:
        """Routing may send it a request (the breaker's own verdict comes in ``admit``)."""
        return (
            self.health.healthy
            and not (self.outlier is not None and self.outlier.ejected(now))
            and self.breaker_state(now) != "open"
            and not self.at_capacity()
            and now >= self.cool_until
        )

    def tryable(self, now: float) -> bool:
        """Last resort when nothing is usable: anything whose breaker is not open."""
        return self.breaker_state(now) != "open" and not self.at_capacity()

    def admit(self, now: float) -> bool:
        return self.breaker is None or self.breaker.allow(now)

    def at_capacity(self) -> bool:
        return 0 < self.max_concurrency <= self.in_flight

    def breaker_state(self, now: float) -> str:
        return "closed" if self.breaker is None else self.breaker.state(now)

    def badness(self, now: float) -> tuple[bool, bool, float, float]:
        ejected = self.outlier is not None and self.outlier.ejected(now)
        return (not self.health.healthy, ejected, self.error_rate, self.latency(now))

    def retry_after(self, now: float) -> float:
        waits = [self.cool_until - now]
        if self.breaker is not None:
            waits.append(self.breaker.retry_after(now))
        if self.outlier is not None and self.outlier.ejected(now):
            waits.append(self.outlier.ejected_until - now)
        return max(0.0, min(w for w in waits if w > 0)) if any(w > 0 for w in waits) else 0.0

    # -- outcomes

    def begin(self) -> None:
        self.in_flight += 1
        self.requests += 1

    def observe_latency(self, seconds: float, now: float) -> None:
        self._latency.observe(seconds, now)

    def end(self, ok: bool | None, now: float) -> bool:
        """Record an attempt's verdict (None: no verdict, e.g. cancelled); True if ejected."""
        self.in_flight -= 1
        if ok is None:
            if self.breaker is not None:
                self.breaker.release(now)
            return False
        if not ok:
            self.failures += 1
        self._errors.observe(not ok, now)
        if self.breaker is not None:
            self.breaker.record(ok, now)
        return self.outlier is not None and self.outlier.record(not ok, now)

    def cool_down(self, seconds: float, now: float) -> None:
        """The upstream asked us to wait (Retry-After): route elsewhere until then."""
        self.cool_until = max(self.cool_until, now + seconds)

    def report_load(self, value: bytes | None) -> None:
        if value is None:
            return
        try:
            load = float(value)
        except ValueError:
            return
        self.load = min(1.0, max(0.0, load))
