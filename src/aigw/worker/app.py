"""The worker's routes: OpenAI-compatible endpoints over the model slots.

    POST /v1/embeddings         embedding models; ``encoding_format`` float or base64
    POST /v1/chat/completions   generation models; ``stream`` answers with SSE chunks
    POST /v1/completions        generation models; likewise
    POST /v1/classify           classification models: ``{"model", "texts": [...]}``
    GET  /v1/models, /v1/models/{id}, /health (alive), /ready (models warmed), /metrics

Every answer carries the worker's load for the gateway's ``dynamic`` balancer:
``x-aigw-load`` (0..1) is the items waiting or running for the model the request named
divided by that model's ``max_queue`` (for a request that names no model: summed over
every model), and ``x-aigw-queue-depth`` is that item count. On CUDA,
``x-aigw-gpu-memory`` (0..1) and ``x-aigw-gpu-utilization`` (0..1, needs NVML) follow.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import orjson

from aigw.errors import (
    GatewayError,
    InvalidRequest,
    MethodNotAllowed,
    ModelNotFound,
    RouteNotFound,
    ServiceUnavailable,
)
from aigw.http.server import Request, Response, StreamingResponse
from aigw.observability.logs import JsonLog
from aigw.observability.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from aigw.providers.sse import frame
from aigw.worker import openai_wire as wire
from aigw.worker.batcher import BatcherClosed, QueueFull
from aigw.worker.contract import Generated, Kind
from aigw.worker.metrics import GpuProbe, WorkerMetrics
from aigw.worker.server import Generation, ModelSlot

Answer = Response | StreamingResponse
CLIENT_CLOSED = 499  # nginx's convention for "the client went away first"
MAX_STOP = 4  # OpenAI's limit on stop sequences
dumps = orjson.dumps


@dataclass(slots=True)
class Call:
    """What one request learnt about itself, for its headers and its metrics."""

    route: str
    model: str = "none"  # the name the request gave; "none" for routes without one
    slot: ModelSlot | None = None
    status: int = 200


class WorkerApp:
    """The HTTP handler. ``draining`` is set at shutdown; ``gpu`` once models are on CUDA."""

    def __init__(
        self, slots: Mapping[str, ModelSlot], metrics: WorkerMetrics, log: JsonLog
    ) -> None:
        self.slots = slots
        self.metrics = metrics
        self.log = log
        self.draining = False
        self.gpu: GpuProbe | None = None
        self._id_prefix = os.urandom(6).hex()
        self._ids = itertools.count(1)
        self._post: dict[bytes, Callable[[Request, Call], Awaitable[Answer]]] = {
            b"/v1/embeddings": self._embeddings,
            b"/v1/chat/completions": self._chat,
            b"/v1/completions": self._completions,
            b"/v1/classify": self._classify,
        }
        self._get: dict[bytes, Callable[[], Response]] = {
            b"/health": lambda: Response(b'{"status":"ok"}'),
            b"/ready": self._ready,
            b"/v1/models": self._models,
            b"/metrics": lambda: Response(metrics.render(), content_type=METRICS_CONTENT_TYPE),
        }

    @property
    def ready(self) -> bool:
        return not self.draining and all(slot.ready for slot in self.slots.values())

    async def __call__(self, request: Request) -> Answer:
        call = Call(self._route_label(request.path))
        try:
            answer = await self._route(request, call)
        except GatewayError as err:
            answer = _error(err)
        except asyncio.CancelledError:  # the client went away
            self._count(call, CLIENT_CLOSED)
            raise
        except Exception as exc:  # the boundary: a bug becomes a logged 500, not a dead socket
            self._crash(exc)
            answer = _error(GatewayError("internal error"))
        answer.headers += self._load_headers(call.slot)
        if isinstance(answer, Response):
            self._count(call, answer.status)
        return answer

    def _route_label(self, path: bytes) -> str:
        if path in self._post or path in self._get:
            return path.decode("latin-1")
        return "/v1/models/{id}" if path.startswith(b"/v1/models/") else "other"

    async def _route(self, request: Request, call: Call) -> Answer:
        post = self._post.get(request.path)
        if post is not None:
            if request.method != b"POST":
                raise MethodNotAllowed(f"{call.route} accepts POST only")
            return await post(request, call)
        get = self._get.get(request.path)
        if get is None and request.path.startswith(b"/v1/models/"):
            get = partial(self._model, request.path.removeprefix(b"/v1/models/"), call)
        if get is None:
            raise RouteNotFound(f"no route for {request.path.decode('latin-1')}")
        if request.method not in (b"GET", b"HEAD"):
            raise MethodNotAllowed(f"{call.route} accepts GET only")
        return get()

    # -- model routes

    async def _embeddings(self, request: Request, call: Call) -> Answer:
        body = wire.json_object(request.body)
        slot = self._slot(body, "embedding", call)
        texts = wire.texts(body.get("input"), "input", limit=slot.settings.max_queue)
        encoding = body.get("encoding_format", "float")
        if encoding not in ("float", "base64", None):
            raise InvalidRequest(
                "`encoding_format` must be float or base64", param="encoding_format"
            )
        dims = body.get("dimensions")
        runner_dims = getattr(slot.runner, "dims", None)
        if dims is not None and dims != runner_dims:
            raise InvalidRequest(
                f"model `{slot.name}` makes {runner_dims}-dimensional vectors only",
                param="dimensions",
            )
        with _admission(slot):
            embedded = await slot.embed(texts)
        tokens = sum(count for _, count in embedded)
        self.metrics.tokens_done(slot.name, tokens)
        encode = wire.encode_base64 if encoding == "base64" else None
        data = [
            {"object": "embedding", "index": i, "embedding": encode(v) if encode else v}
            for i, (v, _) in enumerate(embedded)
        ]
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return Response(dumps({"object": "list", "data": data, "model": slot.name, "usage": usage}))

    async def _classify(self, request: Request, call: Call) -> Answer:
        body = wire.json_object(request.body)
        slot = self._slot(body, "classification", call)
        texts = wire.texts(body.get("texts"), "texts", limit=slot.settings.max_texts)
        with _admission(slot):
            results = await slot.classify(texts)
        out = [{"label": r.label, "confidence": r.confidence} for r in results]
        return Response(dumps({"model": slot.name, "results": out}))

    async def _chat(self, request: Request, call: Call) -> Answer:
        body = wire.json_object(request.body)
        slot = self._slot(body, "generation", call)
        prompt = slot.render(wire.messages(body.get("messages")))
        return await self._generate(slot, body, prompt, call, wire.Shape.chat(self._id("chatcmpl")))

    async def _completions(self, request: Request, call: Call) -> Answer:
        body = wire.json_object(request.body)
        slot = self._slot(body, "generation", call)
        prompt = wire.prompt(body.get("prompt"))
        return await self._generate(
            slot, body, prompt, call, wire.Shape.completion(self._id("cmpl"))
        )

    async def _generate(
        self, slot: ModelSlot, body: dict[str, Any], prompt: str, call: Call, shape: wire.Shape
    ) -> Answer:
        req = wire.generation_request(body, prompt, slot.settings.max_new_tokens)
        stream = body.get("stream")
        if stream is not None and not isinstance(stream, bool):
            raise InvalidRequest("`stream` must be a boolean", param="stream")
        if not stream:
            with _admission(slot):
                result = await slot.generate(req)
            self._tokens(slot, result)
            return Response(shape.whole(slot.name, result))
        options = body.get("stream_options")
        usage = isinstance(options, dict) and options.get("include_usage") is True
        gen = slot.stream(req)
        try:
            # Wait for the first piece so that a refusal (a full queue) is still an
            # HTTP status, not an error event after a 200.
            with _admission(slot):
                first = await gen.next_piece()
                if first is None:
                    await gen.result()
        except BaseException:
            await gen.abandon()
            raise
        chunks = self._sse(slot, gen, first, shape.stream(slot.name, usage), call)
        return StreamingResponse(chunks)

    async def _sse(
        self, slot: ModelSlot, gen: Generation, first: str | None, frames: wire.Frames, call: Call
    ) -> AsyncIterator[bytes]:
        call.status = CLIENT_CLOSED
        try:
            out = frames.opening
            piece = first
            while piece is not None:
                out += frames.piece(piece)
                while (piece := gen.ready_piece()) is not None:  # several at once: one write
                    out += frames.piece(piece)
                yield out
                out = b""
                piece = await gen.next_piece()
            result = await gen.result()
            self._tokens(slot, result)
            call.status = 200
            yield out + frames.closing(result)
        except GatewayError as err:
            call.status = err.status
            yield frame(err.to_json())  # the headers are gone: the error is a last event
        except Exception as exc:  # the boundary, as in __call__
            self._crash(exc)
            call.status = 500
            yield frame(GatewayError("internal error").to_json())
        finally:
            await gen.abandon()
            self._count(call, call.status)

    # -- simple routes

    def _ready(self) -> Response:
        if self.ready:
            return Response(b'{"status":"ready"}')
        status = "draining" if self.draining else "loading"
        models = {name: "ready" if s.ready else "loading" for name, s in self.slots.items()}
        return Response(dumps({"status": status, "models": models}), 503)

    def _models(self) -> Response:
        data = [_card(slot) for slot in self.slots.values()]
        return Response(dumps({"object": "list", "data": data}))

    def _model(self, raw_name: bytes, call: Call) -> Response:
        name = raw_name.decode("utf-8", "replace")
        call.model = name
        slot = self.slots.get(name)
        if slot is None:
            raise ModelNotFound(f"The model `{name}` does not exist", param="model")
        call.slot = slot
        return Response(dumps(_card(slot)))

    # -- shared steps

    def _slot(self, body: dict[str, Any], kind: Kind, call: Call) -> ModelSlot:
        name = body.get("model")
        if not isinstance(name, str) or not name:
            raise InvalidRequest("`model` is required and must be a string", param="model")
        call.model = name
        slot = self.slots.get(name)
        if slot is None:
            raise ModelNotFound(f"The model `{name}` does not exist", param="model")
        call.slot = slot
        if slot.kind != kind:
            raise InvalidRequest(
                f"`{name}` is a model of kind {slot.kind}; {call.route} needs kind {kind}",
                param="model",
            )
        if not slot.ready:
            raise ServiceUnavailable(f"the model `{name}` is still loading", retry_after=1)
        return slot

    def _load_headers(self, slot: ModelSlot | None) -> list[tuple[bytes, bytes]]:
        if slot is not None:
            depth, load = slot.depth, slot.load
        else:
            depth = sum(s.depth for s in self.slots.values())
            capacity = sum(s.settings.max_queue for s in self.slots.values())
            load = min(1.0, depth / capacity)
        headers = [(b"x-aigw-load", b"%.3f" % load), (b"x-aigw-queue-depth", b"%d" % depth)]
        if self.gpu is not None:
            sample = self.gpu.sample()
            headers.append((b"x-aigw-gpu-memory", b"%.3f" % sample.memory))
            if sample.utilization is not None:
                headers.append((b"x-aigw-gpu-utilization", b"%.3f" % sample.utilization))
        return headers

    def _id(self, prefix: str) -> str:
        return f"{prefix}-{self._id_prefix}{next(self._ids):x}"

    def _tokens(self, slot: ModelSlot, result: Generated) -> None:
        self.metrics.tokens_done(slot.name, result.prompt_tokens, result.completion_tokens)

    def _count(self, call: Call, status: int) -> None:
        self.metrics.request_done(call.model, call.route, status)

    def _crash(self, exc: BaseException) -> None:
        trace = "".join(traceback.format_exception(exc))
        self.log.error("unhandled error", error=repr(exc), traceback=trace)


def _card(slot: ModelSlot) -> dict[str, object]:
    return {
        "id": slot.name,
        "object": "model",
        "created": 0,
        "owned_by": "aigw-worker",
        "kind": slot.kind,
        "ready": slot.ready,
    }


def _error(err: GatewayError) -> Response:
    headers = []
    if err.retry_after is not None:
        headers.append((b"retry-after", b"%d" % max(1, round(err.retry_after))))
    return Response(err.to_json(), err.status, headers=headers)


@contextmanager
def _admission(slot: ModelSlot) -> Iterator[None]:
    """The batcher's refusals as HTTP errors: 503 with Retry-After."""
    try:
        yield
    except QueueFull:
        raise ServiceUnavailable(
            f"the model `{slot.name}` has a full queue; retry shortly", retry_after=1
        ) from None
    except BatcherClosed:
        raise ServiceUnavailable("the worker is shutting down", retry_after=1) from None


# -- request bodies (pure)
