"""The async limits interface, local and Redis backends alike: specs validated, checks
and adjusts, concurrency leases exact across clients, and a Redis that is down or silent
raising ``StateUnavailable`` instead of hanging."""

from __future__ import annotations

import asyncio
import math
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from redis import asyncio as aioredis

from aigw.limits.backend import (
    ALGORITHMS,
    Concurrency,
    Limit,
    LimitSpec,
    local_concurrency,
    local_limit,
    redis_concurrency,
    redis_limit,
)
from aigw.state.base import StateUnavailable
from tests.conftest import Redis, free_port

pytestmark = pytest.mark.anyio

# 5 per window; the windows are long so that nothing refills while a test runs.
SPECS = {
    "token_bucket": LimitSpec("token_bucket", 5, 3600),
    "gcra": LimitSpec("gcra", 5, 3600),
    "sliding_window_counter": LimitSpec("sliding_window_counter", 5, 3600),
    "sliding_window_log": LimitSpec("sliding_window_log", 5, 3600),
    "calendar": LimitSpec("calendar", 5, 0, "month"),
}


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def fresh_key() -> str:
    return f"test-{uuid.uuid4().hex}"


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    redis = aioredis.Redis.from_url(redis_url)
    yield redis
    await redis.aclose()


@pytest.fixture(params=["local", "redis"])
def make_limit(request: pytest.FixtureRequest, client: aioredis.Redis) -> Callable[[str], Limit]:
    def make(algorithm: str) -> Limit:
        if request.param == "local":
            return local_limit(SPECS[algorithm], FakeClock())
        return redis_limit(SPECS[algorithm], client, timeout_s=2.0)

    return make


@pytest.fixture(params=["local", "redis"])
def make_gate(
    request: pytest.FixtureRequest, client: aioredis.Redis
) -> Callable[[int], Concurrency]:
    def make(limit: int) -> Concurrency:
        if request.param == "local":
            return local_concurrency(limit, FakeClock())
        return redis_concurrency(limit, client, timeout_s=2.0)

    return make


async def pattern(limit: Limit, key: str, n: int, cost: float = 1) -> str:
    return "".join(["A" if (await limit.check(key, cost)).allowed else "d" for _ in range(n)])


# -- specs


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("leaky_bucket", 5, 60), "unknown algorithm"),
        (("gcra", 0, 60), "limit must be"),
        (("gcra", math.nan, 60), "limit must be"),
        (("gcra", math.inf, 60), "limit must be"),
        (("sliding_window_log", 5, 0), "window_s must be"),
        (("token_bucket", 5, -1), "window_s must be"),
        (("sliding_window_counter", 5, 60, "day"), "period is for calendar only"),
        (("calendar", 5, 0), "period must be one of"),
        (("calendar", 5, 0, "week"), "period must be one of"),
    ],
)
def test_invalid_specs_are_rejected_clearly(args: tuple[str, float, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LimitSpec(*args)


def test_spec_rate_and_calendar_window() -> None:
    assert LimitSpec("token_bucket", 120, 60).rate_per_s == 2
    assert LimitSpec("calendar", 1000, 0, "day").period == "day"  # window_s is ignored


# -- limits, the same through both backends


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_check_and_adjust(make_limit: Callable[[str], Limit], algorithm: str) -> None:
    limit = make_limit(algorithm)
    key = fresh_key()
    assert limit.limit == 5
    first = await limit.check(key)
    assert first.allowed and first.remaining == pytest.approx(4, abs=0.01)
    assert await pattern(limit, key, 5) == "AAAAd"
    await limit.adjust(key, -2)  # two failed calls give their reservations back
    assert await pattern(limit, key, 3) == "AAd"
    await limit.adjust(key, 3)  # debt: the next give-backs pay it off first
    await limit.adjust(key, -3)
    assert await pattern(limit, key, 1) == "d"
    await limit.adjust(key, 0)
    await limit.adjust(key, -100)
    assert await pattern(limit, key, 6) == "AAAAAd"  # never more than the limit


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_costs_and_bad_amounts(make_limit: Callable[[str], Limit], algorithm: str) -> None:
    limit = make_limit(algorithm)
    key = fresh_key()
    assert (await limit.check(key, 3)).allowed
    denied = await limit.check(key, 3)
    assert not denied.allowed and denied.retry_after_s > 0
    never = await limit.check(key, 6)
    assert not never.allowed and math.isinf(never.retry_after_s)
    with pytest.raises(ValueError, match="cost"):
        await limit.check(key, -1)
    with pytest.raises(ValueError, match="delta"):
        await limit.adjust(key, math.inf)


async def test_local_limit_follows_its_clock() -> None:
    clock = FakeClock(1_800_000_000.0)
    limit = local_limit(LimitSpec("gcra", 2, 10), clock)  # one every 5 s
    key = fresh_key()
    assert [(await limit.check(key)).allowed for _ in range(3)] == [True, True, False]
    clock.now += 5
    assert (await limit.check(key)).allowed


async def test_local_limit_state_is_bounded() -> None:
    limit = local_limit(LimitSpec("sliding_window_counter", 1, 60), FakeClock(), max_keys=2)
    for key in ["a", "b", "c"]:
        assert (await limit.check(key)).allowed
    assert (await limit.check("a")).allowed  # forgotten: full again
    assert not (await limit.check("c")).allowed


# -- concurrency, the same through both backends


async def test_concurrency_slots(make_gate: Callable[[int], Concurrency]) -> None:
    gate = make_gate(2)
    key = fresh_key()
    assert gate.limit == 2
    assert (await gate.acquire(key, "a", ttl_s=60)).remaining == 1
    assert (await gate.acquire(key, "b", ttl_s=60)).remaining == 0
    denied = await gate.acquire(key, "c", ttl_s=60)
    assert not denied.allowed
    assert (denied.retry_after_s, denied.reset_s, denied.remaining) == (1.0, 1.0, 0)
    await gate.release(key, "a")
    await gate.release(key, "a")  # idempotent: b keeps its slot
    await gate.release(key, "never-held")
    assert (await gate.acquire(key, "c", ttl_s=60)).allowed
    assert not (await gate.acquire(key, "d", ttl_s=60)).allowed
    assert (await gate.acquire(key, "b", ttl_s=60)).allowed  # b renews its own slot
    with pytest.raises(ValueError, match="ttl_s"):
        await gate.acquire(key, "e", ttl_s=0)


async def test_concurrency_never_exceeds_its_limit_across_clients(redis_url: str) -> None:
    limit, workers, cycles = 3, 8, 40
    key = fresh_key()
    clients = [aioredis.Redis.from_url(redis_url) for _ in range(workers)]
    held, peak, admitted = 0, 0, 0

    async def work(gate: Concurrency, worker: int) -> None:
        nonlocal held, peak, admitted
        for cycle in range(cycles):
            lease = f"{worker}-{cycle}"
            if not (await gate.acquire(key, lease, ttl_s=60)).allowed:
                await asyncio.sleep(0)
                continue
            held += 1  # counted only between a granted acquire and its release
            peak, admitted = max(peak, held), admitted + 1
            await asyncio.sleep(0)
            held -= 1
            await gate.release(key, lease)

    try:
        gates = [redis_concurrency(limit, c, timeout_s=5.0) for c in clients]
        await asyncio.gather(*(work(gate, n) for n, gate in enumerate(gates)))
        assert peak == limit  # full, never over
        assert limit < admitted < workers * cycles  # slots were reused, and some refused
        # Every slot came back: all of them can be taken again, and no more.
        fresh = [await gates[0].acquire(key, f"after-{n}", ttl_s=60) for n in range(limit + 1)]
        assert [d.allowed for d in fresh] == [True] * limit + [False]
    finally:
        for c in clients:
            await c.aclose()


# -- a Redis that cannot answer


Call = Callable[[Limit, Concurrency], Awaitable[object]]
CALLS: dict[str, Call] = {
    "check": lambda limit, gate: limit.check("k"),
    "adjust": lambda limit, gate: limit.adjust("k", 2),
    "acquire": lambda limit, gate: gate.acquire("k", "lease", ttl_s=10),
    "release": lambda limit, gate: gate.release("k", "lease"),
}
each_call = pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())


async def expect_unavailable(client: aioredis.Redis, call: Call, timeout_s: float) -> None:
    limit = redis_limit(SPECS["sliding_window_log"], client, timeout_s)
    gate = redis_concurrency(2, client, timeout_s)
    # The outer guard turns a hang into a failure; only the backend's timeout may end it.
    async with asyncio.timeout(10):
        with pytest.raises(StateUnavailable):
            await call(limit, gate)


@each_call
async def test_a_closed_port_raises_state_unavailable(call: Call) -> None:
    client = aioredis.Redis(host="127.0.0.1", port=free_port())
    try:
        await expect_unavailable(client, call, timeout_s=0.5)
    finally:
        await client.aclose()


@each_call
async def test_a_redis_that_never_answers_times_out(call: Call) -> None:
    # It accepts connections (the kernel's backlog) but never replies.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        client = aioredis.Redis(host="127.0.0.1", port=silent.getsockname()[1])
        try:
            await expect_unavailable(client, call, timeout_s=0.2)
        finally:
            await client.aclose()


async def test_a_redis_stopped_mid_run_raises_state_unavailable(own_redis: Redis) -> None:
    client = aioredis.Redis.from_url(own_redis.url)
    try:
        limit = redis_limit(SPECS["token_bucket"], client, timeout_s=0.5)
        assert (await limit.check("k")).allowed
        own_redis.stop()
        for call in CALLS.values():
            await expect_unavailable(client, call, timeout_s=0.5)
    finally:
        await client.aclose()


async def test_redis_backends_validate_their_arguments(client: aioredis.Redis) -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        redis_limit(SPECS["gcra"], client, timeout_s=0)
    with pytest.raises(ValueError, match="limit"):
        redis_concurrency(0, client, timeout_s=1)
    with pytest.raises(ValueError, match="limit"):
        local_concurrency(0, FakeClock())
