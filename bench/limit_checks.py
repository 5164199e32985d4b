"""What one limit check costs: µs per `check` for every algorithm, in memory and on Redis.

    python bench/limit_checks.py [--checks 200000] [--redis-checks 5000]
                                 [--redis-url redis://127.0.0.1:PORT/0]
                                 [--rules '[{"by": "global", "requests": 1e9}]'] [--json]

`local_limit` is timed as the admit stage calls it (`await limit.check(key)`, the
wall clock read inside), on 1,024 keys cycled, with limits so large that every check
is allowed: the path every request takes. `redis_limit` is timed one awaited check at
a time against the given Redis (the round trip included: what a request waits), with
the gateway's client settings. The concurrency rows are one `acquire` plus its
`release`. The token rows are `TokenCounter.prompt_tokens` on post.lua's chat body,
counted exactly (`gpt-4o-mini`, o200k) and estimated. With `--rules` (a JSON list of
`limits.rules`), the admit stage itself: µs per request through a `LimitStage` with
those rules (token counting, every check, the rate-limit headers, metrics, and the
give-back once the answer is complete, awaited), minus the same loop without it.
Runs on uvloop when installed, as the gateway does. Prints Markdown, or with `--json`
one JSON object (what
`bench/run.py` reads).
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import io
import json
import platform
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aigw.limits.backend import (
    ALGORITHMS,
    LimitSpec,
    local_concurrency,
    local_limit,
    redis_concurrency,
    redis_limit,
)

KEYS = [f"api-key-{i:04d}" for i in range(1024)]
# Never reached: every timed check is allowed, as for a request under its limits.
HUGE = 1e12
WINDOW_S = 60.0
CONCURRENT = 1_000_000
LEASE_TTL_S = 60.0
REDIS_TIMEOUT_S = 1.0  # a check slower than this would fail the run, not skew it
EXACT_MODEL = "gpt-4o-mini"
OTHER_MODEL = "bench-model"  # not an OpenAI family: estimated even in exact mode
CHAT_BODY: dict[str, Any] = {
    "model": "bench-nginx",
    "messages": [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "Say hello in one short sentence."},
    ],
    "max_tokens": 16,
    "temperature": 0,
}


def spec(algorithm: str) -> LimitSpec:
    if algorithm == "calendar":
        return LimitSpec("calendar", HUGE, 0.0, "day")
    return LimitSpec(algorithm, HUGE, WINDOW_S)


async def time_calls(call: Callable[[int], Awaitable[object]], calls: int) -> float:
    """Mean µs of `await call(i)` over `calls` calls, after a short warm-up."""
    for i in range(min(1000, calls)):
        await call(i)
    start = time.perf_counter_ns()
    for i in range(calls):
        await call(i)
    return (time.perf_counter_ns() - start) / calls / 1e3


async def limit_rows(make: Callable[[LimitSpec], Any], calls: int) -> dict[str, float]:
    rows = {}
    mask = len(KEYS) - 1
    for algorithm in ALGORITHMS:
        limit = make(spec(algorithm))
        rows[algorithm] = await time_calls(lambda i, c=limit.check: c(KEYS[i & mask]), calls)
    return rows


async def concurrency_pair(gate: Any, calls: int) -> float:
    """µs of one acquire plus its release (one key: a `by: global` rule)."""

    async def pair(i: int) -> None:
        lease = f"lease-{i}"
        await gate.acquire("*", lease, LEASE_TTL_S)
        await gate.release("*", lease)

    return await time_calls(pair, calls)


def token_rows(calls: int) -> dict[str, float] | str:
    """µs per `prompt_tokens` on the chat body; a string says why it could not run."""
    try:
        from aigw.limits.tokens import TokenCounter
        from aigw.types import Endpoint

        exact, estimate = TokenCounter("exact"), TokenCounter("estimate")
        exact.warm()
        rows = {}
        for name, counter, model in (
            (f"exact ({EXACT_MODEL})", exact, EXACT_MODEL),
            (f"exact mode, {OTHER_MODEL} (estimated)", exact, OTHER_MODEL),
            ("estimate", estimate, EXACT_MODEL),
        ):
            count = counter.prompt_tokens
            for _ in range(1000):
                count(Endpoint.CHAT, CHAT_BODY, model)
            start = time.perf_counter_ns()
            for _ in range(calls):
                count(Endpoint.CHAT, CHAT_BODY, model)
            rows[name] = (time.perf_counter_ns() - start) / calls / 1e3
        return rows
    except (ImportError, AttributeError, TypeError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"


async def stage_us(rules: list[dict[str, Any]], redis: Any, calls: int) -> float:
    """µs per request that a `LimitStage` with `rules` adds (on `redis`, or in memory)."""
    from aigw.limits.rules import build_rules
    from aigw.limits.stage import LimitStage
    from aigw.limits.tokens import TokenCounter
    from aigw.observability.logs import JsonLog
    from aigw.observability.metrics import Metrics
    from aigw.settings import LimitsSettings
    from aigw.types import Endpoint, GatewayRequest, GatewayResponse, Usage

    settings = LimitsSettings.model_validate({"rules": rules, "backend_timeout_s": REDIS_TIMEOUT_S})
    counter = TokenCounter(settings.token_counting)
    counter.warm()
    # Newer stages take the Redis client and timeout themselves (to pipeline a request's
    # checks); older ones found Redis in the rules alone.
    wants = inspect.signature(LimitStage).parameters
    extra = {"redis": redis} if "redis" in wants else {}
    extra |= {"timeout_s": REDIS_TIMEOUT_S} if "timeout_s" in wants else {}
    stage = LimitStage(
        build_rules(settings, redis), counter, {"bench-nginx": EXACT_MODEL},
        settings.completion_tokens, Metrics(), JsonLog(io.BytesIO()), **extra,
    )  # fmt: skip
    answer = GatewayResponse(b"{}")
    loop = asyncio.get_running_loop()
    headers = {b"authorization": b"Bearer sk-bench-limits"}

    async def upstream(req: GatewayRequest) -> GatewayResponse:
        req.usage = Usage(24, 9)  # what nginx's canned answer reports
        return answer

    async def one(i: int, through: bool) -> None:
        req = GatewayRequest(
            f"req-{i}", Endpoint.CHAT, "bench-nginx", False, dict(CHAT_BODY), b"",
            loop.time() + 600, headers=headers,
        )  # fmt: skip
        await (stage(req, upstream) if through else upstream(req))
        req.finish(200)
        # The give-back runs in a task: part of the cost, so wait for it (by whatever
        # the stage's internals call it) before the next request.
        if pending := asyncio.all_tasks() - {asyncio.current_task()}:
            await asyncio.gather(*pending)

    without = await time_calls(lambda i: one(i, False), calls)
    scripts = await scripts_run(redis)
    cost = await time_calls(lambda i: one(i, True), calls) - without
    if redis is not None and await scripts_run(redis) - scripts < calls:
        # Counted in memory after all: a figure for the wrong backend is worse than none.
        raise ValueError("the stage did not reach Redis (fewer scripts than requests)")
    return cost


async def scripts_run(redis: Any) -> int:
    """EVALSHA and EVAL calls Redis has served (0 without Redis)."""
    if redis is None:
        return 0
    stats = await redis.info("commandstats")
    return sum(
        int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("evalsha", "eval")
    )


async def stage_row(
    data: dict[str, object], key: str, rules: list[dict[str, Any]], redis: Any, calls: int
) -> None:
    """`data[key]` = the stage's µs, or `data["stage_error"]` = why it could not run
    (the stage's internals are not an API: they may change under this script)."""
    try:
        data[key] = await stage_us(rules, redis, calls)
    except (ImportError, AttributeError, TypeError, ValueError) as exc:
        data["stage_error"] = f"{type(exc).__name__}: {exc}"


async def redis_part(url: str, calls: int, rules: list[dict[str, Any]]) -> dict[str, object]:
    from redis import asyncio as aioredis

    # As the gateway builds its limits' client (aigw.app.Services.limits_redis).
    client = aioredis.Redis.from_url(
        url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S
    )
    try:
        await client.flushdb()
        checks = await limit_rows(lambda s: redis_limit(s, client, REDIS_TIMEOUT_S), calls)
        gate = redis_concurrency(CONCURRENT, client, REDIS_TIMEOUT_S)
        pair = await concurrency_pair(gate, calls)
        data: dict[str, object] = {"redis_us": checks, "redis_concurrency_us": pair}
        if rules:
            await stage_row(data, "redis_stage_us", rules, client, calls)
        await client.flushdb()
        return data
    finally:
        await client.aclose()


async def measure(
    checks: int, redis_checks: int, redis_url: str, rules: list[dict[str, Any]]
) -> dict[str, object]:
    local = await limit_rows(lambda s: local_limit(s, time.time), checks)
    pair = await concurrency_pair(local_concurrency(CONCURRENT, time.time), checks)
    data: dict[str, object] = {
        "python": platform.python_version(),
        "loop": type(asyncio.get_running_loop()).__module__.split(".")[0],
        "checks": checks,
        "redis_checks": redis_checks if redis_url else 0,
        "local_us": local,
        "local_concurrency_us": pair,
    }
    if rules:
        await stage_row(data, "local_stage_us", rules, None, checks // 4)
    if redis_url:
        data |= await redis_part(redis_url, redis_checks, rules)
    tokens = token_rows(checks // 4)
    data["tokens_us" if isinstance(tokens, dict) else "tokens_error"] = tokens
    return data


def run(coro: Awaitable[dict[str, object]]) -> dict[str, object]:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)  # type: ignore[arg-type]
    return uvloop.run(coro)  # type: ignore[arg-type]


def markdown(data: dict[str, Any]) -> str:
    redis = data.get("redis_us", {})
    lines = [f"Python {data['python']}, {data['loop']}, {data['checks']:,} checks", ""]
    lines += ["| algorithm | local µs/check | Redis µs/check |", "|---|---:|---:|"]
    for algorithm, us in data["local_us"].items():
        lines.append(f"| {algorithm} | {us:.2f} | {redis.get(algorithm, float('nan')):.0f} |")
    pair = data.get("redis_concurrency_us", float("nan"))
    lines.append(
        f"| concurrency acquire+release | {data['local_concurrency_us']:.2f} | {pair:.0f} |"
    )
    if "local_stage_us" in data:
        redis_stage = data.get("redis_stage_us", float("nan"))
        lines.append(f"| admit stage, --rules | {data['local_stage_us']:.2f} | {redis_stage:.0f} |")
    for name, us in data.get("tokens_us", {}).items():
        lines.append(f"| prompt_tokens, {name} | {us:.2f} | |")
    if "stage_error" in data:
        lines.append(f"\nadmit stage not measured: {data['stage_error']}")
    if "tokens_error" in data:
        lines.append(f"\nprompt_tokens not measured: {data['tokens_error']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=200_000)
    parser.add_argument("--redis-checks", type=int, default=5_000)
    parser.add_argument("--redis-url", default="", help="time redis_limit too")
    parser.add_argument("--rules", type=json.loads, default=[], help="time a LimitStage too")
    parser.add_argument("--json", action="store_true", help="print JSON, not Markdown")
    args = parser.parse_args()
    data = run(measure(args.checks, args.redis_checks, args.redis_url, args.rules))
    print(json.dumps(data, indent=2) if args.json else markdown(data))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
