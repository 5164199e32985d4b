"""Pacing a simulated stream: token rate, and the ``drop:N`` fault.

A dialect describes a stream as a ``Stream``: the opening frames, one frame per
content chunk, and the closing frames. ``play`` sends them at the configured token
rate, or stops after N content chunks and cuts the connection when told to drop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from itertools import islice
from typing import NamedTuple

from aigw.http.server import AbortConnection


class Stream(NamedTuple):
    head: bytes  # sent at once with the response headers
    body: Iterator[bytes]  # one SSE frame per content chunk, paced
    tail: bytes  # finish, usage and terminator frames


async def play(
    stream: Stream,
    tokens_per_s: float,
    drop_after: int | None = None,
) -> AsyncIterator[bytes]:
    """Yield the frames of ``stream``.

    With ``drop_after`` set, yield only that many content chunks, then close the
    connection (``AbortConnection``) without the tail.
    """
    if tokens_per_s <= 0:
        # Unpaced, the frames go out in one write: the same bytes, a fraction of the cost.
        frames = stream.body if drop_after is None else islice(stream.body, drop_after)
        yield stream.head + b"".join(frames) + (stream.tail if drop_after is None else b"")
    else:
        yield stream.head
        loop = asyncio.get_running_loop()
        interval, start = 1.0 / tokens_per_s, loop.time()
        for sent, frame in enumerate(islice(stream.body, drop_after)):
            delay = start + (sent + 1) * interval - loop.time()  # no drift over a long reply
            if delay > 0:
                await asyncio.sleep(delay)
            yield frame
        if drop_after is None:
            yield stream.tail
    if drop_after is not None:
        # A reply shorter than N chunks is cut before its tail all the same.
        raise AbortConnection(reset=False)
