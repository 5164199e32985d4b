"""Anthropic Messages clients ⇄ OpenAI-dialect upstreams: requests, answers, streams, errors.

Where practical the output is checked by the ``anthropic`` SDK itself: it is served
through an in-memory transport to a real client, so its own parsing and stream
accumulation decide whether the translation is right.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anthropic
import orjson
import pytest
from anthropic.types import RawMessageStreamEvent
from pydantic import TypeAdapter

from aigw.errors import InvalidRequest, UnsupportedByProvider, UpstreamError, UpstreamProtocolError
from aigw.providers.anthropic_inbound import (
    ChunkTranslator,
    chat_to_message,
    encode,
    error_body,
    error_event,
    error_type,
    messages_to_chat,
    relay_as_messages,
    usage_of_message,
)

try:  # the transport library the anthropic SDK is built on (httpx2 from SDK 2.x)
    import httpx2 as httpx
except ImportError:  # pragma: no cover - older SDKs
    import httpx  # type: ignore[no-redef, import-not-found, unused-ignore]

UPSTREAM = "gpt-4o-mini"
EVENTS: TypeAdapter[RawMessageStreamEvent] = TypeAdapter(RawMessageStreamEvent)


def translate(**body: Any) -> dict[str, Any]:
    body.setdefault("max_tokens", 256)
    body.setdefault("messages", [{"role": "user", "content": "Hi"}])
    return messages_to_chat(body, UPSTREAM)


def only_messages(**body: Any) -> list[dict[str, Any]]:
    return list(translate(**body)["messages"])


def image(source: dict[str, Any]) -> dict[str, Any]:
    return {"type": "image", "source": source}


# ---- the anthropic SDK against an in-memory gateway ----


def sdk_client(answer: Callable[[dict[str, Any]], Any]) -> tuple[anthropic.Anthropic, list[Any]]:
    """A real SDK client whose requests are answered by ``answer(body)``."""
    seen: list[Any] = []

    def handler(request: Any) -> Any:
        body = orjson.loads(request.content)
        seen.append(body)
        return answer(body)

    transport = httpx.MockTransport(handler)
    client = anthropic.Anthropic(
        api_key="test",
        base_url="http://gateway.test",
        max_retries=0,
        http_client=httpx.Client(transport=transport),
    )
    return client, seen


def sse(payload: bytes) -> Any:
    return httpx.Response(200, content=payload, headers={"content-type": "text/event-stream"})


# ---- request translation ----


def test_minimal_request() -> None:
    assert translate(top_k=5, thinking={"type": "enabled", "budget_tokens": 1024}) == {
        "model": UPSTREAM,
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 256,
    }


def test_sampling_stop_and_user_pass_through() -> None:
    out = translate(
        temperature=0.3, top_p=0.8, stop_sequences=["END", "STOP"], metadata={"user_id": "u-7"}
    )
    assert out["temperature"] == 0.3
    assert out["top_p"] == 0.8
    assert out["stop"] == ["END", "STOP"]
    assert out["user"] == "u-7"
    assert "stream" not in out


def test_stream_asks_the_upstream_for_usage() -> None:
    out = translate(stream=True)
    assert out["stream"] is True
    assert out["stream_options"] == {"include_usage": True}


def test_system_string_comes_first() -> None:
    messages = only_messages(system="Be brief.")
    assert messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
    ]


def test_system_blocks_join_into_one_system_message() -> None:
    system = [
        {"type": "text", "text": "You are a helper.", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "Answer in French."},
    ]
    messages = only_messages(system=system)
    assert messages[0] == {"role": "system", "content": "You are a helper.\n\nAnswer in French."}
    assert len(messages) == 2


def test_system_may_hold_only_text() -> None:
    with pytest.raises(InvalidRequest) as info:
        translate(system=[image({"type": "url", "url": "https://x.test/a.png"})])
    assert info.value.param == "system[0]"


def test_user_text_blocks() -> None:
    one = [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}]
    two = [
        {"role": "user", "content": [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}]}
    ]
    assert only_messages(messages=one) == [{"role": "user", "content": "Hello"}]
    assert only_messages(messages=two) == [
        {"role": "user", "content": [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}]}
    ]


def test_images_become_image_url_parts() -> None:
    content = [
        {"type": "text", "text": "Compare"},
        image({"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}),
        image({"type": "url", "url": "https://example.com/cat.jpg"}),
    ]
    messages = only_messages(messages=[{"role": "user", "content": content}])
    assert messages == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Compare"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
            ],
        }
    ]


def test_a_lone_image_stays_a_part_list() -> None:
    content = [image({"type": "url", "url": "https://example.com/cat.jpg"})]
    messages = only_messages(messages=[{"role": "user", "content": content}])
    assert messages[0]["content"] == [
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}
    ]


def test_tool_use_and_results_in_openai_order() -> None:
    messages = [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Two calls.", "signature": "sig"},
                {"type": "text", "text": "Checking "},
                {"type": "text", "text": "both."},
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
                {"type": "text", "text": "Also, tomorrow?"},
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_2",
                    "content": [
                        {"type": "text", "text": "timeout"},
                        {"type": "text", "text": "retry"},
                    ],
                    "is_error": True,
                },
            ],
        },
    ]
    out = only_messages(messages=messages)
    assert out[1] == {
        "role": "assistant",
        "content": "Checking both.",
        "tool_calls": [
            {
                "id": "toolu_1",
                "type": "function",
                "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
            },
            {
                "id": "toolu_2",
                "type": "function",
                "function": {"name": "weather", "arguments": '{"city":"Rome"}'},
            },
        ],
    }
    # The tool results follow the calls directly; the user's note comes after them.
    assert out[2:] == [
        {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: timeout\nretry"},
        {"role": "user", "content": "Also, tomorrow?"},
    ]


def test_assistant_with_only_tool_calls_has_null_content() -> None:
    call = {"type": "tool_use", "id": "toolu_1", "name": "now", "input": {}}
    messages = [{"role": "user", "content": "Time?"}, {"role": "assistant", "content": [call]}]
    out = only_messages(messages=messages)
    assert out[1]["content"] is None
    assert out[1]["tool_calls"][0]["function"] == {"name": "now", "arguments": "{}"}


def test_assistant_string_and_empty_tool_result() -> None:
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_9"}]},
    ]
    assert only_messages(messages=messages)[1:] == [
        {"role": "assistant", "content": "Hello"},
        {"role": "tool", "tool_call_id": "toolu_9", "content": ""},
    ]


@pytest.mark.parametrize(
    ("block", "param", "named"),
    [
        ({"type": "document", "source": {"type": "text", "data": "x"}}, "", "'document'"),
        ({"type": "search_result", "content": []}, "", "'search_result'"),
        (image({"type": "file", "file_id": "file_1"}), "", "'file'"),
        (
            {
                "type": "tool_result",
                "tool_use_id": "t",
                "content": [image({"type": "url", "url": "u"})],
            },
            ".content[0]",
            "'image'",
        ),
    ],
)
def test_unsupported_blocks_are_named(block: dict[str, Any], param: str, named: str) -> None:
    content = [{"type": "text", "text": "Look"}, block]
    with pytest.raises(UnsupportedByProvider) as info:
        translate(messages=[{"role": "user", "content": content}])
    assert info.value.param == "messages[0].content[1]" + param
    assert info.value.status == 400
    assert named in info.value.message


def test_tools_and_tool_choice_variants() -> None:
    tools = [
        {
            "name": "weather",
            "description": "Current weather",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
        {"name": "now", "input_schema": {"type": "object"}, "type": "custom"},
    ]
    out = translate(tools=tools)
    assert out["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "weather",
                "description": "Current weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        },
        {"type": "function", "function": {"name": "now", "parameters": {"type": "object"}}},
    ]
    assert "tool_choice" not in out
    assert "parallel_tool_calls" not in out


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, {"tool_choice": "auto"}),
        ({"type": "any"}, {"tool_choice": "required"}),
        ({"type": "none"}, {"tool_choice": "none"}),
        (
            {"type": "tool", "name": "now"},
            {"tool_choice": {"type": "function", "function": {"name": "now"}}},
        ),
        (
            {"type": "auto", "disable_parallel_tool_use": True},
            {"tool_choice": "auto", "parallel_tool_calls": False},
        ),
    ],
)
def test_tool_choice(choice: dict[str, Any], expected: dict[str, Any]) -> None:
    tools = [{"name": "now", "input_schema": {"type": "object"}}]
    out = translate(tools=tools, tool_choice=choice)
    assert {k: out[k] for k in ("tool_choice", "parallel_tool_calls") if k in out} == expected


def test_tool_choice_without_tools_is_dropped() -> None:
    # OpenAI rejects tool_choice and parallel_tool_calls when no tools are given.
    out = translate(tool_choice={"type": "auto", "disable_parallel_tool_use": True})
    assert "tool_choice" not in out
    assert "parallel_tool_calls" not in out


def test_server_tools_are_unsupported() -> None:
    tools = [{"type": "web_search_20250305", "name": "web_search"}]
    with pytest.raises(UnsupportedByProvider) as info:
        translate(tools=tools)
    assert info.value.param == "tools[0]"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": "Hi"}, "messages"),
        ({"messages": None}, "messages"),
        ({"messages": ["Hi"]}, "messages[0]"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": 7}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": [{"text": "x"}]}]}, "messages[0].content[0]"),
        ({"max_tokens": None}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": "100"}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"stop_sequences": "END"}, "stop_sequences"),
        ({"system": 5}, "system"),
        ({"tools": {"name": "x"}}, "tools"),
        ({"tools": [{"input_schema": {}}]}, "tools[0].name"),
        ({"tools": [{"name": "x"}]}, "tools[0].input_schema"),
        ({"tools": [{"name": "x", "input_schema": {}}], "tool_choice": "auto"}, "tool_choice"),
        (
            {"tools": [{"name": "x", "input_schema": {}}], "tool_choice": {"type": "tool"}},
            "tool_choice",
        ),
    ],
)
def test_malformed_requests_name_the_param(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        translate(**body)
    assert info.value.param == param
    assert info.value.status == 400
    assert not isinstance(info.value, UnsupportedByProvider)


def test_missing_max_tokens_is_reported() -> None:
    with pytest.raises(InvalidRequest) as info:
        messages_to_chat({"messages": [{"role": "user", "content": "Hi"}]}, UPSTREAM)
    assert info.value.param == "max_tokens"
    assert "required" in info.value.message


def test_sdk_request_translates() -> None:
    """What the anthropic SDK actually sends, with tools and images, translates."""
    reply = {"id": "chatcmpl-1", "choices": [{"message": {"content": "ok"}}]}
    client, seen = sdk_client(
        lambda body: httpx.Response(200, json=chat_to_message(reply, body["model"]))
    )
    with client:
        client.messages.create(
            model="claude-via-gw",
            max_tokens=100,
            system="Be brief.",
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is this?"},
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/gif", "data": "R0lG"},
                        },
                    ],
                }
            ],
            tools=[{"name": "lookup", "input_schema": {"type": "object", "properties": {}}}],
            tool_choice={"type": "any"},
        )
    out = messages_to_chat(seen[0], UPSTREAM)
    assert out["model"] == UPSTREAM
    assert out["messages"][0] == {"role": "system", "content": "Be brief."}
    assert out["messages"][1]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "data:image/gif;base64,R0lG"},
    }
    assert out["tool_choice"] == "required"
    assert out["tools"][0]["function"]["name"] == "lookup"


# ---- response translation ----


def completion(
    message: dict[str, Any], finish: str | None = "stop", **extra: Any
) -> dict[str, Any]:
    return {
        "id": "chatcmpl-abc123",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": UPSTREAM,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 21, "completion_tokens": 5, "total_tokens": 26},
        **extra,
    }


def test_text_completion_to_message() -> None:
    message = chat_to_message(completion({"role": "assistant", "content": "Hello!"}), "claude-gw")
    assert message == {
        "id": "msg_abc123",
        "type": "message",
        "role": "assistant",
        "model": "claude-gw",
        "content": [{"type": "text", "text": "Hello!"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 21, "output_tokens": 5},
    }
    assert usage_of_message(message) == (21, 5)


def test_tool_call_completion_to_message() -> None:
    calls = [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
        },
        {
            "id": "call_2",
            "type": "function",
            "function": {"name": "weather", "arguments": "{not json"},
        },
    ]
    data = completion(
        {"role": "assistant", "content": "Let me check.", "tool_calls": calls}, "tool_calls"
    )
    message = chat_to_message(data, "claude-gw")
    assert message["content"] == [
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_2", "name": "weather", "input": {}},
    ]
    assert message["stop_reason"] == "tool_use"


@pytest.mark.parametrize(
    ("finish", "stop_reason"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("function_call", "tool_use"),
        ("content_filter", "refusal"),
        (None, "end_turn"),
        ("something_new", "end_turn"),
    ],
)
def test_stop_reasons(finish: str | None, stop_reason: str) -> None:
    data = completion({"role": "assistant", "content": "x"}, finish)
    assert chat_to_message(data, "m")["stop_reason"] == stop_reason


def test_tool_calls_finished_with_stop_still_say_tool_use() -> None:
    # Some OpenAI-compatible servers do this; an agent loop would stop short.
    call = {"id": "c", "type": "function", "function": {"name": "now", "arguments": "{}"}}
    data = completion({"role": "assistant", "content": None, "tool_calls": [call]}, "stop")
    assert chat_to_message(data, "m")["stop_reason"] == "tool_use"


def test_empty_answer_has_one_empty_text_block() -> None:
    data = completion({"role": "assistant", "content": None})
    del data["usage"]
    message = chat_to_message(data, "m")
    assert message["content"] == [{"type": "text", "text": ""}]
    assert message["usage"] == {"input_tokens": 0, "output_tokens": 0}


def test_cached_prompt_tokens_are_cache_reads() -> None:
    data = completion({"role": "assistant", "content": "x"})
    data["usage"]["prompt_tokens_details"] = {"cached_tokens": 16}
    message = chat_to_message(data, "m")
    assert message["usage"] == {
        "input_tokens": 5,
        "output_tokens": 5,
        "cache_read_input_tokens": 16,
    }
    assert usage_of_message(message) == (21, 5)


def test_ids_without_the_openai_prefix_or_at_all() -> None:
    data = completion({"role": "assistant", "content": "x"})
    data["id"] = "gen-42"
    assert chat_to_message(data, "m")["id"] == "msg_gen-42"
    del data["id"]
    assert chat_to_message(data, "m", fallback_id="req-9")["id"] == "msg_req-9"


def test_answer_without_choices_is_a_protocol_error() -> None:
    with pytest.raises(UpstreamProtocolError):
        chat_to_message({"id": "chatcmpl-1", "choices": []}, "m")


def test_usage_of_message_counts_cache() -> None:
    usage = {
        "input_tokens": 3,
        "cache_creation_input_tokens": 10,
        "cache_read_input_tokens": 100,
        "output_tokens": 7,
    }
    assert usage_of_message({"usage": usage}) == (113, 7)
    assert usage_of_message({}) is None


def test_sdk_parses_the_message() -> None:
    calls = [{"id": "call_1", "type": "function", "function": {"name": "now", "arguments": "{}"}}]
    data = completion({"role": "assistant", "content": "On it.", "tool_calls": calls}, "tool_calls")
    client, _ = sdk_client(
        lambda body: httpx.Response(200, json=chat_to_message(data, body["model"]))
    )
    with client:
        message = client.messages.create(
            model="claude-gw", max_tokens=50, messages=[{"role": "user", "content": "Time?"}]
        )
    assert message.id == "msg_abc123"
    assert message.model == "claude-gw"
    assert [block.type for block in message.content] == ["text", "tool_use"]
    assert message.stop_reason == "tool_use"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (21, 5)


# ---- stream translation ----


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None) -> dict[str, Any]:
    choices = (
        []
        if delta is None
        else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
    )
    return {
        "id": "chatcmpl-xyz",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": UPSTREAM,
        "choices": choices,
        "usage": None,  # as OpenAI sends with include_usage: only the last chunk has it
    }


def tool_delta(
    index: int, arguments: str, call_id: str | None = None, name: str | None = None
) -> dict[str, Any]:
    call: dict[str, Any] = {"index": index, "function": {"arguments": arguments}}
    if call_id:
        call.update(id=call_id, type="function")
        call["function"]["name"] = name
    return {"tool_calls": [call]}


def realistic_chunks() -> list[dict[str, Any]]:
    """Text, then a tool call whose arguments arrive in pieces, then the usage chunk."""
    usage = chunk()
    usage["usage"] = {"prompt_tokens": 42, "completion_tokens": 17, "total_tokens": 59}
    return [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Let me "}),
        chunk({"content": "check."}),
        chunk(tool_delta(0, "", "call_1", "weather")),
        chunk(tool_delta(0, '{"ci')),
        chunk(tool_delta(0, 'ty": "Par')),
        chunk(tool_delta(0, 'is"}')),
        chunk({}, "tool_calls"),
        usage,
    ]


def run(chunks: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    translator = ChunkTranslator("claude-gw", "msg_1")
    events = [event for c in chunks for event in translator.feed(c)]
    return events + translator.finish()


def test_stream_events_in_order() -> None:
    events = run(realistic_chunks())
    assert [(name, data.get("index")) for name, data in events] == [
        ("message_start", None),
        ("content_block_start", 0),
        ("content_block_delta", 0),
        ("content_block_delta", 0),
        ("content_block_stop", 0),
        ("content_block_start", 1),
        ("content_block_delta", 1),
        ("content_block_delta", 1),
        ("content_block_delta", 1),
        ("content_block_stop", 1),
        ("message_delta", None),
        ("message_stop", None),
    ]
    assert all(data["type"] == name for name, data in events)
    assert events[5][1]["content_block"] == {
        "type": "tool_use",
        "id": "call_1",
        "name": "weather",
        "input": {},
    }
    assert events[10][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {"input_tokens": 42, "output_tokens": 17},
    }


def test_stream_events_are_valid_sdk_events_and_accumulate() -> None:
    events = run(realistic_chunks())
    for _, data in events:
        EVENTS.validate_python(data)
    payload = b"".join(encode(name, data) for name, data in events)
    client, _ = sdk_client(lambda body: sse(payload))
    with (
        client,
        client.messages.stream(
            model="claude-gw", max_tokens=50, messages=[{"role": "user", "content": "Weather?"}]
        ) as stream,
    ):
        message = stream.get_final_message()
    assert message.id == "msg_1"
    assert message.content[0].type == "text"
    assert message.content[0].text == "Let me check."
    assert message.content[1].type == "tool_use"
    assert message.content[1].input == {"city": "Paris"}
    assert message.stop_reason == "tool_use"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (42, 17)


def test_translator_usage() -> None:
    translator = ChunkTranslator("m", "msg_1")
    chunks = realistic_chunks()
    for c in chunks[:-1]:
        translator.feed(c)
    assert translator.usage is None
    translator.feed(chunks[-1])
    assert translator.usage == (42, 17)


def test_finish_before_any_chunk_is_a_whole_message() -> None:
    events = ChunkTranslator("m", "msg_1").finish()
    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    for _, data in events:
        EVENTS.validate_python(data)
    assert events[3][1]["delta"]["stop_reason"] == "end_turn"


def test_parallel_tool_calls_get_their_own_blocks() -> None:
    chunks = [
        chunk(tool_delta(0, '{"city":', "call_a", "weather")),
        chunk(tool_delta(0, '"Paris"}')),
        chunk(tool_delta(1, '{"city":"Rome"}', "call_b", "weather")),
        chunk({}, "tool_calls"),
    ]
    events = run(chunks)
    starts = [d for n, d in events if n == "content_block_start"]
    assert [(s["index"], s["content_block"]["id"]) for s in starts] == [
        (0, "call_a"),
        (1, "call_b"),
    ]
    deltas = [
        (d["index"], d["delta"]["partial_json"]) for n, d in events if n == "content_block_delta"
    ]
    assert deltas == [(0, '{"city":'), (0, '"Paris"}'), (1, '{"city":"Rome"}')]
    stops = [d["index"] for n, d in events if n == "content_block_stop"]
    assert stops == [0, 1]


def test_tool_calls_without_index_are_told_apart_by_id() -> None:
    # Some OpenAI-compatible servers omit ``index`` and send the id on the first fragment.
    def call(arguments: str, call_id: str | None = None) -> dict[str, Any]:
        fragment: dict[str, Any] = {"function": {"name": "f", "arguments": arguments}}
        if call_id:
            fragment["id"] = call_id
        return chunk({"tool_calls": [fragment]})

    events = run([call('{"x"', "a"), call(":1}"), call("{}", "b"), chunk({}, "stop")])
    deltas = [
        (d["index"], d["delta"]["partial_json"]) for n, d in events if n == "content_block_delta"
    ]
    assert deltas == [(0, '{"x"'), (0, ":1}"), (1, "{}")]
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_text_after_a_tool_call_opens_a_new_block() -> None:
    events = run(
        [chunk({"content": "a"}), chunk(tool_delta(0, "{}", "c", "f")), chunk({"content": "b"})]
    )
    kinds = [d["content_block"]["type"] for n, d in events if n == "content_block_start"]
    assert kinds == ["text", "tool_use", "text"]


def test_length_finish_and_cached_usage() -> None:
    last = chunk()
    last["usage"] = {
        "prompt_tokens": 100,
        "completion_tokens": 3,
        "prompt_tokens_details": {"cached_tokens": 64},
    }
    events = run([chunk({"content": "abc"}, "length"), last])
    delta = events[-2][1]
    assert delta["delta"]["stop_reason"] == "max_tokens"
    assert delta["usage"] == {"input_tokens": 36, "output_tokens": 3, "cache_read_input_tokens": 64}
    EVENTS.validate_python(delta)


def test_error_chunk_raises() -> None:
    translator = ChunkTranslator("m", "msg_1")
    with pytest.raises(UpstreamError, match="model overloaded"):
        translator.feed({"error": {"message": "model overloaded", "type": "server_error"}})


# ---- relay: bytes in, bytes out ----


def openai_sse(chunks: list[dict[str, Any]], done: bool = True) -> bytes:
    body = b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks)
    return body + (b"data: [DONE]\n\n" if done else b"")


def pieces(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def upstream(parts: Iterator[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def relay(data: bytes, size: int = 7) -> tuple[bytes, list[tuple[int, int]]]:
    usages: list[tuple[int, int]] = []

    async def collect() -> bytes:
        stream = relay_as_messages(
            upstream(pieces(data, size)), "claude-gw", "msg_1", lambda p, c: usages.append((p, c))
        )
        return b"".join([frame async for frame in stream])

    return asyncio.run(collect()), usages


@pytest.mark.parametrize("size", [1, 7, 64, 100_000])
def test_relay_at_odd_boundaries(size: int) -> None:
    out, usages = relay(openai_sse(realistic_chunks()), size)
    assert out == b"".join(encode(name, data) for name, data in run(realistic_chunks()))
    assert usages == [(42, 17)]


def test_relay_output_is_anthropic_sse() -> None:
    out, _ = relay(openai_sse(realistic_chunks()).replace(b"\n", b"\r\n"))
    frames = out.split(b"\n\n")
    assert frames[-1] == b""
    assert frames[0].startswith(b"event: message_start\ndata: {")
    assert frames[-2] == b'event: message_stop\ndata: {"type":"message_stop"}'


def test_relay_without_done_but_finished_closes_the_message() -> None:
    out, usages = relay(openai_sse([chunk({"content": "hi"}, "stop")], done=False))
    assert out.endswith(encode("message_stop", {"type": "message_stop"}))
    assert usages == []


def test_relay_ignores_what_follows_done() -> None:
    data = openai_sse([chunk({"content": "hi"}, "stop")]) + b"data: not json\n\n"
    out, _ = relay(data)
    assert out.endswith(encode("message_stop", {"type": "message_stop"}))


def test_relay_raises_when_the_upstream_is_cut_off() -> None:
    with pytest.raises(UpstreamError, match="ended early"):
        relay(openai_sse([chunk({"content": "hal"})], done=False))


def test_relay_raises_on_an_error_chunk() -> None:
    data = openai_sse([chunk({"content": "hi"})], done=False)
    data += b'data: {"error": {"message": "context length exceeded"}}\n\n'
    with pytest.raises(UpstreamError, match="context length exceeded"):
        relay(data)


def test_relay_raises_on_malformed_json() -> None:
    with pytest.raises(UpstreamProtocolError):
        relay(b"data: {not json\n\n")


# ---- errors in Anthropic's shape ----


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (405, "invalid_request_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "overloaded_error"),
        (504, "timeout_error"),
        (529, "overloaded_error"),
    ],
)
def test_error_types(status: int, kind: str) -> None:
    assert error_type(status) == kind
    assert orjson.loads(error_body(status, "nope")) == {
        "type": "error",
        "error": {"type": kind, "message": "nope"},
    }


def test_sdk_raises_the_right_error_class() -> None:
    client, _ = sdk_client(lambda body: httpx.Response(429, content=error_body(429, "slow down")))
    with client, pytest.raises(anthropic.RateLimitError) as info:
        client.messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert info.value.body == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "slow down"},
    }


def test_error_event_ends_an_sdk_stream_with_an_error() -> None:
    events = ChunkTranslator("m", "msg_1").feed(chunk({"content": "par"}))
    payload = b"".join(encode(n, d) for n, d in events) + error_event(502, "upstream went away")
    assert error_event(502, "x").startswith(b"event: error\ndata: ")
    client, _ = sdk_client(lambda body: sse(payload))
    messages: list[Any] = [{"role": "user", "content": "x"}]
    manager = client.messages.stream(model="m", max_tokens=5, messages=messages)
    failed = pytest.raises(anthropic.APIStatusError, match="upstream went away")
    with client, failed, manager as stream:
        stream.get_final_message()
