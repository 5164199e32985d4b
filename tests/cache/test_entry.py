from __future__ import annotations

import copy
import struct
from typing import Any

import orjson
import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from aigw.cache.entry import (
    assemble_chat,
    assemble_completion,
    decode_entry,
    encode_entry,
    parse_sse_chunks,
    sse_from_chat,
    sse_from_completion,
)

HEAD = {
    "id": "chatcmpl-1",
    "object": "chat.completion.chunk",
    "created": 1700000000,
    "model": "gpt-4o-2024-08-06",
    "system_fingerprint": "fp_1",
}
USAGE = {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21}


def chunk(*choices: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {**HEAD, "choices": list(choices), **extra}


def delta(index: int = 0, finish: str | None = None, **fields: Any) -> dict[str, Any]:
    return {"index": index, "delta": fields, "logprobs": None, "finish_reason": finish}


TEXT_STREAM = [
    chunk(delta(role="assistant", content="", refusal=None), usage=None),
    chunk(delta(content="Hello"), usage=None),
    chunk(delta(content=", wor"), usage=None),
    chunk(delta(content="ld!\n\n  Two  spaces."), usage=None),
    chunk(delta(finish="stop"), usage=None),
    chunk(usage=USAGE),
]

TOOL_STREAM = [
    {**HEAD, "id": "", "model": "", "created": 0, "choices": [], "prompt_filter_results": []},
    chunk(delta(role="assistant", content=None)),
    chunk(
        delta(
            tool_calls=[
                {
                    "index": 0,
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
            ]
        )
    ),
    chunk(delta(tool_calls=[{"index": 0, "function": {"arguments": '{"city": '}}])),
    chunk(delta(tool_calls=[{"index": 0, "function": {"arguments": '"Paris"}'}}])),
    chunk(
        delta(
            tool_calls=[
                {
                    "index": 1,
                    "id": "call_b",
                    "type": "function",
                    "function": {"name": "get_time", "arguments": '{"tz": "CET"}'},
                }
            ]
        )
    ),
    chunk(delta(finish="tool_calls"), usage=USAGE),
]

N2_STREAM = [
    chunk(delta(0, role="assistant", content=""), delta(1, role="assistant", content="")),
    chunk(delta(1, content="Second ")),
    chunk(delta(0, content="First ")),
    chunk(delta(0, content="answer.")),
    chunk(delta(1, content="answer, cut"), delta(0, finish="stop")),
    chunk(delta(1, finish="length")),
]


def lp(token: str) -> dict[str, Any]:
    return {"token": token, "logprob": -0.5, "bytes": list(token.encode()), "top_logprobs": []}


LOGPROB_STREAM = [
    chunk(delta(role="assistant", content="")),
    chunk({**delta(content="Yes"), "logprobs": {"content": [lp("Yes")], "refusal": None}}),
    chunk({**delta(content=" sir"), "logprobs": {"content": [lp(" sir")], "refusal": None}}),
    chunk(delta(finish="stop")),
]

REFUSAL_STREAM = [
    chunk(delta(role="assistant", content=None, refusal="")),
    chunk(delta(refusal="I can't help ")),
    chunk(delta(refusal="with that.")),
    chunk(delta(finish="stop")),
]

STREAMS = {
    "text": TEXT_STREAM,
    "tools": TOOL_STREAM,
    "n2": N2_STREAM,
    "logprobs": LOGPROB_STREAM,
    "refusal": REFUSAL_STREAM,
}


def sse(chunks: list[dict[str, Any]]) -> bytes:
    return b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"


def frames(stream: bytes) -> list[bytes]:
    assert stream.endswith(b"\n\n")
    parts = stream[:-2].split(b"\n\n")
    assert all(part.startswith(b"data: ") for part in parts)
    return [part[len(b"data: ") :] for part in parts]


# --- stored records ---------------------------------------------------------------


def test_entry_round_trip() -> None:
    body = orjson.dumps({"id": "x", "choices": []})
    assert decode_entry(encode_entry(1700000000.25, body)) == (1700000000.25, body)
    assert decode_entry(encode_entry(0.0, b"")) == (0.0, b"")


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"AGC1",
        b'{"id": "x"}',
        b"XXXX" + encode_entry(1.0, b"{}")[4:],
        encode_entry(1.0, b'{"id": "x"}')[:-1],
        encode_entry(1.0, b'{"id": "x"}') + b"!",
        struct.pack(">4sdI", b"AGC1", float("nan"), 2) + b"{}",
        b"\x00" * 64,
    ],
)
def test_decode_entry_rejects_garbage(raw: bytes) -> None:
    with pytest.raises(ValueError):
        decode_entry(raw)


# --- parsing streams --------------------------------------------------------------


def test_parse_sse_chunks_skips_done_comments_and_non_json() -> None:
    stream = (
        b": keep-alive\n\n"
        b'data: {"a": 1}\r\n\r\n'
        b"data: not json\n\n"
        b"data: [1, 2]\n\n"
        b"event: ping\ndata: {}\n\n"
        b'data: {"b": 2}\n\n'
        b"data: [DONE]"  # the last blank line may be missing
    )
    assert parse_sse_chunks(stream) == [{"a": 1}, {}, {"b": 2}]


@pytest.mark.parametrize(
    "stream",
    [
        sse(TEXT_STREAM)[: -len(b"data: [DONE]\n\n")],
        sse(TEXT_STREAM)[:-5],
        sse(TEXT_STREAM)[:40],
        b"",
    ],
)
def test_parse_sse_chunks_rejects_partial_streams(stream: bytes) -> None:
    with pytest.raises(ValueError, match="DONE"):
        parse_sse_chunks(stream)


@pytest.mark.parametrize(
    "stream",
    [
        sse([*TEXT_STREAM[:2], {"error": {"message": "overloaded", "type": "server_error"}}]),
        b'data: {"a": 1}\n\nevent: error\ndata: {"message": "boom"}\n\ndata: [DONE]\n\n',
    ],
)
def test_parse_sse_chunks_rejects_error_streams(stream: bytes) -> None:
    with pytest.raises(ValueError, match="error"):
        parse_sse_chunks(stream)


# --- assembling a streamed answer -------------------------------------------------


def test_assemble_chat_text() -> None:
    assert assemble_chat(TEXT_STREAM) == {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gpt-4o-2024-08-06",
        "system_fingerprint": "fp_1",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Hello, world!\n\n  Two  spaces.",
                    "refusal": None,
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": USAGE,
    }


def test_assemble_chat_tool_calls() -> None:
    answer = assemble_chat(TOOL_STREAM)
    assert answer["id"] == "chatcmpl-1" and answer["model"] == "gpt-4o-2024-08-06"
    assert answer["created"] == 1700000000
    (choice,) = answer["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    assert choice["message"]["tool_calls"] == [
        {
            "id": "call_a",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
        },
        {
            "id": "call_b",
            "type": "function",
            "function": {"name": "get_time", "arguments": '{"tz": "CET"}'},
        },
    ]
    assert answer["usage"] == USAGE


def test_assemble_chat_interleaved_choices() -> None:
    choices = assemble_chat(N2_STREAM)["choices"]
    assert [c["message"]["content"] for c in choices] == ["First answer.", "Second answer, cut"]
    assert [c["finish_reason"] for c in choices] == ["stop", "length"]
    assert assemble_chat(N2_STREAM)["usage"] is None


def test_assemble_chat_logprobs_and_refusal() -> None:
    (choice,) = assemble_chat(LOGPROB_STREAM)["choices"]
    assert choice["logprobs"] == {"content": [lp("Yes"), lp(" sir")], "refusal": None}
    (choice,) = assemble_chat(REFUSAL_STREAM)["choices"]
    assert choice["message"]["refusal"] == "I can't help with that."
    assert choice["message"]["content"] is None


def test_assemble_chat_legacy_function_call() -> None:
    stream = [
        chunk(delta(role="assistant", content=None, function_call={"name": "f", "arguments": ""})),
        chunk(delta(function_call={"arguments": '{"x": '})),
        chunk(delta(function_call={"arguments": "1}"})),
        chunk(delta(finish="function_call")),
    ]
    (choice,) = assemble_chat(stream)["choices"]
    assert choice["message"]["function_call"] == {"name": "f", "arguments": '{"x": 1}'}
    rebuilt = assemble_chat(parse_sse_chunks(sse_from_chat(assemble_chat(stream), False)))
    assert rebuilt == assemble_chat(stream)


def test_assembled_answers_are_valid_sdk_objects() -> None:
    for stream in STREAMS.values():
        ChatCompletion.model_validate(assemble_chat(stream))


# --- serving a stored answer as a stream ------------------------------------------


@pytest.mark.parametrize("name", list(STREAMS))
@pytest.mark.parametrize("include_usage", [True, False])
def test_chat_round_trip(name: str, include_usage: bool) -> None:
    answer = assemble_chat(STREAMS[name])
    rebuilt = assemble_chat(parse_sse_chunks(sse_from_chat(answer, include_usage)))
    expected = copy.deepcopy(answer)
    if not include_usage:
        expected["usage"] = None
    assert rebuilt == expected


def test_sse_from_chat_shape() -> None:
    answer = assemble_chat(TEXT_STREAM)
    stream = sse_from_chat(answer, include_usage=True)
    raw = frames(stream)
    assert raw[-1] == b"[DONE]"
    chunks = [orjson.loads(f) for f in raw[:-1]]
    for c in chunks:
        assert c["id"] == "chatcmpl-1" and c["object"] == "chat.completion.chunk"
        assert c["created"] == 1700000000 and c["model"] == "gpt-4o-2024-08-06"
        assert c["system_fingerprint"] == "fp_1"
    opening = {"role": "assistant", "content": ""}
    assert chunks[0]["choices"] == [
        {"index": 0, "delta": opening, "logprobs": None, "finish_reason": None}
    ]
    pieces = [c["choices"][0]["delta"]["content"] for c in chunks[1:-2]]
    assert "".join(pieces) == "Hello, world!\n\n  Two  spaces."
    assert all(len(p.split()) <= 4 for p in pieces)
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-2]["choices"][0]["delta"] == {}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == USAGE
    assert all(c["usage"] is None for c in chunks[:-1])


def test_sse_from_chat_without_usage_has_no_usage_chunk() -> None:
    chunks = parse_sse_chunks(sse_from_chat(assemble_chat(TEXT_STREAM), include_usage=False))
    assert all("usage" not in c for c in chunks)
    assert all(c["choices"] for c in chunks)


def test_sse_from_chat_tool_call_chunks() -> None:
    chunks = parse_sse_chunks(sse_from_chat(assemble_chat(TOOL_STREAM), include_usage=False))
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[0] == {"role": "assistant", "content": None}
    assert deltas[1] == {
        "tool_calls": [
            {
                "index": 0,
                "id": "call_a",
                "type": "function",
                "function": {"name": "get_weather", "arguments": ""},
            }
        ]
    }
    assert deltas[2] == {
        "tool_calls": [{"index": 0, "function": {"arguments": '{"city": "Paris"}'}}]
    }
    assert deltas[3]["tool_calls"][0]["id"] == "call_b"


@pytest.mark.parametrize(
    "text",
    [
        "one",
        "one two three four five six seven eight nine",
        "  leading and trailing  ",
        "tabs\tand\n\nnew lines\r\n and   runs   of spaces",
        "ünïcödé 文字 without spaces文字 🙂 🙂",
        "   ",
        "",
    ],
)
def test_content_pieces_concatenate_to_the_exact_text(text: str) -> None:
    answer = assemble_chat(
        [chunk(delta(role="assistant", content=text)), chunk(delta(finish="stop"))]
    )
    chunks = parse_sse_chunks(sse_from_chat(answer, include_usage=False))
    pieces = [c["choices"][0]["delta"].get("content") for c in chunks[1:-1]]
    assert "".join(pieces) == text
    assert all(p and len(p.split()) <= 4 for p in pieces)


FUNCTION = {"name", "arguments"}


@pytest.mark.parametrize("name", list(STREAMS))
def test_openai_sdk_accumulates_our_stream_into_the_answer(name: str) -> None:
    answer = assemble_chat(STREAMS[name])
    state: ChatCompletionStreamState[None] = ChatCompletionStreamState()
    for c in parse_sse_chunks(sse_from_chat(answer, include_usage=True)):
        state.handle_chunk(ChatCompletionChunk.model_validate(c))
    # get_final_completion() refuses a "length" finish; the snapshot is the same data.
    final = state.current_completion_snapshot
    if all(c["finish_reason"] != "length" for c in answer["choices"]):
        assert (
            state.get_final_completion().choices[0].message.content
            == final.choices[0].message.content
        )
    assert final.id == answer["id"] and final.model == answer["model"]
    assert final.system_fingerprint == "fp_1"
    if answer["usage"] is None:
        assert final.usage is None
    else:
        assert final.usage is not None and final.usage.model_dump() == {
            **answer["usage"],
            "completion_tokens_details": None,
            "prompt_tokens_details": None,
        }
    assert len(final.choices) == len(answer["choices"])
    for got, want in zip(final.choices, answer["choices"], strict=True):
        assert got.finish_reason == want["finish_reason"]
        assert got.message.content == want["message"]["content"]
        assert got.message.refusal == want["message"]["refusal"]
        calls = [
            {"id": t.id, "type": t.type, "function": t.function.model_dump(include=FUNCTION)}
            for t in got.message.tool_calls or []
        ]
        assert calls == want["message"].get("tool_calls", [])
        got_logprobs = None if got.logprobs is None else got.logprobs.model_dump()
        assert got_logprobs == want["logprobs"]


# --- legacy completions -----------------------------------------------------------

COMPLETION_HEAD = {
    "id": "cmpl-1",
    "object": "text_completion",
    "created": 1700000001,
    "model": "gpt-3.5-turbo-instruct",
}


def text_chunk(text: str, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": finish}
    return {**COMPLETION_HEAD, "choices": [choice], **extra}


COMPLETION_STREAM = [
    text_chunk("\n\nOnce upon"),
    text_chunk(" a time, there was"),
    text_chunk(" a gateway."),
    text_chunk("", "stop"),
    {**COMPLETION_HEAD, "choices": [], "usage": USAGE},
]


def test_assemble_completion() -> None:
    assert assemble_completion(COMPLETION_STREAM) == {
        **COMPLETION_HEAD,
        "choices": [
            {
                "index": 0,
                "text": "\n\nOnce upon a time, there was a gateway.",
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": USAGE,
    }
    Completion.model_validate(assemble_completion(COMPLETION_STREAM))


def legacy_logprobs(token: str, logprob: float, offset: int) -> dict[str, Any]:
    return {
        "tokens": [token],
        "token_logprobs": [logprob],
        "top_logprobs": None,
        "text_offset": [offset],
    }


def test_assemble_completion_concatenates_legacy_logprobs() -> None:
    first = text_chunk("Hi")
    first["choices"][0]["logprobs"] = legacy_logprobs("Hi", -0.1, 0)
    second = text_chunk(" there", "length")
    second["choices"][0]["logprobs"] = legacy_logprobs(" there", -0.2, 2)
    (choice,) = assemble_completion([first, second])["choices"]
    assert choice["logprobs"] == {
        "tokens": ["Hi", " there"],
        "token_logprobs": [-0.1, -0.2],
        "top_logprobs": None,
        "text_offset": [0, 2],
    }
    rebuilt = assemble_completion(
        parse_sse_chunks(
            sse_from_completion(
                {**COMPLETION_HEAD, "choices": [choice], "usage": None}, include_usage=False
            )
        )
    )
    assert rebuilt["choices"] == [choice]


@pytest.mark.parametrize("include_usage", [True, False])
def test_completion_round_trip(include_usage: bool) -> None:
    answer = assemble_completion(COMPLETION_STREAM)
    stream = sse_from_completion(answer, include_usage)
    chunks = parse_sse_chunks(stream)
    for c in chunks:
        assert c["object"] == "text_completion" and c["id"] == "cmpl-1"
        assert c["created"] == 1700000001 and c["model"] == "gpt-3.5-turbo-instruct"
    assert frames(stream)[-1] == b"[DONE]"
    assert [c["choices"][0]["text"] for c in chunks if c["choices"]] == [
        "\n\nOnce upon a time,",
        " there was a gateway.",
        "",
    ]
    assert (chunks[-1]["choices"] == []) is include_usage
    rebuilt = assemble_completion(chunks)
    assert rebuilt == {**answer, "usage": USAGE if include_usage else None}


MALFORMED = [
    [{"choices": "nope"}],
    [{"choices": [["not", "a", "dict"]]}],
    [chunk(delta(0, content="a"), {**delta(content="b"), "index": None})],
    ["not a chunk"],
]


@pytest.mark.parametrize("chunks", [*MALFORMED, [chunk({"index": 0, "delta": "text"})]])
def test_malformed_chat_chunks_raise_value_error(chunks: list[Any]) -> None:
    with pytest.raises(ValueError, match="malformed"):
        assemble_chat(chunks)


BAD_TEXT = [text_chunk("a"), {"choices": [{"index": 0, "text": 5}]}]


@pytest.mark.parametrize("chunks", [*MALFORMED, BAD_TEXT])
def test_malformed_completion_chunks_raise_value_error(chunks: list[Any]) -> None:
    with pytest.raises(ValueError, match="malformed"):
        assemble_completion(chunks)
