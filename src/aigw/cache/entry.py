"""What the cache stores, and how a stored answer is served in the shape a request asks for.

The stored body is always the JSON answer (``chat.completion``, ``text_completion`` or an
embeddings list). A streamed answer is assembled into that JSON before it is stored, and
a hit for a streaming request is turned back into server-sent events. Pure: no I/O.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

import orjson

from aigw.providers.sse import DONE, SSEDecoder, frame

# magic, creation time (seconds), body length: a truncated record fails the length check.
_HEADER = struct.Struct(">4sdI")
_MAGIC = b"AGC1"
_WORDS_PER_CHUNK = 4
# A word with the whitespace before it (like a model's tokens); trailing space goes last.
_WORD = re.compile(r"\s*\S+(?:\s+\Z)?|\s+\Z")


def encode_entry(created: float, body: bytes) -> bytes:
    """A stored record: a fixed header with ``created``, then ``body``."""
    return _HEADER.pack(_MAGIC, created, len(body)) + body


def decode_entry(raw: bytes) -> tuple[float, bytes]:
    """``(created, body)`` from a stored record; ``ValueError`` for anything else."""
    if len(raw) < _HEADER.size:
        raise ValueError("cache record too short")
    magic, created, length = _HEADER.unpack_from(raw)
    if magic != _MAGIC:
        raise ValueError("not a cache record")
    if not math.isfinite(created) or len(raw) - _HEADER.size != length:
        raise ValueError("corrupt cache record")
    return created, raw[_HEADER.size :]


def parse_sse_chunks(stream: bytes) -> list[dict[str, Any]]:
    """The JSON chunks of a complete SSE stream, ``[DONE]`` and comments left out.

    ``ValueError`` for a stream that carries an error or never reached ``[DONE]``: a
    partial or failed answer must never be cached.
    """
    decoder = SSEDecoder()
    chunks: list[dict[str, Any]] = []
    for event in [*decoder.feed(stream), *decoder.feed(b"\n\n")]:
        if event.data == b"[DONE]":
            return chunks
        if event.event == "error":
            raise ValueError("stream carries an error event")
        try:
            chunk = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            continue
        if isinstance(chunk, dict):
            if "error" in chunk:
                raise ValueError("stream carries an error")
            chunks.append(chunk)
    raise ValueError("stream ended before [DONE]")


def assemble_chat(chunks: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The ``chat.completion`` equivalent to a stream of ``chat.completion.chunk``s.

    ``ValueError`` for chunks that are not shaped like OpenAI's.
    """
    return _assemble(chunks, "chat.completion", _ChatChoice)


def assemble_completion(chunks: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The ``text_completion`` equivalent to a stream of legacy completion chunks.

    ``ValueError`` for chunks that are not shaped like OpenAI's.
    """
    return _assemble(chunks, "text_completion", _TextChoice)


def sse_from_chat(answer: dict[str, Any], include_usage: bool) -> bytes:
    """A ``chat.completion`` as the SSE stream a streaming client expects, ``[DONE]`` last."""
    base = _chunk_base(answer, "chat.completion.chunk", include_usage)
    frames = [
        _frame(base, [choice])
        for answer_choice in answer.get("choices") or ()
        for choice in _chat_chunk_choices(answer_choice)
    ]
    return b"".join(frames) + _usage_frame(base, answer, include_usage) + DONE


def sse_from_completion(answer: dict[str, Any], include_usage: bool) -> bytes:
    """A ``text_completion`` as the SSE stream a streaming client expects, ``[DONE]`` last."""
    base = _chunk_base(answer, "text_completion", include_usage)
    frames = []
    for choice in answer.get("choices") or ():
        common = {"index": choice.get("index", 0), "logprobs": None, "finish_reason": None}
        for piece in _pieces(choice.get("text") or ""):
            frames.append(_frame(base, [{**common, "text": piece}]))
        last = {**common, "text": "", "logprobs": choice.get("logprobs")}
        frames.append(_frame(base, [{**last, "finish_reason": choice.get("finish_reason")}]))
    return b"".join(frames) + _usage_frame(base, answer, include_usage) + DONE


class _Choice(Protocol):
    def update(self, choice: dict[str, Any]) -> None: ...
    def result(self) -> dict[str, Any]: ...


def _assemble(
    chunks: Iterable[dict[str, Any]], kind: str, new_choice: Callable[[int], _Choice]
) -> dict[str, Any]:
    head = _Head()
    choices: dict[int, _Choice] = {}
    try:
        for chunk in chunks:
            head.update(chunk)
            for delta_choice in chunk.get("choices") or ():
                index = delta_choice.get("index", 0)
                if index not in choices:
                    choices[index] = new_choice(index)
                choices[index].update(delta_choice)
        return head.answer(kind, [choices[i].result() for i in sorted(choices)])
    except (AttributeError, TypeError) as exc:  # a list where a dict belongs, and the like
        raise ValueError(f"malformed {kind} chunk: {exc}") from exc


class _Head:
    """The answer-level fields of a stream: the first non-empty of each, the last usage."""

    __slots__ = ("fields", "usage")

    def __init__(self) -> None:
        self.fields: dict[str, Any] = {}
        self.usage: Any = None

    def update(self, chunk: dict[str, Any]) -> None:
        for name in ("id", "created", "model", "system_fingerprint", "service_tier"):
            if chunk.get(name) and not self.fields.get(name):
                self.fields[name] = chunk[name]
        if chunk.get("usage") is not None:
            self.usage = chunk["usage"]

    def answer(self, kind: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        answer = {
            "id": self.fields.get("id", ""),
            "object": kind,
            "created": self.fields.get("created", 0),
            "model": self.fields.get("model", ""),
            "choices": choices,
            "usage": self.usage,
        }
        for name in ("system_fingerprint", "service_tier"):
            if name in self.fields:
                answer[name] = self.fields[name]
        return answer


class _ChatChoice:
    """One choice of a chat stream, accumulated delta by delta."""

    __slots__ = (
        "content",
        "finish_reason",
        "function_call",
        "index",
        "logprobs",
        "refusal",
        "role",
        "tool_calls",
    )

    def __init__(self, index: int) -> None:
        self.index = index
        self.role = "assistant"
        self.content: list[str] | None = None
        self.refusal: list[str] | None = None
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.function_call: dict[str, str] | None = None
        self.finish_reason: str | None = None
        self.logprobs: dict[str, Any] | None = None

    def update(self, choice: dict[str, Any]) -> None:
        delta = choice.get("delta") or {}
        self.role = delta.get("role") or self.role
        self.content = _append(self.content, delta.get("content"))
        self.refusal = _append(self.refusal, delta.get("refusal"))
        for position, call in enumerate(delta.get("tool_calls") or ()):
            self._update_tool_call(call.get("index", position), call)
        if delta.get("function_call"):
            self.function_call = _merge_function(self.function_call, delta["function_call"])
        self.finish_reason = choice.get("finish_reason") or self.finish_reason
        if choice.get("logprobs"):
            self.logprobs = _merge_logprobs(self.logprobs, choice["logprobs"])

    def _update_tool_call(self, index: int, delta: dict[str, Any]) -> None:
        call = self.tool_calls.setdefault(
            index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
        )
        call["id"] = call["id"] or delta.get("id") or ""
        call["type"] = delta.get("type") or call["type"]
        call["function"] = _merge_function(call["function"], delta.get("function") or {})

    def result(self) -> dict[str, Any]:
        message: dict[str, Any] = {
            "role": self.role,
            "content": None if self.content is None else "".join(self.content),
            "refusal": None if self.refusal is None else "".join(self.refusal),
        }
        if self.tool_calls:
            message["tool_calls"] = [self.tool_calls[i] for i in sorted(self.tool_calls)]
        if self.function_call is not None:
            message["function_call"] = self.function_call
        return {
            "index": self.index,
            "message": message,
            "logprobs": self.logprobs,
            "finish_reason": self.finish_reason,
        }


class _TextChoice:
    """One choice of a legacy completion stream."""

    __slots__ = ("finish_reason", "index", "logprobs", "text")

    def __init__(self, index: int) -> None:
        self.index = index
        self.text: list[str] = []
        self.finish_reason: str | None = None
        self.logprobs: dict[str, Any] | None = None

    def update(self, choice: dict[str, Any]) -> None:
        if choice.get("text"):
            self.text.append(choice["text"])
        self.finish_reason = choice.get("finish_reason") or self.finish_reason
        if choice.get("logprobs"):
            self.logprobs = _merge_logprobs(self.logprobs, choice["logprobs"])

    def result(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "text": "".join(self.text),
            "logprobs": self.logprobs,
            "finish_reason": self.finish_reason,
        }


def _append(parts: list[str] | None, piece: object) -> list[str] | None:
    if not isinstance(piece, str):
        return parts
    if parts is None:
        return [piece]
    parts.append(piece)
    return parts


def _merge_function(acc: dict[str, str] | None, delta: dict[str, Any]) -> dict[str, str]:
    # Names are concatenated like arguments, as the openai SDK's accumulator does.
    acc = acc or {"name": "", "arguments": ""}
    return {
        "name": acc["name"] + (delta.get("name") or ""),
        "arguments": acc["arguments"] + (delta.get("arguments") or ""),
    }


def _merge_logprobs(acc: dict[str, Any] | None, delta: dict[str, Any]) -> dict[str, Any]:
    """Concatenate the list fields (chat: content, refusal; legacy: tokens, offsets…)."""
    if acc is None:
        return {name: list(v) if isinstance(v, list) else v for name, v in delta.items()}
    for name, value in delta.items():
        if isinstance(value, list) and isinstance(acc.get(name), list):
            acc[name].extend(value)
        elif acc.get(name) is None:
            acc[name] = list(value) if isinstance(value, list) else value
    return acc


def _chunk_base(answer: dict[str, Any], kind: str, include_usage: bool) -> dict[str, Any]:
    base = {
        "id": answer.get("id", ""),
        "object": kind,
        "created": answer.get("created", 0),
        "model": answer.get("model", ""),
    }
    for name in ("system_fingerprint", "service_tier"):
        if answer.get(name) is not None:
            base[name] = answer[name]
    if include_usage:  # as OpenAI does: every chunk but the last has "usage": null
        base["usage"] = None
    return base


def _chat_chunk_choices(choice: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The ``choices[0]`` of each chunk that streams one choice."""
    index = choice.get("index", 0)
    message = choice.get("message") or {}
    role = message.get("role") or "assistant"
    # A message with no text (tool calls only) opens with content null, as OpenAI's does.
    content = message.get("content")
    yield _delta(index, {"role": role, "content": "" if isinstance(content, str) else None})
    for piece in _pieces(content if isinstance(content, str) else ""):
        yield _delta(index, {"content": piece})
    for piece in _pieces(message.get("refusal") or ""):
        yield _delta(index, {"refusal": piece})
    for position, call in enumerate(message.get("tool_calls") or ()):
        yield from _tool_call_deltas(index, position, call)
    if message.get("function_call"):
        function = message["function_call"]
        yield _delta(index, {"function_call": {"name": function.get("name"), "arguments": ""}})
        if function.get("arguments"):
            yield _delta(index, {"function_call": {"arguments": function["arguments"]}})
    last = _delta(index, {}, choice.get("finish_reason"))
    yield {**last, "logprobs": choice.get("logprobs")}


def _tool_call_deltas(index: int, position: int, call: dict[str, Any]) -> Iterator[dict[str, Any]]:
    function = call.get("function") or {}
    opening = {
        "index": position,
        "id": call.get("id"),
        "type": call.get("type") or "function",
        "function": {"name": function.get("name"), "arguments": ""},
    }
    yield _delta(index, {"tool_calls": [opening]})
    if function.get("arguments"):
        arguments = {"index": position, "function": {"arguments": function["arguments"]}}
        yield _delta(index, {"tool_calls": [arguments]})


def _delta(index: int, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}


def _pieces(text: str) -> Iterator[str]:
    """``text`` in pieces of about four words that concatenate back to it exactly."""
    words = _WORD.findall(text)
    for start in range(0, len(words), _WORDS_PER_CHUNK):
        yield "".join(words[start : start + _WORDS_PER_CHUNK])


def _frame(base: dict[str, Any], choices: list[dict[str, Any]]) -> bytes:
    return frame(orjson.dumps({**base, "choices": choices}))


def _usage_frame(base: dict[str, Any], answer: dict[str, Any], include_usage: bool) -> bytes:
    if not include_usage or answer.get("usage") is None:
        return b""
    return _frame({**base, "usage": answer["usage"]}, [])
