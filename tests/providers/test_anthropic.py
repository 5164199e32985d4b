"""The Anthropic provider: OpenAI chat ⇄ Anthropic Messages, requests, answers, streams."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from aigw.errors import (
    InvalidRequest,
    UnsupportedByProvider,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamRejected,
)
from aigw.providers.anthropic import AnthropicProvider, chat_to_messages, messages_to_chat
from aigw.providers.anthropic_stream import StreamTranslator
from aigw.providers.sse import DONE
from aigw.settings import DeploymentSettings
from aigw.types import Endpoint, GatewayRequest, Usage

MODEL = "claude-sonnet-4-5"


def translate(body: dict[str, Any]) -> dict[str, Any]:
    return chat_to_messages(body, MODEL, 1024)


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def provider(base_url: str = "https://api.anthropic.com", **extra: Any) -> AnthropicProvider:
    settings = DeploymentSettings(
        id="anthropic",
        provider="anthropic",
        base_url=base_url,
        api_key="sk-ant-test",
        model=MODEL,
        **extra,
    )
    return AnthropicProvider(settings, clock=lambda: 1_700_000_000.7)


def request(body: dict[str, Any], endpoint: Endpoint = Endpoint.CHAT) -> GatewayRequest:
    return GatewayRequest(
        request_id="req-1",
        endpoint=endpoint,
        model="claude",
        stream=bool(body.get("stream")),
        body=body,
        raw=orjson.dumps(body),
        deadline=0.0,
    )


# ---- request translation ----


def test_minimal_request_gets_defaults_and_drops_unknown_params() -> None:
    body = {
        "model": "claude",
        "messages": [user("Hi")],
        "frequency_penalty": 0.5,
        "logprobs": True,
        "seed": 7,
        "stream_options": {"include_usage": True},
    }
    assert translate(body) == {
        "model": MODEL,
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
    }


def test_sampling_stop_stream_and_user_pass_through() -> None:
    body = {
        "messages": [user("Hi")],
        "temperature": 0.2,
        "top_p": 0.9,
        "top_k": 40,
        "stop": "END",
        "stream": True,
        "user": "u-42",
        "max_tokens": 77,
    }
    out = translate(body)
    assert out["temperature"] == 0.2
    assert out["top_p"] == 0.9
    assert out["top_k"] == 40
    assert out["stop_sequences"] == ["END"]
    assert out["stream"] is True
    assert out["metadata"] == {"user_id": "u-42"}
    assert out["max_tokens"] == 77


def test_stop_list_and_max_completion_tokens_wins() -> None:
    out = translate(
        {
            "messages": [user("Hi")],
            "stop": ["a", "b"],
            "max_tokens": 10,
            "max_completion_tokens": 20,
        }
    )
    assert out["stop_sequences"] == ["a", "b"]
    assert out["max_tokens"] == 20


def test_system_and_developer_messages_join_into_system_string() -> None:
    out = translate(
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": "Answer in French."},
                user("Hi"),
            ]
        }
    )
    assert out["system"] == "Be brief.\n\nAnswer in French."
    assert [m["role"] for m in out["messages"]] == ["user"]


def test_system_parts_become_text_blocks() -> None:
    out = translate(
        {
            "messages": [
                {"role": "system", "content": "One."},
                {"role": "system", "content": [{"type": "text", "text": "Two."}]},
                user("Hi"),
            ]
        }
    )
    assert out["system"] == [{"type": "text", "text": "One."}, {"type": "text", "text": "Two."}]


def test_multipart_user_content_with_images() -> None:
    parts = [
        {"type": "text", "text": "Compare these"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "low"}},
    ]
    out = translate({"messages": [user(parts)]})
    assert out["messages"][0]["content"] == [
        {"type": "text", "text": "Compare these"},
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
        },
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]


@pytest.mark.parametrize(
    "url", ["data:image/png,rawbytes", "ftp://example.com/cat.png", "data:image/png;base64"]
)
def test_bad_image_url_is_invalid_request(url: str) -> None:
    parts = [{"type": "image_url", "image_url": {"url": url}}]
    with pytest.raises(InvalidRequest) as info:
        translate({"messages": [user(parts)]})
    assert info.value.param == "messages[0].content[0]"
    assert info.value.status == 400


def test_unsupported_content_part_is_named() -> None:
    parts = [{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]
    with pytest.raises(UnsupportedByProvider) as info:
        translate({"messages": [user(parts)]})
    assert info.value.param == "messages[0].content[0]"
    assert "input_audio" in info.value.message


def test_tool_call_round_trip_and_tool_results_merge() -> None:
    messages = [
        user("Weather in Paris and Rome?"),
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
                },
                {
                    "id": "toolu_2",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city": "Rome"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": [{"type": "text", "text": "24C"}]},
        user("And tomorrow?"),
    ]
    out = translate({"messages": messages})
    assert out["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris and Rome?"}]},
        {
            "role": "assistant",
            "content": [
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "weather",
                    "input": {"city": "Paris"},
                },
                {"type": "tool_use", "id": "toolu_2", "name": "weather", "input": {"city": "Rome"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_2",
                    "content": [{"type": "text", "text": "24C"}],
                },
                {"type": "text", "text": "And tomorrow?"},
            ],
        },
    ]


def test_assistant_text_with_tool_call_and_empty_arguments() -> None:
    call = {"id": "t1", "type": "function", "function": {"name": "now", "arguments": ""}}
    out = translate(
        {
            "messages": [
                user("Time?"),
                {"role": "assistant", "content": "Let me check.", "tool_calls": [call]},
            ]
        }
    )
    assert out["messages"][1]["content"] == [
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "t1", "name": "now", "input": {}},
    ]


def test_consecutive_same_role_messages_merge() -> None:
    out = translate({"messages": [user("a"), user("b"), {"role": "assistant", "content": "c"}]})
    assert out["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "c"}]},
    ]


def test_unparsable_tool_arguments_are_invalid_request() -> None:
    call = {"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{city:"}}
    with pytest.raises(InvalidRequest) as info:
        translate({"messages": [user("x"), {"role": "assistant", "tool_calls": [call]}]})
    assert info.value.param == "messages[1].tool_calls[0].function.arguments"


def test_tools_translate_to_input_schema() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    tools = [
        {
            "type": "function",
            "function": {"name": "weather", "description": "Get weather", "parameters": schema},
        },
        {"type": "function", "function": {"name": "now"}},
    ]
    out = translate({"messages": [user("x")], "tools": tools})
    assert out["tools"] == [
        {"name": "weather", "description": "Get weather", "input_schema": schema},
        {"name": "now", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert "tool_choice" not in out


TOOLS = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("required", None, {"type": "any"}),
        ("none", None, {"type": "none"}),
        (
            {"type": "function", "function": {"name": "weather"}},
            None,
            {"type": "tool", "name": "weather"},
        ),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("none", False, {"type": "none"}),
        (None, True, None),
    ],
)
def test_tool_choice(choice: Any, parallel: bool | None, expected: dict[str, Any] | None) -> None:
    body: dict[str, Any] = {"messages": [user("x")], "tools": TOOLS}
    if choice is not None:
        body["tool_choice"] = choice
    if parallel is not None:
        body["parallel_tool_calls"] = parallel
    assert translate(body).get("tool_choice") == expected


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": "hi"}, "messages"),
        ({}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": ["hi"]}, "messages[0]"),
        ({"messages": [{"content": "hi"}]}, "messages[0].role"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
        ({"messages": [{"role": "system", "content": "only a system prompt"}]}, "messages"),
        ({"messages": [user(42)]}, "messages[0].content"),
        ({"messages": [user("x"), {"role": "tool", "content": "r"}]}, "messages[1].tool_call_id"),
        ({"messages": [user("x")], "n": 2}, "n"),
        ({"messages": [user("x")], "max_tokens": 0}, "max_tokens"),
        ({"messages": [user("x")], "max_tokens": "10"}, "max_tokens"),
        ({"messages": [user("x")], "stop": 5}, "stop"),
        ({"messages": [user("x")], "tools": {"a": 1}}, "tools"),
        ({"messages": [user("x")], "tool_choice": "sometimes"}, "tool_choice"),
    ],
)
def test_malformed_requests_name_the_param(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        translate(body)
    assert info.value.param == param
    assert info.value.status == 400


def test_non_function_tool_is_unsupported() -> None:
    with pytest.raises(UnsupportedByProvider):
        translate({"messages": [user("x")], "tools": [{"type": "web_search"}]})


# ---- the provider: target, headers, build, parse, errors ----


@pytest.mark.parametrize(
    ("base_url", "target"),
    [
        ("https://api.anthropic.com", b"/v1/messages"),
        ("https://api.anthropic.com/", b"/v1/messages"),
        ("https://api.anthropic.com/v1", b"/v1/messages"),
        ("https://gw.example.com/anthropic/v1/", b"/anthropic/v1/messages"),
        ("http://127.0.0.1:9000/proxy", b"/proxy/v1/messages"),
    ],
)
def test_build_target(base_url: str, target: bytes) -> None:
    call = provider(base_url).build(request({"model": "claude", "messages": [user("Hi")]}))
    assert call.target == target
    assert call.method == b"POST"


def test_build_headers_and_body() -> None:
    p = provider(headers={"anthropic-beta": "prompt-caching-2024-07-31"})
    call = p.build(request({"model": "claude", "messages": [user("Hi")], "max_tokens": 5}))
    assert b"x-api-key: sk-ant-test\r\n" in call.headers
    assert b"anthropic-version: 2023-06-01\r\n" in call.headers
    assert b"content-type: application/json\r\n" in call.headers
    assert b"anthropic-beta: prompt-caching-2024-07-31\r\n" in call.headers
    sent = orjson.loads(call.body)
    assert sent["model"] == MODEL
    assert sent["max_tokens"] == 5


def test_deployment_max_tokens_is_the_default() -> None:
    call = provider(max_tokens=333).build(request({"messages": [user("Hi")]}))
    assert orjson.loads(call.body)["max_tokens"] == 333


@pytest.mark.parametrize("endpoint", [Endpoint.COMPLETION, Endpoint.EMBEDDING])
def test_only_chat_is_supported(endpoint: Endpoint) -> None:
    with pytest.raises(UnsupportedByProvider) as info:
        provider().build(request({"input": "x"}, endpoint))
    assert str(endpoint) in info.value.message
    assert info.value.status == 400


def test_anthropic_error_body_keeps_message_and_type() -> None:
    body = (
        b'{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: too big"}}'
    )
    err = provider().error(400, body)
    assert isinstance(err, UpstreamRejected)
    assert err.status == 400
    assert err.message == "max_tokens: too big"
    assert err.type == "invalid_request_error"


def test_anthropic_overloaded_is_upstream_error() -> None:
    body = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
    err = provider().error(529, body)
    assert isinstance(err, UpstreamError)
    assert err.upstream_status == 529
    assert "Overloaded" in err.message


# ---- response translation ----

TEXT_MESSAGE = {
    "id": "msg_01",
    "type": "message",
    "role": "assistant",
    "model": MODEL,
    "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": ", world"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 10,
        "cache_creation_input_tokens": 5,
        "cache_read_input_tokens": 100,
        "output_tokens": 7,
    },
}


def test_text_message_to_chat_completion() -> None:
    chat = messages_to_chat(TEXT_MESSAGE, "claude", "req-1", 1234)
    assert chat["id"] == "chatcmpl-msg_01"
    assert chat["object"] == "chat.completion"
    assert chat["created"] == 1234
    assert chat["model"] == "claude"
    assert chat["choices"][0]["message"] == {"role": "assistant", "content": "Hello, world"}
    assert chat["choices"][0]["finish_reason"] == "stop"
    assert chat["usage"] == {
        "prompt_tokens": 115,
        "completion_tokens": 7,
        "total_tokens": 122,
        "prompt_tokens_details": {"cached_tokens": 100},
    }
    ChatCompletion.model_validate(chat)  # the openai SDK accepts the shape


def test_tool_use_message_to_chat_completion() -> None:
    data = {
        "id": "msg_02",
        "content": [
            {"type": "tool_use", "id": "toolu_9", "name": "weather", "input": {"city": "Paris"}}
        ],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 3, "output_tokens": 4},
    }
    chat = messages_to_chat(data, "claude", "req-1", 1)
    message = chat["choices"][0]["message"]
    assert message["content"] is None
    [call] = message["tool_calls"]
    assert call["id"] == "toolu_9"
    assert call["type"] == "function"
    assert call["function"]["name"] == "weather"
    assert orjson.loads(call["function"]["arguments"]) == {"city": "Paris"}
    assert chat["choices"][0]["finish_reason"] == "tool_calls"
    assert "prompt_tokens_details" not in chat["usage"]
    ChatCompletion.model_validate(chat)


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("pause_turn", "stop"),
        ("refusal", "content_filter"),
        ("something_new", "stop"),
    ],
)
def test_stop_reasons(stop_reason: str, finish: str) -> None:
    data = {**TEXT_MESSAGE, "stop_reason": stop_reason}
    assert messages_to_chat(data, "m", "r", 0)["choices"][0]["finish_reason"] == finish


def test_parse_sets_usage_and_uses_the_clock() -> None:
    req = request({"messages": [user("Hi")]})
    out = orjson.loads(provider().parse(req, orjson.dumps(TEXT_MESSAGE)))
    assert out["created"] == 1_700_000_000
    assert out["model"] == "claude"
    assert req.usage == Usage(115, 7)


def test_parse_rejects_non_json() -> None:
    with pytest.raises(UpstreamProtocolError):
        provider().parse(request({"messages": [user("Hi")]}), b"<html>bad gateway</html>")


# ---- stream translation ----

# A stream as Anthropic sends it: text, then a tool call whose input arrives in pieces.
RECORDED = [
    (
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": "msg_014p7gG3wDgGV9EUtLvnow3U",
                "type": "message",
                "role": "assistant",
                "model": MODEL,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 472, "cache_read_input_tokens": 28, "output_tokens": 2},
            },
        },
    ),
    (
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    ),
    ("ping", {"type": "ping"}),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": "Okay,"},
        },
    ),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": " let me check."},
        },
    ),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    (
        "content_block_start",
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {
                "type": "tool_use",
                "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                "name": "get_weather",
                "input": {},
            },
        },
    ),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": ""},
        },
    ),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": '{"location": "San Fra'},
        },
    ),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": 'ncisco, CA"}'},
        },
    ),
    ("content_block_stop", {"type": "content_block_stop", "index": 1}),
    (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {"output_tokens": 89},
        },
    ),
    ("message_stop", {"type": "message_stop"}),
]


def run_translator(include_usage: bool) -> tuple[StreamTranslator, list[dict[str, Any]]]:
    translator = StreamTranslator("claude", 1234, include_usage, "req-1")
    chunks = [c for name, data in RECORDED for c in translator.feed(name, data)]
    return translator, chunks


def test_stream_translation_without_usage() -> None:
    translator, chunks = run_translator(include_usage=False)
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas == [
        {"role": "assistant", "content": ""},
        {"content": "Okay,"},
        {"content": " let me check."},
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
            ]
        },
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"location": "San Fra'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": 'ncisco, CA"}'}}]},
        {},
    ]
    assert [c["choices"][0]["finish_reason"] for c in chunks][-2:] == [None, "tool_calls"]
    assert {c["id"] for c in chunks} == {"chatcmpl-msg_014p7gG3wDgGV9EUtLvnow3U"}
    assert {(c["object"], c["created"], c["model"]) for c in chunks} == {
        ("chat.completion.chunk", 1234, "claude")
    }
    assert all("usage" not in c for c in chunks)
    assert translator.done
    assert translator.usage == Usage(500, 89)


def test_stream_translation_with_usage_ends_with_usage_chunk() -> None:
    _, chunks = run_translator(include_usage=True)
    *body, last = chunks
    assert last["choices"] == []
    assert last["usage"] == {
        "prompt_tokens": 500,
        "completion_tokens": 89,
        "total_tokens": 589,
        "prompt_tokens_details": {"cached_tokens": 28},
    }
    assert all(c["usage"] is None for c in body)


def test_stream_chunks_accumulate_in_the_openai_sdk() -> None:
    _, chunks = run_translator(include_usage=True)
    state = ChatCompletionStreamState()
    for chunk in chunks:
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    final = state.get_final_completion()
    message = final.choices[0].message
    assert message.content == "Okay, let me check."
    assert message.tool_calls is not None
    [call] = message.tool_calls
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert orjson.loads(call.function.arguments) == {"location": "San Francisco, CA"}
    assert final.choices[0].finish_reason == "tool_calls"
    assert final.usage is not None
    assert final.usage.total_tokens == 589


def test_second_tool_call_gets_next_index() -> None:
    translator = StreamTranslator("m", 0, False, "r")
    translator.feed("message_start", {"message": {"id": "msg_x", "usage": {"input_tokens": 1}}})
    for block in (1, 2):
        start = {"type": "tool_use", "id": f"toolu_{block}", "name": "f", "input": {}}
        translator.feed("content_block_start", {"index": block, "content_block": start})
    [chunk] = translator.feed(
        "content_block_delta",
        {"index": 2, "delta": {"type": "input_json_delta", "partial_json": "{}"}},
    )
    assert chunk["choices"][0]["delta"]["tool_calls"][0]["index"] == 1


def test_stream_error_event_raises_upstream_error() -> None:
    translator = StreamTranslator("m", 0, False, "r")
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    with pytest.raises(UpstreamError) as info:
        translator.feed("error", error)
    assert "Overloaded" in info.value.message
    assert info.value.status == 502


# ---- relay: the async adapter over the translator ----


def sse(events: list[tuple[str, dict[str, Any]]]) -> bytes:
    return b"".join(
        b"event: %b\ndata: %b\n\n" % (name.encode(), orjson.dumps(data)) for name, data in events
    )


async def pieces(data: bytes, size: int, seen: list[bytes]) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        seen.append(data[start : start + size])
        yield data[start : start + size]


async def collect(
    p: AnthropicProvider, req: GatewayRequest, data: bytes
) -> tuple[list[bytes], list[bytes]]:
    seen: list[bytes] = []
    out = [frame async for frame in p.relay(req, pieces(data, 37, seen))]
    return out, seen


def test_relay_emits_openai_sse_and_done() -> None:
    req = request(
        {"messages": [user("Hi")], "stream": True, "stream_options": {"include_usage": True}}
    )
    # Bytes after message_stop stand for the rest of the upstream body, which must still be read.
    upstream = sse(RECORDED).replace(b"\n", b"\r\n") + b": " + b"x" * 200 + b"\r\n\r\n"
    frames, seen = asyncio.run(collect(provider(), req, upstream))
    assert frames[-1] == DONE
    chunks = [orjson.loads(f.removeprefix(b"data: ").removesuffix(b"\n\n")) for f in frames[:-1]]
    assert all(f.startswith(b"data: ") and f.endswith(b"\n\n") for f in frames)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Okay, let me check."
    assert chunks[-1]["usage"]["completion_tokens"] == 89
    assert all(c["created"] == 1_700_000_000 for c in chunks)
    assert req.usage == Usage(500, 89)
    assert b"".join(seen) == upstream


def test_relay_raises_when_upstream_ends_early() -> None:
    req = request({"messages": [user("Hi")], "stream": True})
    truncated = sse(RECORDED[:5])
    gen = provider().relay(req, pieces(truncated, 50, []))

    async def drain() -> list[bytes]:
        return [frame async for frame in gen]

    with pytest.raises(UpstreamError, match="ended early"):
        asyncio.run(drain())
    assert req.usage == Usage(500, 2)  # what was known before the cut is kept
