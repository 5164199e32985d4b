"""Idempotent requests end to end, with the memory backend and with a real redis-server."""

from __future__ import annotations

import concurrent.futures
from typing import Any

import openai
import pytest

from tests.conftest import Gateway, Simulator, sim_models

MESSAGES: Any = [{"role": "user", "content": "count my calls"}]


def sdk(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.v1, api_key="k", max_retries=0, timeout=20)


def ask(gw: Gateway, key: str, model: str = "gpt-test", **kw: Any) -> Any:
    with sdk(gw) as c:
        return c.chat.completions.with_raw_response.create(
            model=model, messages=MESSAGES, extra_headers={"Idempotency-Key": key}, **kw
        )


def test_replay_returns_the_first_answer_without_a_second_call(
    gateway: Gateway, sim: Simulator
) -> None:
    first = ask(gateway, "order-1")
    second = ask(gateway, "order-1")
    assert sim.stats()["requests_total"] == 1
    assert second.content == first.content
    assert second.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    ask(gateway, "order-2")
    assert sim.stats()["requests_total"] == 2


def test_same_key_other_body_is_422(gateway: Gateway) -> None:
    ask(gateway, "k-1")
    with sdk(gateway) as c, pytest.raises(openai.UnprocessableEntityError) as info:
        c.chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "other"}],
            extra_headers={"Idempotency-Key": "k-1"},
        )  # fmt: skip
    assert info.value.response.json()["error"]["code"] == "idempotency_key_reused"


def test_concurrent_repeats_join_the_one_in_flight(sim: Simulator, start_gateway: Any) -> None:
    models = sim_models(sim.url)
    models[0]["deployments"][0]["headers"] = {"x-sim-latency-ms": "300"}
    gw: Gateway = start_gateway({"models": models})
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: ask(gw, "together").content, range(4)))
    assert sim.stats()["requests_total"] == 1
    assert len(set(answers)) == 1


def test_stream_is_stored_whole_and_replayed(gateway: Gateway, sim: Simulator) -> None:
    def streamed() -> str:
        with sdk(gateway) as c:
            chunks = c.chat.completions.create(
                model="gpt-test", messages=MESSAGES, stream=True,
                extra_headers={"Idempotency-Key": "stream-1"},
            )  # fmt: skip
            return "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)

    assert streamed() == streamed()
    assert sim.stats()["requests_total"] == 1


def test_errors_are_not_stored(sim: Simulator, start_gateway: Any) -> None:
    models = sim_models(sim.url)
    gw: Gateway = start_gateway({"models": models})
    sim.configure(fault="status:500")
    with sdk(gw) as c, pytest.raises(openai.InternalServerError):
        c.chat.completions.create(
            model="aliased", messages=MESSAGES, extra_headers={"Idempotency-Key": "retry-me"}
        )
    sim.configure(fault="none")
    with sdk(gw) as c:
        ok = c.chat.completions.with_raw_response.create(
            model="aliased", messages=MESSAGES, extra_headers={"Idempotency-Key": "retry-me"}
        )
    assert "idempotent-replayed" not in ok.headers  # the retry really ran


def test_x_request_id_counts_unless_turned_off(sim: Simulator, start_gateway: Any) -> None:
    for enabled, expected_calls in ((True, 1), (False, 2)):
        sim.reset()
        gw: Gateway = start_gateway(
            {"idempotency": {"use_request_id": enabled}, "models": sim_models(sim.url)}
        )
        with sdk(gw) as c:
            for _ in range(2):
                c.chat.completions.create(
                    model="gpt-test", messages=MESSAGES, extra_headers={"X-Request-ID": "rid-7"}
                )
            # the same X-Request-ID with another body is simply not deduplicated
            c.chat.completions.create(
                model="gpt-test", messages=[{"role": "user", "content": "x"}],
                extra_headers={"X-Request-ID": "rid-7"},
            )  # fmt: skip
        assert sim.stats()["requests_total"] == expected_calls + 1


def test_redis_shares_keys_across_gateways(
    sim: Simulator, start_gateway: Any, redis_url: str
) -> None:
    config = {"state": {"backend": "redis", "url": redis_url}, "models": sim_models(sim.url)}
    one: Gateway = start_gateway(config)
    two: Gateway = start_gateway(config)
    first = ask(one, "shared-1")
    second = ask(two, "shared-1")
    assert sim.stats()["requests_total"] == 1
    assert second.content == first.content and second.headers["idempotent-replayed"] == "true"


def test_redis_down_fails_open(sim: Simulator, start_gateway: Any) -> None:
    from tests.conftest import free_port

    config = {
        "state": {
            "backend": "redis",
            "url": f"redis://127.0.0.1:{free_port()}/0",
            "timeout_s": 0.2,
        },
        "models": sim_models(sim.url),
    }
    gw: Gateway = start_gateway(config)
    for _ in range(2):
        assert ask(gw, "no-redis").parse().choices  # served, just not deduplicated
    assert sim.stats()["requests_total"] == 2
    assert gw.wait_for(lambda r: r.get("msg", "").startswith("idempotency skipped"))


def test_leaving_an_idempotent_stream_cancels_upstream(gateway: Gateway, sim: Simulator) -> None:
    sim.configure(tokens_per_s=10, completion_tokens=100)
    with sdk(gateway) as c:
        stream = c.chat.completions.create(
            model="gpt-test", messages=MESSAGES, stream=True,
            extra_headers={"Idempotency-Key": "leave-early"},
        )  # fmt: skip
        next(iter(stream))
        stream.close()
    sim.wait_cancelled_stream()
    second = ask(gateway, "leave-early", stream=True)  # not stored: it runs again
    assert "idempotent-replayed" not in second.headers
