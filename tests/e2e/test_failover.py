"""Routing and resilience end to end: sick upstreams, retries, breakers, hedges, fallbacks.

Every deployment is a real upstream on 127.0.0.1: the simulator (its faults set per
deployment with ``x-sim-*`` headers, or at run time through ``/sim/config``) or a port
where nothing listens. No assertion reads a clock: behaviour is judged by who answered
and by counts.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import urllib.request
from collections import Counter
from typing import Any

import openai
import pytest

from tests.conftest import Gateway, Simulator, free_port

ADMIN = "admin-secret"
MESSAGES: Any = [{"role": "user", "content": "hello"}]
QUICK_BREAKER = {"failure_threshold": 3, "open_s": 0.3, "max_open_s": 1.0}
QUICK_OUTLIER = {"min_requests": 5, "eject_s": 0.3, "max_eject_s": 1.0}


def dep(url: str, id: str, **extra: Any) -> dict[str, Any]:
    return {"id": id, "provider": "openai", "base_url": f"{url}/v1", **extra}


def faulty(url: str, id: str, fault: str, **extra: Any) -> dict[str, Any]:
    return dep(url, id, headers={"x-sim-fault": fault}, **extra)


def routing(gw: Gateway) -> dict[str, Any]:
    req = urllib.request.Request(
        f"{gw.url}/admin/routing", headers={"authorization": f"Bearer {ADMIN}"}
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        data: dict[str, Any] = json.loads(resp.read())
    return data


def deployments(gw: Gateway, model: str) -> dict[str, dict[str, Any]]:
    group = next(m for m in routing(gw)["models"] if m["name"] == model)
    return {d["id"]: d for d in group["deployments"]}


def sdk(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.v1, api_key="k", max_retries=0, timeout=20)


async def _load(gw: Gateway, model: str, total: int, concurrency: int) -> list[Any]:
    outcomes: list[Any] = []
    queue = iter(range(total))
    async with openai.AsyncOpenAI(base_url=gw.v1, api_key="k", max_retries=0, timeout=20) as c:

        async def worker() -> None:
            for _ in queue:
                try:
                    await c.chat.completions.create(model=model, messages=MESSAGES)
                    outcomes.append("ok")
                except openai.APIStatusError as exc:
                    outcomes.append(exc.status_code)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return outcomes


def load(gw: Gateway, model: str, total: int, concurrency: int = 32) -> Counter[Any]:
    return Counter(asyncio.run(_load(gw, model, total, concurrency)))


def wait_for(check: Any, timeout_s: float = 15.0, poke: Any = None) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        if poke is not None:
            poke()
        time.sleep(0.05)


def logs(gw: Gateway, count: int, where: Any = lambda r: True) -> list[dict[str, Any]]:
    """The access log lines matching ``where``, once ``count`` of them are written."""
    wait_for(lambda: len([r for r in gw.access_logs() if where(r)]) >= count)
    return [r for r in gw.access_logs() if where(r)]


@pytest.fixture
def sick_sim() -> Any:
    sim = Simulator(
        [sys.executable, "-m", "aigw.simulator", "--port", "0", "--fault", "status:500"]
    )
    yield sim
    sim.stop()


def test_sick_deployments_are_ejected_then_readmitted(
    sim: Simulator, sick_sim: Simulator, start_gateway: Any
) -> None:
    dead_port = free_port()
    model = {
        "name": "three", "strategy": "round-robin",
        "breaker": QUICK_BREAKER, "outlier": QUICK_OUTLIER,
        "deployments": [
            dep(f"http://127.0.0.1:{dead_port}", "dead"),
            dep(sick_sim.url, "sick"),
            dep(sim.url, "healthy"),
        ],
    }  # fmt: skip
    gw: Gateway = start_gateway({"admin": {"key": ADMIN}, "models": [model]})
    outcomes = load(gw, "three", 1200)
    assert outcomes == {"ok": 1200}  # no client ever saw the sick ones
    state = deployments(gw, "three")
    sick_share = (state["dead"]["requests"] + state["sick"]["requests"]) / 1200
    assert sick_share < 0.1, state  # ejected fast: round-robin alone would give them 2/3
    assert not state["dead"]["usable"] or not state["sick"]["usable"]

    sick_sim.configure(fault="none")  # both heal
    revived = Simulator([sys.executable, "-m", "aigw.simulator", "--port", str(dead_port)])
    try:
        before = {k: v["requests"] for k, v in state.items()}

        def all_serving() -> bool:
            now = deployments(gw, "three")
            return all(d["breaker"] == "closed" and d["usable"] for d in now.values())

        wait_for(all_serving, poke=lambda: load(gw, "three", 30, 4))
        load(gw, "three", 60, 4)
        after = deployments(gw, "three")
        assert all(after[k]["requests"] > before[k] + 5 for k in before)  # back in rotation
    finally:
        revived.stop()


def test_p2c_ewma_moves_traffic_off_a_slow_deployment(sim: Simulator, start_gateway: Any) -> None:
    model = {
        "name": "p2c", "strategy": "p2c-ewma",
        "deployments": [
            dep(sim.url, "slow", headers={"x-sim-latency-ms": "80"}), dep(sim.url, "fast"),
        ],
    }  # fmt: skip
    gw: Gateway = start_gateway({"admin": {"key": ADMIN}, "models": [model]})
    assert load(gw, "p2c", 200, 4) == {"ok": 200}
    state = deployments(gw, "p2c")
    assert state["fast"]["requests"] > 4 * state["slow"]["requests"], state


def test_hedging_answers_from_the_fast_deployment(sim: Simulator, start_gateway: Any) -> None:
    model = {
        "name": "hedged", "strategy": "round-robin",
        "hedge": {"enabled": True, "delay_s": 0.1},
        "deployments": [
            dep(sim.url, "slow", headers={"x-sim-latency-ms": "5000"}), dep(sim.url, "fast"),
        ],
    }  # fmt: skip
    gw: Gateway = start_gateway({"models": [model]})
    with sdk(gw) as c:
        for _ in range(6):
            c.chat.completions.create(model="hedged", messages=MESSAGES)
    lines = logs(gw, 6)
    assert {r["deployment"] for r in lines} == {"fast"}  # the slow one never answered
    hedged = sum(r["attempts"] == 2 for r in lines)
    assert hedged == 3  # round-robin: every other request goes to the slow one first
    with urllib.request.urlopen(f"{gw.url}/metrics", timeout=5) as resp:
        metrics = resp.read().decode()
    assert f'aigw_hedges_total{{model="hedged"}} {float(hedged)}' in metrics


def test_retry_budget_prevents_a_storm(sick_sim: Simulator, start_gateway: Any) -> None:
    model = {
        "name": "failing",
        "retry": {"attempts": 5, "backoff_base_s": 0, "budget_ratio": 0.2, "budget_min_per_s": 1},
        "breaker": {"enabled": False}, "outlier": {"enabled": False},
        "deployments": [dep(sick_sim.url, "a"), dep(sick_sim.url, "b")],
    }  # fmt: skip
    gw: Gateway = start_gateway({"models": [model]})
    outcomes = load(gw, "failing", 300, 8)
    assert outcomes == {502: 300}
    upstream_calls = sick_sim.stats()["requests_total"]
    # without a budget: 5 attempts each = 1500; with it: 300 + 20% + the 10-retry reserve
    assert 300 <= upstream_calls <= 300 * 1.2 + 10 + 8, upstream_calls


def test_open_breakers_give_fast_503_with_retry_after(
    sick_sim: Simulator, start_gateway: Any
) -> None:
    model = {
        "name": "broken", "breaker": {"failure_threshold": 2, "open_s": 30, "max_open_s": 60},
        "deployments": [dep(sick_sim.url, "a"), dep(sick_sim.url, "b")],
    }  # fmt: skip
    gw: Gateway = start_gateway({"models": [model]})
    assert load(gw, "broken", 20, 1)[503] >= 15
    calls = sick_sim.stats()["requests_total"]
    assert calls <= 6  # two failures trip each breaker; after that nothing goes upstream
    with sdk(gw) as c, pytest.raises(openai.APIStatusError) as info:
        c.chat.completions.create(model="broken", messages=MESSAGES)
    assert info.value.status_code == 503
    assert 20 <= int(info.value.response.headers["retry-after"]) <= 30
    assert info.value.response.json()["error"]["code"] == "no_deployment_available"


def test_consistent_hash_is_sticky_and_moves_one_third(sim: Simulator, start_gateway: Any) -> None:
    ids = ["a", "b", "c"]
    model = {
        "name": "sticky", "strategy": "consistent-hash", "hash_key": "user",
        "deployments": [dep(sim.url, i) for i in ids],
    }  # fmt: skip
    gw: Gateway = start_gateway({"models": [model]})

    def placement(phase: str) -> dict[str, str]:
        with sdk(gw) as c:
            for n in range(90):
                c.chat.completions.create(
                    model="sticky", messages=MESSAGES, user=f"u{n}",
                    extra_headers={"x-request-id": f"{phase}-{n}"},
                )  # fmt: skip
        lines = logs(gw, 90, lambda r: r["request_id"].startswith(phase + "-"))
        return {r["request_id"].split("-")[1]: r["deployment"] for r in lines}

    first, again = placement("p1"), placement("p2")
    assert first == again and set(first.values()) == set(ids)
    model["deployments"] = [dep(sim.url, i) for i in ("a", "b")]
    gw.config.write_text(json.dumps({"models": [model]}))
    gw.signal(__import__("signal").SIGHUP)
    gw.wait_for(lambda r: r.get("msg") == "config reloaded")
    after = placement("p3")
    moved = {k for k in first if first[k] != after[k]}
    assert moved == {k for k in first if first[k] == "c"}  # only the removed one's keys


def test_stream_fails_over_before_the_first_byte_only(sim: Simulator, start_gateway: Any) -> None:
    models = [
        {"name": "before", "deployments": [
            faulty(sim.url, "broken", "status:503"), dep(sim.url, "ok", priority=1)]},
        {"name": "after", "deployments": [
            faulty(sim.url, "dropping", "drop:2"), dep(sim.url, "ok2", priority=1)]},
    ]  # fmt: skip
    gw: Gateway = start_gateway({"models": models})
    with sdk(gw) as c:
        text = "".join(
            ch.choices[0].delta.content or ""
            for ch in c.chat.completions.create(model="before", messages=MESSAGES, stream=True)
            if ch.choices
        )
        assert "hello" in text
        sim.reset()
        with pytest.raises(openai.APIError):
            for _ in c.chat.completions.create(model="after", messages=MESSAGES, stream=True):
                pass
    assert sim.stats()["requests_total"] == 1  # bytes had reached the client: no second try
    by_model = {r["model"]: r for r in logs(gw, 2)}
    assert by_model["before"]["attempts"] == 2 and by_model["before"]["deployment"] == "ok"
    assert by_model["after"]["attempts"] == 1 and by_model["after"]["status"] == 502


def test_fallback_chains(sim: Simulator, start_gateway: Any) -> None:
    models = [
        {"name": "primary", "fallbacks": ["claude"], "retry": {"attempts": 2},
         "deployments": [faulty(sim.url, "p", "status:500")]},
        {"name": "small", "fallbacks": ["claude"],
         "deployments": [faulty(sim.url, "s", "status:400:context_length_exceeded")]},
        {"name": "strict", "fallbacks": ["claude"], "fallback_on": ["exhausted"],
         "deployments": [faulty(sim.url, "x", "status:400:context_length_exceeded")]},
        {"name": "claude", "deployments": [
            {"id": "c", "provider": "anthropic", "base_url": sim.url, "model": "claude-x"}]},
    ]  # fmt: skip
    gw: Gateway = start_gateway({"models": models})
    with sdk(gw) as c:
        for name in ("primary", "small"):
            resp = c.chat.completions.create(model=name, messages=MESSAGES)
            assert resp.model == name and resp.choices[0].message.content
        with pytest.raises(openai.BadRequestError):
            c.chat.completions.create(model="strict", messages=MESSAGES)
    by_model = {r["model"]: r for r in logs(gw, 3)}
    assert by_model["primary"]["fallbacks"] == 1 and by_model["primary"]["deployment"] == "c"
    assert by_model["small"]["fallbacks"] == 1 and by_model["small"]["attempts"] == 2
    assert by_model["strict"]["fallbacks"] == 0


def test_degraded_response_when_nothing_can_serve(start_gateway: Any) -> None:
    model = {
        "name": "gone", "retry": {"attempts": 1},
        "breaker": {"failure_threshold": 1, "open_s": 30, "max_open_s": 30},
        "degraded": {"mode": "response", "message": "Back soon."},
        "deployments": [dep(f"http://127.0.0.1:{free_port()}", "nowhere")],
    }  # fmt: skip
    gw: Gateway = start_gateway({"models": [model]})
    with sdk(gw) as c:
        with pytest.raises(openai.APIStatusError) as first:
            c.chat.completions.create(model="gone", messages=MESSAGES)
        assert first.value.status_code == 502
        raw = c.chat.completions.with_raw_response.create(model="gone", messages=MESSAGES)
    body = json.loads(raw.content)
    assert body["degraded"] is True and body["choices"][0]["message"]["content"] == "Back soon."


def test_request_timeout_header(sim: Simulator, start_gateway: Any) -> None:
    model = {
        "name": "slow",
        "deployments": [dep(sim.url, "s", headers={"x-sim-latency-ms": "3000"})],
    }
    gw: Gateway = start_gateway({"models": [model]})
    with sdk(gw) as c:
        with pytest.raises(openai.APIStatusError) as late:
            c.chat.completions.create(
                model="slow", messages=MESSAGES, extra_headers={"x-request-timeout": "0.2"}
            )
        assert late.value.status_code == 504
        with pytest.raises(openai.BadRequestError):
            c.chat.completions.create(
                model="slow", messages=MESSAGES, extra_headers={"x-request-timeout": "soon"}
            )


def test_active_health_checks_mark_down_and_up(sim: Simulator, start_gateway: Any) -> None:
    port = free_port()
    model = {
        "name": "checked",
        "health_check": {"enabled": True, "interval_s": 0.05, "timeout_s": 0.5,
                         "unhealthy_after": 2, "healthy_after": 2},
        "deployments": [dep(f"http://127.0.0.1:{port}", "later"), dep(sim.url, "now")],
    }  # fmt: skip
    gw: Gateway = start_gateway({"admin": {"key": ADMIN}, "models": [model]})
    wait_for(lambda: not deployments(gw, "checked")["later"]["healthy"])
    assert load(gw, "checked", 40, 4) == {"ok": 40}
    assert deployments(gw, "checked")["later"]["requests"] == 0  # never tried while down
    revived = Simulator([sys.executable, "-m", "aigw.simulator", "--port", str(port)])
    try:
        wait_for(lambda: deployments(gw, "checked")["later"]["healthy"])
    finally:
        revived.stop()


def test_admin_api_is_guarded(sim: Simulator, start_gateway: Any) -> None:
    model = {"name": "m", "deployments": [dep(sim.url, "d")]}
    closed: Gateway = start_gateway({"models": [model]})
    guarded: Gateway = start_gateway({"admin": {"key": ADMIN}, "models": [model]})

    def status(gw: Gateway, key: str | None) -> int:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        req = urllib.request.Request(f"{gw.url}/admin/routing", headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as err:
            return int(err.code)

    assert status(closed, ADMIN) == 403
    assert status(guarded, None) == 401 and status(guarded, "wrong") == 401
    assert status(guarded, ADMIN) == 200
    view = deployments(guarded, "m")["d"]
    assert view["breaker"] == "closed" and view["healthy"] and "effective_weight" in view
    assert ADMIN not in guarded.output()
