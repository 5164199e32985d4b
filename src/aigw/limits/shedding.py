"""Load shedding: a cap on the work one process has in flight, a short queue behind it.

Past ``max_in_flight``, a request waits in a bounded queue ordered by priority class
(0 first, then arrival). A freed slot goes to the best waiter. A request that finds
the queue full either takes the place of the worst waiter (when it ranks higher,
and that waiter is turned away) or is turned away itself; a waiter that is not let
in within ``queue_timeout_s`` is turned away too. Turned away means a fast
``Overloaded`` (503 with Retry-After) rather than joining a backlog that would make
every admitted request slow.

Per process on purpose: it protects this process's event loop and connections.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable

from aigw.errors import Overloaded
from aigw.types import GatewayRequest, Next, Result


class Shed(Overloaded):
    """Turned away; ``reason`` is queue_full, timeout or displaced (for metrics)."""

    def __init__(self, reason: str, retry_after: float) -> None:
        super().__init__(
            "the gateway is overloaded; retry after a short wait", retry_after=retry_after
        )
        self.reason = reason


class _Waiter:
    __slots__ = ("future", "live", "priority", "seq")

    def __init__(self, priority: int, seq: int, future: asyncio.Future[None]) -> None:
        self.priority = priority
        self.seq = seq
        self.future = future
        self.live = True  # still waiting: not let in, displaced, timed out or gone

    def __lt__(self, other: _Waiter) -> bool:
        return (self.priority, self.seq) < (other.priority, other.seq)

    @property
    def handed(self) -> bool:
        """Let in (``leave`` handed it a slot), whether or not it got to use it."""
        f = self.future
        return not self.live and f.done() and not f.cancelled() and f.exception() is None


class Shedder:
    def __init__(
        self,
        max_in_flight: int,
        max_queue: int,
        queue_timeout_s: float,
        retry_after_s: float,
        on_shed: Callable[[int, str], None] | None = None,
    ) -> None:
        if max_in_flight < 1 or max_queue < 0 or queue_timeout_s <= 0:
            raise ValueError("max_in_flight >= 1, max_queue >= 0, queue_timeout_s > 0")
        self.max_in_flight = max_in_flight
        self.max_queue = max_queue
        self.queue_timeout_s = queue_timeout_s
        self.retry_after_s = retry_after_s
        self.in_flight = 0
        self._queue: list[_Waiter] = []  # a heap: the best waiter first
        self._waiting = 0  # live waiters (the heap may hold settled ones until popped)
        self._seq = itertools.count()
        self._on_shed = on_shed

    def reconfigure(
        self, max_in_flight: int, max_queue: int, queue_timeout_s: float, retry_after_s: float
    ) -> None:
        """New bounds (a reload); who is in flight or waiting stays."""
        self.max_in_flight = max_in_flight
        self.max_queue = max_queue
        self.queue_timeout_s = queue_timeout_s
        self.retry_after_s = retry_after_s

    @property
    def queued(self) -> int:
        return self._waiting

    async def enter(self, priority: int) -> None:
        """Take a slot, waiting in the queue if need be; ``Shed`` if turned away."""
        if self.in_flight < self.max_in_flight and not self._waiting:
            self.in_flight += 1
            return
        if self._waiting >= self.max_queue and not self._displace(priority):
            self._shed(priority, "queue_full")
        waiter = _Waiter(priority, next(self._seq), asyncio.get_running_loop().create_future())
        heapq.heappush(self._queue, waiter)
        self._waiting += 1
        try:
            async with asyncio.timeout(self.queue_timeout_s):
                await waiter.future  # the slot is handed over by ``leave``
        except BaseException as exc:
            if not self._forget(waiter) and waiter.handed:
                self.leave()  # handed a slot as it gave up: pass it on
            if isinstance(exc, TimeoutError):
                self._shed(priority, "timeout")
            raise

    def leave(self) -> None:
        """Give a slot back: to the best live waiter, if any."""
        while self._queue:
            waiter = heapq.heappop(self._queue)
            if not waiter.live or waiter.future.done():
                # gone: counted out already, or (its wait just cancelled by a timeout) as
                # soon as it runs its ``except``
                continue
            waiter.live = False
            self._waiting -= 1
            waiter.future.set_result(None)  # the slot passes on: in_flight stays
            return
        self.in_flight -= 1

    def _forget(self, waiter: _Waiter) -> bool:
        """Count a waiter out if it was still waiting; True if it was."""
        if not waiter.live:
            return False
        waiter.live = False
        self._waiting -= 1
        if len(self._queue) > 2 * (self.max_queue + 8):  # drop the dead ones now and then
            self._queue = [w for w in self._queue if w.live]
            heapq.heapify(self._queue)
        return True

    def _displace(self, priority: int) -> bool:
        """Turn the worst waiter away if it ranks below ``priority``; True if done."""
        live = [w for w in self._queue if w.live and not w.future.done()]
        if not live:
            return False
        worst = max(live)
        if worst.priority <= priority:
            return False
        worst.live = False
        self._waiting -= 1
        worst.future.set_exception(Shed("displaced", self.retry_after_s))
        if self._on_shed is not None:
            self._on_shed(worst.priority, "displaced")
        return True

    def _shed(self, priority: int, reason: str) -> None:
        if self._on_shed is not None:
            self._on_shed(priority, reason)
        raise Shed(reason, self.retry_after_s)


class ShedStage:
    """The first stage: a slot for every request, held until its answer is complete."""

    def __init__(
        self,
        shedder: Shedder,
        header: str,
        priorities: list[str],
        default: str,
    ) -> None:
        self.shedder = shedder
        self.header = header.lower().encode()
        self.ranks = {name.encode(): rank for rank, name in enumerate(priorities)}
        self.default = self.ranks[default.encode()]

    async def __call__(self, req: GatewayRequest, call_next: Next) -> Result:
        value = req.headers.get(self.header)
        rank = self.default if value is None else self.ranks.get(value.lower(), self.default)
        await self.shedder.enter(rank)
        req.finishers.append(self._leave)
        return await call_next(req)

    def _leave(self, req: GatewayRequest, status: int) -> None:
        self.shedder.leave()
