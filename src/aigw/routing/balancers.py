"""Balancers: which of a model group's deployments takes the next request.

Each is a pure object: ``pick`` reads the candidates and ``now``, keeps its own small
state (keyed by deployment id, since routing hands it only the deployments that are
healthy and not yet tried, a subset that changes between calls) and never does I/O.
``make_balancer`` builds one by its strategy name in settings.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Protocol, TypeVar

from aigw.routing.candidate import Candidate
from aigw.routing.hashring import HashRing, hash_point

C = TypeVar("C", bound=Candidate)


class Balancer(Protocol):
    def pick(self, candidates: Sequence[C], now: float, key: str | None = None) -> C:
        """One of ``candidates`` (non-empty, else ValueError). ``key``: an affinity key."""
        ...


def _require(candidates: Sequence[Candidate]) -> None:
    if not candidates:
        raise ValueError("a balancer needs at least one candidate")


class _Smooth:
    """Smooth weighted round-robin (nginx): each pick adds every weight to its
    candidate's counter, takes the largest and takes the total off it. Counters are kept
    by id; a candidate absent from a pick keeps its counter as it was, as nginx does for
    a peer that is down."""

    __slots__ = ("_current",)

    def __init__(self) -> None:
        self._current: dict[str, float] = {}

    def choose(self, candidates: Sequence[C], weights: Sequence[float]) -> C:
        current = self._current
        total = 0.0
        best = -1
        best_value = -math.inf
        for i, w in enumerate(weights):
            id = candidates[i].id
            value = current.get(id, 0.0) + w
            current[id] = value
            total += w
            if value > best_value:
                best, best_value = i, value
        chosen = candidates[best]
        current[chosen.id] = best_value - total
        return chosen


class RoundRobin:
    """Each pick goes to the candidate picked least recently (never picked first, ties
    in the given order): a plain rotation for a fixed set, and a candidate that was left
    out for a while does not lose its turn."""

    __slots__ = ("_last", "_seq")

    def __init__(self) -> None:
        self._last: dict[str, int] = {}
        self._seq = 0

    def pick(self, candidates: Sequence[C], now: float, key: str | None = None) -> C:
        _require(candidates)
        last = self._last
        best = candidates[0]
        oldest = last.get(best.id, -1)
        for c in candidates[1:]:
            seq = last.get(c.id, -1)
            if seq < oldest:
                best, oldest = c, seq
        self._seq += 1
        last[best.id] = self._seq
        return best


class Weighted:
    """Smooth weighted round-robin over ``weight``."""

    __slots__ = ("_smooth",)

    def __init__(self) -> None:
        self._smooth = _Smooth()

    def pick(self, candidates: Sequence[C], now: float, key: str | None = None) -> C:
        _require(candidates)
        if len(candidates) == 1:
            return candidates[0]
        return self._smooth.choose(candidates, [c.weight for c in candidates])


def _weighted_index(candidates: Sequence[Candidate], rng: random.Random, skip: int = -1) -> int:
    """Index drawn with probability in proportion to weight, never ``skip``."""
    total = 0.0
    for i, c in enumerate(candidates):
        if i != skip:
            total += c.weight
    r = rng.random() * total
    chosen = -1
    for i, c in enumerate(candidates):
        if i != skip:
            chosen = i
            r -= c.weight
            if r < 0.0:
                break
    return chosen


class WeightedRandom:
    """Random in proportion to ``weight``."""

    __slots__ = ("_rng",)

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def pick(self, candidates: Sequence[C], now: float, key: str | None = None) -> C:
        _require(candidates)
        if len(candidates) == 1:
            return candidates[0]
        return candidates[_weighted_index(candidates, self._rng)]


class LeastInFlight:
    """Fewest requests in flight. Ties, the usual case at low traffic, go by smooth
    weighted round-robin among the tied, so an idle group still follows its weights,
    deterministically."""

    __slots__ = ("_smooth",)

    def __init__(self) -> None:
        self._smooth = _Smooth()

    def pick(self, candidates: Sequence[C], now: float, key: str | None = None) -> C:
        _require(candidates)
        fewest = min(c.in_flight for c in candidates)
        tied = [c for c in candidates if c.in_flight == fewest]
        if len(tied) == 1:
            return tied[0]
        return self._smooth.choose(tied, [c.weight for c in tied])


class P2CEwma:
    """Power of two choices: draw two distinct candidates by weight, keep the cheaper,
    cost = ``latency(now) * (in_flight + 1)``.

    A latency of 0 means unknown (no sample yet). When either of the two is unknown
    their latencies are taken as equal, so the one with fewer in flight wins: a new
    deployment gets tried at once, but not flooded before its first answer. Equal
    costs keep the first drawn, itself a weighted random choice.
    """

    __slots__ = ("_rng",)

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def pick(self, candidates: Sequence[C], now: float, key: str | None = None) -> C:
        _require(candidates)
        n = len(candidates)
        if n == 1:
            return candidates[0]
        i = _weighted_index(candidates, self._rng)
        j = 1 - i if n == 2 else _weighted_index(candidates, self._rng, skip=i)
        a, b = candidates[i], candidates[j]
        la, lb = a.latency(now), b.latency(now)
        if la <= 0.0 or lb <= 0.0:
            return b if b.in_flight < a.in_flight else a
        return b if lb * (b.in_flight + 1) < la * (a.in_flight + 1) else a


class ConsistentHash:
    """Consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam, 2016).

    The key's point on the ring (``hashring.HashRing``) picks the deployment; one whose
    ``in_flight + 1`` would pass ``ceil(load_factor * (total in flight + 1) / n)`` is
    skipped for the next one clockwise, so a hot key spills over instead of piling up.
    Without a key it falls back to ``P2CEwma``.
    """

    __slots__ = ("_fallback", "_load_factor", "_ring")

    def __init__(self, rng: random.Random, load_factor: float = 1.25) -> None:
        if load_factor < 1.0:
            raise ValueError("hash_load_factor must be >= 1")
        self._load_factor = load_factor
        self._ring = HashRing()
        self._fallback = P2CEwma(rng)

    def pick(self, candidates: Sequence[C], now: float, key: str | None = None) -> C:
        _require(candidates)
        if key is None:
            return self._fallback.pick(candidates, now)
        by_id = {c.id: c for c in candidates}
        ring = self._ring
        if len(by_id) > len(ring) or not all(id in ring for id in by_id):
            ring.add((c.id, c.weight) for c in candidates)
        total = sum(c.in_flight for c in candidates)
        cap = math.ceil(self._load_factor * (total + 1) / len(by_id))
        for owner in ring.owners_from(hash_point(key)):
            c = by_id.get(owner)
            if c is not None and c.in_flight < cap:
                return c
        # Unreachable with load_factor >= 1 (the least loaded always fits); kept total.
        return min(candidates, key=lambda c: c.in_flight)


def effective_weights(candidates: Sequence[Candidate], now: float) -> dict[str, float]:
    """Weights the dynamic strategy uses now, by deployment id (shown in /admin/routing).

    ``weight * health * latency * load`` where health = ``(1 - error_rate) ** 2`` (at
    least 0.01), latency = ``min(1, median latency / own latency)`` (at least 0.05; 1
    when its own latency is unknown; the median is over the known ones), load =
    ``1 - load`` (at least 0.05).
    """
    return {c.id: w for c, w in zip(candidates, _dynamic_weights(candidates, now), strict=True)}


def _median(values: list[float]) -> float:
    if not values:
        return 0.0
    values.sort()
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


def _dynamic_weights(candidates: Sequence[Candidate], now: float) -> list[float]:
    # Written out with comparisons, not min()/max(): this runs on every pick.
    latencies = [c.latency(now) for c in candidates]
    median = _median([lat for lat in latencies if lat > 0.0])
    weights = []
    for c, lat in zip(candidates, latencies, strict=True):
        ok = 1.0 - c.error_rate
        health = ok * ok if ok > 0.1 else 0.01
        speed = 1.0 if lat <= median else median / lat
        if speed < 0.05:
            speed = 0.05
        free = 1.0 - c.load
        if free < 0.05:
            free = 0.05
        weights.append(c.weight * health * speed * free)
    return weights


class Dynamic:
    """Smooth weighted round-robin over ``effective_weights``, recomputed every pick."""

    __slots__ = ("_smooth",)

    def __init__(self) -> None:
        self._smooth = _Smooth()

    def pick(self, candidates: Sequence[C], now: float, key: str | None = None) -> C:
        _require(candidates)
        if len(candidates) == 1:
            return candidates[0]
        return self._smooth.choose(candidates, _dynamic_weights(candidates, now))


STRATEGIES = (
    "weighted",
    "round-robin",
    "random",
    "least-inflight",
    "p2c-ewma",
    "consistent-hash",
    "dynamic",
)


def make_balancer(
    strategy: str, *, rng: random.Random | None = None, hash_load_factor: float = 1.25
) -> Balancer:
    """The balancer for a strategy name in ``STRATEGIES``; ValueError for any other."""
    rng = rng if rng is not None else random.Random()
    if strategy == "weighted":
        return Weighted()
    if strategy == "round-robin":
        return RoundRobin()
    if strategy == "random":
        return WeightedRandom(rng)
    if strategy == "least-inflight":
        return LeastInFlight()
    if strategy == "p2c-ewma":
        return P2CEwma(rng)
    if strategy == "consistent-hash":
        return ConsistentHash(rng, hash_load_factor)
    if strategy == "dynamic":
        return Dynamic()
    raise ValueError(f"unknown balancing strategy {strategy!r}; expected one of {STRATEGIES}")
