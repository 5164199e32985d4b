"""Dynamic batching: requests for one model queue up and run together.

``BatchPolicy`` is the pure core: given the waiting items and the time, it says which
of them form the next batch, or how long to wait. ``DynamicBatcher`` is the asyncio
adapter: it queues submissions, asks the policy, and runs one batch at a time in an
executor so the event loop stays free while the model works.

Errors: ``QueueFull`` (too many waiting; the server answers 503 + Retry-After) and
``BatcherClosed`` (the batcher was closed before the item ran).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class QueueFull(Exception):
    """``max_queue`` items already wait for this model."""


class BatcherClosed(Exception):
    """The batcher was closed; the item never ran."""


class Queued(Protocol):
    @property
    def arrived(self) -> float: ...

    @property
    def length(self) -> int: ...


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    """When to start a batch and which waiting items go in it.

    A batch starts when ``max_batch_size`` items wait or the oldest has waited
    ``max_delay_s``. With ``by_length`` and more items waiting than fit, the batch is
    the window of ``max_batch_size`` items, in length order, that holds the oldest item
    and spans the narrowest range of lengths: similar lengths waste less padding, and
    the oldest always goes, so nothing starves.
    """

    max_batch_size: int = 32
    max_delay_s: float = 0.005
    by_length: bool = False

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        if self.max_delay_s < 0:
            raise ValueError("max_delay_s must not be negative")

    def next_batch(self, waiting: Sequence[Queued], now: float) -> list[int] | float | None:
        """Indices (ascending) of the next batch, else seconds to wait, else None (empty).

        ``waiting`` is in arrival order.
        """
        if not waiting:
            return None
        due = waiting[0].arrived + self.max_delay_s
        if len(waiting) < self.max_batch_size and now < due:
            return due - now
        if len(waiting) <= self.max_batch_size:
            return list(range(len(waiting)))
        if not self.by_length:
            return list(range(self.max_batch_size))
        return sorted(self._window_around_oldest(waiting))

    def _window_around_oldest(self, waiting: Sequence[Queued]) -> list[int]:
        size = self.max_batch_size
        order = sorted(range(len(waiting)), key=lambda i: (waiting[i].length, i))
        oldest = order.index(0)
        first = max(0, oldest - size + 1)
        last = min(oldest, len(order) - size)

        def cost(start: int) -> tuple[int, int]:
            spread = waiting[order[start + size - 1]].length - waiting[order[start]].length
            return spread, sum(order[start : start + size])  # then prefer older items

        best = min(range(first, last + 1), key=cost)
        return order[best : best + size]


@dataclass(slots=True)
class _Entry(Generic[T, R]):
    item: T
    arrived: float
    length: int
    future: asyncio.Future[R] = field(repr=False)


class DynamicBatcher(Generic[T, R]):
    """Queues items for one model and runs them in batches through ``run_batch``.

    ``run_batch`` gets a list of items and returns one result per item, in order; it
    runs in ``executor`` (give each model its own single thread), one batch at a time.
    If it raises, every item of that batch fails with the exception.
    """

    def __init__(
        self,
        run_batch: Callable[[list[T]], list[R]],
        *,
        max_batch_size: int = 32,
        max_queue_delay_s: float = 0.005,
        max_queue: int = 256,
        length: Callable[[T], int] | None = None,
        executor: Executor,
    ) -> None:
        self._run_batch = run_batch
        self._policy = BatchPolicy(max_batch_size, max_queue_delay_s, length is not None)
        self._max_queue = max_queue
        self._length = length
        self._executor = executor
        self._waiting: list[_Entry[T, R]] = []
        self._running = 0
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def depth(self) -> int:
        """Items waiting plus items in the batch now running."""
        return len(self._waiting) + self._running

    async def submit(self, item: T) -> R:
        """Queue ``item`` and wait for its own result; raises ``QueueFull``, ``BatcherClosed``."""
        if self._closed:
            raise BatcherClosed("the model is shutting down")
        if len(self._waiting) >= self._max_queue:
            raise QueueFull(f"{len(self._waiting)} requests already wait for this model")
        length = self._length(item) if self._length is not None else 0
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        entry = _Entry(item, loop.time(), length, future)
        self._waiting.append(entry)
        if self._task is None:
            self._task = loop.create_task(self._serve(), name="aigw-batcher")
        self._wakeup.set()
        try:
            return await entry.future
        except asyncio.CancelledError:
            # A caller that gives up before its batch starts frees its place.
            with contextlib.suppress(ValueError):
                self._waiting.remove(entry)
            raise

    async def close(self) -> None:
        """Fail the waiting items with ``BatcherClosed`` and wait for the running batch."""
        self._closed = True
        waiting, self._waiting = self._waiting, []
        for entry in waiting:
            if not entry.future.done():
                entry.future.set_exception(BatcherClosed("the model shut down"))
        self._wakeup.set()
        if self._task is not None:
            await self._task

    async def _serve(self) -> None:
        while not self._closed:
            now = asyncio.get_running_loop().time()
            decision = self._policy.next_batch(self._waiting, now)
            if isinstance(decision, list):
                await self._run(self._take(decision))
                continue
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(decision):
                    await self._wakeup.wait()

    def _take(self, indices: list[int]) -> list[_Entry[T, R]]:
        chosen = set(indices)
        batch = [e for i, e in enumerate(self._waiting) if i in chosen]
        self._waiting = [e for i, e in enumerate(self._waiting) if i not in chosen]
        return batch

    async def _run(self, batch: list[_Entry[T, R]]) -> None:
        loop = asyncio.get_running_loop()
        self._running = len(batch)
        try:
            results = await loop.run_in_executor(
                self._executor, self._run_batch, [e.item for e in batch]
            )
            if len(results) != len(batch):
                raise RuntimeError(f"run_batch returned {len(results)} results for {len(batch)}")
        except Exception as exc:  # the batch's failure is each of its items' failure
            for entry in batch:
                if not entry.future.done():
                    entry.future.set_exception(exc)
            return
        finally:
            self._running = 0
        for entry, result in zip(batch, results, strict=True):
            if not entry.future.done():
                entry.future.set_result(result)
