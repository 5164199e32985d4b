"""An in-process LRU bounded by the total size of its values, each entry with its own TTL.

Pure: time comes from the injected ``clock`` (monotonic seconds); every operation is O(1).
"""

from __future__ import annotations

import builtins
from collections import OrderedDict
from collections.abc import Callable


class ByteLRU:
    """Holds at most ``max_bytes`` of values (keys are not counted).

    The most recently used entry is at the end. An expired entry is dropped when it is
    read, or when it reaches the cold end while ``put`` makes room. ``evictions`` counts
    live entries pushed out for room, the number that says the cache is too small.
    """

    # ``builtins.bytes`` in annotations: inside the class, ``bytes`` is the property.
    __slots__ = ("_clock", "_entries", "_size", "evictions", "max_bytes")

    def __init__(self, max_bytes: int, clock: Callable[[], float]) -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self.max_bytes = max_bytes
        self.evictions = 0
        self._clock = clock
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._size = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        """The total size of the values held."""
        return self._size

    def get(self, key: str) -> builtins.bytes | None:
        """The live value for ``key`` (now the most recently used), or None."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        value, expires = entry
        if self._clock() >= expires:
            self.delete(key)
            return None
        self._entries.move_to_end(key)
        return value

    def put(self, key: str, value: builtins.bytes, ttl_s: float) -> int:
        """Store ``value`` for ``ttl_s`` seconds; returns how many live entries it evicted.

        A value larger than ``max_bytes``, or a ``ttl_s`` that is not positive, is not
        stored, and the old value for ``key`` (if any) is dropped all the same: after a
        ``put`` the key never answers with an older value.
        """
        self.delete(key)
        if len(value) > self.max_bytes or not ttl_s > 0:
            return 0
        now = self._clock()
        evicted = self._make_room(len(value), now)
        self._entries[key] = (value, now + ttl_s)
        self._size += len(value)
        return evicted

    def delete(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._size -= len(entry[0])

    def _make_room(self, needed: int, now: float) -> int:
        evicted = 0
        while self._size + needed > self.max_bytes:
            _, (value, expires) = self._entries.popitem(last=False)
            self._size -= len(value)
            if expires > now:
                evicted += 1
        self.evictions += evicted
        return evicted
