"""A consistent-hash ring of deployment ids, with virtual nodes in proportion to weight.

The ring holds every id it has been given and never drops one. A pick walks it clockwise
and skips ids that are not candidates this time, which yields exactly what a ring built
over the candidates alone would, so a changing subset (an unhealthy deployment, one
already tried in this request) needs no rebuild and moves only the keys it owned.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from hashlib import blake2b

VNODES = 160
"""Virtual nodes for the heaviest deployment; lighter ones get proportionally fewer."""


def hash_point(text: str) -> int:
    """A stable 64-bit point on the ring (``hash()`` is salted per process)."""
    return int.from_bytes(blake2b(text.encode(), digest_size=8).digest(), "big")


class HashRing:
    __slots__ = ("_heaviest", "_owners", "_points", "_weights")

    def __init__(self) -> None:
        self._weights: dict[str, float] = {}
        self._heaviest = 0.0
        self._points: list[int] = []
        self._owners: list[str] = []

    def __contains__(self, id: str) -> bool:
        return id in self._weights

    def __len__(self) -> int:
        return len(self._weights)

    def add(self, members: Iterable[tuple[str, float]]) -> None:
        """Add ``(id, weight)`` pairs not yet on the ring.

        Virtual nodes are ``VNODES * weight / heaviest weight seen`` (at least one): a
        new heaviest deployment rescales, and so rebuilds, the whole ring.
        """
        new = {id: w for id, w in members if id not in self._weights}
        if not new:
            return
        self._weights.update(new)
        heaviest = max(self._heaviest, *new.values())
        if heaviest > self._heaviest:
            self._heaviest = heaviest
            self._build(self._weights)
        else:
            self._build(new)

    def owners_from(self, point: int) -> Iterator[str]:
        """Every id on the ring once, clockwise from ``point``."""
        points, owners = self._points, self._owners
        size = len(points)
        start = bisect.bisect_left(points, point)
        remaining = len(self._weights)
        seen: set[str] = set()
        for step in range(size):
            owner = owners[(start + step) % size]
            if owner not in seen:
                yield owner
                seen.add(owner)
                remaining -= 1
                if remaining == 0:
                    return

    def _build(self, members: dict[str, float]) -> None:
        if len(members) == len(self._weights):
            ring: list[tuple[int, str]] = []
        else:
            ring = list(zip(self._points, self._owners, strict=True))
        for id, weight in members.items():
            vnodes = max(1, round(VNODES * weight / self._heaviest))
            ring.extend((hash_point(f"{id}#{i}"), id) for i in range(vnodes))
        ring.sort()
        self._points = [p for p, _ in ring]
        self._owners = [o for _, o in ring]
