"""Rate limits, token limits, concurrency limits, capacity and load shedding, end to end.

Real gateways on 127.0.0.1, a real redis-server, the openai SDK. Exactness is judged by
counting answers: with N allowed, admitted must be ≤ N and ≥ 0.99·N, across four
gateway processes sharing one Redis. No assertion reads a clock.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections import Counter
from typing import Any

import openai
import pytest

from tests.conftest import Gateway, Redis, Simulator, sim_models

MESSAGES: Any = [{"role": "user", "content": "How many tokens is this?"}]
Answer = tuple[int, dict[str, str], Any]


def limited(sim: Simulator, rules: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"models": sim_models(sim.url), "limits": {"rules": rules}, **extra}


def shared(redis_url: str) -> dict[str, Any]:
    # a roomy timeout: four gateways and Redis share two cores under this test's load
    return {"state": {"backend": "redis", "url": redis_url}}


def with_redis(config: dict[str, Any], redis_url: str) -> dict[str, Any]:
    config.update(shared(redis_url))
    config["limits"]["backend_timeout_s"] = 1.0
    return config


async def call(
    client: openai.AsyncOpenAI, model: str = "gpt-test", headers: Any = None, **kw: Any
) -> Answer:
    try:
        raw = await client.chat.completions.with_raw_response.create(
            model=model, messages=kw.pop("messages", MESSAGES), extra_headers=headers or {}, **kw
        )
    except openai.APIStatusError as err:
        return err.status_code, dict(err.response.headers), err.response.json()
    body = raw.parse()
    if kw.get("stream"):
        body = [chunk async for chunk in body]
    return raw.status_code, dict(raw.headers), body


def client(gw: Gateway, key: str = "sk-client-a", timeout: float = 20) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gw.v1, api_key=key, max_retries=0, timeout=timeout)


async def hammer(gateways: list[Gateway], total: int, **kw: Any) -> list[Answer]:
    """``total`` requests spread evenly over ``gateways``, all at once."""
    clients = [client(gw) for gw in gateways]
    try:
        jobs = [call(clients[i % len(clients)], **kw) for i in range(total)]
        return list(await asyncio.gather(*jobs))
    finally:
        for c in clients:
            await c.close()


def one(gw: Gateway, key: str = "sk-client-a", **kw: Any) -> Answer:
    async def run() -> Answer:
        async with client(gw, key) as c:
            return await call(c, **kw)

    return asyncio.run(run())


def statuses(answers: list[Answer]) -> Counter[int]:
    return Counter(status for status, _, _ in answers)


def served_by(gw: Gateway, n: int, model: str = "gpt-test") -> Counter[str]:
    """Which deployments answered, once ``n`` access lines for ``model`` are written."""

    def lines() -> list[dict[str, Any]]:
        return [r for r in gw.access_logs() if r["model"] == model]

    deadline = time.monotonic() + 10
    while len(lines()) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    return Counter(r["deployment"] for r in lines())


def four(start_gateway: Any, config: dict[str, Any]) -> list[Gateway]:
    return [start_gateway(config) for _ in range(4)]


# -- exactness across processes


def test_requests_per_minute_hold_exactly_across_four_gateways(
    sim: Simulator, start_gateway: Any, redis_url: str
) -> None:
    n = 120
    rule = {"name": "exact-rpm", "by": "global", "requests": n, "per": "minute",
            "algorithm": "sliding_window_log"}  # fmt: skip
    gateways = four(start_gateway, with_redis(limited(sim, [rule]), redis_url))
    answers = asyncio.run(hammer(gateways, 3 * n))
    counts = statuses(answers)
    assert set(counts) == {200, 429}
    assert 0.99 * n <= counts[200] <= n
    assert sim.stats()["requests_total"] == counts[200]
    rejected = next(a for a in answers if a[0] == 429)
    assert rejected[2]["error"]["code"] == "rate_limit_exceeded"
    assert int(rejected[1]["retry-after"]) >= 1


@pytest.mark.parametrize("algorithm", ["sliding_window_counter", "token_bucket", "gcra"])
def test_every_algorithm_is_exact_across_gateways(
    sim: Simulator, start_gateway: Any, redis_url: str, algorithm: str
) -> None:
    n = 60  # per day: no window boundary (or refill worth a request) inside the test
    per = "day" if algorithm == "sliding_window_counter" else "hour"
    rule = {"name": f"exact-{algorithm}", "by": "global", "requests": n, "per": per,
            "algorithm": algorithm}  # fmt: skip
    gateways = four(start_gateway, with_redis(limited(sim, [rule]), redis_url))
    counts = statuses(asyncio.run(hammer(gateways, 2 * n)))
    # token bucket and GCRA refill n/3600 per second: a slow run may earn one more
    assert 0.99 * n <= counts[200] <= n + (0 if per == "day" else 1)


def test_concurrency_limit_holds_across_gateways_and_frees_slots(
    sim: Simulator, start_gateway: Any, redis_url: str
) -> None:
    n = 8
    sim.configure(latency_ms=1500)
    rule = {"name": "exact-concurrency", "by": "global", "concurrent": n}
    gateways = four(start_gateway, with_redis(limited(sim, [rule]), redis_url))
    counts = statuses(asyncio.run(hammer(gateways, 5 * n)))
    assert counts[200] == n and counts[429] == 4 * n  # ≥ 0.99·8 means all 8
    assert sim.stats()["peak_in_flight"] == n
    sim.configure(latency_ms=0)
    again = statuses(asyncio.run(hammer(gateways, n)))
    assert again[200] == n  # every slot was given back


# -- tokens


def remaining_tokens(answer: Answer) -> int:
    return int(answer[1]["x-ratelimit-remaining-tokens"])


def test_tokens_reserved_then_reconciled_with_usage(sim: Simulator, start_gateway: Any) -> None:
    n = 100_000
    rule = {"name": "tpm", "by": "api_key", "tokens": n, "per": "minute",
            "algorithm": "sliding_window_log"}  # fmt: skip
    gw = start_gateway(limited(sim, [rule]))
    first = one(gw, max_tokens=100)
    assert first[0] == 200
    reserved = n - remaining_tokens(first)
    assert reserved >= 100  # the prompt estimate plus max_tokens
    used = first[2].usage.total_tokens
    assert used < reserved
    time.sleep(0.2)  # reconciliation runs right after the answer is written
    second = one(gw, max_tokens=100)
    # the counter now holds what the first really used, plus the second's reservation
    assert remaining_tokens(second) == n - used - reserved


def test_failed_call_gives_its_reservation_back(sim: Simulator, start_gateway: Any) -> None:
    n = 100_000
    rule = {"name": "tpm-errors", "by": "api_key", "tokens": n, "algorithm": "sliding_window_log"}
    config = limited(sim, [rule])
    config["models"][0]["retry"] = {"attempts": 1}
    gw = start_gateway(config)
    first = one(gw, max_tokens=50)
    used = first[2].usage.total_tokens
    reserved = n - remaining_tokens(first)
    time.sleep(0.2)  # reconciliation runs right after the answer is written
    sim.configure(fault="status:500")
    failed = one(gw, max_tokens=50)
    sim.configure(fault="none")
    assert failed[0] == 502
    assert remaining_tokens(failed) == n - used - reserved  # charged while in flight…
    time.sleep(0.2)
    third = one(gw, max_tokens=50)
    assert remaining_tokens(third) == n - used - reserved  # …and all given back after


def test_stream_reconciled_at_its_end(sim: Simulator, start_gateway: Any) -> None:
    n = 100_000
    rule = {"name": "tpm-stream", "by": "api_key", "tokens": n, "algorithm": "sliding_window_log"}
    gw = start_gateway(limited(sim, [rule]))
    first = one(gw, max_tokens=80, stream=True, stream_options={"include_usage": True})
    reserved = n - remaining_tokens(first)
    used = first[2][-1].usage.total_tokens
    time.sleep(0.2)
    second = one(gw, max_tokens=80)
    assert remaining_tokens(second) == n - used - reserved


def test_request_larger_than_the_limit_is_refused_without_retry_after(
    sim: Simulator, start_gateway: Any
) -> None:
    rule = {"name": "small-tpm", "by": "api_key", "tokens": 50}
    gw = start_gateway(limited(sim, [rule]))
    status, headers, body = one(gw, max_tokens=1000)
    assert status == 429 and "retry-after" not in headers
    assert body["error"]["type"] == "tokens" and "too large" in body["error"]["message"]
    assert sim.stats()["requests_total"] == 0


# -- headers, dimensions


def test_headers_on_every_answer_and_429(sim: Simulator, start_gateway: Any) -> None:
    rules = [
        {"name": "rpm", "by": "api_key", "requests": 3, "algorithm": "sliding_window_log"},
        {"name": "tpm", "by": "api_key", "tokens": 10_000},
    ]
    gw = start_gateway(limited(sim, rules))
    answers = [one(gw) for _ in range(4)]
    assert [a[0] for a in answers] == [200, 200, 200, 429]
    for i, (_, headers, _) in enumerate(answers):
        assert headers["x-ratelimit-limit-requests"] == "3"
        assert headers["x-ratelimit-limit-tokens"] == "10000"
        assert headers["x-ratelimit-reset-requests"].endswith("s")
        assert int(headers["x-ratelimit-remaining-requests"]) == max(0, 2 - i)
    assert 1 <= int(answers[3][1]["retry-after"]) <= 60
    assert answers[3][2]["error"]["type"] == "requests"
    other = one(gw, key="sk-client-b")  # per api key: another key has its own budget
    assert other[0] == 200 and other[1]["x-ratelimit-remaining-requests"] == "2"


def test_limits_scoped_by_user_model_and_header(sim: Simulator, start_gateway: Any) -> None:
    rules = [
        {"name": "per-user", "by": "user", "requests": 1, "models": ["gpt-test"]},
        {"name": "per-tenant", "by": "header:x-tenant", "requests": 1},
    ]
    gw = start_gateway(limited(sim, rules))
    assert one(gw, user="alice")[0] == 200
    assert one(gw, user="alice")[0] == 429
    assert one(gw, user="bob")[0] == 200
    assert one(gw, model="aliased", user="alice")[0] == 200  # not in the rule's models
    assert one(gw)[0] == 200  # no user: the rule has no key to charge
    assert one(gw, headers={"x-tenant": "t1"})[0] == 200
    assert one(gw, headers={"x-tenant": "t1"})[0] == 429


def test_limited_request_answered_from_cache_when_configured(
    sim: Simulator, start_gateway: Any
) -> None:
    config = limited(sim, [{"name": "tight", "by": "api_key", "requests": 1}])
    config["models"][0].update(cache="all", on_limited="cache")
    gw = start_gateway(config)
    first = one(gw)
    second = one(gw)  # limited, but the same question is in the cache
    assert first[0] == second[0] == 200 and second[1]["x-cache"] == "HIT-L1"
    other = one(gw, messages=[{"role": "user", "content": "a new question"}])
    assert other[0] == 429
    assert sim.stats()["requests_total"] == 1


# -- Redis failure policy


def test_redis_down_fail_open_serves_and_fail_closed_rejects(
    sim: Simulator, start_gateway: Any, own_redis: Redis
) -> None:
    rules = [
        {"name": "open-rule", "by": "api_key", "requests": 1000, "models": ["gpt-test"],
         "on_backend_error": "open"},
        {"name": "closed-rule", "by": "api_key", "requests": 1000, "models": ["aliased"],
         "on_backend_error": "closed"},
    ]  # fmt: skip
    gw = start_gateway(with_redis(limited(sim, rules), own_redis.url))
    assert one(gw)[0] == 200 and one(gw, model="aliased")[0] == 200
    own_redis.stop()
    for _ in range(3):
        assert one(gw)[0] == 200
        status, headers, body = one(gw, model="aliased")
        assert status == 503 and body["error"]["code"] == "rate_limiter_unavailable"
        assert headers["retry-after"] == "1"
    gw.wait_for(lambda r: r.get("msg") == "limits: backend unavailable")
    metrics = urllib.request.urlopen(f"{gw.url}/metrics", timeout=5).read().decode()
    assert 'aigw_limit_backend_errors_total{limit="open-rule",policy="open"}' in metrics


def test_fail_open_counts_locally_while_redis_is_down(
    sim: Simulator, start_gateway: Any, own_redis: Redis
) -> None:
    rule = {"name": "local-twin", "by": "api_key", "requests": 3, "algorithm": "sliding_window_log"}
    gw = start_gateway(with_redis(limited(sim, [rule]), own_redis.url))
    own_redis.stop()
    assert [one(gw)[0] for _ in range(4)] == [200, 200, 200, 429]


# -- deployment capacity


def test_router_respects_deployment_rpm_before_the_provider_429s(
    sim: Simulator, start_gateway: Any
) -> None:
    url = f"{sim.url}/v1"
    config = {"models": [
        {"name": "gpt-test", "strategy": "round-robin", "deployments": [
            {"id": "small", "base_url": url, "rpm": 3},
            {"id": "big", "base_url": url},
        ]},
        {"name": "tiny", "fallbacks": ["gpt-test"], "deployments": [
            {"id": "tiny-only", "base_url": url, "rpm": 2},
        ]},
    ]}  # fmt: skip
    gw = start_gateway(config)
    assert all(one(gw)[0] == 200 for _ in range(10))
    assert served_by(gw, 10) == {"small": 3, "big": 7}
    # a group whose only deployment is full moves to its fallback
    assert [one(gw, model="tiny")[0] for _ in range(3)] == [200, 200, 200]
    assert served_by(gw, 3, "tiny") == {"tiny-only": 2, "big": 1}


def test_capacity_exhausted_is_a_429(sim: Simulator, start_gateway: Any) -> None:
    config = {"models": [{"name": "gpt-test", "deployments": [
        {"base_url": f"{sim.url}/v1", "rpm": 1}]}]}  # fmt: skip
    gw = start_gateway(config)
    assert one(gw)[0] == 200
    status, headers, body = one(gw)
    assert status == 429 and body["error"]["code"] == "capacity_exhausted"
    assert int(headers["retry-after"]) >= 1


def test_deployment_tpm_routes_around_a_full_deployment(sim: Simulator, start_gateway: Any) -> None:
    url = f"{sim.url}/v1"
    config = {"models": [{"name": "gpt-test", "strategy": "round-robin", "deployments": [
        {"id": "lean", "base_url": url, "tpm": 300},
        {"id": "roomy", "base_url": url},
    ]}]}  # fmt: skip
    gw = start_gateway(config)
    sim.configure(completion_tokens=100)  # each answer uses ~110 of lean's 300
    assert all(one(gw, max_tokens=100)[0] == 200 for _ in range(8))
    assert served_by(gw, 8) == {"lean": 2, "roomy": 6}


# -- load shedding


def test_overload_sheds_fast_and_admitted_requests_finish(
    sim: Simulator, start_gateway: Any
) -> None:
    sim.configure(latency_ms=1000)
    config = {"models": sim_models(sim.url),
              "shedding": {"max_in_flight": 4, "queue": 2, "queue_timeout_s": 0.2}}  # fmt: skip
    gw = start_gateway(config)
    answers = asyncio.run(hammer([gw], 20))
    counts = statuses(answers)
    assert counts[200] == 4 and counts[503] == 16  # no timeouts, nothing else
    shed = next(a for a in answers if a[0] == 503)
    assert shed[2]["error"]["code"] == "overloaded" and shed[1]["retry-after"] == "1"
    metrics = urllib.request.urlopen(f"{gw.url}/metrics", timeout=5).read().decode()
    assert 'aigw_shed_requests_total{priority="interactive",reason="queue_full"} 14.0' in metrics
    assert 'aigw_shed_requests_total{priority="interactive",reason="timeout"} 2.0' in metrics


def test_interactive_requests_displace_batch_ones_in_the_queue(
    sim: Simulator, start_gateway: Any
) -> None:
    sim.configure(latency_ms=600)
    config = {"models": sim_models(sim.url),
              "shedding": {"max_in_flight": 1, "queue": 2, "queue_timeout_s": 5}}  # fmt: skip
    gw = start_gateway(config)

    async def run() -> list[Answer]:
        async with client(gw) as c:
            batch = {"x-aigw-priority": "batch"}
            first = asyncio.create_task(call(c, headers=batch))
            await asyncio.sleep(0.2)
            queued = [asyncio.create_task(call(c, headers=batch)) for _ in range(2)]
            await asyncio.sleep(0.2)
            urgent = [asyncio.create_task(call(c)) for _ in range(2)]
            return list(await asyncio.gather(first, *queued, *urgent))

    answers = asyncio.run(run())
    assert [a[0] for a in answers] == [200, 503, 503, 200, 200]


def test_stream_without_include_usage_is_reconciled_and_looks_untouched(
    sim: Simulator, start_gateway: Any
) -> None:
    n = 100_000
    rule = {"name": "tpm-quiet", "by": "api_key", "tokens": n, "algorithm": "sliding_window_log"}
    gw = start_gateway(limited(sim, [rule]))
    first = one(gw, max_tokens=80, stream=True)
    assert all(chunk.choices for chunk in first[2])  # no usage-only chunk it did not ask for
    sent = sim.stats()["last"]["body"]
    assert sent["stream_options"] == {"include_usage": True}  # asked upstream
    reserved = n - remaining_tokens(first)
    time.sleep(0.2)
    second = one(gw, max_tokens=80)
    used = second[2].usage.total_tokens  # the same question, the same answer
    assert remaining_tokens(second) == n - used - reserved
