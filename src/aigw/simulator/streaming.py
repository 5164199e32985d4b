"""Pacing a simulated stream: token rate, and the ``drop:N`` fault.

A dialect describes a stream as a ``Stream``: the opening frames, one frame per
content chunk, and the closing frames. ``play`` sends them at the configured token
rate, or stops after N content chunks and cuts the connection when told to drop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from itertools import islice
from typing import NamedTuple


class Stream(NamedTuple):
    head: bytes  # sent at once with the response headers
    body: Iterator[bytes]  # one SSE frame per content chunk, paced
    tail: bytes  # finish, usage and terminator frames


async def play(
    stream: Stream,
    tokens_per_s: float,
    drop_after: int | None = None,
    cut: Callable[[], None] | None = None,
) -> AsyncIterator[bytes]:
    """Yield the frames of ``stream``.

    With ``drop_after`` set, yield only that many content chunks, then call ``cut``
    (which closes the connection) and end without the tail.
    """
    if tokens_per_s <= 0:
        # Unpaced, the frames go out in one write: the same bytes, a fraction of the cost.
        frames = stream.body if drop_after is None else islice(stream.body, drop_after)
        yield stream.head + b"".join(frames) + (stream.tail if drop_after is None else b"")
    else:
        yield stream.head
        async for frame in _paced(stream.body, 1.0 / tokens_per_s, drop_after):
            yield frame
        if drop_after is None:
            yield stream.tail
    if drop_after is not None and cut is not None:
        cut()  # a reply shorter than N chunks is cut before its tail all the same


async def _paced(
    frames: Iterator[bytes], interval: float, limit: int | None
) -> AsyncIterator[bytes]:
    """Yield ``frames`` (at most ``limit``), one every ``interval`` seconds, without drift."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for sent, frame in enumerate(islice(frames, limit)):
        delay = start + (sent + 1) * interval - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        yield frame
