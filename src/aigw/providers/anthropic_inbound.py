"""Anthropic's Messages API in front of OpenAI-dialect upstreams.

The reverse of ``anthropic.py``: clients speak Anthropic Messages (``POST /v1/messages``,
the ``anthropic`` SDK). ``messages_to_chat`` turns their body into an OpenAI chat
completions body; ``error_body`` and ``error_event`` render failures in Anthropic's
error shape. Answers go back through ``chat_to_message`` and streams through
``ChunkTranslator`` / ``relay_as_messages``, which live in ``anthropic_inbound_stream.py``
and are re-exported here. All of it is pure.
"""

from __future__ import annotations

from typing import Any

import orjson

from aigw.errors import InvalidRequest, UnsupportedByProvider
from aigw.providers.anthropic_inbound_stream import ChunkTranslator as ChunkTranslator
from aigw.providers.anthropic_inbound_stream import chat_to_message as chat_to_message
from aigw.providers.anthropic_inbound_stream import encode as encode
from aigw.providers.anthropic_inbound_stream import relay_as_messages as relay_as_messages
from aigw.providers.anthropic_inbound_stream import usage_of_message as usage_of_message

Block = dict[str, Any]
Message = dict[str, Any]

# Reasoning from an earlier Anthropic turn: an OpenAI upstream neither produced it nor
# has a field to take it back, and the answer does not depend on it.
DROPPED = frozenset({"thinking", "redacted_thinking"})

# ---- request: Anthropic Messages body → OpenAI chat body ----


def messages_to_chat(body: dict[str, Any], upstream_model: str) -> dict[str, Any]:
    """An Anthropic Messages body as an OpenAI chat completions body.

    ``top_k``, ``thinking`` and parameters OpenAI has no use for are dropped; shapes
    it cannot express raise ``UnsupportedByProvider``, malformed ones ``InvalidRequest``,
    each naming the offending ``param``.
    """
    out: dict[str, Any] = {
        "model": upstream_model,
        "messages": _system(body.get("system")) + _conversation(body.get("messages")),
        "max_tokens": _max_tokens(body.get("max_tokens")),
    }
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            out[name] = body[name]
    stop = _stop_sequences(body.get("stop_sequences"))
    if stop:
        out["stop"] = stop
    if body.get("stream") is True:
        out["stream"] = True
        # OpenAI reports usage in a last chunk only when asked; message_delta needs it.
        out["stream_options"] = {"include_usage": True}
    out.update(_tooling(body))
    metadata = body.get("metadata")
    user = metadata.get("user_id") if isinstance(metadata, dict) else None
    if isinstance(user, str) and user:
        out["user"] = user
    return out


def _max_tokens(value: object) -> int:
    if value is None:
        raise InvalidRequest("`max_tokens` is required", param="max_tokens")
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidRequest("`max_tokens` must be a positive integer", param="max_tokens")
    return value


def _system(value: object) -> list[Message]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [{"role": "system", "content": value}]
    if not isinstance(value, list):
        raise InvalidRequest("`system` must be a string or a list of text blocks", param="system")
    texts = [_system_text(block, f"system[{i}]") for i, block in enumerate(value)]
    # Blocks are separate instructions (Claude Code sends several); keep them apart.
    text = "\n\n".join(t for t in texts if t)
    return [{"role": "system", "content": text}] if text else []


def _system_text(block: object, param: str) -> str:
    typed = _typed(block, param)
    if typed["type"] != "text":
        raise InvalidRequest(f"{param}: a system prompt may hold only text blocks", param=param)
    return _text(typed, param)


def _conversation(raw: object) -> list[Message]:
    if not isinstance(raw, list) or not raw:
        raise InvalidRequest("`messages` must be a non-empty list", param="messages")
    out: list[Message] = []
    for i, message in enumerate(raw):
        out.extend(_message(message, f"messages[{i}]"))
    return out


def _message(message: object, param: str) -> list[Message]:
    if not isinstance(message, dict):
        raise InvalidRequest(f"{param} must be an object", param=param)
    role = message.get("role")
    if role not in ("user", "assistant"):
        raise InvalidRequest(
            f"{param}.role must be user or assistant, not {role!r}", param=f"{param}.role"
        )
    content = message.get("content")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list):
        raise InvalidRequest(
            f"{param}.content must be a string or a list of content blocks",
            param=f"{param}.content",
        )
    if role == "user":
        return _user(content, f"{param}.content")
    return [_assistant(content, f"{param}.content")]


def _user(content: list[Any], param: str) -> list[Message]:
    """One user turn: a tool message per tool result, then what the user wrote.

    OpenAI wants tool results right after the assistant turn that called the tools,
    so they go first even where the Anthropic turn put text before them.
    """
    out: list[Message] = []
    parts: list[Block] = []
    for j, raw in enumerate(content):
        where = f"{param}[{j}]"
        block = _typed(raw, where)
        kind = block["type"]
        if kind == "tool_result":
            out.append(_tool_result(block, where))
        elif kind == "text":
            parts.append({"type": "text", "text": _text(block, where)})
        elif kind == "image":
            parts.append(_image(block, where))
        elif kind not in DROPPED:
            raise _unsupported(kind, where)
    if len(parts) == 1 and parts[0]["type"] == "text":
        out.append({"role": "user", "content": parts[0]["text"]})
    elif parts:
        out.append({"role": "user", "content": parts})
    return out


def _assistant(content: list[Any], param: str) -> Message:
    texts: list[str] = []
    calls: list[Block] = []
    for j, raw in enumerate(content):
        where = f"{param}[{j}]"
        block = _typed(raw, where)
        kind = block["type"]
        if kind == "text":
            texts.append(_text(block, where))
        elif kind == "tool_use":
            calls.append(_tool_call(block, where))
        elif kind not in DROPPED:
            raise _unsupported(kind, where)
    # Anthropic splits one reply into several text blocks (around citations, tool
    # calls); they read as one text. OpenAI wants null content beside tool calls only.
    message: Message = {
        "role": "assistant",
        "content": "".join(texts) if texts or not calls else None,
    }
    if calls:
        message["tool_calls"] = calls
    return message


def _typed(block: object, param: str) -> Block:
    """``block``, checked to be an object with a string ``type``."""
    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
        raise InvalidRequest(f"{param} must be an object with a string `type`", param=param)
    return block


def _text(block: Block, param: str) -> str:
    text = block.get("text")
    if not isinstance(text, str):
        raise InvalidRequest(f"{param}.text must be a string", param=f"{param}.text")
    return text


def _unsupported(kind: str, param: str) -> UnsupportedByProvider:
    return UnsupportedByProvider(
        f"{param}: content blocks of type {kind!r} are not supported by this model's "
        "OpenAI-compatible upstream",
        param=param,
    )


def _image(block: Block, param: str) -> Block:
    source = block.get("source")
    source = source if isinstance(source, dict) else {}
    return {"type": "image_url", "image_url": {"url": _image_url(source, param)}}


def _image_url(source: dict[str, Any], param: str) -> str:
    kind = source.get("type")
    if kind == "base64":
        media_type, data = source.get("media_type"), source.get("data")
        if not isinstance(media_type, str) or not isinstance(data, str):
            raise InvalidRequest(f"{param}.source needs string media_type and data", param=param)
        return f"data:{media_type};base64,{data}"
    url = source.get("url")
    if kind == "url" and isinstance(url, str):
        return url
    if kind == "url":
        raise InvalidRequest(f"{param}.source.url must be a string", param=param)
    raise UnsupportedByProvider(
        f"{param}: image sources of type {kind!r} are not supported by this model's "
        "OpenAI-compatible upstream",
        param=param,
    )


def _tool_call(block: Block, param: str) -> Block:
    call_id, name = block.get("id"), block.get("name")
    if not isinstance(call_id, str) or not isinstance(name, str):
        raise InvalidRequest(f"{param} needs a string `id` and `name`", param=param)
    tool_input = block.get("input", {})
    if not isinstance(tool_input, dict):
        raise InvalidRequest(f"{param}.input must be an object", param=f"{param}.input")
    arguments = orjson.dumps(tool_input).decode()
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _tool_result(block: Block, param: str) -> Message:
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str) or not call_id:
        raise InvalidRequest(f"{param}.tool_use_id is required", param=f"{param}.tool_use_id")
    text = _result_text(block.get("content"), f"{param}.content")
    if block.get("is_error") is True:
        # OpenAI tool messages have no error flag; the model must still see the failure.
        text = f"Error: {text}"
    return {"role": "tool", "tool_call_id": call_id, "content": text}


def _result_text(content: object, param: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidRequest(f"{param} must be a string or a list of blocks", param=param)
    texts = []
    for k, raw in enumerate(content):
        where = f"{param}[{k}]"
        block = _typed(raw, where)
        if block["type"] != "text":
            raise _unsupported(block["type"], where)  # OpenAI tool messages carry text only
        texts.append(_text(block, where))
    # Separate blocks are separate pieces of output; gluing them would join words.
    return "\n".join(texts)


def _stop_sequences(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return value
    raise InvalidRequest("`stop_sequences` must be a list of strings", param="stop_sequences")


def _tooling(body: dict[str, Any]) -> dict[str, Any]:
    """``tools``, ``tool_choice`` and ``parallel_tool_calls`` for OpenAI."""
    tools = body.get("tools")
    if tools is None:
        return {}
    if not isinstance(tools, list):
        raise InvalidRequest("`tools` must be a list", param="tools")
    if not tools:
        return {}  # OpenAI rejects tool_choice and parallel_tool_calls without tools
    out: dict[str, Any] = {"tools": [_tool(tool, f"tools[{i}]") for i, tool in enumerate(tools)]}
    choice = body.get("tool_choice")
    if choice is not None:
        out.update(_tool_choice(choice))
    return out


def _tool(tool: object, param: str) -> Block:
    if not isinstance(tool, dict):
        raise InvalidRequest(f"{param} must be an object", param=param)
    if tool.get("type") not in (None, "custom"):
        raise UnsupportedByProvider(
            f"{param}: Anthropic server tools ({tool['type']!r}) are not supported by this "
            "model's OpenAI-compatible upstream",
            param=param,
        )
    name, schema = tool.get("name"), tool.get("input_schema")
    if not isinstance(name, str) or not name:
        raise InvalidRequest(f"{param}.name is required", param=f"{param}.name")
    if not isinstance(schema, dict):
        raise InvalidRequest(
            f"{param}.input_schema must be an object", param=f"{param}.input_schema"
        )
    function: Block = {"name": name}
    if isinstance(tool.get("description"), str):
        function["description"] = tool["description"]
    function["parameters"] = schema
    return {"type": "function", "function": function}


_CHOICES = {"auto": "auto", "any": "required", "none": "none"}


def _tool_choice(choice: object) -> dict[str, Any]:
    kind = choice.get("type") if isinstance(choice, dict) else None
    name = choice.get("name") if isinstance(choice, dict) else None
    out: dict[str, Any] = {}
    if isinstance(kind, str) and kind in _CHOICES:
        out["tool_choice"] = _CHOICES[kind]
    elif kind == "tool" and isinstance(name, str):
        out["tool_choice"] = {"type": "function", "function": {"name": name}}
    else:
        raise InvalidRequest(
            "`tool_choice` must be auto, any, none or a tool with a name", param="tool_choice"
        )
    if isinstance(choice, dict) and choice.get("disable_parallel_tool_use") is True:
        out["parallel_tool_calls"] = False
    return out


# ---- errors in Anthropic's shape ----

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    # Anthropic says overloaded with 529; our 503 means the same: no capacity now.
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def error_type(status: int) -> str:
    """Anthropic's error ``type`` for an HTTP status (its docs' table, then by class)."""
    default = "invalid_request_error" if 400 <= status < 500 else "api_error"
    return ERROR_TYPES.get(status, default)


def error_body(status: int, message: str) -> bytes:
    """An error answer as Anthropic sends it."""
    return orjson.dumps(_error(status, message))


def error_event(status: int, message: str) -> bytes:
    """A failure after the stream began, as Anthropic's SSE ``error`` event."""
    return encode("error", _error(status, message))


def _error(status: int, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type(status), "message": message}}
