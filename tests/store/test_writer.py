"""The batch writer, with a fake store: batches by size and by time, drops (and counts)
when full instead of waiting, retries an unavailable store, and flushes at close."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from aigw.store import BatchWriter, StoreError, StoreUnavailable

pytestmark = pytest.mark.anyio


class FakeSink:
    """A store's write method: records batches; can block or fail on demand."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.open = asyncio.Event()
        self.open.set()
        self.failures: list[StoreError] = []
        self.calls = 0

    async def write(self, batch: Sequence[int]) -> None:
        self.calls += 1
        await self.open.wait()
        if self.failures:
            raise self.failures.pop(0)
        self.batches.append(list(batch))

    @property
    def records(self) -> list[int]:
        return [r for batch in self.batches for r in batch]


class Hooks:
    def __init__(self) -> None:
        self.drops: list[tuple[str, int]] = []
        self.logs: list[tuple[str, dict[str, Any]]] = []

    def on_drop(self, reason: str, count: int) -> None:
        self.drops.append((reason, count))

    def log(self, msg: str, **fields: Any) -> None:
        self.logs.append((msg, fields))


def writer(sink: FakeSink, hooks: Hooks | None = None, **options: Any) -> BatchWriter[int]:
    hooks = hooks or Hooks()
    options = {"interval_s": 0.02, "retry_backoff_s": 0.001, **options}
    return BatchWriter(sink.write, on_drop=hooks.on_drop, log=hooks.log, **options)


async def wait_until(predicate: Any, timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110 - polling a fake's state is the test
            await asyncio.sleep(0.005)


async def test_close_flushes_everything_pending() -> None:
    sink = FakeSink()
    w = writer(sink, batch_size=4, interval_s=60.0)  # nothing would flush on its own
    w.start()
    for n in range(10):
        assert w.submit(n)
    await w.close()
    assert sink.records == list(range(10))
    assert [len(b) for b in sink.batches] == [4, 4, 2]
    assert (w.written, w.pending) == (10, 0)


async def test_close_without_start_still_writes() -> None:
    sink = FakeSink()
    w = writer(sink)
    w.submit(1)
    await w.close()
    assert sink.records == [1]


async def test_a_full_batch_is_written_without_waiting_for_the_interval() -> None:
    sink = FakeSink()
    w = writer(sink, batch_size=3, interval_s=60.0)
    w.start()
    for n in range(3):
        w.submit(n)
    await wait_until(lambda: sink.batches == [[0, 1, 2]])
    await w.close()


async def test_a_partial_batch_is_written_after_the_interval() -> None:
    sink = FakeSink()
    w = writer(sink, batch_size=100, interval_s=0.02)
    w.start()
    w.submit(7)
    await wait_until(lambda: sink.records == [7])
    await w.close()


async def test_submit_does_not_wait_for_a_blocked_store() -> None:
    sink = FakeSink()
    sink.open.clear()  # every write hangs
    hooks = Hooks()
    w = writer(sink, hooks, batch_size=2, max_pending=5, interval_s=0.001)
    w.start()
    w.submit(0)
    w.submit(1)
    await wait_until(lambda: sink.calls == 1)  # the writer is stuck in a write
    accepted = [w.submit(n) for n in range(2, 12)]  # all of this without one await
    assert accepted == [True] * 5 + [False] * 5
    assert w.dropped["full"] == 5
    assert hooks.drops == [("full", 1)] * 5
    assert [msg for msg, _ in hooks.logs] == ["store writer: queue full, dropping"]  # once
    sink.open.set()
    await w.close()
    assert sink.records == [0, 1, 2, 3, 4, 5, 6]


async def test_room_again_is_logged_with_the_drop_counts() -> None:
    sink = FakeSink()
    sink.open.clear()
    hooks = Hooks()
    w = writer(sink, hooks, batch_size=1, max_pending=1)
    w.start()
    w.submit(0)
    await wait_until(lambda: sink.calls == 1)
    w.submit(1)
    assert not w.submit(2)
    sink.open.set()
    await wait_until(lambda: w.pending == 0)
    assert w.submit(3)
    assert hooks.logs[-1] == ("store writer: queue has room again",
                              {"writer": "store", "full": 1, "error": 0, "closed": 0})  # fmt: skip
    await w.close()


async def test_an_unavailable_store_is_retried() -> None:
    sink = FakeSink()
    sink.failures = [StoreUnavailable("down"), StoreUnavailable("still down")]
    w = writer(sink, retries=2)
    w.start()
    w.submit(1)
    await w.close()
    assert sink.records == [1]
    assert w.dropped == {"full": 0, "error": 0, "closed": 0}


async def test_a_batch_is_dropped_and_counted_after_its_retries() -> None:
    sink = FakeSink()
    sink.failures = [StoreUnavailable("down")] * 3 + [StoreError("refused")]
    hooks = Hooks()
    w = writer(sink, hooks, retries=2, batch_size=2)
    w.start()
    for n in range(4):
        w.submit(n)
    await w.close()
    assert sink.records == []  # 3 tries for [0, 1]; [2, 3] refused outright
    assert sink.calls == 4
    assert hooks.drops == [("error", 2), ("error", 2)]
    assert hooks.logs[0][1]["error"] == "down"


async def test_close_is_bounded_and_counts_what_it_could_not_write() -> None:
    sink = FakeSink()
    sink.open.clear()  # the store never answers
    hooks = Hooks()
    w = writer(sink, hooks, batch_size=2, close_timeout_s=0.05)
    w.start()
    for n in range(5):
        w.submit(n)
    async with asyncio.timeout(5):
        await w.close()
    assert w.dropped["closed"] == 5  # the 2 in flight and the 3 queued
    assert hooks.drops[-1] == ("closed", 5)
    assert not w.submit(9)  # after close: dropped, not raised
    assert w.dropped["closed"] == 6
