"""OpenAI wire shapes for the simulator: chat, completions, their streams, errors.

Pure functions from a parsed request body to a ``Reply`` and from a ``Reply`` to
bytes. Stream chunks are spliced from a per-stream prefix and suffix so that each
chunk costs one small ``orjson.dumps`` rather than a dict build.
"""

from __future__ import annotations

from collections.abc import Iterator

import orjson

from aigw.providers.sse import DONE, frame
from aigw.simulator.replies import (
    Reply,
    ToolCall,
    conversation,
    count_words,
    pick_tool,
    text_reply,
    tool_reply,
)
from aigw.simulator.streaming import Stream

dumps = orjson.dumps


# -- requests


def chat_reply(body: dict[str, object], default_tokens: int) -> Reply:
    texts, last_user = conversation(body)
    prompt_tokens = count_words(texts)
    tool = _tool(body, last_user)
    if tool is not None:
        return tool_reply(tool, prompt_tokens)
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    return text_reply(last_user, prompt_tokens, default_tokens, limit)


def _tool(body: dict[str, object], last_user: str) -> ToolCall | None:
    choice = body.get("tool_choice")
    tools = body.get("tools")
    if choice == "none" or not isinstance(tools, list):
        return None
    specs = []
    for tool in tools:
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            specs.append((function["name"], function.get("parameters")))
    named = None
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        name = choice["function"].get("name")
        named = name if isinstance(name, str) else None
    return pick_tool(specs, choice == "required", named, last_user)


def completion_reply(body: dict[str, object], default_tokens: int) -> Reply:
    prompts = prompt_list(body.get("prompt"))
    texts = [p for p in prompts if isinstance(p, str)]
    ids = sum(len(p) for p in prompts if isinstance(p, list))
    prompt_tokens = max(1, sum(len(t.split()) for t in texts) + ids)
    first = texts[0] if texts else ""
    return text_reply(first, prompt_tokens, default_tokens, body.get("max_tokens"))


def prompt_list(prompt: object) -> list[str | list[object]]:
    """A prompt as a list of inputs: one string, strings, token ids, or lists of ids."""
    if isinstance(prompt, str):
        return [prompt]
    if not isinstance(prompt, list):
        return []
    if prompt and all(isinstance(p, int) for p in prompt):
        return [prompt]
    return [p for p in prompt if isinstance(p, str | list)]


# -- non-streamed answers


def usage(reply: Reply) -> dict[str, int]:
    done = reply.completion_tokens
    return {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": done,
        "total_tokens": reply.prompt_tokens + done,
    }


def finish_reason(reply: Reply) -> str:
    if reply.tool is not None:
        return "tool_calls"
    return "length" if reply.truncated else "stop"


def chat_body(reply: Reply, model: str, seq: int, now: int) -> bytes:
    message: dict[str, object] = {"role": "assistant", "content": reply.text, "refusal": None}
    if reply.tool is not None:
        message["content"] = None
        function = {"name": reply.tool.name, "arguments": reply.tool.arguments}
        message["tool_calls"] = [
            {"id": f"call_sim_{seq}", "type": "function", "function": function}
        ]
    choice = {
        "index": 0,
        "message": message,
        "logprobs": None,
        "finish_reason": finish_reason(reply),
    }
    return dumps(
        {
            "id": f"chatcmpl-sim-{seq}",
            "object": "chat.completion",
            "created": now,
            "model": model,
            "choices": [choice],
            "usage": usage(reply),
            "system_fingerprint": None,
        }
    )


def completion_body(reply: Reply, model: str, seq: int, now: int) -> bytes:
    choice = {
        "text": reply.text,
        "index": 0,
        "logprobs": None,
        "finish_reason": finish_reason(reply),
    }
    return dumps(
        {
            "id": f"cmpl-sim-{seq}",
            "object": "text_completion",
            "created": now,
            "model": model,
            "choices": [choice],
            "usage": usage(reply),
        }
    )


# -- streams


def _envelope(kind: bytes, seq: int, now: int, model: str) -> bytes:
    ident = b"chatcmpl-sim-%d" % seq if kind == b"chat.completion.chunk" else b"cmpl-sim-%d" % seq
    return b'{"id":"%b","object":"%b","created":%d,"model":%b,' % (ident, kind, now, dumps(model))


def _usage_frame(envelope: bytes, reply: Reply) -> bytes:
    return frame(envelope + b'"choices":[],"usage":' + dumps(usage(reply)) + b"}")


def chat_stream(reply: Reply, model: str, seq: int, now: int, with_usage: bool) -> Stream:
    env = _envelope(b"chat.completion.chunk", seq, now, model)
    open_ = env + b'"choices":[{"index":0,"delta":'
    close = b',"logprobs":null,"finish_reason":%b}]' + (b',"usage":null}' if with_usage else b"}")
    pending = close % b"null"
    body: Iterator[bytes]
    if reply.tool is None:
        head = open_ + b'{"role":"assistant","content":""}' + pending
        body = (frame(open_ + b'{"content":' + dumps(p) + b"}" + pending) for p in reply.pieces)
    else:
        head, body = _tool_frames(reply.tool, seq, open_, pending)
    tail = frame(open_ + b"{}" + close % dumps(finish_reason(reply)))
    if with_usage:
        tail += _usage_frame(env, reply)
    return Stream(frame(head), body, tail + DONE)


def _tool_frames(
    tool: ToolCall, seq: int, open_: bytes, pending: bytes
) -> tuple[bytes, Iterator[bytes]]:
    call = {
        "index": 0,
        "id": f"call_sim_{seq}",
        "type": "function",
        "function": {"name": tool.name, "arguments": ""},
    }
    head = open_ + dumps({"role": "assistant", "content": None, "tool_calls": [call]}) + pending
    body = (
        frame(
            open_
            + b'{"tool_calls":[{"index":0,"function":{"arguments":'
            + dumps(piece)
            + b"}}]}"
            + pending
        )
        for piece in tool.pieces
    )
    return head, body


def completion_stream(reply: Reply, model: str, seq: int, now: int, with_usage: bool) -> Stream:
    env = _envelope(b"text_completion", seq, now, model)
    open_ = env + b'"choices":[{"text":'
    close = b',"index":0,"logprobs":null,"finish_reason":%b}]' + (
        b',"usage":null}' if with_usage else b"}"
    )
    pending = close % b"null"
    body = (frame(open_ + dumps(p) + pending) for p in reply.pieces)
    tail = frame(open_ + b'""' + close % dumps(finish_reason(reply)))
    if with_usage:
        tail += _usage_frame(env, reply)
    return Stream(b"", body, tail + DONE)


def wants_usage(body: dict[str, object]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


# -- errors

_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error"}
_ERROR_TYPES |= {404: "not_found_error", 429: "rate_limit_error"}


def error_body(status: int, message: str, code: str = "") -> bytes:
    kind = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    code = code or ("rate_limit_exceeded" if status == 429 else f"sim_{status}")
    return dumps({"error": {"message": message, "type": kind, "param": None, "code": code}})
