"""Every error a client can meet, end to end: right status, OpenAI-style body, no hang."""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any

import openai
import pytest

from tests.conftest import Gateway, Simulator, sim_models

MESSAGES: Any = [{"role": "user", "content": "hello"}]


def faulty(sim_url: str, name: str, fault: str, **extra: Any) -> dict[str, Any]:
    deployment = {
        "provider": "openai",
        "base_url": f"{sim_url}/v1",
        "headers": {"x-sim-fault": fault},
    }
    return {"name": name, "deployments": [{**deployment, **extra}]}


@pytest.fixture
def gw(sim: Simulator, start_gateway: Any) -> Gateway:
    models = [
        *sim_models(sim.url),
        faulty(sim.url, "f400", "status:400"),
        faulty(sim.url, "f429", "status:429"),
        faulty(sim.url, "f500", "status:500"),
        faulty(sim.url, "f-reset", "reset"),
        faulty(sim.url, "f-drop", "drop:3"),
        faulty(sim.url, "f-timeout", "timeout", timeouts={"first_byte_s": 0.5}),
        {
            "name": "dead",
            "deployments": [{"provider": "openai", "base_url": "http://127.0.0.1:9/v1"}],
        },
    ]
    gw: Gateway = start_gateway({"server": {"max_body_bytes": 4096}, "models": models})
    return gw


def raw_post(gw: Gateway, path: str, body: bytes, method: str = "POST") -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers={"content-type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def sdk(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.v1, api_key="k", max_retries=0, timeout=15)


def error_of(exc: openai.APIStatusError) -> dict[str, Any]:
    body: Any = exc.response.json()
    error: dict[str, Any] = body["error"]
    assert set(error) >= {"message", "type", "code"}
    return error


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        (b"{not json", "invalid_json", None),
        (b"[1, 2]", "invalid_request", None),
        (b'{"messages": []}', "invalid_request", "model"),
        (b'{"model": "gpt-test"}', "invalid_request", "messages"),
        (b'{"model": "gpt-test", "messages": [], "stream": "yes"}', "invalid_request", "stream"),
    ],
)
def test_bad_request_bodies(gw: Gateway, body: bytes, code: str, param: str | None) -> None:
    status, data = raw_post(gw, "/v1/chat/completions", body)
    assert status == 400
    assert data["error"]["code"] == code and data["error"]["param"] == param


def test_unknown_model_is_404(gw: Gateway) -> None:
    with sdk(gw) as c, pytest.raises(openai.NotFoundError) as info:
        c.chat.completions.create(model="no-such-model", messages=MESSAGES)
    assert error_of(info.value)["code"] == "model_not_found"


def test_body_over_limit_is_413(gw: Gateway) -> None:
    big = json.dumps({"model": "gpt-test", "messages": [{"role": "user", "content": "x" * 8000}]})
    status, data = raw_post(gw, "/v1/chat/completions", big.encode())
    assert status == 413 and data["error"]["code"] == "request_too_large"


def test_route_and_method_errors(gw: Gateway) -> None:
    assert raw_post(gw, "/v1/nothing", b"{}")[0] == 404
    assert raw_post(gw, "/v1/chat/completions", b"", method="GET")[0] == 405
    assert raw_post(gw, "/v1/models", b"{}", method="POST")[0] == 405


def test_headers_too_large_is_431(gw: Gateway) -> None:
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 70000 + b"\r\n\r\n")
        head = s.recv(65536)
    assert head.startswith(b"HTTP/1.1 431 ")


def test_upstream_4xx_passes_through(gw: Gateway) -> None:
    with sdk(gw) as c:
        with pytest.raises(openai.BadRequestError) as bad:
            c.chat.completions.create(model="f400", messages=MESSAGES)
        assert "simulated" in error_of(bad.value)["message"]
        with pytest.raises(openai.RateLimitError):
            c.chat.completions.create(model="f429", messages=MESSAGES)


@pytest.mark.parametrize(
    ("model", "status", "code"),
    [
        ("f500", 502, "upstream_error"),
        ("f-reset", 502, "upstream_error"),
        ("dead", 502, "upstream_connect_error"),
        ("f-timeout", 504, "deadline_exceeded"),
    ],
)
def test_upstream_failures(gw: Gateway, model: str, status: int, code: str) -> None:
    with sdk(gw) as c, pytest.raises(openai.APIStatusError) as info:
        c.chat.completions.create(model=model, messages=MESSAGES)
    assert info.value.status_code == status
    assert error_of(info.value)["code"] == code


def test_stream_upstream_failure_before_first_byte_is_json(gw: Gateway) -> None:
    with sdk(gw) as c, pytest.raises(openai.APIStatusError) as info:
        c.chat.completions.create(model="f500", messages=MESSAGES, stream=True)
    assert info.value.status_code == 502


def test_mid_stream_drop_ends_with_error_event(gw: Gateway) -> None:
    got = []
    with sdk(gw) as c:
        stream = c.chat.completions.create(model="f-drop", messages=MESSAGES, stream=True)
        with pytest.raises(openai.APIError, match="upstream"):
            for chunk in stream:
                got.append(chunk)
    assert 1 <= len(got) <= 4
    log = gw.wait_for(lambda r: r.get("model") == "f-drop")
    assert log["status"] == 502 and log["stream"] is True
