"""The Lua limiters against a real redis-server: the same answers as the pure cores for
checks and adjusts at any ``now``, and exact under many concurrent clients."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import pytest
from redis import asyncio as aioredis

from aigw.limits.algorithms import (
    GCRA,
    CalendarQuota,
    ConcurrencyLimit,
    SlidingWindowCounter,
    SlidingWindowLog,
    TokenBucket,
)
from aigw.limits.backend import ALGORITHMS, LimitSpec
from aigw.limits.redis_backend import RedisConcurrency, RedisLimit
from aigw.limits.redis_scripts import SCRIPTS

pytestmark = pytest.mark.anyio

Core = TokenBucket | GCRA | SlidingWindowCounter | SlidingWindowLog | CalendarQuota

# Each allows 5 at once. Bucket-like: refilled at 4 per second (5 per 1.25 s).
SPECS = {
    "token_bucket": LimitSpec("token_bucket", 5, 1.25),
    "gcra": LimitSpec("gcra", 5, 1.25),
    "sliding_window_counter": LimitSpec("sliding_window_counter", 5, 10),
    "sliding_window_log": LimitSpec("sliding_window_log", 5, 10),
    "calendar": LimitSpec("calendar", 5, 0, "day"),
}
CORES: dict[str, Callable[[LimitSpec], Core]] = {
    "token_bucket": lambda s: TokenBucket(s.rate_per_s, s.limit),
    "gcra": lambda s: GCRA(s.rate_per_s, s.limit),
    "sliding_window_counter": lambda s: SlidingWindowCounter(s.limit, s.window_s),
    "sliding_window_log": lambda s: SlidingWindowLog(s.limit, s.window_s),
    "calendar": lambda s: CalendarQuota(s.limit, s.period),
}


def epoch(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> float:
    return datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp()


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    redis = aioredis.Redis.from_url(redis_url)
    yield redis
    await redis.aclose()


def fresh_key() -> str:
    return f"test-{uuid.uuid4().hex}"


# (seconds after a UTC midnight minus 50 s, "check" or "adjust", cost or delta): bursts,
# refills, a cost that does not fit, debts and give-backs, window edges, and the day's end.
T0 = epoch(2026, 12, 31, 23, 59) + 10
SEQUENCE = [
    *[(0.0, "check", 1.0)] * 7,
    (0.25, "check", 1.0),
    (0.5, "check", 3.0),
    (0.5, "adjust", -2.0),
    (0.5, "check", 3.0),
    (1.0, "check", 2.0),
    (1.0, "adjust", 4.0),
    (1.5, "check", 1.0),
    (5.0, "check", 1.0),
    (5.0, "adjust", -1.5),
    *[(10.0, "check", 1.0)] * 4,
    (10.0, "adjust", -2.5),
    (12.5, "check", 4.0),
    (12.5, "adjust", 0.75),
    *[(15.0, "check", 1.0)] * 6,
    (21.0, "adjust", -100.0),
    (21.0, "check", 2.0),
    (49.5, "adjust", 30.0),
    (49.9, "check", 1.0),
    (50.0, "check", 1.0),  # midnight: a new day, and a new year
    (50.0, "check", 4.0),
    (50.0, "check", 1.0),
    (150.0, "check", 6.0),
    (150.0, "check", 5.0),
]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_lua_agrees_with_the_pure_core(client: aioredis.Redis, algorithm: str) -> None:
    spec = SPECS[algorithm]
    core = CORES[algorithm](spec)
    remote = RedisLimit(spec, client, timeout_s=2.0)
    key = fresh_key()
    for offset, op, amount in SEQUENCE:
        now = T0 + offset
        if op == "adjust":
            core.adjust(key, now, amount)
            await remote.adjust(key, amount, now=now)
            continue
        want = core.check(key, now, amount)
        got = await remote.check(key, amount, now=now)
        step = (offset, op, amount)
        assert got.allowed == want.allowed, step
        assert got.limit == want.limit
        assert got.remaining == pytest.approx(want.remaining, abs=1e-6), step
        assert got.reset_s == pytest.approx(want.reset_s, abs=1e-6), step
        assert got.retry_after_s == pytest.approx(want.retry_after_s, abs=1e-6), step


def test_every_algorithm_has_a_spec_here() -> None:
    assert set(SPECS) == set(SCRIPTS) == set(ALGORITHMS)


@pytest.mark.parametrize("period", ["day", "month"])
async def test_lua_calendar_periods_agree_with_the_pure_core(
    client: aioredis.Redis, period: str
) -> None:
    # Lua finds the period from whole days with its own date arithmetic: compare it at
    # boundaries, leap days and random instants up to 2200. One fresh key per instant.
    rng = random.Random(11)
    edges = [
        epoch(2026, 12, 31, 23, 59) + 59.999999,
        epoch(2027, 1, 1),
        epoch(2028, 2, 29, 12),
        epoch(2028, 3, 1) - 0.5,
        epoch(2100, 2, 28, 23),
        epoch(2000, 2, 29),
        0.0,
    ]
    instants = edges + [rng.uniform(0, epoch(2200, 1, 1)) for _ in range(300)]
    spec = LimitSpec("calendar", 2, 0, period)
    core = CORES["calendar"](spec)
    remote = RedisLimit(spec, client, timeout_s=2.0)
    for now in instants:
        key = fresh_key()
        want = core.check(key, now)
        got = await remote.check(key, now=now)
        assert got.reset_s == pytest.approx(want.reset_s, abs=1e-6), now


async def test_lua_concurrency_agrees_with_the_pure_core(client: aioredis.Redis) -> None:
    steps = [
        (0.0, "acquire", "a"),
        (0.0, "acquire", "b"),
        (0.0, "acquire", "c"),
        (1.0, "release", "a"),
        (1.0, "release", "a"),
        (1.0, "acquire", "c"),
        (2.0, "acquire", "d"),
        (5.0, "acquire", "b"),  # renewed: b now expires at 15
        (10.0, "acquire", "d"),
        (11.0, "acquire", "d"),  # c (taken at 1) expired at 11
        (11.0, "acquire", "e"),
        (15.0, "acquire", "e"),
        (15.0, "release", "nobody"),
        (40.0, "acquire", "f"),
        (40.0, "acquire", "g"),
        (40.0, "acquire", "h"),
    ]
    gate = ConcurrencyLimit(limit=2)
    remote = RedisConcurrency(2, client, timeout_s=2.0)
    key = fresh_key()
    for offset, op, lease in steps:
        now = 1000.0 + offset
        if op == "release":
            gate.release(key, lease, now)
            await remote.release(key, lease, now=now)
            continue
        want = gate.acquire(key, lease, now, ttl_s=10)
        got = await remote.acquire(key, lease, ttl_s=10, now=now)
        assert got == want, (offset, lease)


async def test_keys_are_hash_tagged_and_expire(client: aioredis.Redis) -> None:
    for algorithm, spec in SPECS.items():
        limit = RedisLimit(spec, client, timeout_s=2.0)
        key = fresh_key()
        await limit.check(key)
        names = limit.redis_keys(key)
        assert names[0] == f"aigw:rl:{algorithm}:{{{key}}}"
        for name in names:
            assert await client.exists(name) == 1, name
            assert 0 < await client.pttl(name) <= 32 * 86400 * 1000, name
    gate = RedisConcurrency(1, client, timeout_s=2.0)
    key = fresh_key()
    await gate.acquire(key, "a", ttl_s=30)
    assert gate.redis_key(key) == f"aigw:rl:concurrency:{{{key}}}"
    assert 0 < await client.pttl(gate.redis_key(key)) <= 30_001
    await gate.release(key, "a")
    assert await client.exists(gate.redis_key(key)) == 0  # the last lease took the key along


async def test_bucket_key_lives_until_full_and_log_keeps_a_running_sum(
    client: aioredis.Redis,
) -> None:
    gcra = RedisLimit(LimitSpec("gcra", 3, 3), client, timeout_s=2.0)  # 1 per second
    key = fresh_key()
    assert [(await gcra.check(key)).allowed for _ in range(4)] == [True] * 3 + [False]
    assert 2000 < await client.pttl(gcra.redis_keys(key)[0]) <= 3001

    log = RedisLimit(SPECS["sliding_window_log"], client, timeout_s=2.0)
    entries, meta = log.redis_keys(key)
    for _ in range(3):
        await log.check(key, 1.5, now=100.0)  # same instant: members must not collide
    await log.adjust(key, -2.0, now=100.0)
    assert await client.zcard(entries) == 2
    assert float(await client.hget(meta, "used")) == pytest.approx(2.5)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_exact_across_many_concurrent_clients(redis_url: str, algorithm: str) -> None:
    # 100 per window and no refill to speak of within the test. (A monthly quota could
    # only see 200 if the run straddled a UTC month boundary.)
    window = {"token_bucket": 3600 * 1e4, "gcra": 3600 * 1e4}.get(algorithm, 3600.0)
    spec = LimitSpec(algorithm, 100, window, "month" if algorithm == "calendar" else "")
    key = fresh_key()
    clients = [aioredis.Redis.from_url(redis_url) for _ in range(8)]
    try:
        limits = [RedisLimit(spec, c, timeout_s=5.0) for c in clients]

        async def hammer(limit: RedisLimit) -> int:
            return sum([(await limit.check(key)).allowed for _ in range(30)])

        counts = await asyncio.gather(*(hammer(limit) for limit in limits))
    finally:
        for c in clients:
            await c.aclose()
    assert sum(counts) == 100
    assert sum(1 for n in counts if n > 0) > 1  # the clients really did interleave
