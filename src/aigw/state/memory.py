"""The in-memory state backend: one process, bounded, expiring lazily."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable


class MemoryState:
    name = "memory"

    def __init__(self, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic):
        self.max_keys = max_keys
        self.clock = clock
        self._data: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._logs: dict[str, list[tuple[str, bytes]]] = {}
        self._log_seq = 0

    def _live(self, key: str) -> bytes | None:
        item = self._data.get(key)
        if item is None:
            return None
        expires, value = item
        if expires <= self.clock():
            del self._data[key]
            return None
        return value

    def _put(self, key: str, value: bytes, ttl_s: float) -> None:
        self._data[key] = (self.clock() + ttl_s, value)
        self._data.move_to_end(key)
        while len(self._data) > self.max_keys:
            self._data.popitem(last=False)  # the oldest write goes first

    async def get(self, key: str) -> bytes | None:
        return self._live(key)

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        self._put(key, value, ttl_s)

    async def add(self, key: str, value: bytes, ttl_s: float) -> bool:
        if self._live(key) is not None:
            return False
        self._put(key, value, ttl_s)
        return True

    async def delete(self, key: str) -> None:
        self._data.pop(key, None)

    async def append(self, log: str, value: bytes, max_len: int) -> None:
        entries = self._logs.setdefault(log, [])
        self._log_seq += 1
        entries.append((f"{self._log_seq}-0", value))
        del entries[: max(0, len(entries) - max_len)]

    async def read(self, log: str, after: str, count: int) -> list[tuple[str, bytes]]:
        since = int(after.split("-")[0])
        newer = [e for e in self._logs.get(log, []) if int(e[0].split("-")[0]) > since]
        return newer[:count]

    async def close(self) -> None:
        self._data.clear()
