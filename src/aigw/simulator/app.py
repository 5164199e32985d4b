"""The simulator's request handler: routes, knobs, faults, stats.

One ``Simulator`` owns the runtime state (current knobs, stats, the seeded fault
dice, a reply counter) and answers ``aigw.http.server`` requests. Resets and cut
streams are acted out by raising ``AbortConnection``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from collections.abc import AsyncIterator, Callable

import orjson

from aigw.http.server import AbortConnection, Request, Response, StreamingResponse
from aigw.simulator import anthropic_dialect as anthropic
from aigw.simulator import openai_dialect as openai
from aigw.simulator.embeddings import embeddings_body
from aigw.simulator.faults import NO_FAULT, Fault, decide
from aigw.simulator.knobs import Knobs, from_headers, update
from aigw.simulator.stats import Stats
from aigw.simulator.streaming import Stream, play

Answer = Response | StreamingResponse
Body = dict[str, object]
Route = Callable[[Request, Body, str, Knobs, Fault], Answer]

MODELS = ("sim-gpt", "gpt-4o-mini", "gpt-4o", "text-embedding-3-small", "claude-sonnet-4-5")
_MODELS_BODY = orjson.dumps(
    {
        "object": "list",
        "data": [
            {"id": m, "object": "model", "created": 0, "owned_by": "aigw-simulator"} for m in MODELS
        ],
    }
)
_HEALTH_BODY = b'{"status":"ok"}'
_AZURE = b"/openai/deployments/"
_RETRY_AFTER = (b"retry-after", b"1")


class Simulator:
    def __init__(self, defaults: Knobs) -> None:
        self.defaults = defaults
        self.knobs = defaults
        self.stats = Stats()
        self.rng = random.Random(defaults.seed)
        self.seq = itertools.count(1)
        self.closing = asyncio.Event()
        self._slots: asyncio.Semaphore | None = None
        self._slots_size = 0
        self.model_routes: dict[bytes, Route] = {
            b"/v1/chat/completions": self._chat,
            b"/v1/completions": self._completion,
            b"/v1/embeddings": self._embeddings,
            b"/v1/messages": self._messages,
        }
        self.get_routes: dict[bytes, Callable[[], Answer]] = {
            b"/v1/models": lambda: Response(_MODELS_BODY),
            b"/health": lambda: Response(_HEALTH_BODY),
            b"/sim/stats": lambda: Response(self.stats.to_json()),
            b"/sim/config": self._config_body,
        }
        self.post_routes: dict[bytes, Callable[[bytes], Answer]] = {
            b"/sim/config": self._configure,
            b"/sim/reset": self._reset,
        }

    # -- dispatch

    async def handle(self, request: Request) -> Answer:
        path = request.path
        route = self.model_routes.get(path)
        if route is not None:
            return await self._model_call(request, route, path, None)
        if path.startswith(_AZURE):
            return await self._azure(request)
        if not path.startswith(b"/sim/"):
            self.stats.count(path)  # probes are counted, not kept: "last" stays a model call
        if request.method == b"GET" and path in self.get_routes:
            return self.get_routes[path]()
        if request.method == b"POST" and path in self.post_routes:
            return self.post_routes[path](request.body)
        known = path in self.get_routes or path in self.post_routes
        return _openai_error(405 if known else 404, "no such route in the simulator", request)

    async def _azure(self, request: Request) -> Answer:
        deployment, _, rest = request.path[len(_AZURE) :].partition(b"/")
        route = self.model_routes.get(b"/v1/" + rest)
        if route is None or rest == b"messages" or not deployment:
            self.stats.count(request.path)
            return _openai_error(404, "no such Azure route in the simulator", request)
        return await self._model_call(request, route, request.path, deployment.decode())

    # -- model endpoints

    async def _model_call(
        self,
        request: Request,
        route: Route,
        path: bytes,
        deployment: str | None,
    ) -> Answer:
        in_anthropic = path == b"/v1/messages"
        try:
            body = orjson.loads(request.body)
        except orjson.JSONDecodeError:
            body = None
        self.stats.record(request.method, path, request.headers, body)
        if request.method != b"POST":
            return _error(in_anthropic, 405, "use POST", request)
        if not isinstance(body, dict):
            return _error(in_anthropic, 400, "the body must be a JSON object", request)
        try:
            knobs = from_headers(self.knobs, request.headers)
        except ValueError as exc:
            return _error(in_anthropic, 400, f"bad x-sim header: {exc}", request)
        fault = decide(knobs.fault, knobs.fault_rate, self.rng)
        self.stats.enter()
        answer: Answer | None = None
        try:
            async with self._capacity(knobs.capacity):
                if knobs.latency_ms > 0:
                    await asyncio.sleep(knobs.latency_ms / 1000.0)
            if fault is not NO_FAULT:
                self.stats.fault(str(fault))
                answer = await self._fail(fault, in_anthropic, request, body)
                if answer is not None:
                    return answer
            model = body.get("model")
            model = model if isinstance(model, str) else deployment or "sim-model"
            answer = route(request, body, model, knobs, fault)
            return answer
        finally:
            if not isinstance(answer, StreamingResponse):  # a stream leaves when it ends
                self.stats.leave()

    def _capacity(self, capacity: int) -> contextlib.AbstractAsyncContextManager[object]:
        """Model calls beyond ``capacity`` queue here, like a busy model server's."""
        if capacity <= 0:
            return contextlib.nullcontext()
        if self._slots is None or self._slots_size != capacity:
            self._slots, self._slots_size = asyncio.Semaphore(capacity), capacity
        return self._slots

    async def _fail(
        self, fault: Fault, in_anthropic: bool, request: Request, body: Body
    ) -> Answer | None:
        """Act out ``fault``; an answer to send, or None to go on (a ``drop`` stream)."""
        if fault.kind == "status":
            return _error(in_anthropic, fault.arg, f"simulated fault {fault}", request, fault.code)
        if fault.kind == "drop" and body.get("stream") is True:
            return None
        if fault.kind == "timeout":
            await self.closing.wait()  # until the client leaves or we shut down
        # reset: RST, not FIN, so the client sees a connection reset
        raise AbortConnection(reset=fault.kind == "reset")

    def _stream(self, stream: Stream, knobs: Knobs, fault: Fault, request: Request) -> Answer:
        drop_after = fault.arg if fault.kind == "drop" else None
        chunks = play(stream, knobs.tokens_per_s, drop_after)
        return StreamingResponse(self._watch(chunks), headers=_echo(request))

    async def _watch(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """Count streams the client abandoned (e.g. a gateway cancelling upstream)."""
        try:
            async for chunk in chunks:
                yield chunk
        except (asyncio.CancelledError, GeneratorExit):
            self.stats.streams_cancelled += 1
            raise
        finally:
            self.stats.leave()

    def _chat(self, request: Request, body: Body, model: str, knobs: Knobs, fault: Fault) -> Answer:
        reply = openai.chat_reply(body, knobs.completion_tokens)
        seq, now = next(self.seq), int(time.time())
        if body.get("stream") is True:
            stream = openai.chat_stream(reply, model, seq, now, openai.wants_usage(body))
            return self._stream(stream, knobs, fault, request)
        return Response(openai.chat_body(reply, model, seq, now), headers=_echo(request))

    def _completion(
        self, request: Request, body: Body, model: str, knobs: Knobs, fault: Fault
    ) -> Answer:
        reply = openai.completion_reply(body, knobs.completion_tokens)
        seq, now = next(self.seq), int(time.time())
        if body.get("stream") is True:
            stream = openai.completion_stream(reply, model, seq, now, openai.wants_usage(body))
            return self._stream(stream, knobs, fault, request)
        return Response(openai.completion_body(reply, model, seq, now), headers=_echo(request))

    def _embeddings(
        self, request: Request, body: Body, model: str, knobs: Knobs, fault: Fault
    ) -> Answer:
        try:
            answer = embeddings_body(body, model, knobs.embedding_dims)
        except ValueError as exc:
            return _openai_error(400, str(exc), request)
        return Response(answer, headers=_echo(request))

    def _messages(
        self, request: Request, body: Body, model: str, knobs: Knobs, fault: Fault
    ) -> Answer:
        reply = anthropic.message_reply(body, knobs.completion_tokens)
        seq = next(self.seq)
        if body.get("stream") is True:
            return self._stream(anthropic.message_stream(reply, model, seq), knobs, fault, request)
        return Response(anthropic.message_body(reply, model, seq), headers=_echo(request))

    # -- control endpoints

    def _config_body(self) -> Response:
        return Response(orjson.dumps(self.knobs.to_dict()))

    def _configure(self, raw: bytes) -> Response:
        try:
            changes = orjson.loads(raw)
            if not isinstance(changes, dict):
                raise ValueError("the body must be a JSON object")
            knobs = update(self.knobs, changes)
        except ValueError as exc:  # orjson.JSONDecodeError is a ValueError
            return Response(openai.error_body(400, str(exc)), 400)
        if "seed" in changes:  # named again, even unchanged: the dice start over
            self.rng.seed(knobs.seed)
        self.knobs = knobs
        return self._config_body()

    def _reset(self, raw: bytes) -> Response:
        self.knobs = self.defaults
        self.rng.seed(self.defaults.seed)
        self.stats.reset()
        return self._config_body()


def _echo(request: Request) -> list[tuple[bytes, bytes]]:
    rid = request.headers.get(b"x-request-id")
    return [(b"x-request-id", rid)] if rid is not None else []


def _error(
    in_anthropic: bool, status: int, message: str, request: Request, code: str = ""
) -> Response:
    body = (
        anthropic.error_body(status, message)
        if in_anthropic
        else (openai.error_body(status, message, code))
    )
    headers = _echo(request)
    if status in (429, 503):
        headers.append(_RETRY_AFTER)
    return Response(body, status, headers=headers)


def _openai_error(status: int, message: str, request: Request) -> Response:
    return _error(False, status, message, request)
