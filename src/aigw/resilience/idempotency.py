"""The idempotency stage: a request repeated with the same key gets the first answer.

A key (``Idempotency-Key``, or ``X-Request-ID`` when configured) is claimed in the
state backend with set-if-absent. The claimant runs the request and stores a
successful answer (a stream is stored whole once it completes); a repeat within the
TTL replays it, and a repeat that arrives while the first is in flight waits for it
and replays it: one upstream call in all. Errors are not stored: the claim is
released so the client's retry really runs. A key reused with a different body is a
422 for ``Idempotency-Key``; for ``X-Request-ID`` it just isn't deduplicated.

Policy when the backend is down: fail open (the request runs, without deduplication),
with a warning in the log and a metric.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator

import orjson

from aigw.errors import DeadlineExceeded, IdempotencyConflict
from aigw.observability.logs import JsonLog
from aigw.observability.metrics import Metrics
from aigw.settings import IdempotencySettings
from aigw.state.base import StateBackend, StateUnavailable
from aigw.types import GatewayRequest, GatewayResponse, Next, Result, StreamResponse, close_stream

PENDING_TTL_FLOOR_S = 30.0
REPLAYED = (b"idempotent-replayed", b"true")
_RUN_IT = object()  # a follower's verdict: no usable claim, run the request unprotected


class IdempotencyStage:
    def __init__(
        self, state: StateBackend, settings: IdempotencySettings, metrics: Metrics, log: JsonLog
    ) -> None:
        self.state = state
        self.settings = settings
        self.metrics = metrics
        self.log = log
        self.loop = asyncio.get_running_loop()
        self._done_here: dict[str, asyncio.Event] = {}  # wakes followers in this process

    async def __call__(self, req: GatewayRequest, call_next: Next) -> Result:
        if not req.idempotency_key or not (req.strict_idempotency or self.settings.use_request_id):
            return await call_next(req)
        key = f"idem:{req.endpoint.value}:{req.idempotency_key}"
        digest = hashlib.blake2b(req.raw, digest_size=16).hexdigest()
        while True:
            try:
                ttl = max(PENDING_TTL_FLOOR_S, req.deadline - self.loop.time())
                claimed = await self.state.add(key, _head("pending", digest), ttl)
            except StateUnavailable as exc:
                self._backend_down(exc)
                return await call_next(req)
            if claimed:
                return await self._lead(req, key, digest, call_next)
            outcome = await self._follow(req, key, digest)
            if outcome is _RUN_IT:
                return await call_next(req)
            if isinstance(outcome, GatewayResponse | StreamResponse):
                return outcome
            # None: the claim was released (the first request failed); claim it again

    def _backend_down(self, exc: StateUnavailable) -> None:
        self.metrics.state_errors.labels("idempotency").inc()
        self.log.warning("idempotency skipped: state backend unavailable", error=str(exc))

    # -- the first request with a key

    async def _lead(self, req: GatewayRequest, key: str, digest: str, call_next: Next) -> Result:
        done = self._done_here[key] = asyncio.Event()
        try:
            result = await call_next(req)
        except BaseException:
            await self._release(key, done)
            raise
        if isinstance(result, StreamResponse):
            upstream = result.chunks
            result.chunks = self._store_at_end(key, digest, upstream, result.content_type, done)
        elif result.status < 300 and len(result.body) <= self.settings.max_response_bytes:
            await self._store(key, digest, result.body, result.content_type, False, done)
        else:
            await self._release(key, done)
        return result

    async def _store_at_end(
        self, key: str, digest: str, chunks: AsyncIterator[bytes], content_type: bytes,
        done: asyncio.Event,
    ) -> AsyncIterator[bytes]:  # fmt: skip
        parts: list[bytes] = []
        size = 0
        complete = False
        try:
            async for chunk in chunks:
                size += len(chunk)
                parts.append(chunk)
                yield chunk
            complete = True
        finally:
            await close_stream(chunks)  # a client that left cancels the upstream now
            body = b"".join(parts)
            if complete and size <= self.settings.max_response_bytes and not _failed(body):
                await self._store(key, digest, body, content_type, True, done)
            else:
                await self._release(key, done)

    async def _store(
        self, key: str, digest: str, body: bytes, content_type: bytes, stream: bool,
        done: asyncio.Event,
    ) -> None:  # fmt: skip
        record = _head("done", digest, ct=content_type.decode(), stream=stream) + body
        try:
            await self.state.set(key, record, self.settings.ttl_s)
        except StateUnavailable as exc:
            self._backend_down(exc)
            await self._release(key, done)
            return
        self._wake(key, done)

    async def _release(self, key: str, done: asyncio.Event) -> None:
        # If this fails the claim expires with its TTL; followers then run the request.
        with contextlib.suppress(StateUnavailable):
            await self.state.delete(key)
        self._wake(key, done)

    def _wake(self, key: str, done: asyncio.Event) -> None:
        done.set()
        if self._done_here.get(key) is done:
            del self._done_here[key]

    # -- a repeat

    async def _follow(self, req: GatewayRequest, key: str, digest: str) -> Result | object | None:
        """The stored answer; None if the claim is gone; ``_RUN_IT`` to run unprotected."""
        delay = 0.005
        while True:
            try:
                record = await self.state.get(key)
            except StateUnavailable as exc:
                self._backend_down(exc)
                return _RUN_IT
            if record is None:
                return None
            head_line, _, body = record.partition(b"\n")
            head = orjson.loads(head_line)
            if head.get("h") != digest:
                if req.strict_idempotency:
                    raise IdempotencyConflict(
                        "this Idempotency-Key was used with a different request body",
                        param="Idempotency-Key",
                    )
                return _RUN_IT  # an X-Request-ID reused for another request
            if head.get("s") == "done":
                self.metrics.idempotent_replays.inc()
                return _replay(head, body)
            await self._wait(key, delay, req)
            delay = min(delay * 2, 0.1)

    async def _wait(self, key: str, delay: float, req: GatewayRequest) -> None:
        left = req.deadline - self.loop.time()
        if left <= 0:
            raise DeadlineExceeded("the first request with this idempotency key is still running")
        event = self._done_here.get(key)
        if event is None:  # the first request runs in another process: poll
            await asyncio.sleep(min(delay, left))
            return
        try:
            async with asyncio.timeout(left):
                await event.wait()
        except TimeoutError:
            pass  # the next look at the record decides


def _head(state: str, digest: str, **extra: object) -> bytes:
    return orjson.dumps({"s": state, "h": digest, **extra}) + b"\n"


def _failed(body: bytes) -> bool:
    """A stream that ended with an error event (stored only if it completed cleanly)."""
    tail = body[-4096:]
    return (b'"error"' in tail) and not (b"[DONE]" in tail or b"message_stop" in tail)


def _replay(head: dict[str, object], body: bytes) -> Result:
    content_type = str(head.get("ct", "application/json")).encode()
    if head.get("stream"):
        return StreamResponse(_once(body), content_type=content_type, headers=[REPLAYED])
    return GatewayResponse(body, content_type=content_type, headers=[REPLAYED])


async def _once(body: bytes) -> AsyncIterator[bytes]:
    yield body
