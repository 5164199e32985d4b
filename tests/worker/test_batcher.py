"""The dynamic batcher: the pure policy with a fake clock, then the asyncio adapter."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import anyio
import pytest

from aigw.worker.batcher import BatcherClosed, BatchPolicy, DynamicBatcher, QueueFull

# -- the policy -------------------------------------------------------------------------


@dataclass
class Item:
    arrived: float
    length: int = 0


def items(*lengths: int, arrived: float = 0.0) -> list[Item]:
    return [Item(arrived + i * 0.001, n) for i, n in enumerate(lengths)]


def test_policy_waits_for_the_oldest_items_deadline() -> None:
    policy = BatchPolicy(max_batch_size=4, max_delay_s=0.010)
    waiting = items(1, 1)  # arrived at 0.000 and 0.001
    assert policy.next_batch([], now=5.0) is None
    assert policy.next_batch(waiting, now=0.004) == pytest.approx(0.006)
    assert policy.next_batch(waiting, now=0.010) == [0, 1]


def test_policy_starts_a_full_batch_at_once_and_caps_its_size() -> None:
    policy = BatchPolicy(max_batch_size=3, max_delay_s=10.0)
    assert policy.next_batch(items(1, 1, 1), now=0.0) == [0, 1, 2]
    assert policy.next_batch(items(1, 1, 1, 1, 1), now=0.0) == [0, 1, 2]


def test_policy_by_length_takes_similar_lengths_around_the_oldest() -> None:
    policy = BatchPolicy(max_batch_size=3, max_delay_s=0.0, by_length=True)
    #                  0   1   2   3   4   5    6
    waiting = items(50, 9, 51, 10, 500, 49, 11)
    assert policy.next_batch(waiting, now=1.0) == [0, 2, 5]  # the oldest is long
    waiting = items(10, 50, 51, 11, 49, 9)
    assert policy.next_batch(waiting, now=1.0) == [0, 3, 5]  # the oldest is short


def test_policy_by_length_never_starves_an_odd_length_item() -> None:
    """A lone long item among a stream of short ones still goes once it is oldest."""
    policy = BatchPolicy(max_batch_size=4, max_delay_s=0.0, by_length=True)
    waiting = [Item(0.0, 1), Item(0.1, 900), *items(*[1] * 20, arrived=1.0)]
    first = policy.next_batch(waiting, now=5.0)
    assert isinstance(first, list)
    assert 1 not in first  # not the long one while the short oldest leads...
    rest = [w for i, w in enumerate(waiting) if i not in first]
    assert rest[0].length == 900
    second = policy.next_batch([*rest, *items(*[1] * 10, arrived=2.0)], now=5.0)
    assert isinstance(second, list)
    assert 0 in second  # ...but as soon as it is the oldest, it goes


def padding(batches: list[list[int]]) -> int:
    """Pad tokens a runner would add: every item padded to its batch's longest."""
    return sum(max(b) * len(b) - sum(b) for b in batches)


def drain(policy: BatchPolicy, lengths: list[int]) -> list[list[int]]:
    waiting = items(*lengths)
    batches = []
    while waiting:
        chosen = policy.next_batch(waiting, now=10.0)
        assert isinstance(chosen, list)
        batches.append([waiting[i].length for i in chosen])
        waiting = [w for i, w in enumerate(waiting) if i not in chosen]
    return batches


def test_grouping_by_length_wastes_far_less_padding_than_fifo() -> None:
    mixed = [(7 * i) % 13 + (400 if i % 3 == 0 else 5) for i in range(96)]
    fifo = drain(BatchPolicy(max_batch_size=8, max_delay_s=0.0), mixed)
    grouped = drain(BatchPolicy(max_batch_size=8, max_delay_s=0.0, by_length=True), mixed)
    assert sorted(x for b in grouped for x in b) == sorted(mixed)  # everything served
    assert len(grouped) == len(fifo) == 12
    assert padding(grouped) * 5 < padding(fifo)


# -- the asyncio adapter ----------------------------------------------------------------

pytestmark = pytest.mark.anyio


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="test-batcher")
    yield pool
    pool.shutdown(wait=True)


class Recorder:
    """A fake model: records each batch and answers each item with its own result."""

    def __init__(self, *, hold: threading.Event | None = None, sleep_s: float = 0.0) -> None:
        self.batches: list[list[str]] = []
        self.hold = hold
        self.sleep_s = sleep_s
        self.started = threading.Event()

    def __call__(self, batch: list[str]) -> list[str]:
        self.batches.append(list(batch))
        self.started.set()
        if self.hold is not None:
            self.hold.wait(timeout=5)
        if any(x.startswith("bad") for x in batch):
            raise ValueError("model failed")
        time.sleep(self.sleep_s)
        return [f"result:{x}" for x in batch]


async def wait_started(recorder: Recorder) -> None:
    assert await asyncio.to_thread(recorder.started.wait, 5)


async def test_concurrent_submits_share_batches_and_get_their_own_results(
    executor: ThreadPoolExecutor,
) -> None:
    run = Recorder(sleep_s=0.01)
    batcher = DynamicBatcher(run, max_batch_size=8, max_queue_delay_s=0.005, executor=executor)
    inputs = [f"req{i}" for i in range(40)]
    with anyio.fail_after(5):
        results = await asyncio.gather(*(batcher.submit(x) for x in inputs))
    await batcher.close()
    assert results == [f"result:{x}" for x in inputs]
    assert len(run.batches) < len(inputs)
    assert max(len(b) for b in run.batches) == 8
    assert sorted(x for b in run.batches for x in b) == sorted(inputs)


async def test_a_full_batch_does_not_wait_for_the_delay(executor: ThreadPoolExecutor) -> None:
    run = Recorder()
    batcher = DynamicBatcher(run, max_batch_size=4, max_queue_delay_s=60.0, executor=executor)
    with anyio.fail_after(5):  # a 60 s delay would blow this
        results = await asyncio.gather(*(batcher.submit(str(i)) for i in range(4)))
    await batcher.close()
    assert results == ["result:0", "result:1", "result:2", "result:3"]
    assert run.batches == [["0", "1", "2", "3"]]


async def test_a_partial_batch_starts_after_the_delay(executor: ThreadPoolExecutor) -> None:
    run = Recorder()
    delay = 0.05
    batcher = DynamicBatcher(run, max_batch_size=100, max_queue_delay_s=delay, executor=executor)
    loop = asyncio.get_running_loop()
    start = loop.time()
    with anyio.fail_after(5):
        results = await asyncio.gather(*(batcher.submit(str(i)) for i in range(3)))
    waited = loop.time() - start
    await batcher.close()
    assert results == ["result:0", "result:1", "result:2"]
    assert run.batches == [["0", "1", "2"]]
    assert waited >= delay * 0.9


async def test_queue_full_when_max_queue_items_wait(executor: ThreadPoolExecutor) -> None:
    hold = threading.Event()
    run = Recorder(hold=hold)
    batcher = DynamicBatcher(
        run, max_batch_size=1, max_queue_delay_s=0.0, max_queue=2, executor=executor
    )
    running = asyncio.ensure_future(batcher.submit("a"))
    await wait_started(run)  # "a" runs (held); it no longer waits
    queued = [asyncio.ensure_future(batcher.submit(x)) for x in ("b", "c")]
    await asyncio.sleep(0)
    assert batcher.depth == 3
    with pytest.raises(QueueFull):
        await batcher.submit("d")
    hold.set()
    with anyio.fail_after(5):
        assert list(await asyncio.gather(running, *queued)) == ["result:a", "result:b", "result:c"]
    assert batcher.depth == 0
    await batcher.close()


async def test_an_exception_fails_only_its_own_batch(executor: ThreadPoolExecutor) -> None:
    run = Recorder()
    batcher = DynamicBatcher(run, max_batch_size=2, max_queue_delay_s=60.0, executor=executor)
    with anyio.fail_after(5):
        first = await asyncio.gather(
            batcher.submit("bad"), batcher.submit("x"), return_exceptions=True
        )
        second = await asyncio.gather(batcher.submit("y"), batcher.submit("z"))
    await batcher.close()
    assert [type(r) for r in first] == [ValueError, ValueError]
    assert list(second) == ["result:y", "result:z"]


async def test_length_groups_queued_items(executor: ThreadPoolExecutor) -> None:
    hold = threading.Event()
    run = Recorder(hold=hold)
    batcher = DynamicBatcher(
        run, max_batch_size=3, max_queue_delay_s=0.0, length=len, executor=executor
    )
    first = asyncio.ensure_future(batcher.submit("first"))
    await wait_started(run)
    mixed = ["s", "l" * 40, "s", "l" * 41, "s", "l" * 42]
    rest = [asyncio.ensure_future(batcher.submit(x)) for x in mixed]
    await asyncio.sleep(0)
    hold.set()
    with anyio.fail_after(5):
        results = await asyncio.gather(first, *rest)
    await batcher.close()
    assert results == [f"result:{x}" for x in ["first", *mixed]]
    assert run.batches[1:] == [["s", "s", "s"], ["l" * 40, "l" * 41, "l" * 42]]


async def test_the_event_loop_stays_free_while_a_batch_runs(
    executor: ThreadPoolExecutor,
) -> None:
    run = Recorder(sleep_s=0.3)  # a blocking model call
    batcher = DynamicBatcher(run, max_batch_size=1, max_queue_delay_s=0.0, executor=executor)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.ensure_future(tick())
    with anyio.fail_after(5):
        assert await batcher.submit("slow") == "result:slow"
    ticker.cancel()
    await batcher.close()
    assert ticks >= 10  # ~30 if the loop was free, 0 if the model blocked it


async def test_close_fails_waiting_items_and_finishes_the_running_batch(
    executor: ThreadPoolExecutor,
) -> None:
    hold = threading.Event()
    run = Recorder(hold=hold)
    batcher = DynamicBatcher(run, max_batch_size=1, max_queue_delay_s=0.0, executor=executor)
    running = asyncio.ensure_future(batcher.submit("a"))
    await wait_started(run)
    waiting = asyncio.ensure_future(batcher.submit("b"))
    await asyncio.sleep(0)
    closing = asyncio.ensure_future(batcher.close())
    await asyncio.sleep(0.01)
    assert not closing.done()  # it waits for the running batch
    hold.set()
    with anyio.fail_after(5):
        await closing
    assert running.result() == "result:a"
    with pytest.raises(BatcherClosed):
        waiting.result()
    with pytest.raises(BatcherClosed):
        await batcher.submit("c")
    assert run.batches == [["a"]]


async def test_a_cancelled_caller_leaves_the_queue(executor: ThreadPoolExecutor) -> None:
    hold = threading.Event()
    run = Recorder(hold=hold)
    batcher = DynamicBatcher(run, max_batch_size=1, max_queue_delay_s=0.0, executor=executor)
    running = asyncio.ensure_future(batcher.submit("a"))
    await wait_started(run)
    gives_up = asyncio.ensure_future(batcher.submit("b"))
    await asyncio.sleep(0)
    assert batcher.depth == 2
    gives_up.cancel()
    await asyncio.sleep(0)
    assert batcher.depth == 1
    hold.set()
    with anyio.fail_after(5):
        assert await running == "result:a"
    await batcher.close()
    assert run.batches == [["a"]]
