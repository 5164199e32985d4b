"""A lean HTTP/1.1 server on asyncio protocols, parsing with httptools.

It knows the wire and nothing else: it turns bytes into ``Request`` objects, calls one
handler per request, and writes a ``Response`` (one write) or a ``StreamingResponse``
(chunked transfer encoding, with write flow control). Keep-alive, pipelining (answered
in order), body and header size limits, idle and slow-header timeouts, client
disconnects (the handler task is cancelled) and graceful drain live here.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import cast

import httptools

from aigw.errors import GatewayError, HeadersTooLarge, InvalidRequest, PayloadTooLarge
from aigw.types import close_stream


@dataclass(frozen=True, slots=True)
class ServerLimits:
    max_body_bytes: int = 10 * 1024 * 1024
    max_header_bytes: int = 64 * 1024
    keepalive_timeout_s: float = 75.0
    header_timeout_s: float = 30.0


class Request:
    __slots__ = ("body", "client_ip", "headers", "keep_alive", "method", "path", "query")

    def __init__(
        self,
        method: bytes,
        path: bytes,
        query: bytes,
        headers: dict[bytes, bytes],
        body: bytes,
        client_ip: str,
        keep_alive: bool,
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers  # names lower-cased
        self.body = body
        self.client_ip = client_ip
        self.keep_alive = keep_alive


class Response:
    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(
        self,
        body: bytes,
        status: int = 200,
        content_type: bytes = b"application/json",
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        self.body = body
        self.status = status
        self.content_type = content_type
        self.headers = headers or []


class StreamingResponse:
    __slots__ = ("chunks", "content_type", "headers", "status")

    def __init__(
        self,
        chunks: AsyncIterator[bytes],
        status: int = 200,
        content_type: bytes = b"text/event-stream",
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        self.chunks = chunks
        self.status = status
        self.content_type = content_type
        self.headers = headers or []


class AbortConnection(Exception):
    """Raised by a handler or a stream's iterator: send nothing more, drop the connection.

    ``reset=True`` aborts it (the peer sees a reset), else it is closed (a FIN).
    """

    def __init__(self, reset: bool = True) -> None:
        super().__init__("connection aborted")
        self.reset = reset


Handler = Callable[[Request], Awaitable[Response | StreamingResponse]]
ErrorHook = Callable[[BaseException], None]

_STATUS_LINES = {
    int(s): b"HTTP/1.1 %d %s\r\n" % (int(s), s.phrase.encode("latin-1")) for s in HTTPStatus
}


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    return line if line is not None else b"HTTP/1.1 %d Unknown\r\n" % status


def error_response(err: GatewayError) -> Response:
    return Response(err.to_json(), err.status)


def _header_block(
    status: int,
    content_type: bytes,
    headers: list[tuple[bytes, bytes]],
    framing: bytes,
    keep_alive: bool,
) -> bytes:
    parts = [status_line(status), b"content-type: ", content_type, b"\r\n", framing]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    if not keep_alive:
        parts.append(b"connection: close\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


class HttpProtocol(asyncio.Protocol):
    """One client connection."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.loop = server.loop
        self.limits = server.limits
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.client_ip = ""
        self.url = b""
        self.headers: dict[bytes, bytes] = {}
        self.header_bytes = 0
        self.body_parts: list[bytes] = []
        self.body_size = 0
        self.in_message = False
        self.message_started = 0.0
        self.last_active = self.loop.time()
        self.rejected = False
        self.queue: deque[Request | Response] = deque()
        self.task: asyncio.Task[None] | None = None
        self.write_paused = False
        self.drain_waiter: asyncio.Future[None] | None = None

    # -- transport callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        peer = transport.get_extra_info("peername")
        self.client_ip = peer[0] if peer else ""
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        if self.task is not None and not self.task.done():
            self.task.cancel()  # a client disconnect cancels the upstream call
        self.queue.clear()
        self._wake_writer()

    def data_received(self, data: bytes) -> None:
        if self.rejected:
            return
        self.last_active = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reject(InvalidRequest("protocol upgrades are not supported"))
        except httptools.HttpParserError:
            if not self.rejected:
                self._reject(InvalidRequest("malformed HTTP request"))

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake_writer()

    def _wake_writer(self) -> None:
        waiter = self.drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- parser callbacks

    def on_message_begin(self) -> None:
        self.in_message = True
        self.message_started = self.loop.time()
        self.url = b""
        self.headers = {}
        self.header_bytes = 0
        self.body_parts = []
        self.body_size = 0

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.header_bytes += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_bytes += len(name) + len(value) + 4
        if self.header_bytes > self.limits.max_header_bytes:
            self._reject(HeadersTooLarge("request headers are too large"))
            raise httptools.HttpParserError("headers too large")
        key = name.lower()
        old = self.headers.get(key)
        self.headers[key] = value if old is None else old + b", " + value

    def on_headers_complete(self) -> None:
        length = self.headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limits.max_body_bytes:
            self._reject_too_large()
            raise httptools.HttpParserError("body too large")
        if self.headers.get(b"expect", b"").lower() == b"100-continue" and self.transport:
            # curl asks before sending bodies over 1 KiB; silence would cost it a second.
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self.body_size += len(body)
        if self.body_size > self.limits.max_body_bytes:
            self._reject_too_large()
            raise httptools.HttpParserError("body too large")
        self.body_parts.append(body)

    def on_message_complete(self) -> None:
        self.in_message = False
        url = self.url
        path, _, query = url.partition(b"?")
        parts = self.body_parts
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        request = Request(
            self.parser.get_method(),
            path,
            query,
            self.headers,
            body,
            self.client_ip,
            self.parser.should_keep_alive(),
        )
        if self.task is None:
            self.task = self.loop.create_task(self._serve(request))
        else:
            self.queue.append(request)

    # -- answering

    def _reject_too_large(self) -> None:
        limit = self.limits.max_body_bytes
        self._reject(PayloadTooLarge(f"request body exceeds the limit of {limit} bytes"))

    def _reject(self, err: GatewayError) -> None:
        """Answer a request we will not parse further, then close the connection."""
        self.rejected = True
        response = error_response(err)
        if self.task is None:
            self._write_response(response, keep_alive=False)
        else:
            self.queue.append(response)

    async def _serve(self, item: Request | Response) -> None:
        try:
            while True:
                if isinstance(item, Response):
                    self._write_response(item, keep_alive=False)
                    return
                keep_alive = await self._answer(item)
                if not keep_alive:
                    if self.transport is not None:
                        self.transport.close()
                    return
                if not self.queue:
                    return
                item = self.queue.popleft()
        finally:
            self.task = None
            self.last_active = self.loop.time()

    async def _answer(self, request: Request) -> bool:
        try:
            response = await self.server.handler(request)
        except GatewayError as err:
            response = error_response(err)
        except AbortConnection as exc:
            self._drop(exc.reset)
            return False
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the boundary: a bug must not kill the connection silently
            self.server.on_error(exc)
            response = error_response(GatewayError("internal error"))
        keep_alive = request.keep_alive and not self.server.draining and not self.rejected
        if isinstance(response, Response):
            self._write_response(response, keep_alive, head_only=request.method == b"HEAD")
            return keep_alive
        return await self._write_stream(response, keep_alive)

    def _write_response(
        self, response: Response, keep_alive: bool, head_only: bool = False
    ) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        body = response.body
        framing = b"content-length: %d\r\n" % len(body)
        head = _header_block(
            response.status, response.content_type, response.headers, framing, keep_alive
        )
        transport.write(head if head_only else head + body)
        if not keep_alive:
            transport.close()

    async def _write_stream(self, response: StreamingResponse, keep_alive: bool) -> bool:
        transport = self.transport
        if transport is None:  # the client left while the answer was being made
            await close_stream(response.chunks)
            return False
        head = _header_block(
            response.status,
            response.content_type,
            response.headers,
            b"transfer-encoding: chunked\r\ncache-control: no-cache\r\nx-accel-buffering: no\r\n",
            keep_alive,
        )
        transport.write(head)
        chunks = response.chunks
        try:
            async for chunk in chunks:
                if not chunk:
                    continue
                if transport.is_closing():
                    return False
                transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
                if self.write_paused:
                    await self._drain()
        except AbortConnection as exc:
            self._drop(exc.reset)
            return False
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # mid-body there is no way to answer: log it and hang up
            self.server.on_error(exc)
            self._drop(reset=True)
            return False
        finally:
            await close_stream(chunks)
        if transport.is_closing():
            return False
        transport.write(b"0\r\n\r\n")
        return keep_alive

    def _drop(self, reset: bool) -> None:
        if self.transport is not None:
            if reset:
                self.transport.abort()
            else:
                self.transport.close()

    async def _drain(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.drain_waiter = self.loop.create_future()
        try:
            await self.drain_waiter
        finally:
            self.drain_waiter = None

    # -- housekeeping, driven by the server's sweep

    def sweep(self, now: float) -> None:
        transport = self.transport
        if transport is None or self.task is not None:
            return
        if self.in_message:
            if now - self.message_started > self.limits.header_timeout_s:
                self._reject(InvalidRequest("request not received in time"))
        elif now - self.last_active > self.limits.keepalive_timeout_s or self.server.draining:
            transport.close()

    @property
    def busy(self) -> bool:
        return self.task is not None or self.in_message


class HttpServer:
    """Listens on one socket and owns its connections; ``shutdown`` drains them."""

    def __init__(
        self,
        handler: Handler,
        limits: ServerLimits | None = None,
        on_error: ErrorHook | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.handler = handler
        self.limits = limits or ServerLimits()
        self.on_error: ErrorHook = on_error or (lambda exc: None)
        self.connections: set[HttpProtocol] = set()
        self.draining = False
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.TimerHandle | None = None

    async def start(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        sock: socket.socket | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> tuple[str, int]:
        if sock is not None:
            self._server = await self.loop.create_server(
                lambda: HttpProtocol(self), sock=sock, ssl=tls
            )
        else:
            self._server = await self.loop.create_server(
                lambda: HttpProtocol(self), host, port, backlog=2048, ssl=tls
            )
        self._schedule_sweep()
        address = self._server.sockets[0].getsockname()
        return address[0], address[1]

    def _schedule_sweep(self) -> None:
        self._sweeper = self.loop.call_later(1.0, self._sweep)

    def _sweep(self) -> None:
        now = self.loop.time()
        for conn in list(self.connections):
            conn.sweep(now)
        self._schedule_sweep()

    async def shutdown(self, grace_s: float) -> None:
        """Stop accepting, let in-flight requests and streams finish, then close."""
        self.draining = True
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            if not conn.busy and conn.transport is not None:
                conn.transport.close()
        deadline = self.loop.time() + grace_s
        # Polling is fine for a once-per-life drain; it keeps the hot path free of signals.
        while any(c.busy for c in self.connections) and self.loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            if conn.task is not None:
                conn.task.cancel()
            if conn.transport is not None:
                conn.transport.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        await asyncio.sleep(0)

    @property
    def in_flight(self) -> int:
        return sum(1 for c in self.connections if c.task is not None)
