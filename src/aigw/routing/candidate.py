"""What a balancer may read about a deployment: a small Protocol, so balancers stay pure.

``DeploymentState`` (routing/state.py) is the real implementation; tests use plain
fakes. Every value is a reading at the time of the pick; nothing here does I/O.
"""

from __future__ import annotations

from typing import Protocol


class Candidate(Protocol):
    @property
    def id(self) -> str:
        """Stable deployment id (unique in the gateway)."""

    @property
    def weight(self) -> float:
        """Configured weight, > 0."""

    @property
    def in_flight(self) -> int:
        """Requests sent to it and not yet finished."""

    @property
    def error_rate(self) -> float:
        """Recent error ratio, 0..1 (a decaying average of failures)."""

    @property
    def load(self) -> float:
        """Load the backend reports itself (queue depth or GPU use), 0..1; 0 when unknown."""

    def latency(self, now: float) -> float:
        """Peak-EWMA latency estimate in seconds at ``now`` (decays toward recent samples)."""
