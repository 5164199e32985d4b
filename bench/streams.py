"""A small asyncio HTTP/1.1 client for streamed chat completions, timed to the byte.

No external dependencies, so that the client is the same for every target. It sends a
`stream: true` chat request over a keep-alive connection and records:

* TTFB: from the end of the send to the arrival of the first body byte (the first
  chunk of the SSE stream, not the response head, which a server may flush early);
* total: from the send to the end of the body;
* the arrival time of every SSE event, hence the largest gap between two events.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

_NETWORK_ERRORS = (
    OSError,
    asyncio.IncompleteReadError,
    asyncio.LimitOverrunError,
    TimeoutError,
    ValueError,  # a malformed status line or chunk size
)


@dataclass
class StreamTiming:
    """One streamed response. Times in seconds; `error` is empty on success."""

    status: int = 0
    ttfb_s: float = 0.0
    total_s: float = 0.0
    events: int = 0
    max_gap_s: float = 0.0
    done: bool = False
    keep_alive: bool = True
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and self.status == 200 and self.done


def chat_request(port: int, model: str, max_tokens: int = 16) -> bytes:
    """The raw bytes of a streaming chat request."""
    body = json.dumps(
        {
            "model": model,
            "messages": [{"role": "user", "content": "Count from one to twenty."}],
            "max_tokens": max_tokens,
            "stream": True,
        },
        separators=(",", ":"),
    ).encode()
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        "Content-Type: application/json\r\n"
        "Accept: text/event-stream\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class SseClock:
    """Splits body bytes into SSE events and keeps the arrival time of each."""

    def __init__(self) -> None:
        self._buffer = b""
        self.times: list[float] = []
        self.done = False

    def feed(self, data: bytes, now: float) -> None:
        self._buffer = (self._buffer + data).replace(b"\r\n", b"\n")
        while (end := self._buffer.find(b"\n\n")) >= 0:
            event, self._buffer = self._buffer[:end], self._buffer[end + 2 :]
            if not event.strip():
                continue
            self.times.append(now)
            self.done = self.done or b"data: [DONE]" in event or b"data:[DONE]" in event

    def max_gap(self) -> float:
        return max((b - a for a, b in zip(self.times, self.times[1:], strict=False)), default=0.0)


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    raw = await reader.readuntil(b"\r\n\r\n")
    lines = raw.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return status, headers


async def _chunked(reader: asyncio.StreamReader) -> AsyncIterator[tuple[float, bytes]]:
    while True:
        size_line = await reader.readuntil(b"\r\n")
        # The size line is the first byte of each chunk: that is the arrival time.
        arrived = time.perf_counter()
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass  # trailers
            return
        data = await reader.readexactly(size + 2)
        yield arrived, data[:-2]


async def _sized(reader: asyncio.StreamReader, length: int) -> AsyncIterator[tuple[float, bytes]]:
    while length > 0:
        data = await reader.read(min(length, 65536))
        if not data:
            raise asyncio.IncompleteReadError(b"", length)
        length -= len(data)
        yield time.perf_counter(), data


async def _until_eof(reader: asyncio.StreamReader) -> AsyncIterator[tuple[float, bytes]]:
    while data := await reader.read(65536):
        yield time.perf_counter(), data


def _body(
    reader: asyncio.StreamReader, headers: dict[str, str]
) -> AsyncIterator[tuple[float, bytes]]:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return _chunked(reader)
    if "content-length" in headers:
        return _sized(reader, int(headers["content-length"]))
    return _until_eof(reader)


async def timed_exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> StreamTiming:
    """Send one request on an open connection and time its streamed response."""
    clock = SseClock()
    writer.write(request)
    await writer.drain()
    sent = time.perf_counter()
    status, headers = await _read_head(reader)
    first = 0.0
    async for arrived, data in _body(reader, headers):
        first = first or arrived
        clock.feed(data, arrived)
    ended = time.perf_counter()
    framed = "content-length" in headers or "chunked" in headers.get("transfer-encoding", "")
    return StreamTiming(
        status=status,
        ttfb_s=(first or ended) - sent,
        total_s=ended - sent,
        events=len(clock.times),
        max_gap_s=clock.max_gap(),
        done=clock.done,
        keep_alive=framed and headers.get("connection", "").lower() != "close",
    )


class KeepAliveConnection:
    """One client connection, reopened only when the server closes it."""

    def __init__(self, port: int, timeout_s: float) -> None:
        self.port = port
        self.timeout_s = timeout_s
        self.connects = 0
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def exchange(self, request: bytes) -> StreamTiming:
        try:
            async with asyncio.timeout(self.timeout_s):
                reader, writer = await self._open()
                timing = await timed_exchange(reader, writer, request)
        except _NETWORK_ERRORS as exc:
            await self.close()
            return StreamTiming(error=f"{type(exc).__name__}: {exc}"[:200])
        if not timing.keep_alive:
            await self.close()
        return timing

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._streams is None:
            self._streams = await asyncio.open_connection("127.0.0.1", self.port)
            self.connects += 1
        return self._streams

    async def close(self) -> None:
        if self._streams is not None:
            writer = self._streams[1]
            self._streams = None
            writer.close()
            # A peer that already reset the connection leaves it closed either way.
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def paired_sequential(
    ports: Sequence[tuple[int, bytes]], count: int, warmup: int, timeout_s: float
) -> list[list[StreamTiming]]:
    """`count` sequential requests per target, alternating targets request by request so
    that both see the same machine noise; the first `warmup` of each are discarded."""
    connections = [KeepAliveConnection(port, timeout_s) for port, _ in ports]
    results: list[list[StreamTiming]] = [[] for _ in ports]
    try:
        for i in range(warmup + count):
            for conn, (_, request), out in zip(connections, ports, results, strict=True):
                timing = await conn.exchange(request)
                if i >= warmup:
                    out.append(timing)
    finally:
        for conn in connections:
            await conn.close()
    return results


async def fan_out(port: int, request: bytes, count: int, timeout_s: float) -> list[StreamTiming]:
    """`count` streams at once, one connection each."""

    async def one() -> StreamTiming:
        conn = KeepAliveConnection(port, timeout_s)
        try:
            return await conn.exchange(request)
        finally:
            await conn.close()

    return list(await asyncio.gather(*(one() for _ in range(count))))


# --- summaries ------------------------------------------------------------------------


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class TtfbSummary:
    """Sequential streamed requests to one target. Times in milliseconds."""

    requests: int
    errors: int
    ttfb_p50_ms: float
    ttfb_p99_ms: float
    total_p50_ms: float
    total_p99_ms: float
    error_samples: list[str] = field(default_factory=list)


def summarize_ttfb(timings: Sequence[StreamTiming]) -> TtfbSummary:
    good = [t for t in timings if t.ok]
    ttfb = [t.ttfb_s * 1e3 for t in good]
    total = [t.total_s * 1e3 for t in good]
    return TtfbSummary(
        requests=len(timings),
        errors=len(timings) - len(good),
        ttfb_p50_ms=percentile(ttfb, 50),
        ttfb_p99_ms=percentile(ttfb, 99),
        total_p50_ms=percentile(total, 50),
        total_p99_ms=percentile(total, 99),
        error_samples=_error_samples(timings),
    )


@dataclass(frozen=True)
class FanoutSummary:
    """Concurrent streams to one target. A stream stalls when a gap between two of its
    events exceeds `stall_factor` times the expected inter-token interval."""

    streams: int
    completed: int
    errors: int
    wall_s: float
    expected_interval_ms: float
    stall_factor: float
    max_gap_ms: float
    p99_max_gap_ms: float
    stalled_streams: int
    ttfb_p50_ms: float
    ttfb_p99_ms: float
    error_samples: list[str] = field(default_factory=list)


def summarize_fanout(
    timings: Sequence[StreamTiming], interval_s: float, wall_s: float, stall_factor: float = 5.0
) -> FanoutSummary:
    good = [t for t in timings if t.ok]
    gaps = [t.max_gap_s * 1e3 for t in good]
    threshold_ms = stall_factor * interval_s * 1e3
    return FanoutSummary(
        streams=len(timings),
        completed=len(good),
        errors=len(timings) - len(good),
        wall_s=wall_s,
        expected_interval_ms=interval_s * 1e3,
        stall_factor=stall_factor,
        max_gap_ms=max(gaps, default=0.0),
        p99_max_gap_ms=percentile(gaps, 99),
        stalled_streams=sum(gap > threshold_ms for gap in gaps),
        ttfb_p50_ms=percentile([t.ttfb_s * 1e3 for t in good], 50),
        ttfb_p99_ms=percentile([t.ttfb_s * 1e3 for t in good], 99),
        error_samples=_error_samples(timings),
    )


def _error_samples(timings: Sequence[StreamTiming], limit: int = 5) -> list[str]:
    samples: list[str] = []
    for t in timings:
        if not t.ok:
            reason = t.error or f"status {t.status}, done={t.done}, events={t.events}"
            if reason not in samples:
                samples.append(reason)
    return samples[:limit]
