"""The shedder alone: slots, the bounded priority queue, timeouts, displacement."""

from __future__ import annotations

import asyncio

import pytest

from aigw.limits.shedding import Shed, Shedder

pytestmark = pytest.mark.anyio


def shedder(max_in_flight: int = 2, queue: int = 2, timeout_s: float = 5.0) -> Shedder:
    shed: list[tuple[int, str]] = []
    s = Shedder(max_in_flight, queue, timeout_s, 1.0, lambda p, r: shed.append((p, r)))
    s.shed_log = shed  # type: ignore[attr-defined]
    return s


async def test_slots_up_to_the_cap_then_queue_then_shed() -> None:
    s = shedder()
    await s.enter(0)
    await s.enter(0)
    waiters = [asyncio.create_task(s.enter(0)) for _ in range(2)]
    await asyncio.sleep(0)
    assert s.in_flight == 2 and s.queued == 2
    with pytest.raises(Shed) as info:
        await s.enter(0)
    assert info.value.reason == "queue_full" and info.value.retry_after == 1.0
    s.leave()
    await asyncio.sleep(0)
    assert waiters[0].done() and not waiters[1].done() and s.in_flight == 2
    s.leave()
    await asyncio.gather(*waiters)
    assert s.queued == 0 and s.in_flight == 2
    s.leave()
    s.leave()
    assert s.in_flight == 0


async def test_best_priority_first_then_arrival() -> None:
    s = shedder(max_in_flight=1, queue=3)
    await s.enter(0)
    order: list[str] = []

    async def wait(name: str, priority: int) -> None:
        await s.enter(priority)
        order.append(name)

    tasks = [asyncio.create_task(wait("batch-1", 1))]
    await asyncio.sleep(0)
    tasks.append(asyncio.create_task(wait("batch-2", 1)))
    await asyncio.sleep(0)
    tasks.append(asyncio.create_task(wait("interactive", 0)))
    await asyncio.sleep(0)
    for _ in range(3):
        s.leave()
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    assert order == ["interactive", "batch-1", "batch-2"]


async def test_waiter_times_out() -> None:
    s = shedder(max_in_flight=1, queue=1, timeout_s=0.01)
    await s.enter(0)
    with pytest.raises(Shed) as info:
        await s.enter(0)
    assert info.value.reason == "timeout" and s.queued == 0
    s.leave()
    assert s.in_flight == 0  # the timed-out waiter did not take the slot


async def test_higher_priority_displaces_the_newest_lowest() -> None:
    s = shedder(max_in_flight=1, queue=2)
    await s.enter(0)
    first = asyncio.create_task(s.enter(1))
    await asyncio.sleep(0)
    second = asyncio.create_task(s.enter(1))
    await asyncio.sleep(0)
    urgent = asyncio.create_task(s.enter(0))
    await asyncio.sleep(0)
    with pytest.raises(Shed) as info:
        await second
    assert info.value.reason == "displaced"
    with pytest.raises(Shed):  # equal priority never displaces
        await s.enter(1)
    s.leave()
    await urgent
    s.leave()
    await first
    assert s.shed_log == [(1, "displaced"), (1, "queue_full")]  # type: ignore[attr-defined]


async def test_cancelled_waiter_frees_its_place_and_a_handed_slot() -> None:
    s = shedder(max_in_flight=1, queue=2)
    await s.enter(0)
    gone = asyncio.create_task(s.enter(0))
    stays = asyncio.create_task(s.enter(0))
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.sleep(0)
    assert s.queued == 1
    s.leave()
    await stays
    assert s.in_flight == 1
    # handed a slot and cancelled before it ran: the slot passes on, not lost
    late = asyncio.create_task(s.enter(0))
    await asyncio.sleep(0)
    s.leave()  # hands the slot to ``late``…
    late.cancel()  # …which is cancelled before it resumes
    with pytest.raises(asyncio.CancelledError):
        await late
    assert s.in_flight == 0 and s.queued == 0


def test_rejects_bad_bounds() -> None:
    with pytest.raises(ValueError):
        Shedder(0, 1, 1.0, 1.0)


async def test_slot_freed_while_a_timed_out_waiter_unwinds_goes_to_the_next() -> None:
    s = shedder(max_in_flight=1, queue=2, timeout_s=5.0)
    await s.enter(0)
    late = asyncio.create_task(s.enter(0))
    nxt = asyncio.create_task(s.enter(0))
    await asyncio.sleep(0)
    late.cancel()  # its wait is cancelled (as a timeout does) but it has not run yet…
    s.leave()  # …when a slot comes free: it must go to the next waiter, not be lost
    with pytest.raises(asyncio.CancelledError):
        await late
    await nxt
    assert s.in_flight == 1 and s.queued == 0
    s.leave()
    assert s.in_flight == 0
