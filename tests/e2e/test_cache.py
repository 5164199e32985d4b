"""The response cache end to end: L1, L2 on a real redis-server, controls, streams, flights."""

from __future__ import annotations

import concurrent.futures
import threading
import time
import urllib.request
from typing import Any

import openai
import pytest

from tests.conftest import Gateway, Redis, Simulator, sim_models

MESSAGES: Any = [{"role": "user", "content": "What is a cache?"}]


def cached_models(sim: Simulator, mode: str = "all", **deployment: Any) -> list[dict[str, Any]]:
    models = sim_models(sim.url, **deployment)
    for model in models:
        model["cache"] = mode
    return models


def sdk(gw: Gateway, key: str = "tenant-a") -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.v1, api_key=key, max_retries=0, timeout=20)


def chat(gw: Gateway, key: str = "tenant-a", headers: Any = None, **kw: Any) -> Any:
    params = {"model": "gpt-test", "messages": MESSAGES, **kw}
    with sdk(gw, key) as c:
        return c.chat.completions.with_raw_response.create(**params, extra_headers=headers or {})


def streamed(gw: Gateway, key: str = "tenant-a", **kw: Any) -> tuple[str, str]:
    with sdk(gw, key) as c:
        raw = c.chat.completions.with_raw_response.create(
            model="gpt-test", messages=MESSAGES, stream=True, **kw
        )
        text = "".join(ch.choices[0].delta.content or "" for ch in raw.parse() if ch.choices)
    return raw.headers["x-cache"], text


def calls(sim: Simulator) -> int:
    return int(sim.stats()["requests_total"])


@pytest.fixture
def gw(sim: Simulator, start_gateway: Any) -> Gateway:
    gw: Gateway = start_gateway({"models": cached_models(sim)})
    return gw


def test_repeat_is_an_l1_hit_without_an_upstream_call(gw: Gateway, sim: Simulator) -> None:
    first = chat(gw)
    second = chat(gw)
    assert first.headers["x-cache"] == "MISS" and second.headers["x-cache"] == "HIT-L1"
    assert calls(sim) == 1
    assert second.parse().choices[0].message.content == first.parse().choices[0].message.content
    assert int(second.headers["age"]) >= 0


def test_restart_hits_l2(sim: Simulator, start_gateway: Any, redis_url: str) -> None:
    config = {"state": {"backend": "redis", "url": redis_url}, "models": cached_models(sim)}
    first_gw: Gateway = start_gateway(config)
    original = chat(first_gw, "tenant-l2").parse().choices[0].message.content
    first_gw.stop()
    second_gw: Gateway = start_gateway(config)
    again = chat(second_gw, "tenant-l2")
    assert again.headers["x-cache"] == "HIT-L2"
    assert again.parse().choices[0].message.content == original
    assert chat(second_gw, "tenant-l2").headers["x-cache"] == "HIT-L1"  # L2 refilled L1
    assert calls(sim) == 1


def test_tenants_never_share_entries(gw: Gateway, sim: Simulator) -> None:
    assert chat(gw, "tenant-a").headers["x-cache"] == "MISS"
    assert chat(gw, "tenant-b").headers["x-cache"] == "MISS"
    assert chat(gw, "tenant-b").headers["x-cache"] == "HIT-L1"
    assert calls(sim) == 2


def test_deterministic_policy(sim: Simulator, start_gateway: Any) -> None:
    gw: Gateway = start_gateway({"models": cached_models(sim, "deterministic")})
    for _ in range(2):
        assert "x-cache" not in chat(gw, temperature=0.9).headers  # not even looked up
    chat(gw, temperature=0)
    assert chat(gw, temperature=0).headers["x-cache"] == "HIT-L1"
    assert calls(sim) == 3


def test_streamed_miss_then_streamed_and_json_hits(gw: Gateway, sim: Simulator) -> None:
    state, original = streamed(gw)
    assert state == "MISS"
    state, again = streamed(gw, stream_options={"include_usage": True})
    assert state == "HIT-L1" and again == original
    as_json = chat(gw)
    assert as_json.headers["x-cache"] == "HIT-L1"
    assert as_json.parse().choices[0].message.content == original
    assert calls(sim) == 1


def test_json_miss_then_streamed_hit(gw: Gateway, sim: Simulator) -> None:
    original = chat(gw).parse().choices[0].message.content
    state, text = streamed(gw)
    assert state == "HIT-L1" and text == original
    assert calls(sim) == 1


def test_cache_control(gw: Gateway, sim: Simulator) -> None:
    chat(gw, headers={"Cache-Control": "no-store"})
    assert chat(gw).headers["x-cache"] == "MISS"  # the no-store answer was not kept
    assert chat(gw, headers={"Cache-Control": "no-cache"}).headers["x-cache"] == "MISS"
    assert chat(gw).headers["x-cache"] == "HIT-L1"
    time.sleep(1.1)
    assert chat(gw, headers={"Cache-Control": "max-age=0"}).headers["x-cache"] == "MISS"
    chat(gw, headers={"X-Cache-TTL": "1"}, temperature=0.5)
    time.sleep(1.1)
    assert chat(gw, temperature=0.5).headers["x-cache"] == "MISS"  # its own TTL ran out


def test_errors_and_partial_streams_are_never_cached(gw: Gateway, sim: Simulator) -> None:
    sim.configure(fault="status:500")
    with pytest.raises(openai.InternalServerError):
        chat(gw)
    sim.configure(fault="drop:2")
    with pytest.raises(openai.APIError):
        streamed(gw)
    sim.configure(fault="none")
    assert chat(gw).headers["x-cache"] == "MISS"


def test_fifty_concurrent_requests_one_upstream_call(sim: Simulator, start_gateway: Any) -> None:
    models = cached_models(sim, headers={"x-sim-latency-ms": "300"})
    gw: Gateway = start_gateway({"models": models})
    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(lambda _: chat(gw).parse().choices[0].message.content, range(50)))
    assert calls(sim) == 1 and len(set(answers)) == 1


def test_streams_fan_out_and_the_first_caller_may_leave(sim: Simulator, start_gateway: Any) -> None:
    sim.configure(tokens_per_s=20, completion_tokens=10)
    gw: Gateway = start_gateway({"models": cached_models(sim)})
    leader_reading, follower_reading = threading.Event(), threading.Event()

    def leader() -> None:
        with sdk(gw) as c:
            stream = c.chat.completions.create(model="gpt-test", messages=MESSAGES, stream=True)
            next(iter(stream))
            leader_reading.set()
            follower_reading.wait(10)
            stream.close()  # the first caller goes away mid-stream

    thread = threading.Thread(target=leader)
    thread.start()
    assert leader_reading.wait(10)
    with sdk(gw) as c:  # joins the flight, then must still get the whole answer
        stream = c.chat.completions.create(model="gpt-test", messages=MESSAGES, stream=True)
        words = []
        for chunk in stream:
            follower_reading.set()
            words.append(chunk.choices[0].delta.content or "" if chunk.choices else "")
    thread.join(10)
    assert len("".join(words).split()) == 10
    assert calls(sim) == 1
    assert chat(gw).headers["x-cache"] == "HIT-L1"


def test_redis_killed_mid_run_turns_into_misses(
    sim: Simulator, start_gateway: Any, own_redis: Redis
) -> None:
    config = {
        "state": {"backend": "redis", "url": own_redis.url, "timeout_s": 0.1},
        "cache": {"l1_max_bytes": 0},  # L2 only, so every lookup goes to Redis
        "models": cached_models(sim),
    }
    gw: Gateway = start_gateway(config)
    chat(gw)
    assert chat(gw).headers["x-cache"] == "HIT-L2"
    own_redis.stop()
    for _ in range(5):
        assert chat(gw).headers["x-cache"] == "MISS"  # served, never failed
    outage = [r for r in gw.records() if r.get("msg") == "cache L2 unavailable: serving misses"]
    assert len(outage) == 1  # logged once per outage


def semantic_models(sim: Simulator) -> list[dict[str, Any]]:
    models = cached_models(sim)
    models[0]["semantic_cache"] = {"embedding_model": "embedder", "threshold": 0.95}
    models.append(
        {
            "name": "embedder",
            "deployments": [
                {"provider": "openai", "base_url": f"{sim.url}/v1", "model": "sim-embed"}
            ],
        }
    )
    return models  # fmt: skip


def ask(gw: Gateway, text: str, system: str = "Be brief.") -> Any:
    messages = [{"role": "system", "content": system}, {"role": "user", "content": text}]
    return chat(gw, messages=messages)


def test_semantic_hit_needs_the_same_context(sim: Simulator, start_gateway: Any) -> None:
    # The simulator's embeddings are a hash of the text, so only the same words (here with
    # other spacing, which changes the exact key) are similar; real paraphrases need a
    # real embeddings model behind the same setting.
    gw: Gateway = start_gateway({"models": semantic_models(sim)})
    first = ask(gw, "What is a cache?")
    assert first.headers["x-cache"] == "MISS"
    near = ask(gw, "  What is a cache?  ")
    assert near.headers["x-cache"] == "HIT-SEMANTIC"
    assert near.parse().choices[0].message.content == first.parse().choices[0].message.content
    assert ask(gw, "What is a database?").headers["x-cache"] == "MISS"
    assert ask(gw, "  What is a cache?", system="Be verbose.").headers["x-cache"] == "MISS"
    chat_calls = sim.stats()["by_path"]["/v1/chat/completions"]
    assert chat_calls == 3
    with urllib.request.urlopen(f"{gw.url}/metrics", timeout=5) as resp:
        metrics = resp.read().decode()
    assert 'aigw_cache_requests_total{level="semantic",result="hit"} 1.0' in metrics
    assert "aigw_cache_semantic_similarity_count 1.0" in metrics


def test_semantic_entries_are_shared_through_redis(
    sim: Simulator, start_gateway: Any, redis_url: str
) -> None:
    config = {
        "state": {"backend": "redis", "url": redis_url},
        "cache": {"namespace": "shared"},
        "models": semantic_models(sim),
    }
    one: Gateway = start_gateway(config)
    two: Gateway = start_gateway(config)
    ask(one, "Shared question?")
    deadline = time.monotonic() + 10
    spaces = 1  # other spacing each time: an exact key neither gateway has seen
    while ask(two, " " * spaces + "Shared question?").headers["x-cache"] != "HIT-SEMANTIC":
        assert time.monotonic() < deadline, "the other gateway never learned the vector"
        spaces += 1
        time.sleep(0.3)


def test_semantic_config_is_checked(tmp_path: Any) -> None:
    import subprocess
    import sys

    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "models:\n  - name: m\n    semantic_cache: {embedding_model: nope}\n"
        "    deployments: [{provider: openai}]\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "aigw", "check-config", str(bad)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert "models[0].semantic_cache.embedding_model: no model named 'nope'" in out.stderr
    assert "models[0].semantic_cache: needs `cache` other than off" in out.stderr
