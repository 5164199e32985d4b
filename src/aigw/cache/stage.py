"""The cache stage: answer repeated requests from memory (L1) or Redis (L2).

Per model group, ``cache: off | deterministic | all`` decides what may be cached. The
key is the canonical request within a namespace (by default one per API key, so one
caller's answers are never served to another). A hit is served in the shape the new
request asks for — JSON, or a stream rebuilt from the stored answer — with
``X-Cache`` and ``Age``. Misses for the same key in flight at once make one upstream
call (single-flight). Only complete answers are stored: never errors, never a stream
that broke off. A Redis that is slow or down turns into a miss (fail open), counted
and logged once per outage.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from aigw.cache.entry import (
    assemble_chat,
    assemble_completion,
    decode_entry,
    encode_entry,
    parse_sse_chunks,
    sse_from_chat,
    sse_from_completion,
)
from aigw.cache.flight import Flight
from aigw.cache.key import (
    CacheControl,
    cache_key,
    cacheable,
    context_of,
    parse_cache_control,
    split_last_user,
)
from aigw.cache.lru import ByteLRU

if TYPE_CHECKING:  # numpy is only imported when a model turns the semantic cache on
    from aigw.cache.semantic import Embed, SemanticCache
from aigw.errors import GatewayError
from aigw.observability.logs import JsonLog
from aigw.observability.metrics import Metrics
from aigw.settings import CacheSettings, SemanticCacheSettings
from aigw.state.base import StateBackend, StateUnavailable
from aigw.types import Endpoint, GatewayRequest, GatewayResponse, Next, Result, StreamResponse

CACHED = (Endpoint.CHAT, Endpoint.COMPLETION, Endpoint.EMBEDDING)


@dataclass(frozen=True, slots=True)
class Semantic:
    """The semantic layer's parts: the index, how to embed, and which models use it."""

    cache: SemanticCache
    embed: Embed
    models: Mapping[str, SemanticCacheSettings]


@dataclass(frozen=True, slots=True)
class SemanticMiss:
    """What to remember about a request once its answer is stored."""

    context: str
    vector: list[float]


SSE = b"text/event-stream"


class CacheStage:
    def __init__(
        self,
        settings: CacheSettings,
        modes: Mapping[str, str],
        l1: ByteLRU | None,
        l2: StateBackend | None,
        metrics: Metrics,
        log: JsonLog,
        semantic: Semantic | None = None,
    ) -> None:
        self.settings = settings
        self.modes = modes
        self.semantic = semantic
        self.l1 = l1
        self.l2 = l2
        self.metrics = metrics
        self.log = log
        self.flights: dict[str, Flight] = {}
        self.l2_down = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def __call__(self, req: GatewayRequest, call_next: Next) -> Result:
        mode = self.modes.get(req.model, "off")
        if mode == "off" or req.endpoint not in CACHED:
            return await call_next(req)
        if not cacheable(req.body, mode, req.endpoint.value):
            return await call_next(req)
        headers = req.headers
        control = parse_cache_control(headers.get(b"cache-control"), headers.get(b"x-cache-ttl"))
        key = cache_key(req.endpoint.value, req.model, self._namespace(req), req.body)
        if not control.no_cache:
            hit = await self._lookup(key, control)
            if hit is not None:
                level, created, body = hit
                self.metrics.cache_requests.labels(level, "hit").inc()
                return _serve(req, body, level, created)
        probe = await self._semantic_probe(req, control) if self.semantic else None
        if isinstance(probe, tuple) and probe[0] == "hit":
            return probe[1]
        self.metrics.cache_requests.labels("all", "miss").inc()
        flight = self.flights.get(key)
        if flight is None:
            remember = probe if isinstance(probe, SemanticMiss) else None
            flight = Flight(call_next(req), lambda f: self._landed(key, f, control, req, remember))
            self.flights[key] = flight
        else:
            self.metrics.cache_joins.inc()
        return await self._from_flight(req, flight)

    async def stale(self, req: GatewayRequest) -> Result | None:
        """The cached answer to ``req`` if there is one, whatever the cache policy says
        about this request: for a request that may not go upstream (it was limited)."""
        if self.modes.get(req.model, "off") == "off" or req.endpoint not in CACHED:
            return None
        key = cache_key(req.endpoint.value, req.model, self._namespace(req), req.body)
        hit = await self._lookup(key, CacheControl())
        if hit is None:
            return None
        level, created, body = hit
        self.metrics.cache_requests.labels(level, "hit").inc()
        return _serve(req, body, level, created)

    def _namespace(self, req: GatewayRequest) -> str:
        spec = self.settings.namespace
        if spec == "shared":
            return "shared"
        name = spec.removeprefix("header:").lower().encode() if spec != "api-key" else b""
        value = req.headers.get(name or b"authorization", b"")
        # a digest, so no credential is kept in a key (or shows up in Redis)
        return hashlib.blake2b(value, digest_size=12).hexdigest() if value else "anonymous"

    # -- the semantic layer

    async def _semantic_probe(
        self, req: GatewayRequest, control: CacheControl
    ) -> tuple[str, Result] | SemanticMiss | None:
        """A semantic hit; else what to remember once the answer lands; None if n/a."""
        assert self.semantic is not None
        settings = self.semantic.models.get(req.model)
        split = split_last_user(req.body) if settings and req.endpoint is Endpoint.CHAT else None
        if settings is None or split is None:
            return None
        text, rest = split
        context = context_of(req.endpoint.value, req.model, self._namespace(req), rest)
        try:
            vector = await self.semantic.embed(settings.embedding_model, text)
        except GatewayError as exc:
            self.metrics.cache_semantic_errors.inc()
            self.log.warning("semantic cache: embedding failed", error=exc.message)
            return None
        found = (
            None
            if control.no_cache
            else (self.semantic.cache.search(context, vector, settings.threshold))
        )
        if found is not None:
            entry, similarity = found
            self.metrics.cache_similarity.observe(similarity)
            hit = await self._lookup(entry, control)
            if hit is not None:
                self.metrics.cache_requests.labels("semantic", "hit").inc()
                return "hit", _serve(req, hit[2], "semantic", hit[1])
        return SemanticMiss(context, vector)

    # -- lookups

    async def _lookup(self, key: str, control: CacheControl) -> tuple[str, float, bytes] | None:
        found = self._fresh(self.l1.get(key) if self.l1 else None, control)
        if found is not None:
            return "l1", *found
        raw = await self._l2_get(key)
        found = self._fresh(raw, control)
        if found is None or raw is None:
            return None
        if self.l1 is not None:  # an L2 hit refills L1 for what is left of its life
            age = time.time() - found[0]
            self._l1_put(key, raw, max(1.0, self.settings.ttl_s - age))
        return "l2", *found

    @staticmethod
    def _fresh(raw: bytes | None, control: CacheControl) -> tuple[float, bytes] | None:
        if raw is None:
            return None
        try:
            created, body = decode_entry(raw)
        except ValueError:
            return None
        if control.max_age is not None and time.time() - created > control.max_age:
            return None
        return created, body

    async def _l2_get(self, key: str) -> bytes | None:
        if self.l2 is None:
            return None
        try:
            value = await self.l2.get("cache:" + key)
        except StateUnavailable as exc:
            self._l2_failed(exc)
            return None
        self._l2_ok()
        return value

    def _l2_failed(self, exc: StateUnavailable) -> None:
        self.metrics.state_errors.labels("cache").inc()
        if not self.l2_down:
            self.l2_down = True
            self.log.warning("cache L2 unavailable: serving misses", error=str(exc))

    def _l2_ok(self) -> None:
        if self.l2_down:
            self.l2_down = False
            self.log.info("cache L2 available again")

    # -- storing

    def _landed(
        self, key: str, flight: Flight, control: CacheControl, req: GatewayRequest,
        remember: SemanticMiss | None,
    ) -> None:  # fmt: skip
        if self.flights.get(key) is flight:
            del self.flights[key]
        if flight.error is not None or control.no_store:
            return
        body = _answer_json(flight, req.endpoint)
        if body is None or len(body) > self.settings.max_entry_bytes:
            return
        ttl = control.ttl if control.ttl is not None else self.settings.ttl_s
        raw = encode_entry(time.time(), body)
        self._l1_put(key, raw, ttl)
        loop = flight.task.get_loop()
        if self.l2 is not None:
            self._background(loop.create_task(self._l2_put(key, raw, ttl)))
        if remember is not None and self.semantic is not None:
            semantic = self.semantic.cache.remember(remember.context, key, remember.vector)
            self._background(loop.create_task(semantic))

    def _background(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)  # kept until done: no task is dropped mid-way
        task.add_done_callback(self._tasks.discard)

    def _l1_put(self, key: str, raw: bytes, ttl: float) -> None:
        if self.l1 is not None:
            evicted = self.l1.put(key, raw, ttl)
            if evicted:
                self.metrics.cache_evictions.inc(evicted)

    async def _l2_put(self, key: str, raw: bytes, ttl: float) -> None:
        assert self.l2 is not None
        try:
            await self.l2.set("cache:" + key, raw, ttl)
        except StateUnavailable as exc:
            self._l2_failed(exc)
            return
        self._l2_ok()

    # -- answering from a flight

    async def _from_flight(self, req: GatewayRequest, flight: Flight) -> Result:
        await flight.first()
        if flight.streamed:
            if req.stream:
                req.cache = "MISS"
                return StreamResponse(flight.replay(), headers=[(b"x-cache", b"MISS")])
            try:
                await flight.complete()
            finally:
                flight.leave()
        else:
            flight.leave()
        if flight.error is not None:
            raise flight.error
        body = _answer_json(flight, req.endpoint)
        if body is None:  # e.g. a status the cache does not keep: pass it on as it was
            assert flight.response is not None
            return flight.response
        return _serve(req, body, "MISS", None)


def _answer_json(flight: Flight, endpoint: Endpoint) -> bytes | None:
    """The answer as stored: JSON; a stream is assembled, and refused if it broke off."""
    if flight.response is not None:
        ok = flight.response.status == 200 and flight.response.content_type != SSE
        return flight.response.body if ok else None
    try:
        chunks = parse_sse_chunks(b"".join(flight.chunks))
    except ValueError:
        return None
    assemble = assemble_completion if endpoint is Endpoint.COMPLETION else assemble_chat
    return orjson.dumps(assemble(chunks))


def _serve(req: GatewayRequest, body: bytes, level: str, created: float | None) -> Result:
    req.cache = "MISS" if level == "MISS" else "HIT-" + level.upper()
    headers = [(b"x-cache", req.cache.encode())]
    if created is not None:
        headers.append((b"age", b"%d" % max(0, int(time.time() - created))))
    if not req.stream:
        return GatewayResponse(body, headers=headers)
    answer: Any = orjson.loads(body)
    options = req.body.get("stream_options")
    usage = isinstance(options, dict) and options.get("include_usage") is True
    render = sse_from_completion if req.endpoint is Endpoint.COMPLETION else sse_from_chat
    return StreamResponse(_once(render(answer, usage)), headers=headers)


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data
