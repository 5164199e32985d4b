"""An open-loop load generator: chat requests at a fixed arrival rate, whatever the
answers do.

    python bench/openloop.py --port PORT --model MODEL --rate 640 --seconds 15
                             [--timeout 15] [--max-connections 8000]

wrk and every closed-loop client send the next request only when an answer came back,
so a server that slows down is sent less and its queueing never shows (coordinated
omission). Here request i is due at start + i / rate, sent then on an idle keep-alive
connection or a new one, and timed from when it was due: a request the generator sends
late is charged the wait. The schedule is evenly spaced, not Poisson: the point is a
known offered rate. Standard library only (uvloop when installed, which halves the
generator's CPU); prints one JSON object with a record per request
`[due offset s, status, latency ms, send lag ms, error]` (status 0: no answer; error
empty, `timeout`, `pool_full` (no connection to send on) or the exception's name), the
achieved send rate and the generator's own CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import sys
import time

_ERRORS = (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError)
Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class PoolFull(Exception):
    """Every allowed connection is busy: the request is not sent."""


def chat_request(port: int, model: str) -> bytes:
    """post.lua's request (not streamed), as raw bytes."""
    body = json.dumps(
        {
            "model": model,
            "messages": [
                {"role": "system", "content": "You are a terse assistant."},
                {"role": "user", "content": "Say hello in one short sentence."},
            ],
            "max_tokens": 16,
            "temperature": 0,
        },
        separators=(",", ":"),
    ).encode()
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class Pool:
    """Keep-alive connections to one port: the most recently used idle one first."""

    def __init__(self, port: int, max_connections: int) -> None:
        self.port = port
        self.max_connections = max_connections
        self.idle: list[Conn] = []
        self.open = 0
        self.peak = 0
        self.connects = 0

    async def get(self) -> Conn:
        while self.idle:
            conn = self.idle.pop()
            if not conn[1].is_closing() and not conn[0].at_eof():
                return conn
            self.discard(conn)
        if self.open >= self.max_connections:
            raise PoolFull
        self.open += 1
        self.peak = max(self.peak, self.open)
        try:
            conn = await asyncio.open_connection("127.0.0.1", self.port)
        except BaseException:
            self.open -= 1
            raise
        self.connects += 1
        return conn

    def put(self, conn: Conn) -> None:
        self.idle.append(conn)

    def discard(self, conn: Conn) -> None:
        self.open -= 1
        conn[1].close()

    def close(self) -> None:
        for conn in self.idle:
            conn[1].close()
        self.idle.clear()


async def exchange(conn: Conn, request: bytes) -> tuple[int, bool]:
    """Send one request, read its whole answer; (status, connection reusable)."""
    reader, writer = conn
    writer.write(request)
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(head[0].split()[1])
    headers = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip().lower()
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif "chunked" in headers.get("transfer-encoding", ""):
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            await reader.readexactly(size + 2)
        while await reader.readuntil(b"\r\n") != b"\r\n":
            pass  # trailers
    else:
        await reader.read()  # delimited by the close
        return status, False
    return status, headers.get("connection") != "close"


class Generator:
    def __init__(self, port: int, model: str, timeout_s: float, max_connections: int) -> None:
        self.pool = Pool(port, max_connections)
        self.request = chat_request(port, model)
        self.timeout_s = timeout_s
        self.records: list[list[object]] = []

    async def one(self, due: float, start: float) -> None:
        sent = time.perf_counter()
        status, error, conn = 0, "", None
        try:
            async with asyncio.timeout(due + self.timeout_s - sent):
                conn = await self.pool.get()
                status, reusable = await exchange(conn, self.request)
            if reusable:
                self.pool.put(conn)
            else:
                self.pool.discard(conn)
            conn = None
        except PoolFull:
            error = "pool_full"
        except TimeoutError:
            error = "timeout"
        except _ERRORS as exc:
            error = type(exc).__name__
        finally:
            if conn is not None:
                self.pool.discard(conn)
        latency_ms = (time.perf_counter() - due) * 1e3
        lag_ms = (sent - due) * 1e3
        self.records.append([round(due - start, 6), status, latency_ms, lag_ms, error])

    async def run(self, rate: float, seconds: float) -> dict[str, object]:
        total = max(1, round(rate * seconds))
        tasks: set[asyncio.Task[None]] = set()
        cpu = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter() + 0.05
        first_send = last_send = 0.0
        for i in range(total):
            due = start + i / rate
            if (delay := due - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
            last_send = time.perf_counter()
            first_send = first_send or last_send
            task = asyncio.create_task(self.one(due, start))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        sending_s = last_send - first_send
        while tasks:  # each ends by its own timeout at the latest
            await asyncio.wait(set(tasks))
        self.pool.close()
        used = resource.getrusage(resource.RUSAGE_SELF)
        cpu_s = used.ru_utime + used.ru_stime - cpu.ru_utime - cpu.ru_stime
        return {
            "loop": type(asyncio.get_running_loop()).__module__.split(".")[0],
            "rate": rate,
            "seconds": seconds,
            "sent": total,
            "sending_s": sending_s,
            "achieved_rate": (total - 1) / sending_s if sending_s > 0 else 0.0,
            "wall_s": time.perf_counter() - start,
            "cpu_us_per_request": cpu_s * 1e6 / total,
            "peak_connections": self.pool.peak,
            "connects": self.pool.connects,
            "records": sorted(self.records),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--timeout", type=float, default=15.0, help="per request, from due")
    parser.add_argument("--max-connections", type=int, default=8000)
    args = parser.parse_args()
    generator = Generator(args.port, args.model, args.timeout, args.max_connections)
    coro = generator.run(args.rate, args.seconds)
    try:
        import uvloop
    except ImportError:
        data = asyncio.run(coro)
    else:
        data = uvloop.run(coro)
    with contextlib.suppress(BrokenPipeError):
        json.dump(data, sys.stdout)
        sys.stdout.flush()


if __name__ == "__main__":
    main()
