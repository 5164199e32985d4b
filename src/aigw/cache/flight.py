"""Single-flight: identical requests in flight at once share one upstream call.

A ``Flight`` runs the call in its own task, apart from any client, and everyone who
asked for it (the first requester included) is a subscriber: a streamed answer is
fanned out chunk by chunk to every subscriber at its own pace, a JSON answer handed
to each. The first requester leaving does not fail the others; the call is cancelled
only when no subscriber is left.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

from aigw.types import GatewayResponse, Result, close_stream


class Flight:
    def __init__(self, call: Awaitable[Result], on_end: Callable[[Flight], None]) -> None:
        self.chunks: list[bytes] = []
        self.response: GatewayResponse | None = None
        self.streamed = False
        self.error: BaseException | None = None
        self.done = False
        self.subscribers = 0
        self._changed = asyncio.Event()
        self._on_end = on_end
        self.task = asyncio.get_running_loop().create_task(self._run(call))

    async def _run(self, call: Awaitable[Result]) -> None:
        try:
            result = await call
            if isinstance(result, GatewayResponse):
                self.response = result
            else:
                self.streamed = True
                self._notify()
                async for chunk in _closing(result.chunks):
                    self.chunks.append(chunk)
                    self._notify()
        except asyncio.CancelledError:
            self.error = asyncio.CancelledError()
        except Exception as exc:  # handed to every subscriber, which raises it as its own
            self.error = exc
        finally:
            self.done = True
            self._notify()
            self._on_end(self)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait(self) -> None:
        await self._changed.wait()

    # -- subscribers

    async def first(self) -> None:
        """Wait until the answer has started: a JSON answer, a stream, or an error."""
        self.subscribers += 1
        try:
            while not (self.done or self.streamed):
                await self._wait()
        except BaseException:
            self.leave()
            raise

    async def complete(self) -> None:
        while not self.done:
            await self._wait()

    def leave(self) -> None:
        self.subscribers -= 1
        if self.subscribers <= 0 and not self.done:
            self.task.cancel()  # nobody wants the answer any more

    async def replay(self) -> AsyncIterator[bytes]:
        """The stream from its first chunk, live until it ends (for one subscriber)."""
        sent = 0
        try:
            while True:
                while sent < len(self.chunks):
                    yield self.chunks[sent]
                    sent += 1
                if self.done:
                    if self.error is not None:
                        raise self.error
                    return
                await self._wait()
        finally:
            self.leave()


async def _closing(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    try:
        async for chunk in chunks:
            yield chunk
    finally:
        await close_stream(chunks)
