"""The semantic cache: answer a paraphrase of a question already asked.

The last user message is embedded (through aigw's own pipeline, so any embeddings
model the gateway serves will do) and searched within its *context*: a hash of
everything else in the request — namespace, model group, system prompt, earlier turns,
parameters — so a different system prompt or parameter never matches. A hit needs
cosine similarity ≥ the model's threshold; it points at an exact-cache entry, which is
served as a ``HIT-SEMANTIC``.

With the Redis backend the vectors are appended to a shared log that every gateway
process reads (at start, then every ``SYNC_INTERVAL_S``), so replicas share them; the
index in each process stays bounded (oldest first). Embedding or Redis failures make
the lookup a miss, never a failed request.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Awaitable, Callable

import numpy as np
import orjson

from aigw.cache.vectors import VectorIndex
from aigw.errors import UpstreamProtocolError
from aigw.observability.logs import JsonLog
from aigw.state.base import StateBackend, StateUnavailable
from aigw.types import Endpoint, GatewayRequest, GatewayResponse, Result

LOG = "semantic"
SYNC_INTERVAL_S = 1.0
Embed = Callable[[str, str], Awaitable[list[float]]]  # (embeddings model, text) -> vector


class SemanticCache:
    def __init__(self, state: StateBackend | None, max_entries: int, log: JsonLog) -> None:
        self.index = VectorIndex(max_entries)
        self.state = state  # the shared log lives here when it is Redis
        self.max_entries = max_entries
        self.log = log
        self._cursor = "0"
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.state is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._follow())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def search(
        self, context: str, vector: list[float], threshold: float
    ) -> tuple[str, float] | None:
        try:
            return self.index.search(context, vector, threshold)
        except ValueError:
            return None

    async def remember(self, context: str, key: str, vector: list[float]) -> None:
        try:
            self.index.add(context, key, vector)
        except ValueError:
            return
        if self.state is None:
            return
        record = _encode(context, key, vector)
        with contextlib.suppress(StateUnavailable):  # others learn it later, or never
            await self.state.append(LOG, record, self.max_entries)

    async def _follow(self) -> None:
        """Add what other processes remembered (our own entries come back too: harmless)."""
        assert self.state is not None
        while True:
            try:
                entries = await self.state.read(LOG, self._cursor, 1000)
            except StateUnavailable:
                entries = []
            for entry_id, value in entries:
                self._cursor = entry_id
                decoded = _decode(value)
                if decoded is not None:
                    with contextlib.suppress(ValueError):
                        self.index.add(*decoded)
            if len(entries) < 1000:
                await asyncio.sleep(SYNC_INTERVAL_S)


def _encode(context: str, key: str, vector: list[float]) -> bytes:
    head = f"{context}|{key}|".encode()
    return head + np.asarray(vector, dtype=np.float32).tobytes()


def _decode(value: bytes) -> tuple[str, str, list[float]] | None:
    parts = value.split(b"|", 2)
    if len(parts) != 3 or len(parts[2]) % 4:
        return None
    vector = np.frombuffer(parts[2], dtype=np.float32).tolist()
    return parts[0].decode(), parts[1].decode(), vector


def embedder(call: Callable[[GatewayRequest], Awaitable[Result]], timeout_s: float) -> Embed:
    """Embeddings through aigw's own routing: any provider, or a local worker."""
    counter = itertools.count(1)

    async def embed(model: str, text: str) -> list[float]:
        body = {"model": model, "input": text}
        loop = asyncio.get_running_loop()
        req = GatewayRequest(
            f"semantic-{next(counter)}", Endpoint.EMBEDDING, model, False, body,
            orjson.dumps(body), loop.time() + timeout_s,
        )  # fmt: skip
        result = await call(req)
        if not isinstance(result, GatewayResponse):
            raise UpstreamProtocolError("embeddings answered with a stream")
        try:
            vector = orjson.loads(result.body)["data"][0]["embedding"]
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
            raise UpstreamProtocolError("embeddings answer without data[0].embedding") from None
        if not isinstance(vector, list):
            raise UpstreamProtocolError("embeddings answer is not a float list")
        return [float(x) for x in vector]

    return embed
