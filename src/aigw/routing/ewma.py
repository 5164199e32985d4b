"""Time-decayed estimators a deployment keeps about itself: latency and error rate.

Both are pure: they are fed ``now`` and never read a clock, and reading one never
changes it, so a value does not depend on how often it is read.
"""

from __future__ import annotations

import math


class PeakEwma:
    """Peak-EWMA round-trip estimate, the estimator of Finagle's and Linkerd's balancers.

    - A sample at or above the current value replaces it at once: peaks count fully.
    - A sample below it is blended in with weight ``1 - w``,
      ``w = exp(-(now - last_sample) / tau_s)``: the weight of a sample grows with the
      time it stands for, so a burst of samples does not outweigh a quiet minute.
    - Between samples the value decays toward zero with time constant ``tau_s``. Finagle
      and Linkerd get this by observing a zero on every read; reads here are pure and
      the closed form ``value * exp(-(now - last_sample) / tau_s)`` gives what those
      reads give, however often it is read. A slow deployment that stops getting
      traffic thus looks cheaper as time goes on and is tried again.

    Before the first sample the value is ``initial_s``. The default 0.0 means "unknown";
    the balancers treat 0 as unknown, not as fast (see ``balancers.P2CEwma``).
    """

    __slots__ = ("_estimate", "_initial", "_stamp", "_tau")

    def __init__(self, tau_s: float = 10.0, initial_s: float = 0.0) -> None:
        if tau_s <= 0.0:
            raise ValueError("tau_s must be > 0")
        self._tau = tau_s
        self._initial = initial_s
        self._estimate = initial_s
        self._stamp: float | None = None

    def observe(self, rtt_s: float, now: float) -> None:
        """Add one round-trip time, in seconds, measured as of ``now``."""
        stamp = self._stamp
        if stamp is None:
            self._estimate = rtt_s
        else:
            w = math.exp(-max(now - stamp, 0.0) / self._tau)
            current = self._estimate * w
            self._estimate = rtt_s if rtt_s >= current else current * w + rtt_s * (1.0 - w)
        self._stamp = now if stamp is None else max(now, stamp)

    def value(self, now: float) -> float:
        """The estimate in seconds at ``now``; ``initial_s`` before any sample."""
        stamp = self._stamp
        if stamp is None:
            return self._initial
        elapsed = now - stamp
        if elapsed <= 0.0:
            return self._estimate
        return self._estimate * math.exp(-elapsed / self._tau)


class DecayingRate:
    """Share of failed outcomes, each weighted by ``exp(-age / tau_s)``.

    Two decaying sums are kept, failures and outcomes. Under steady traffic the value
    is the plain ratio of recent failures; the denominator is at least
    ``min_samples``, so a handful of outcomes cannot claim a rate of 1.0 and, with no
    traffic, the value decays toward 0 (a deployment shunned for errors gets tried
    again rather than being judged forever on stale failures).
    """

    __slots__ = ("_failures", "_min", "_stamp", "_tau", "_total")

    def __init__(self, tau_s: float = 30.0, min_samples: float = 5.0) -> None:
        if tau_s <= 0.0:
            raise ValueError("tau_s must be > 0")
        if min_samples <= 0.0:
            raise ValueError("min_samples must be > 0")
        self._tau = tau_s
        self._min = min_samples
        self._failures = 0.0
        self._total = 0.0
        self._stamp = 0.0

    def observe(self, failed: bool, now: float) -> None:
        """Count one outcome at ``now``."""
        decay = self._decay(now)
        self._failures = self._failures * decay + (1.0 if failed else 0.0)
        self._total = self._total * decay + 1.0
        self._stamp = max(now, self._stamp)

    def value(self, now: float) -> float:
        """Failure rate 0..1 at ``now``."""
        decay = self._decay(now)
        return self._failures * decay / max(self._total * decay, self._min)

    def _decay(self, now: float) -> float:
        elapsed = now - self._stamp
        return 1.0 if elapsed <= 0.0 else math.exp(-elapsed / self._tau)
