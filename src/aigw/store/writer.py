"""Batched, bounded, never-blocking writes: how spend and audit records reach the store
without a request ever waiting on a database.

``submit`` appends to a bounded in-memory queue and returns at once; a full queue (a
slow or dead database) drops the record and counts it, it never waits and never raises.
A background task writes a batch when ``batch_size`` records are pending or every
``interval_s``, retries a batch the database could not take, and ``close`` writes what
remains, bounded by ``close_timeout_s``. Drops are reported through ``on_drop(reason,
count)`` (a metric) and ``log`` (a warning): reason ``full``, ``error`` (the store failed
the batch after its retries) or ``closed`` (submitted after close, or still queued when
the close timeout ran out).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

from aigw.store.base import StoreError, StoreUnavailable

R = TypeVar("R")
LogHook = Callable[..., None]  # e.g. JsonLog.warning: (msg, **fields)
DropHook = Callable[[str, int], None]  # (reason, count), e.g. a counter's inc


def _no_drop_hook(reason: str, count: int) -> None:
    return None


def _no_log(msg: str, **fields: Any) -> None:
    return None


class BatchWriter(Generic[R]):
    def __init__(
        self,
        write: Callable[[Sequence[R]], Awaitable[None]],
        *,
        name: str = "store",
        max_pending: int = 10_000,
        batch_size: int = 500,
        interval_s: float = 0.25,
        retries: int = 2,
        retry_backoff_s: float = 0.2,
        close_timeout_s: float = 5.0,
        on_drop: DropHook = _no_drop_hook,
        log: LogHook = _no_log,
    ) -> None:
        self.write = write
        self.name = name
        self.max_pending = max_pending
        self.batch_size = batch_size
        self.interval_s = interval_s
        self.retries = retries
        self.retry_backoff_s = retry_backoff_s
        self.close_timeout_s = close_timeout_s
        self.on_drop = on_drop
        self.log = log
        self.written = 0
        self.dropped: dict[str, int] = {"full": 0, "error": 0, "closed": 0}
        self._queue: deque[R] = deque()
        self._in_flight = 0
        self._wake = asyncio.Event()
        self._closing = False
        self._overflowing = False
        self._task: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        return len(self._queue) + self._in_flight

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def submit(self, record: R) -> bool:
        """Queue ``record``; False (and counted) if it was dropped. Never waits."""
        if self._closing:
            self._drop("closed", 1)
            return False
        if len(self._queue) >= self.max_pending:
            if not self._overflowing:
                self._overflowing = True
                self.log("store writer: queue full, dropping", writer=self.name)
            self._drop("full", 1)
            return False
        if self._overflowing:
            self._overflowing = False
            self.log("store writer: queue has room again", writer=self.name, **self.dropped)
        self._queue.append(record)
        if len(self._queue) >= self.batch_size:
            self._wake.set()
        return True

    def _drop(self, reason: str, count: int) -> None:
        self.dropped[reason] += count
        self.on_drop(reason, count)

    async def _run(self) -> None:
        while True:
            timed_out = await self._wait()
            while len(self._queue) >= self.batch_size or (
                self._queue and (timed_out or self._closing)
            ):
                await self._write_batch()
            if self._closing and not self._queue:
                return

    async def _wait(self) -> bool:
        """Until a batch is full, the interval has passed (True) or close is called."""
        if len(self._queue) >= self.batch_size or self._closing:
            return False
        self._wake.clear()
        try:
            async with asyncio.timeout(self.interval_s):
                await self._wake.wait()
        except TimeoutError:
            return True
        return False

    async def _write_batch(self) -> None:
        take = min(self.batch_size, len(self._queue))
        batch = [self._queue.popleft() for _ in range(take)]
        self._in_flight = len(batch)
        try:
            await self._write_with_retries(batch)
        finally:
            self._in_flight = 0

    async def _write_with_retries(self, batch: list[R]) -> None:
        for attempt in range(self.retries + 1):
            try:
                await self.write(batch)
            except StoreUnavailable as exc:
                if attempt < self.retries:
                    await asyncio.sleep(self.retry_backoff_s * 2**attempt)
                    continue
                self._fail(batch, exc)
            except StoreError as exc:  # the database refused the batch: no point retrying
                self._fail(batch, exc)
            else:
                self.written += len(batch)
            return

    def _fail(self, batch: list[R], exc: StoreError) -> None:
        self.log("store writer: batch lost", writer=self.name, records=len(batch), error=str(exc))
        self._drop("error", len(batch))

    async def close(self) -> None:
        """Stop taking records and write those pending, for at most ``close_timeout_s``;
        what is left then is dropped (reason ``closed``)."""
        if self._closing:
            return
        self._closing = True
        self._wake.set()
        if self._task is None:
            self.start()
        assert self._task is not None
        try:
            async with asyncio.timeout(self.close_timeout_s):
                await asyncio.shield(self._task)
        except TimeoutError:
            left = self.pending  # the batch in flight is lost with the task
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._queue.clear()
            self._in_flight = 0
            if left:
                self.log("store writer: close timed out", writer=self.name, dropped=left)
                self._drop("closed", left)
