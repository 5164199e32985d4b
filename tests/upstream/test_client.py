"""The pooled upstream client against real servers on 127.0.0.1 (in-process)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from aigw.errors import DeadlineExceeded, UpstreamConnectError, UpstreamError, UpstreamProtocolError
from aigw.http.server import HttpServer, Request, Response, StreamingResponse
from aigw.upstream.client import Origin, Timeouts, UpstreamClient

pytestmark = pytest.mark.anyio
FAST = Timeouts(connect_s=2, first_byte_s=2, total_s=5)
Handler = Callable[[Request], Awaitable[Response | StreamingResponse]]


async def serve(handler: Handler) -> tuple[HttpServer, Origin]:
    server = HttpServer(handler)
    _, port = await server.start("127.0.0.1", 0)
    return server, Origin("http", "127.0.0.1", port)


async def echo(req: Request) -> Response:
    return Response(b"echo:" + req.body, headers=[(b"x-path", req.path)])


async def test_round_trip_and_connection_reuse() -> None:
    server, origin = await serve(echo)
    client = UpstreamClient()
    try:
        for i in range(3):
            resp = await client.request(origin, b"POST", b"/p", b"", b"%d" % i, FAST)
            assert resp.status == 200 and resp.headers[b"x-path"] == b"/p"
            assert await resp.read() == b"echo:%d" % i
        assert len(server.connections) == 1
    finally:
        await client.close()
        await server.shutdown(1)


async def test_stale_pooled_connection_is_retried() -> None:
    server, origin = await serve(echo)
    client = UpstreamClient()
    try:
        resp = await client.request(origin, b"POST", b"/", b"", b"a", FAST)
        await resp.read()
        for conn in list(server.connections):  # the upstream drops idle keep-alive sockets
            assert conn.transport is not None
            conn.transport.close()
        await asyncio.sleep(0.05)
        resp = await client.request(origin, b"POST", b"/", b"", b"b", FAST)
        assert await resp.read() == b"echo:b"
    finally:
        await client.close()
        await server.shutdown(1)


async def test_streamed_body_arrives_in_pieces() -> None:
    gate = asyncio.Event()

    async def handler(_: Request) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"first"
            await gate.wait()
            yield b"second"

        return StreamingResponse(chunks())

    server, origin = await serve(handler)
    client = UpstreamClient()
    try:
        resp = await client.request(origin, b"POST", b"/", b"", b"", FAST)
        pieces = resp.iter_chunks()
        assert await pieces.__anext__() == b"first"
        gate.set()
        assert [c async for c in pieces] == [b"second"]
    finally:
        await client.close()
        await server.shutdown(1)


async def test_deadlines() -> None:
    async def slow(_: Request) -> Response:
        await asyncio.sleep(10)
        return Response(b"late")

    async def slow_stream(_: Request) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"x"
            await asyncio.sleep(10)
            yield b"y"

        return StreamingResponse(chunks())

    server, origin = await serve(slow)
    server2, origin2 = await serve(slow_stream)
    client = UpstreamClient()
    try:
        with pytest.raises(DeadlineExceeded, match="first-byte"):
            await client.request(origin, b"POST", b"/", b"", b"", Timeouts(1, 0.2, 5))
        resp = await client.request(origin2, b"POST", b"/", b"", b"", Timeouts(1, 1, 0.3))
        with pytest.raises(DeadlineExceeded, match="total"):
            await resp.read()
        loop = asyncio.get_running_loop()
        with pytest.raises(DeadlineExceeded):  # the request's own deadline caps the timeouts
            await client.request(origin, b"POST", b"/", b"", b"", FAST, loop.time() + 0.2)
    finally:
        await client.close()
        await server.shutdown(0)
        await server2.shutdown(0)


async def test_connect_refused_and_oversized_body() -> None:
    client = UpstreamClient()
    server, origin = await serve(lambda _: _big())
    try:
        with pytest.raises(UpstreamConnectError, match="cannot connect"):
            await client.request(Origin("http", "127.0.0.1", 9), b"POST", b"/", b"", b"", FAST)
        resp = await client.request(origin, b"POST", b"/", b"", b"", FAST)
        with pytest.raises(UpstreamProtocolError, match="exceeds"):
            await resp.read(limit=1000)
    finally:
        await client.close()
        await server.shutdown(0)


async def _big() -> Response:
    return Response(b"x" * 5000)


async def test_body_delimited_by_close_and_early_close() -> None:
    async def raw(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        if (await reader.read(1)) == b"c":
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil close")
        else:
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nshort")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(raw, "127.0.0.1", 0)
    origin = Origin("http", "127.0.0.1", server.sockets[0].getsockname()[1])
    client = UpstreamClient()
    try:
        resp = await client.request(origin, b"POST", b"/", b"", b"c", FAST)
        assert await resp.read() == b"until close"
        resp = await client.request(origin, b"POST", b"/", b"", b"s", FAST)
        with pytest.raises(UpstreamError, match="before the response completed"):
            await resp.read()
    finally:
        await client.close()
        server.close()
        await server.wait_closed()


async def test_tls_with_private_ca(tls_cert: tuple[Path, Path]) -> None:
    cert, key = tls_cert
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = HttpServer(echo)
    _, port = await server.start("127.0.0.1", 0, tls=context)
    client = UpstreamClient()
    try:
        trusted = Origin("https", "127.0.0.1", port, str(cert))
        resp = await client.request(trusted, b"POST", b"/", b"", b"secure", FAST)
        assert await resp.read() == b"echo:secure"
        with pytest.raises(UpstreamConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await client.request(Origin("https", "127.0.0.1", port), b"POST", b"/", b"", b"", FAST)
    finally:
        await client.close()
        await server.shutdown(1)
