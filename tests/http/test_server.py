"""The HTTP/1.1 server with real sockets on 127.0.0.1 (in-process)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from aigw.http.server import HttpServer, Request, Response, ServerLimits, StreamingResponse

pytestmark = pytest.mark.anyio


async def read_response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head, await asyncio.wait_for(reader.readexactly(length), 5)


async def test_keep_alive_and_pipelining_in_order() -> None:
    async def handler(req: Request) -> Response:
        if req.path == b"/slow":
            await asyncio.sleep(0.05)
        return Response(req.path)

    server = HttpServer(handler)
    _, port = await server.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\nGET /fast HTTP/1.1\r\nhost: x\r\n\r\n")
        assert (await read_response(reader))[1] == b"/slow"
        assert (await read_response(reader))[1] == b"/fast"
        writer.write(b"POST /third HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nhi")
        assert (await read_response(reader))[1] == b"/third"
    finally:
        writer.close()
        await server.shutdown(1)


async def test_body_limit_with_length_and_chunked() -> None:
    server = HttpServer(lambda r: _ok(), ServerLimits(max_body_bytes=10))
    _, port = await server.start()
    try:
        for request in (
            b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 11\r\n\r\n",
            b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
            b"6\r\nabcdef\r\n6\r\nabcdef\r\n",
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            head, body = await read_response(reader)
            assert head.startswith(b"HTTP/1.1 413 ") and b"request_too_large" in body
            assert b"connection: close" in head
            writer.close()
    finally:
        await server.shutdown(1)


async def _ok() -> Response:
    return Response(b"ok")


async def test_client_disconnect_cancels_handler() -> None:
    cancelled = asyncio.Event()

    async def handler(_: Request) -> Response:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return Response(b"never")

    server = HttpServer(handler)
    _, port = await server.start()
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    await asyncio.sleep(0.05)
    writer.close()
    await asyncio.wait_for(cancelled.wait(), 5)
    await server.shutdown(1)


async def test_streaming_is_chunked_and_drain_waits_for_it() -> None:
    async def handler(_: Request) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for i in range(3):
                await asyncio.sleep(0.05)
                yield b"data: %d\n\n" % i

        return StreamingResponse(chunks())

    server = HttpServer(handler)
    _, port = await server.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert b"transfer-encoding: chunked" in head
    shutdown = asyncio.create_task(server.shutdown(5))  # drain while the stream is in flight
    rest = await asyncio.wait_for(reader.read(), 5)
    await shutdown
    assert rest == b"".join(b"9\r\ndata: %d\n\n\r\n" % i for i in range(3)) + b"0\r\n\r\n"
    writer.close()


async def test_expect_continue_and_head() -> None:
    server = HttpServer(lambda r: _ok())
    _, port = await server.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\nexpect: 100-continue\r\n\r\n"
        )
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"hi")
        assert (await read_response(reader))[1] == b"ok"
        writer.write(b"HEAD / HTTP/1.1\r\nhost: x\r\n\r\nGET / HTTP/1.1\r\nhost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert b"content-length: 2" in head  # HEAD: the length, not the body
        assert (await read_response(reader))[1] == b"ok"
    finally:
        writer.close()
        await server.shutdown(1)
