"""The state interface every feature with shared state uses (idempotency, and later
caching, limits, jobs). Values are bytes; every key has a time to live.

``memory`` is the embedded default (one process); ``redis`` shares state across
processes and machines. A backend call never waits longer than its timeout: a Redis
that is down or slow raises ``StateUnavailable`` and each feature applies its own
documented fail-open or fail-closed policy.
"""

from __future__ import annotations

from typing import Protocol


class StateUnavailable(Exception):
    """The backend did not answer in time or at all."""


class StateBackend(Protocol):
    name: str

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl_s: float) -> None: ...

    async def add(self, key: str, value: bytes, ttl_s: float) -> bool:
        """Set ``key`` only if it is absent; True if this call set it."""
        ...

    async def delete(self, key: str) -> None: ...

    async def append(self, log: str, value: bytes, max_len: int) -> None:
        """Append to a shared, bounded log (oldest entries dropped past ``max_len``)."""
        ...

    async def read(self, log: str, after: str, count: int) -> list[tuple[str, bytes]]:
        """Entries appended after the entry id ``after`` ("0" = from the start)."""
        ...

    async def close(self) -> None: ...
