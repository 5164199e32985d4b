"""The Redis state backend (redis-py asyncio, pooled), every call bounded by a timeout."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

from redis import asyncio as aioredis
from redis.exceptions import RedisError

from aigw.state.base import StateUnavailable

T = TypeVar("T")


class RedisState:
    name = "redis"

    def __init__(self, url: str, timeout_s: float, prefix: str = "aigw:") -> None:
        self.timeout_s = timeout_s
        self.prefix = prefix
        self.client = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            max_connections=256,
            health_check_interval=30,
        )

    async def _call(self, operation: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(self.timeout_s):
                return await operation
        except (TimeoutError, RedisError, OSError) as exc:
            raise StateUnavailable(f"redis: {type(exc).__name__}: {exc}") from None

    async def get(self, key: str) -> bytes | None:
        value = await self._call(self.client.get(self.prefix + key))
        return value if isinstance(value, bytes) else None

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        await self._call(self.client.set(self.prefix + key, value, px=max(1, int(ttl_s * 1000))))

    async def add(self, key: str, value: bytes, ttl_s: float) -> bool:
        ms = max(1, int(ttl_s * 1000))
        return bool(await self._call(self.client.set(self.prefix + key, value, px=ms, nx=True)))

    async def delete(self, key: str) -> None:
        await self._call(self.client.delete(self.prefix + key))

    async def append(self, log: str, value: bytes, max_len: int) -> None:
        stream = self.prefix + log
        await self._call(self.client.xadd(stream, {b"v": value}, maxlen=max_len, approximate=True))

    async def read(self, log: str, after: str, count: int) -> list[tuple[str, bytes]]:
        stream = self.prefix + log
        replies: Any = await self._call(self.client.xread({stream: after}, count=count))
        entries: list[tuple[str, bytes]] = []
        for _name, items in replies or []:
            for entry_id, fields in items:
                value = fields.get(b"v")
                if isinstance(value, bytes):
                    ident = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
                    entries.append((ident, value))
        return entries

    async def close(self) -> None:
        await self.client.aclose()
