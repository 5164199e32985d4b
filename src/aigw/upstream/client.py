"""The pooled HTTP/1.1 client every provider shares.

Built on asyncio protocols with httptools parsing, because a general-purpose client
costs more per request than the whole gateway budget. One pool of keep-alive
connections per origin (LIFO, so warm connections stay warm); a request that hits a
connection the upstream had already closed is retried once on a fresh one. Every
request has deadlines: connect, first byte (response headers) and total. Response
bodies are read whole or iterated chunk by chunk with back-pressure: reading from the
upstream pauses while the consumer (a slow client) falls behind.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools

from aigw.errors import (
    DeadlineExceeded,
    GatewayError,
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
)

_HIGH_WATER = 64  # buffered body chunks before reading from the upstream pauses


@dataclass(frozen=True, slots=True)
class Origin:
    scheme: str
    host: str
    port: int
    ca_file: str = ""  # trust this CA bundle instead of the system's (https only)

    @property
    def tls(self) -> bool:
        return self.scheme == "https"

    @property
    def host_header(self) -> bytes:
        default = 443 if self.tls else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return (host if self.port == default else f"{host}:{self.port}").encode()


def parse_base_url(url: str, ca_file: str = "") -> tuple[Origin, str]:
    """Split ``https://host:port/prefix`` into its origin and path prefix (no trailing /)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return Origin(parts.scheme, parts.hostname, port, ca_file), parts.path.rstrip("/")


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect_s: float = 5.0
    first_byte_s: float = 60.0
    total_s: float = 600.0


class _StaleConnection(Exception):
    """A reused connection closed before answering; safe to retry on a fresh one."""


class _Connection(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop, origin: Origin) -> None:
        self.loop = loop
        self.origin = origin
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reused = False
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: dict[bytes, bytes] = {}
        self.headers_waiter: asyncio.Future[None] | None = None
        self.body: deque[bytes] = deque()
        self.body_waiter: asyncio.Future[None] | None = None
        self.complete = False
        self.keep_alive = False
        self.received = 0
        self.error: GatewayError | None = None
        self.reading_paused = False
        self.timer: asyncio.TimerHandle | None = None

    # -- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.fail(UpstreamProtocolError(f"invalid HTTP response from upstream: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.complete:
            return
        if self.status and not self._framed():
            self.on_message_complete()  # body delimited by the connection closing
            return
        if self.received == 0 and self.reused and self.headers_waiter is not None:
            self._fail_quietly(_StaleConnection())
            return
        self.fail(UpstreamError("upstream closed the connection before the response completed"))

    # -- parser callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        waiter = self.headers_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        if len(self.body) > _HIGH_WATER and not self.reading_paused and self.transport:
            self.reading_paused = True
            self.transport.pause_reading()
        self._wake_body()

    def on_message_complete(self) -> None:
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()
        if self.timer is not None:
            self.timer.cancel()
        self._wake_body()

    # -- state changes

    def _framed(self) -> bool:
        return b"content-length" in self.headers or b"transfer-encoding" in self.headers

    def _wake_body(self) -> None:
        waiter = self.body_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail_quietly(self, exc: BaseException) -> None:
        waiter = self.headers_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def fail(self, error: GatewayError) -> None:
        if self.error is None:
            self.error = error
        self._fail_quietly(error)
        self._wake_body()
        self.abort()

    def expire(self, what: str) -> None:
        self.fail(DeadlineExceeded(f"upstream {what} deadline exceeded"))

    def abort(self) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
        if self.transport is not None:
            self.transport.abort()

    def resume(self) -> None:
        if self.reading_paused and self.transport is not None:
            self.reading_paused = False
            self.transport.resume_reading()

    def start(self, payload: bytes, first_byte_at: float) -> asyncio.Future[None]:
        self._reset()
        self.headers_waiter = self.loop.create_future()
        self.timer = self.loop.call_at(first_byte_at, self.expire, "first-byte")
        assert self.transport is not None
        self.transport.write(payload)
        return self.headers_waiter


class UpstreamResponse:
    """Status and headers of an upstream answer; the body is read or iterated once."""

    __slots__ = ("_client", "_conn", "headers", "status")

    def __init__(self, client: UpstreamClient, conn: _Connection) -> None:
        self._client = client
        self._conn = conn
        self.status = conn.status
        self.headers = conn.headers

    async def read(self, limit: int = 64 * 1024 * 1024) -> bytes:
        conn = self._conn
        if conn.complete and conn.error is None:  # it all came in one go: the common case
            body = b"".join(conn.body)
            conn.body.clear()
            self.close()
            if len(body) > limit:
                raise UpstreamProtocolError(f"upstream response exceeds {limit} bytes")
            return body
        parts = []
        size = 0
        async for chunk in self.iter_chunks():
            size += len(chunk)
            if size > limit:
                self.close()
                raise UpstreamProtocolError(f"upstream response exceeds {limit} bytes")
            parts.append(chunk)
        return b"".join(parts)

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        conn = self._conn
        try:
            while True:
                if conn.body:
                    chunk = conn.body.popleft()
                    if not conn.body:
                        conn.resume()
                    yield chunk
                    continue
                if conn.error is not None:
                    raise conn.error
                if conn.complete:
                    break
                conn.body_waiter = conn.loop.create_future()
                try:
                    await conn.body_waiter
                finally:
                    conn.body_waiter = None
        finally:
            self.close()

    def close(self) -> None:
        """Give the connection back if the response was read whole, else drop it."""
        conn = self._conn
        if conn.complete and conn.keep_alive and not conn.closed and conn.error is None:
            if conn.timer is not None:
                conn.timer.cancel()
            self._client.release(conn)
        elif not conn.closed:
            conn.abort()


class UpstreamClient:
    def __init__(self, *, max_idle_per_origin: int = 512, idle_timeout_s: float = 30.0) -> None:
        self.loop = asyncio.get_running_loop()
        self.max_idle = max_idle_per_origin
        self.idle_timeout_s = idle_timeout_s
        self._idle: dict[Origin, list[_Connection]] = {}
        self._tls: dict[str, ssl.SSLContext] = {}
        self._closed = False

    async def request(
        self,
        origin: Origin,
        method: bytes,
        target: bytes,
        headers: bytes,
        body: bytes,
        timeouts: Timeouts,
        deadline: float | None = None,
    ) -> UpstreamResponse:
        """Send one request and wait for the response headers.

        ``headers`` is a block of ready ``name: value\\r\\n`` lines (host and
        content-length are added here). ``deadline`` (event-loop time) caps the
        per-deployment timeouts.
        """
        payload = b"%b %b HTTP/1.1\r\nhost: %b\r\ncontent-length: %d\r\n%b\r\n%b" % (
            method,
            target,
            origin.host_header,
            len(body),
            headers,
            body,
        )
        now = self.loop.time()
        total_at = now + timeouts.total_s
        if deadline is not None and deadline < total_at:
            total_at = deadline
        first_byte_at = min(now + timeouts.first_byte_s, total_at)
        for attempt in range(2):
            conn = self._acquire(origin) if attempt == 0 else None
            if conn is None:
                conn = await self._connect(origin, min(timeouts.connect_s, total_at - now))
            try:
                await conn.start(payload, first_byte_at)
            except _StaleConnection:
                continue
            except asyncio.CancelledError:
                conn.abort()
                raise
            assert conn.timer is not None
            conn.timer.cancel()
            if not conn.complete:
                conn.timer = self.loop.call_at(total_at, conn.expire, "total")
            return UpstreamResponse(self, conn)
        raise UpstreamConnectError(f"upstream {origin.host}:{origin.port} closed the connection")

    def _acquire(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        now = self.loop.time()
        while idle:
            conn = idle.pop()
            if conn.closed or conn.transport is None or conn.transport.is_closing():
                continue
            if now - conn.idle_since > self.idle_timeout_s:
                conn.abort()
                continue
            conn.reused = True
            return conn
        return None

    def release(self, conn: _Connection) -> None:
        idle = self._idle.setdefault(conn.origin, [])
        if self._closed or len(idle) >= self.max_idle:
            conn.abort()
            return
        conn.idle_since = self.loop.time()
        idle.append(conn)

    async def _connect(self, origin: Origin, timeout_s: float) -> _Connection:
        where = f"{origin.host}:{origin.port}"
        if timeout_s <= 0:
            raise DeadlineExceeded(f"no time left to connect to {where}")
        try:
            async with asyncio.timeout(timeout_s):
                _, conn = await self.loop.create_connection(
                    lambda: _Connection(self.loop, origin),
                    origin.host,
                    origin.port,
                    ssl=self._tls_context(origin.ca_file) if origin.tls else None,
                    server_hostname=origin.host if origin.tls else None,
                )
        except TimeoutError:
            raise UpstreamConnectError(f"timed out connecting to upstream {where}") from None
        except (OSError, ssl.SSLError) as exc:
            reason = (exc.strerror or str(exc)) if isinstance(exc, OSError) else str(exc)
            raise UpstreamConnectError(f"cannot connect to upstream {where}: {reason}") from None
        return conn

    def _tls_context(self, ca_file: str) -> ssl.SSLContext:
        context = self._tls.get(ca_file)
        if context is None:
            context = ssl.create_default_context(cafile=ca_file or None)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            self._tls[ca_file] = context
        return context

    async def close(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for conn in idle:
                conn.abort()
        self._idle.clear()
