"""Micro-comparison of candidate upstream HTTP clients, for the record.

    python bench/compare_clients.py [--seconds 3] [--loop uvloop|asyncio]

Each client POSTs the bench chat request to nginx's instant upstream (`return 200`,
~330 bytes) from this process, first one request at a time, then from 16 concurrent
tasks, and the table gives requests/s and this process's CPU µs per request
(`time.process_time`). The upstream costs nothing, so the numbers are the client's own
cost: what a gateway would pay per proxied request for its upstream leg alone.

Candidates: aigw's own pooled client (`aigw.upstream.client`), a minimal asyncio-streams
client (the floor for stream-based code), httpcore2 and httpx2 (the general-purpose
choice), aiohttp when installed. A candidate that is not installed is listed as such.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from procs import ProcessGroup
from stack import REPO, start_nginx

sys.path.insert(0, str(REPO / "src"))

BODY = (
    b'{"model":"bench-model","messages":[{"role":"user","content":'
    b'"Say hello in one short sentence."}],"max_tokens":16}'
)
CONCURRENCY = 16

Post = Callable[[], Awaitable[int]]


@dataclass(frozen=True)
class Candidate:
    """A client under test: `open(url)` returns (post, close) bound to one pool."""

    name: str
    module: str  # what must be importable
    open: Callable[[str], Awaitable[tuple[Post, Callable[[], Awaitable[None]]]]]


async def _open_aigw(url: str) -> tuple[Post, Callable[[], Awaitable[None]]]:
    from aigw.upstream.client import Timeouts, UpstreamClient, parse_base_url

    client = UpstreamClient()
    origin, path = parse_base_url(url)
    headers = b"content-type: application/json\r\n"
    timeouts = Timeouts()

    async def post() -> int:
        response = await client.request(origin, b"POST", path.encode(), headers, BODY, timeouts)
        await response.read()
        return int(response.status)

    return post, client.close


async def _open_streams(url: str) -> tuple[Post, Callable[[], Awaitable[None]]]:
    host, port, path = _split(url)
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(BODY)}\r\n\r\n"
    ).encode() + BODY
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def post() -> int:
        reader, writer = idle.pop() if idle else await asyncio.open_connection(host, port)
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await reader.readexactly(length)
        idle.append((reader, writer))
        return int(head.split(b" ", 2)[1])

    async def close() -> None:
        for _, writer in idle:
            writer.close()

    return post, close


async def _open_httpcore(url: str) -> tuple[Post, Callable[[], Awaitable[None]]]:
    import httpcore2

    pool = httpcore2.AsyncConnectionPool(max_connections=CONCURRENCY * 2)
    headers = [(b"content-type", b"application/json")]

    async def post() -> int:
        response = await pool.request("POST", url, headers=headers, content=BODY)
        return int(response.status)

    return post, pool.aclose


async def _open_httpx(url: str) -> tuple[Post, Callable[[], Awaitable[None]]]:
    import httpx2

    client = httpx2.AsyncClient(limits=httpx2.Limits(max_connections=CONCURRENCY * 2))
    headers = {"content-type": "application/json"}

    async def post() -> int:
        response = await client.post(url, content=BODY, headers=headers)
        return int(response.status_code)

    return post, client.aclose


async def _open_aiohttp(url: str) -> tuple[Post, Callable[[], Awaitable[None]]]:
    import aiohttp

    session: Any = aiohttp.ClientSession()
    headers = {"content-type": "application/json"}

    async def post() -> int:
        async with session.post(url, data=BODY, headers=headers) as response:
            await response.read()
            return int(response.status)

    return post, session.close


CANDIDATES = [
    Candidate("aigw.upstream.client", "aigw.upstream.client", _open_aigw),
    Candidate("asyncio streams (minimal)", "asyncio", _open_streams),
    Candidate("httpcore2", "httpcore2", _open_httpcore),
    Candidate("httpx2", "httpx2", _open_httpx),
    Candidate("aiohttp", "aiohttp", _open_aiohttp),
]


def _split(url: str) -> tuple[str, int, str]:
    rest = url.removeprefix("http://")
    hostport, _, path = rest.partition("/")
    host, _, port = hostport.partition(":")
    return host, int(port), "/" + path


@dataclass(frozen=True)
class Measured:
    rps: float
    cpu_us: float
    errors: int


async def _measure(post: Post, tasks: int, seconds: float) -> Measured:
    done, errors = 0, 0
    stop_at = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done, errors
        while time.perf_counter() < stop_at:
            status = await post()
            done += 1
            errors += status != 200

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(tasks)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return Measured(done / wall, cpu * 1e6 / max(1, done), errors)


async def _compare(candidate: Candidate, url: str, seconds: float) -> list[Measured]:
    post, close = await candidate.open(url)
    try:
        await _measure(post, 1, min(1.0, seconds))  # warm-up: connections, imports
        return [await _measure(post, tasks, seconds) for tasks in (1, CONCURRENCY)]
    finally:
        await close()


def _row(name: str, measured: list[Measured]) -> str:
    cells = [f"{m.rps:,.0f} | {m.cpu_us:.0f} | {m.errors}" for m in measured]
    return f"| {name} | " + " | ".join(cells) + " |"


def _runner(loop: str) -> Callable[[Coroutine[Any, Any, list[Measured]]], list[Measured]]:
    if loop == "uvloop":
        import uvloop

        return uvloop.run
    return asyncio.run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    args = parser.parse_args()
    run = _runner(args.loop)
    lines = [
        f"Upstream clients against nginx `return 200`, {args.loop} loop, {args.seconds:g} s"
        " per cell; CPU = this process's µs per request.",
        "",
        f"| client | c=1 req/s | c=1 CPU µs | errors | c={CONCURRENCY} req/s"
        f" | c={CONCURRENCY} CPU µs | errors |",
        "|---|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp, ProcessGroup(Path(tmp)) as group:
        nginx = start_nginx(group)
        url = f"http://127.0.0.1:{nginx.upstream_port}/v1/chat/completions"
        for candidate in CANDIDATES:
            if importlib.util.find_spec(candidate.module.split(".")[0]) is None:
                lines.append(f"| {candidate.name} | not installed | | | | | |")
                continue
            print(f"measuring {candidate.name}", file=sys.stderr, flush=True)
            lines.append(_row(candidate.name, run(_compare(candidate, url, args.seconds))))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
