"""Pacing a simulated stream: token rate, and the ``drop:N`` fault.

A dialect describes a stream as a ``Stream``: the opening frames, one frame per
content chunk, and the closing frames. ``play`` sends them at the configured token
rate, or stops after N content chunks and cuts the connection when told to drop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
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
    yield stream.head
    loop = asyncio.get_running_loop()
    interval = 1.0 / tokens_per_s if tokens_per_s > 0 else 0.0
    start = loop.time()
    for sent, frame in enumerate(stream.body):
        if sent == drop_after:
            break
        if interval:
            delay = start + (sent + 1) * interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        yield frame
    if drop_after is None:
        yield stream.tail
    elif cut is not None:
        cut()  # a short reply is cut before its tail all the same
