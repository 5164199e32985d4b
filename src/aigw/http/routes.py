"""The HTTP ingress: routes, request parsing, and rendering results as HTTP.

It turns a wire request into a ``GatewayRequest``, runs the pipeline, and turns the
result (or a ``GatewayError``) back into bytes. Every model call is counted, timed and
written to the access log here, once, when its answer (or stream) is complete.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import re
import time
import traceback
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, Protocol

import orjson

from aigw.errors import (
    GatewayError,
    InvalidRequest,
    MalformedJSON,
    MethodNotAllowed,
    ModelNotFound,
    RouteNotFound,
)
from aigw.http.admin import admin_response
from aigw.http.server import Request, Response, StreamingResponse
from aigw.observability.logs import JsonLog
from aigw.observability.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from aigw.observability.metrics import Metrics
from aigw.providers import anthropic_inbound
from aigw.providers.base import settle_usage
from aigw.providers.sse import frame
from aigw.types import (
    Endpoint,
    GatewayRequest,
    GatewayResponse,
    Result,
    StreamResponse,
    close_stream,
)

Pipeline = Callable[[GatewayRequest], Awaitable[Result]]

MODEL_ROUTES = {
    b"/v1/chat/completions": Endpoint.CHAT,
    b"/v1/completions": Endpoint.COMPLETION,
    b"/v1/embeddings": Endpoint.EMBEDDING,
    b"/v1/messages": Endpoint.MESSAGES,  # Anthropic's API, for the anthropic SDK
}
REQUIRED_FIELD = {
    Endpoint.CHAT: "messages",
    Endpoint.COMPLETION: "prompt",
    Endpoint.EMBEDDING: "input",
    Endpoint.MESSAGES: "messages",
}
CLIENT_CLOSED = 499  # nginx's convention for "the client went away first"
_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:/+=-]{1,128}")


class Runtime(Protocol):
    """What the ingress needs from the gateway; replaced whole on config reload."""

    @property
    def pipeline(self) -> Pipeline: ...
    @property
    def model_names(self) -> list[str]: ...
    @property
    def request_timeout_s(self) -> float: ...
    @property
    def access_log(self) -> bool: ...
    @property
    def admin_key(self) -> bytes: ...
    def routing_snapshot(self) -> dict[str, Any]: ...


class HttpIngress:
    def __init__(self, runtime: Runtime, metrics: Metrics, log: JsonLog) -> None:
        self.runtime = runtime
        self.metrics = metrics
        self.log = log
        self.loop = asyncio.get_running_loop()
        self.ready = True
        self.in_flight = 0
        self._rid_prefix = os.urandom(8).hex()
        self._rid_counter = itertools.count(1)
        metrics.in_flight.set_function(lambda: self.in_flight)
        self.simple_routes: dict[bytes, Callable[[Request], Response]] = {
            b"/health": lambda _: Response(b'{"status":"ok"}'),
            b"/ready": self._ready,
            b"/metrics": lambda _: Response(metrics.render(), content_type=METRICS_CONTENT_TYPE),
            b"/v1/models": self._models,
        }

    async def __call__(self, request: Request) -> Response | StreamingResponse:
        endpoint = MODEL_ROUTES.get(request.path)
        if endpoint is not None:
            if request.method != b"POST":
                raise MethodNotAllowed(f"{request.path.decode()} accepts POST only")
            return await self._model_call(request, endpoint)
        if request.path.startswith(b"/admin/"):
            runtime = self.runtime
            views = {b"/admin/routing": runtime.routing_snapshot}
            return admin_response(request, runtime.admin_key, views)
        route = self.simple_routes.get(request.path)
        if route is None and request.path.startswith(b"/v1/models/"):
            route = self._model
        if route is None:
            raise RouteNotFound(f"no route for {request.path.decode('latin-1')}")
        if request.method not in (b"GET", b"HEAD"):
            raise MethodNotAllowed(f"{request.path.decode()} accepts GET only")
        return route(request)

    # -- model calls

    async def _model_call(
        self, request: Request, endpoint: Endpoint
    ) -> Response | StreamingResponse:
        started = time.perf_counter()
        rid = request.headers.get(b"x-request-id")
        if rid is None or not _REQUEST_ID.fullmatch(rid):
            rid = b"%s%016x" % (self._rid_prefix.encode(), next(self._rid_counter))
        headers = [(b"x-request-id", rid)]
        runtime = self.runtime
        req = GatewayRequest(
            rid.decode(), endpoint, "", False, {}, request.body,
            self.loop.time() + runtime.request_timeout_s, request.client_ip, request.headers,
        )  # fmt: skip
        self.in_flight += 1
        try:
            _parse_into(req, request.body)
            _request_options(req, request.headers, runtime.request_timeout_s, self.loop.time())
            result = await runtime.pipeline(req)
        except GatewayError as err:
            self._finish_soon(req, request, started, err.status, err.code)
            headers += req.reply_headers
            if err.retry_after is not None and err.retry_after < 86400:
                headers.append((b"retry-after", b"%d" % max(1, math.ceil(err.retry_after))))
            return Response(_error_json(endpoint, err), err.status, headers=headers)
        except asyncio.CancelledError:
            self._finish(req, request, started, CLIENT_CLOSED, "client_closed")
            raise
        except Exception as exc:  # the boundary: a bug becomes a logged 500, not a dead socket
            self._crash(req, exc)
            self._finish(req, request, started, 500, "internal_error")
            body = _error_json(endpoint, GatewayError("internal error"))
            return Response(body, 500, headers=headers)
        headers += result.headers
        if req.reply_headers:
            headers += req.reply_headers
        if isinstance(result, GatewayResponse):
            self._finish_soon(req, request, started, result.status, None)
            return Response(result.body, result.status, result.content_type, headers)
        relay = _Relay(self._stream(req, request, result, started))
        relay.on_unstarted = lambda: self._unstarted(req, request, result, started)
        return StreamingResponse(relay, result.status, result.content_type, headers)

    async def _unstarted(
        self, req: GatewayRequest, request: Request, result: StreamResponse, started: float
    ) -> None:
        """The client left before the stream began: close the upstream, account once."""
        await close_stream(result.chunks)
        self._finish(req, request, started, CLIENT_CLOSED, "client_closed")

    async def _stream(
        self, req: GatewayRequest, request: Request, result: StreamResponse, started: float
    ) -> AsyncGenerator[bytes, None]:
        status: int = CLIENT_CLOSED
        code: str | None = "client_closed"
        try:
            async for chunk in result.chunks:
                yield chunk
            status, code = 200, None
        except GatewayError as err:
            # Headers are gone already: the error travels as a final SSE event.
            status, code = err.status, err.code
            yield _error_event(req.endpoint, err)
        except Exception as exc:  # the boundary, as above
            self._crash(req, exc)
            status, code = 500, "internal_error"
            yield _error_event(req.endpoint, GatewayError("internal error"))
        finally:
            await close_stream(result.chunks)
            self._finish(req, request, started, status, code)

    def _finish_soon(
        self, req: GatewayRequest, request: Request, started: float, status: int, code: str | None
    ) -> None:
        """Account for an answer right after it is written, off the latency path."""
        seconds = time.perf_counter() - started
        self.loop.call_soon(self._account, req, request, seconds, status, code)

    def _finish(
        self, req: GatewayRequest, request: Request, started: float, status: int, code: str | None
    ) -> None:
        self._account(req, request, time.perf_counter() - started, status, code)

    def _account(
        self, req: GatewayRequest, request: Request, seconds: float, status: int, code: str | None
    ) -> None:
        self.in_flight -= 1
        usage = settle_usage(req)
        if req.finishers:
            req.finish(status)
        self.metrics.request_done(req.endpoint.value, req.model, status, seconds, usage)
        if not self.runtime.access_log:
            return
        self.log.access({
            "level": "info", "msg": "request", "request_id": req.request_id,
            "method": "POST", "path": request.path.decode("latin-1"), "model": req.model,
            "deployment": req.deployment, "attempts": req.attempts, "cache": req.cache or None,
            "fallbacks": req.fallbacks, "stream": req.stream, "status": status,
            "error": code, "total_ms": round(seconds * 1000, 3),
            "upstream_ms": round(req.upstream_seconds * 1000, 3),
            "tokens_in": usage.prompt_tokens if usage else None,
            "tokens_out": usage.completion_tokens if usage else None,
            "client_ip": req.client_ip,
        })  # fmt: skip

    def _crash(self, req: GatewayRequest, exc: BaseException) -> None:
        self.log.error(
            "unhandled error", request_id=req.request_id, error=repr(exc),
            traceback="".join(traceback.format_exception(exc)),
        )  # fmt: skip

    # -- simple routes

    def _ready(self, _: Request) -> Response:
        if self.ready:
            return Response(b'{"status":"ready"}')
        return Response(b'{"status":"draining"}', 503)

    def _models(self, _: Request) -> Response:
        data = [_model_card(name) for name in self.runtime.model_names]
        return Response(orjson.dumps({"object": "list", "data": data}))

    def _model(self, request: Request) -> Response:
        name = request.path.removeprefix(b"/v1/models/").decode("utf-8", "replace")
        if name not in self.runtime.model_names:
            raise ModelNotFound(f"The model `{name}` does not exist", param="model")
        return Response(orjson.dumps(_model_card(name)))


class _Relay:
    """The stream handed to the server. An async generator that is closed before its
    first step never runs its ``finally``; this one still accounts for the request."""

    __slots__ = ("gen", "on_unstarted", "started")

    def __init__(self, gen: AsyncGenerator[bytes, None]) -> None:
        self.gen = gen
        self.started = False
        self.on_unstarted: Callable[[], Awaitable[None]] | None = None

    def __aiter__(self) -> _Relay:
        return self

    def __anext__(self) -> Awaitable[bytes]:
        self.started = True
        return self.gen.__anext__()

    async def aclose(self) -> None:
        if not self.started and self.on_unstarted is not None:
            self.started = True
            await self.on_unstarted()
        await self.gen.aclose()


def _error_json(endpoint: Endpoint, err: GatewayError) -> bytes:
    """An error in the dialect the client speaks."""
    if endpoint is Endpoint.MESSAGES:
        return anthropic_inbound.error_body(err.status, err.message)
    return err.to_json()


def _error_event(endpoint: Endpoint, err: GatewayError) -> bytes:
    if endpoint is Endpoint.MESSAGES:
        return anthropic_inbound.error_event(err.status, err.message)
    return frame(err.to_json())


def _model_card(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "aigw"}


def _request_options(
    req: GatewayRequest, headers: dict[bytes, bytes], cap_s: float, now: float
) -> None:
    """Per-request options from headers: a shorter deadline, an idempotency key."""
    timeout = headers.get(b"x-request-timeout")
    if timeout is not None:
        try:
            seconds = float(timeout)
        except ValueError:
            seconds = -1.0
        if not 0 < seconds < float("inf"):
            raise InvalidRequest(
                "X-Request-Timeout must be a positive number of seconds", param="X-Request-Timeout"
            )
        req.deadline = now + min(seconds, cap_s)
    key = headers.get(b"idempotency-key")
    if key is not None:
        if not _REQUEST_ID.fullmatch(key):
            raise InvalidRequest(
                "Idempotency-Key must be 1-128 characters of A-Za-z0-9._:/+=-",
                param="Idempotency-Key",
            )
        req.idempotency_key = key.decode()
        req.strict_idempotency = True
    elif b"x-request-id" in headers and _REQUEST_ID.fullmatch(headers[b"x-request-id"]):
        req.idempotency_key = req.request_id


def _parse_into(req: GatewayRequest, raw: bytes) -> None:
    """Parse and check the body: just enough to route it; the upstream checks the rest."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedJSON(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("`model` is required and must be a string", param="model")
    stream = body.get("stream", False)
    if not isinstance(stream, bool) and stream is not None:
        raise InvalidRequest("`stream` must be a boolean", param="stream")
    field = REQUIRED_FIELD[req.endpoint]
    if field not in body:
        raise InvalidRequest(f"`{field}` is required", param=field)
    if field == "messages" and not (isinstance(body[field], list) and body[field]):
        raise InvalidRequest("`messages` must be a non-empty array", param="messages")
    req.body = body
    req.model = model
    req.stream = stream is True
