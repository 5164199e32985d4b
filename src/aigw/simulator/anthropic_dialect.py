"""Anthropic Messages wire shapes for the simulator: message, event stream, errors.

The stream is the real event sequence: message_start, content_block_start, ping,
content_block_delta (text_delta or input_json_delta) per chunk, content_block_stop,
message_delta (stop_reason, usage.output_tokens), message_stop; each with its
``event:`` line. Pure functions.
"""

from __future__ import annotations

import orjson

from aigw.simulator.replies import (
    Reply,
    ToolCall,
    conversation,
    count_words,
    pick_tool,
    text_of,
    text_reply,
    tool_reply,
)
from aigw.simulator.streaming import Stream

dumps = orjson.dumps


def message_reply(body: dict[str, object], default_tokens: int) -> Reply:
    texts, last_user = conversation(body)
    prompt_tokens = count_words([text_of(body.get("system")), *texts])
    tool = _tool(body, last_user)
    if tool is not None:
        return tool_reply(tool, prompt_tokens)
    return text_reply(last_user, prompt_tokens, default_tokens, body.get("max_tokens"))


def _tool(body: dict[str, object], last_user: str) -> ToolCall | None:
    choice = body.get("tool_choice")
    kind = choice.get("type") if isinstance(choice, dict) else None
    tools = body.get("tools")
    if kind == "none" or not isinstance(tools, list):
        return None
    specs = [
        (t["name"], t.get("input_schema"))
        for t in tools
        if isinstance(t, dict) and isinstance(t.get("name"), str)
    ]
    named = None
    if kind == "tool" and isinstance(choice, dict) and isinstance(choice.get("name"), str):
        named = choice["name"]
    return pick_tool(specs, kind == "any", named, last_user)


def stop_reason(reply: Reply) -> str:
    if reply.tool is not None:
        return "tool_use"
    return "max_tokens" if reply.truncated else "end_turn"


def _block(reply: Reply, seq: int) -> dict[str, object]:
    if reply.tool is None:
        return {"type": "text", "text": reply.text}
    return {
        "type": "tool_use",
        "id": f"toolu_sim_{seq}",
        "name": reply.tool.name,
        "input": orjson.Fragment(reply.tool.arguments),
    }


def _message(reply: Reply, model: str, seq: int, content: list[object]) -> dict[str, object]:
    return {
        "id": f"msg_sim_{seq}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": reply.prompt_tokens, "output_tokens": 1},
    }


def message_body(reply: Reply, model: str, seq: int) -> bytes:
    message = _message(reply, model, seq, [_block(reply, seq)])
    message["stop_reason"] = stop_reason(reply)
    message["usage"] = {
        "input_tokens": reply.prompt_tokens,
        "output_tokens": reply.completion_tokens,
    }
    return dumps(message)


def event(name: bytes, data: bytes) -> bytes:
    return b"event: " + name + b"\ndata: " + data + b"\n\n"


_PING = event(b"ping", b'{"type":"ping"}')
_BLOCK_STOP = event(b"content_block_stop", b'{"type":"content_block_stop","index":0}')
_MESSAGE_STOP = event(b"message_stop", b'{"type":"message_stop"}')
_DELTA = b'{"type":"content_block_delta","index":0,"delta":{"type":"%b","%b":%b}}'


def message_stream(reply: Reply, model: str, seq: int) -> Stream:
    start = {"type": "message_start", "message": _message(reply, model, seq, [])}
    block = _block(reply, seq)
    if reply.tool is None:
        block["text"] = ""
        kind, field, pieces = b"text_delta", b"text", reply.pieces
    else:
        block["input"] = {}
        kind, field, pieces = b"input_json_delta", b"partial_json", reply.tool.pieces
    opened = {"type": "content_block_start", "index": 0, "content_block": block}
    head = event(b"message_start", dumps(start)) + event(b"content_block_start", dumps(opened))
    body = (event(b"content_block_delta", _DELTA % (kind, field, dumps(p))) for p in pieces)
    delta = {
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason(reply), "stop_sequence": None},
        "usage": {"output_tokens": reply.completion_tokens},
    }
    tail = _BLOCK_STOP + event(b"message_delta", dumps(delta)) + _MESSAGE_STOP
    return Stream(head + _PING, body, tail)


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def error_body(status: int, message: str) -> bytes:
    kind = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return dumps({"type": "error", "error": {"type": kind, "message": message}})
