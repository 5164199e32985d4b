"""The official anthropic SDK against aigw's /v1/messages (base URL swap only).

Served by an Anthropic upstream (bytes relayed as they are) and by an OpenAI upstream
(translated both ways), with errors in Anthropic's shape.
"""

from __future__ import annotations

from typing import Any

import anthropic
import pytest

from tests.conftest import Gateway, Simulator, sim_models

MESSAGES: Any = [{"role": "user", "content": "Explain gateways"}]
TOOLS: Any = [
    {
        "name": "get_weather",
        "description": "Weather for a city",
        "input_schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }
]


@pytest.fixture
def gw(sim: Simulator, start_gateway: Any) -> Gateway:
    drop = {
        "name": "f-drop",
        "deployments": [
            {
                "provider": "openai",
                "base_url": f"{sim.url}/v1",
                "headers": {"x-sim-fault": "drop:2"},
            }
        ],
    }
    gw: Gateway = start_gateway({"models": [*sim_models(sim.url), drop]})
    return gw  # fmt: skip


def sdk(gw: Gateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key="client-key", max_retries=0, timeout=10)


def test_anthropic_upstream_fast_path(gw: Gateway, sim: Simulator) -> None:
    with sdk(gw) as c:
        msg = c.messages.create(
            model="claude-test", max_tokens=100, system="Be brief.", messages=MESSAGES
        )
    assert msg.type == "message" and msg.content[0].type == "text"
    assert "Explain gateways" in msg.content[0].text
    assert msg.usage.output_tokens > 0
    sent = sim.stats()["last"]
    assert sent["path"] == "/v1/messages" and sent["headers"]["x-api-key"] == "sk-ant-secret"
    assert sent["body"] == {
        "model": "claude-upstream", "max_tokens": 100, "system": "Be brief.", "messages": MESSAGES
    }  # fmt: skip
    log = gw.wait_for(lambda r: r.get("model") == "claude-test")
    assert log["tokens_out"] == msg.usage.output_tokens and log["path"] == "/v1/messages"


def test_anthropic_upstream_stream(gw: Gateway) -> None:
    with (
        sdk(gw) as c,
        c.messages.stream(model="claude-test", max_tokens=100, messages=MESSAGES) as stream,
    ):
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert "Explain gateways" in text and final.stop_reason == "end_turn"
    log = gw.wait_for(lambda r: r.get("model") == "claude-test" and r["stream"])
    assert log["tokens_in"] > 0 and log["tokens_out"] == final.usage.output_tokens


def test_openai_upstream_translated(gw: Gateway, sim: Simulator) -> None:
    with sdk(gw) as c:
        msg = c.messages.create(
            model="gpt-test", max_tokens=100, system="Be brief.", messages=MESSAGES
        )
    assert msg.content[0].type == "text" and "Explain gateways" in msg.content[0].text
    assert msg.stop_reason == "end_turn" and msg.model == "gpt-test"
    assert msg.usage.input_tokens > 0 and msg.usage.output_tokens > 0
    body = sim.stats()["last"]["body"]
    assert sim.stats()["last"]["path"] == "/v1/chat/completions"
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert body["max_tokens"] == 100


def test_openai_upstream_stream_and_tools(gw: Gateway) -> None:
    with sdk(gw) as c:
        with c.messages.stream(model="gpt-test", max_tokens=50, messages=MESSAGES) as stream:
            text = "".join(stream.text_stream)
            final = stream.get_final_message()
        assert "Explain gateways" in text and final.usage.output_tokens > 0
        with c.messages.stream(
            model="gpt-test",
            max_tokens=50,
            tools=TOOLS,
            tool_choice={"type": "tool", "name": "get_weather"},
            messages=[{"role": "user", "content": "Weather in Oslo?"}],
        ) as stream:
            called = stream.get_final_message()
        tool_use = next(b for b in called.content if b.type == "tool_use")
        assert called.stop_reason == "tool_use" and tool_use.input == {"city": "sim"}
        answer = c.messages.create(
            model="gpt-test", max_tokens=50, tools=TOOLS,
            messages=[
                {"role": "user", "content": "Weather in Oslo?"},
                {"role": "assistant", "content": [b.model_dump() for b in called.content]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": tool_use.id, "content": "cold"}]},
            ],
        )  # fmt: skip
    assert answer.content[0].type == "text"


def test_errors_in_anthropic_shape(gw: Gateway) -> None:
    with sdk(gw) as c:
        with pytest.raises(anthropic.NotFoundError) as missing:
            c.messages.create(model="nope", max_tokens=10, messages=MESSAGES)
        body: Any = missing.value.body
        assert body["type"] == "error" and body["error"]["type"] == "not_found_error"
        with pytest.raises(anthropic.BadRequestError):
            c.messages.create(model="gpt-test", max_tokens=10, messages=[])
        with (
            pytest.raises(anthropic.APIError),
            c.messages.stream(model="f-drop", max_tokens=10, messages=MESSAGES) as stream,
        ):
            for _ in stream.text_stream:
                pass
