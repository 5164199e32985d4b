"""OpenAI clients talking to an Anthropic-dialect upstream through aigw's translation."""

from __future__ import annotations

import json
from typing import Any

import openai

from tests.conftest import Gateway, Simulator

TOOLS: Any = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


def sdk(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.v1, api_key="k", max_retries=0, timeout=10)


def test_chat_translated_both_ways(gateway: Gateway, sim: Simulator) -> None:
    messages: Any = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is a gateway?"},
    ]
    with sdk(gateway) as c:
        resp = c.chat.completions.create(
            model="claude-test", messages=messages, max_tokens=50, stop=["END"]
        )
    assert resp.object == "chat.completion" and resp.model == "claude-test"
    assert "What is a gateway?" in (resp.choices[0].message.content or "")
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None and resp.usage.prompt_tokens > 0
    sent = sim.stats()["last"]
    assert sent["path"] == "/v1/messages"
    assert sent["headers"]["x-api-key"] == "sk-ant-secret"
    assert sent["headers"]["anthropic-version"]
    body = sent["body"]
    assert body["model"] == "claude-upstream" and body["system"] == "Be brief."
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "What is a gateway?"}]}
    ]
    assert body["max_tokens"] == 50 and body["stop_sequences"] == ["END"]


def test_stream_translated_with_usage(gateway: Gateway) -> None:
    with sdk(gateway) as c:
        stream = c.chat.completions.create(
            model="claude-test",
            messages=[{"role": "user", "content": "Stream please"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert "Stream please" in text
    finish = [
        ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason
    ]
    assert finish == ["stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    log = gateway.wait_for(lambda r: r.get("model") == "claude-test" and r["stream"])
    assert log["tokens_out"] == chunks[-1].usage.completion_tokens


def test_tool_calls_round_trip(gateway: Gateway, sim: Simulator) -> None:
    with sdk(gateway) as c:
        resp = c.chat.completions.create(
            model="claude-test",
            messages=[{"role": "user", "content": "Weather in Paris?"}],
            tools=TOOLS,
            tool_choice="required",
        )
        call = resp.choices[0].message.tool_calls[0]  # type: ignore[index]
        assert resp.choices[0].finish_reason == "tool_calls"
        assert call.function.name == "get_weather"  # type: ignore[union-attr]
        assert json.loads(call.function.arguments) == {"city": "sim"}  # type: ignore[union-attr]
        follow_up: Any = [
            {"role": "user", "content": "Weather in Paris?"},
            resp.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
        ]
        final = c.chat.completions.create(model="claude-test", messages=follow_up, tools=TOOLS)
    assert final.choices[0].message.content
    sent = sim.stats()["last"]["body"]
    assert sent["messages"][1]["content"][0]["type"] == "tool_use"
    assert sent["messages"][2]["content"][0] == {
        "type": "tool_result", "tool_use_id": call.id, "content": "sunny"
    }  # fmt: skip


def test_streamed_tool_call(gateway: Gateway) -> None:
    with sdk(gateway) as c:
        stream = c.chat.completions.create(
            model="claude-test",
            messages=[{"role": "user", "content": "Weather?"}],
            tools=TOOLS,
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            stream=True,
        )
        chunks = [ch for ch in stream if ch.choices]
    calls = [tc for ch in chunks for tc in (ch.choices[0].delta.tool_calls or [])]
    assert calls[0].function is not None and calls[0].function.name == "get_weather"
    args = "".join(tc.function.arguments or "" for tc in calls if tc.function)
    assert json.loads(args) == {"city": "sim"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_embeddings_unsupported_by_anthropic(gateway: Gateway) -> None:
    with sdk(gateway) as c:
        try:
            c.embeddings.create(model="claude-test", input="x")
        except openai.BadRequestError as exc:
            body: Any = exc.response.json()
            assert body["error"]["code"] == "unsupported_by_provider"
        else:
            raise AssertionError("expected a 400")
