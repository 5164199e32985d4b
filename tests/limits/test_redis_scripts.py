"""The Lua limiters against a real redis-server: same answers as the pure cores, and
exact under many concurrent clients."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from redis import asyncio as aioredis

from aigw.limits.algorithms import GCRA, SlidingWindowCounter, TokenBucket
from aigw.limits.redis_scripts import SCRIPTS, RedisLimiter
from aigw.state.base import StateUnavailable
from tests.conftest import free_port

pytestmark = pytest.mark.anyio

Core = TokenBucket | GCRA | SlidingWindowCounter
CORES: dict[str, Callable[[float, float], Core]] = {
    "token_bucket": TokenBucket,
    "gcra": GCRA,
    "sliding_window_counter": SlidingWindowCounter,
}


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    redis = aioredis.Redis.from_url(redis_url)
    yield redis
    await redis.aclose()


def fresh_key() -> str:
    return f"test-{uuid.uuid4().hex}"


# (now, cost) steps: a burst, refills, a cost that does not fit, a window edge.
SEQUENCE = [
    *[(1000.0, 1.0)] * 7,
    (1000.25, 1.0),
    (1000.5, 3.0),
    (1001.0, 2.0),
    (1005.0, 1.0),
    *[(1010.0, 1.0)] * 4,
    (1012.5, 4.0),
    *[(1015.0, 1.0)] * 6,
    (1100.0, 6.0),
    (1100.0, 5.0),
]


@pytest.mark.parametrize("algorithm", sorted(SCRIPTS))
async def test_lua_agrees_with_the_pure_core(client: aioredis.Redis, algorithm: str) -> None:
    # Bucket-like: 4 per second, burst 5. Counter: 5 per 10 s window.
    amount, size = (5.0, 10.0) if algorithm == "sliding_window_counter" else (4.0, 5.0)
    core = CORES[algorithm](amount, size)
    remote = RedisLimiter(client, algorithm, amount, size, timeout_s=2.0)
    key = fresh_key()
    for now, cost in SEQUENCE:
        want = core.check(key, now, cost)
        got = await remote.check(key, cost, now=now)
        assert got.allowed == want.allowed, (now, cost)
        assert got.limit == want.limit
        assert got.remaining == pytest.approx(want.remaining, abs=1e-6)
        assert got.reset_s == pytest.approx(want.reset_s, abs=1e-6)
        assert got.retry_after_s == pytest.approx(want.retry_after_s, abs=1e-6)


async def test_server_clock_is_used_and_keys_are_hash_tagged(client: aioredis.Redis) -> None:
    limiter = RedisLimiter(client, "gcra", 1.0, 3.0, timeout_s=2.0)
    key = fresh_key()
    pattern = [(await limiter.check(key)).allowed for _ in range(4)]
    assert pattern == [True, True, True, False]
    assert limiter.redis_key(key) == f"aigw:rl:gcra:{{{key}}}"
    assert await client.exists(limiter.redis_key(key)) == 1
    assert 0 < await client.pttl(limiter.redis_key(key)) <= 3001


@pytest.mark.parametrize("algorithm", sorted(SCRIPTS))
async def test_exact_across_many_concurrent_clients(redis_url: str, algorithm: str) -> None:
    # 100 per window, no refill within the test: 100 per hour.
    amount, size = (100.0, 3600.0) if algorithm == "sliding_window_counter" else (1 / 36, 100.0)
    key = fresh_key()
    clients = [aioredis.Redis.from_url(redis_url) for _ in range(8)]
    try:
        limiters = [RedisLimiter(c, algorithm, amount, size, timeout_s=5.0) for c in clients]

        async def hammer(limiter: RedisLimiter) -> int:
            return sum([(await limiter.check(key)).allowed for _ in range(60)])

        counts = await asyncio.gather(*(hammer(limiter) for limiter in limiters))
    finally:
        for c in clients:
            await c.aclose()
    assert sum(counts) == 100
    assert sum(1 for n in counts if n > 0) > 1  # the clients really did interleave


async def test_unreachable_redis_raises_state_unavailable_within_timeout() -> None:
    client = aioredis.Redis(host="127.0.0.1", port=free_port())
    try:
        limiter = RedisLimiter(client, "gcra", 1.0, 1.0, timeout_s=0.5)
        with pytest.raises(StateUnavailable):
            await limiter.check(fresh_key())
    finally:
        await client.aclose()


async def test_a_redis_that_never_answers_times_out() -> None:
    # It accepts connections (the kernel's backlog) but never replies: only the limiter's
    # own timeout can end the call. The outer guard turns a hang into a failure.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        client = aioredis.Redis(host="127.0.0.1", port=port)
        try:
            limiter = RedisLimiter(client, "gcra", 1.0, 1.0, timeout_s=0.2)
            async with asyncio.timeout(10):
                with pytest.raises(StateUnavailable):
                    await limiter.check(fresh_key())
        finally:
            await client.aclose()


async def test_rejects_unknown_algorithm(client: aioredis.Redis) -> None:
    with pytest.raises(ValueError):
        RedisLimiter(client, "leaky", 1.0, 1.0, timeout_s=1.0)
