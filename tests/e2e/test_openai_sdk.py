"""The official openai SDK against aigw (base URL swap only), backed by the simulator."""

from __future__ import annotations

import base64
import json
import sys
import urllib.request
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.conftest import Gateway, Simulator

MESSAGES: Any = [{"role": "user", "content": "Tell me about gateways"}]


def client(gw: Gateway, **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.v1, api_key="client-key", max_retries=0, timeout=10, **kw)


def aclient(gw: Gateway) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gw.v1, api_key="client-key", max_retries=0, timeout=10)


def test_chat_non_stream(gateway: Gateway, sim: Simulator) -> None:
    with client(gateway) as c:
        resp = c.chat.completions.create(model="gpt-test", messages=MESSAGES)
    assert resp.choices[0].message.content
    assert "Tell me about gateways" in resp.choices[0].message.content
    assert resp.usage is not None and resp.usage.completion_tokens > 0
    sent = sim.stats()["last"]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["headers"]["authorization"] == "Bearer sk-upstream-secret"
    assert sent["body"]["messages"] == MESSAGES


def test_chat_stream_with_usage(gateway: Gateway) -> None:
    with client(gateway) as c:
        stream = c.chat.completions.create(
            model="gpt-test",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert "Tell me about gateways" in text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    log = gateway.wait_for(lambda r: r.get("msg") == "request" and r["stream"])
    assert log["status"] == 200 and log["tokens_out"] == chunks[-1].usage.completion_tokens


def test_model_alias_rewrites_only_the_model(gateway: Gateway, sim: Simulator) -> None:
    with client(gateway) as c:
        c.chat.completions.create(model="aliased", messages=MESSAGES, temperature=0.25, seed=7)
    body = sim.stats()["last"]["body"]
    assert body == {"model": "upstream-name", "messages": MESSAGES, "temperature": 0.25, "seed": 7}


def test_completions_and_embeddings(gateway: Gateway) -> None:
    with client(gateway) as c:
        comp = c.completions.create(model="gpt-test", prompt="Once upon a time", max_tokens=5)
        assert comp.choices[0].text and comp.choices[0].finish_reason == "length"
        emb = c.embeddings.create(model="gpt-test", input=["a", "b"])
        assert len(emb.data) == 2 and len(emb.data[0].embedding) > 0
        raw = c.embeddings.create(model="gpt-test", input="a", encoding_format="base64")
        vector: Any = raw.data[0].embedding
        assert isinstance(vector, str) and len(base64.b64decode(vector)) % 4 == 0


def test_models_list(gateway: Gateway) -> None:
    with client(gateway) as c:
        ids = {m.id for m in c.models.list()}
        assert {"gpt-test", "aliased", "claude-test", "azure-test"} <= ids
        assert c.models.retrieve("gpt-test").id == "gpt-test"
        with pytest.raises(openai.NotFoundError):
            c.models.retrieve("nope")


def test_azure_deployment_url_and_key(gateway: Gateway, sim: Simulator) -> None:
    with client(gateway) as c:
        resp = c.chat.completions.create(model="azure-test", messages=MESSAGES)
    assert resp.choices[0].message.content
    sent = sim.stats()["last"]
    assert sent["path"] == "/openai/deployments/my-deployment/chat/completions"
    assert sent["headers"]["api-key"] == "azure-secret"
    assert "authorization" not in sent["headers"]


@pytest.mark.anyio
async def test_async_client_stream_and_not(gateway: Gateway) -> None:
    async with aclient(gateway) as c:
        resp = await c.chat.completions.create(model="gpt-test", messages=MESSAGES)
        assert resp.choices[0].message.content
        stream = await c.chat.completions.create(model="gpt-test", messages=MESSAGES, stream=True)
        pieces = [ch.choices[0].delta.content or "" async for ch in stream if ch.choices]
    assert "".join(pieces) == resp.choices[0].message.content


def test_request_id_round_trip(gateway: Gateway, sim: Simulator) -> None:
    with client(gateway) as c:
        raw = c.chat.completions.with_raw_response.create(
            model="gpt-test", messages=MESSAGES, extra_headers={"X-Request-ID": "trace-42"}
        )
        assert raw.headers["x-request-id"] == "trace-42"
        generated = c.chat.completions.with_raw_response.create(model="gpt-test", messages=MESSAGES)
        rid = generated.headers["x-request-id"]
    assert len(rid) == 32
    assert sim.stats()["last"]["headers"]["x-request-id"] == rid
    log = gateway.wait_for(lambda r: r.get("request_id") == "trace-42")
    assert log["deployment"] == "gpt-test" and log["status"] == 200
    assert log["tokens_in"] > 0 and log["upstream_ms"] > 0 and log["client_ip"] == "127.0.0.1"


def test_no_secret_in_logs(gateway: Gateway) -> None:
    with client(gateway) as c:
        c.chat.completions.create(model="gpt-test", messages=MESSAGES)
        c.chat.completions.create(model="claude-test", messages=MESSAGES)
        with pytest.raises(openai.NotFoundError):
            c.chat.completions.create(model="missing", messages=MESSAGES)
    gateway.wait_for(lambda r: r.get("model") == "missing")
    out = gateway.output()
    for secret in ("sk-upstream-secret", "sk-ant-secret", "azure-secret", "client-key"):
        assert secret not in out
    for line in out.splitlines():
        json.loads(line)  # every line is JSON


def test_client_disconnect_cancels_upstream_stream(gateway: Gateway, sim: Simulator) -> None:
    sim.configure(tokens_per_s=10, completion_tokens=100)  # ten seconds if read to the end
    with client(gateway) as c:
        stream = c.chat.completions.create(model="gpt-test", messages=MESSAGES, stream=True)
        next(iter(stream))
        stream.close()
    sim.wait_cancelled_stream()
    log = gateway.wait_for(lambda r: r.get("msg") == "request" and r["stream"])
    assert log["status"] == 499 and log["error"] == "client_closed"


def test_https_upstream_with_private_ca(tls_cert: tuple[Path, Path], start_gateway: Any) -> None:
    cert, key = tls_cert
    args = ["--port", "0", "--tls-cert", str(cert), "--tls-key", str(key)]
    tls_sim = Simulator([sys.executable, "-m", "aigw.simulator", *args])
    try:
        deployment = {"provider": "openai", "base_url": f"https://127.0.0.1:{tls_sim.port}/v1"}
        models = [
            {"name": "trusted", "deployments": [{**deployment, "ca_file": str(cert)}]},
            {"name": "untrusted", "deployments": [deployment]},
        ]
        gw = start_gateway({"models": models})
        with client(gw) as c:
            assert c.chat.completions.create(model="trusted", messages=MESSAGES).choices
            with pytest.raises(openai.APIStatusError) as info:
                c.chat.completions.create(model="untrusted", messages=MESSAGES)
        assert info.value.status_code == 502
    finally:
        tls_sim.stop()


def test_metrics_count_requests_latency_and_tokens(gateway: Gateway) -> None:
    with client(gateway) as c:
        for _ in range(3):
            c.chat.completions.create(model="gpt-test", messages=MESSAGES)
        with pytest.raises(openai.NotFoundError):
            c.chat.completions.create(model="no-such-model", messages=MESSAGES)
    with urllib.request.urlopen(f"{gateway.url}/metrics", timeout=5) as resp:
        assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
        text = resp.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    assert samples['aigw_requests_total{model="gpt-test",route="chat",status="200"}'] == 3
    assert samples['aigw_requests_total{model="unknown",route="chat",status="404"}'] == 1
    assert samples['aigw_request_duration_seconds_count{model="gpt-test",route="chat"}'] == 3
    assert samples['aigw_upstream_duration_seconds_count{deployment="gpt-test"}'] == 3
    assert samples['aigw_upstream_requests_total{deployment="gpt-test",outcome="ok"}'] == 3
    assert samples['aigw_tokens_total{kind="completion",model="gpt-test"}'] == 48  # 3 x 16
    assert samples["aigw_in_flight_requests"] == 0
    assert not any("no-such-model" in name for name in samples)
