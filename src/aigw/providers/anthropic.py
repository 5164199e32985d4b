"""Anthropic's Messages API behind OpenAI's chat dialect.

Clients speak OpenAI chat completions; ``chat_to_messages`` turns their body into a
Messages request and ``messages_to_chat`` turns the answer back. Streams go through
``StreamTranslator`` (``anthropic_stream.py``). All three are pure; the provider
class only adds the clock and the byte encoding.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from aigw.errors import InvalidRequest, UnsupportedByProvider, UpstreamError, UpstreamProtocolError
from aigw.providers.anthropic_stream import (
    StreamTranslator,
    finish_reason,
    openai_usage,
    prompt_tokens,
    token_count,
)
from aigw.providers.base import (
    Provider,
    UpstreamCall,
    forwarded_body,
    relay_noting_usage,
    usage_from,
)
from aigw.providers.sse import DONE, SSEDecoder, SSEEvent, frame
from aigw.settings import DeploymentSettings
from aigw.types import Endpoint, GatewayRequest, Usage

ANTHROPIC_VERSION = "2023-06-01"

Block = dict[str, Any]


class AnthropicProvider(Provider):
    kind = "anthropic"

    def __init__(
        self, settings: DeploymentSettings, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(settings)
        self.clock = clock
        # Users often copy OpenAI-style base URLs ending in /v1; avoid /v1/v1/messages.
        self.target = self.prefix.removesuffix("/v1").encode() + b"/v1/messages"

    def auth_headers(self, api_key: str) -> dict[str, str]:
        headers = {"content-type": "application/json", "anthropic-version": ANTHROPIC_VERSION}
        if api_key:
            headers["x-api-key"] = api_key
        return headers

    def build(self, req: GatewayRequest) -> UpstreamCall:
        if req.endpoint is Endpoint.MESSAGES:
            return UpstreamCall(self.target, self.headers, forwarded_body(req, self.upstream_model))
        if req.endpoint is not Endpoint.CHAT:
            raise UnsupportedByProvider(
                f"model {req.model!r} is served by Anthropic, which supports only "
                f"chat completions, not the {req.endpoint} endpoint"
            )
        body = chat_to_messages(req.body, self.upstream_model, self.settings.max_tokens)
        return UpstreamCall(self.target, self.headers, orjson.dumps(body))

    def parse(self, req: GatewayRequest, body: bytes) -> bytes:
        if req.endpoint is Endpoint.MESSAGES:
            req.usage_body = body
            return body
        data = _json_object(body, "response")
        chat = messages_to_chat(data, req.model, req.request_id, int(self.clock()))
        req.usage = usage_from(chat)
        return orjson.dumps(chat)

    def relay(self, req: GatewayRequest, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        if req.endpoint is Endpoint.MESSAGES:
            return relay_noting_usage(req, chunks)
        return self._translate(req, chunks)

    async def _translate(
        self, req: GatewayRequest, chunks: AsyncIterator[bytes]
    ) -> AsyncIterator[bytes]:
        options = req.body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        translator = StreamTranslator(req.model, int(self.clock()), include_usage, req.request_id)
        decoder = SSEDecoder()
        async for chunk in chunks:
            if translator.done:
                continue  # read to the end so the upstream connection can be reused
            for event in decoder.feed(chunk):
                for out in translator.feed(*_decode(event)):
                    yield frame(orjson.dumps(out))
                if translator.usage is not None:
                    req.usage = translator.usage
                if translator.done:
                    yield DONE
                    break
        if not translator.done:
            raise UpstreamError("upstream stream ended early")


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise UpstreamProtocolError(f"Anthropic sent a {what} that is not a JSON object")
    return value


def _decode(event: SSEEvent) -> tuple[str, dict[str, Any]]:
    data = _json_object(event.data, "stream event")
    # Every Anthropic event repeats its name as ``type``; trust either.
    return event.event or str(data.get("type", "")), data


# ---- response: Anthropic message → OpenAI chat.completion ----


def messages_to_chat(
    data: dict[str, Any], model: str, request_id: str, created: int
) -> dict[str, Any]:
    """An Anthropic ``message`` object as an OpenAI ``chat.completion`` object."""
    blocks = [b for b in data.get("content") or [] if isinstance(b, dict)]
    texts = [str(b.get("text", "")) for b in blocks if b.get("type") == "text"]
    calls = [_tool_call(b) for b in blocks if b.get("type") == "tool_use"]
    message: dict[str, Any] = {
        "role": "assistant",
        "content": None if calls and not texts else "".join(texts),
    }
    if calls:
        message["tool_calls"] = calls
    raw_usage = data.get("usage")
    if not isinstance(raw_usage, dict):
        raw_usage = {}
    usage = Usage(prompt_tokens(raw_usage), token_count(raw_usage.get("output_tokens")))
    choice = {
        "index": 0,
        "message": message,
        "logprobs": None,
        "finish_reason": finish_reason(data.get("stop_reason")) or "stop",
    }
    return {
        "id": f"chatcmpl-{data.get('id') or request_id}",
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [choice],
        "usage": openai_usage(usage, token_count(raw_usage.get("cache_read_input_tokens"))),
    }


def _tool_call(block: Block) -> dict[str, Any]:
    arguments = orjson.dumps(block.get("input") or {}).decode()
    return {
        "id": block.get("id"),
        "type": "function",
        "function": {"name": block.get("name"), "arguments": arguments},
    }


# ---- request: OpenAI chat body → Anthropic Messages body ----


def chat_to_messages(
    body: dict[str, Any], upstream_model: str, default_max_tokens: int
) -> dict[str, Any]:
    """An OpenAI chat completions body as an Anthropic Messages body.

    Parameters Anthropic has no use for are dropped; shapes it cannot express raise
    ``InvalidRequest`` naming the offending ``param``.
    """
    if body.get("n") not in (None, 1):
        raise InvalidRequest("Anthropic models return one choice; `n` must be 1", param="n")
    system, messages = _conversation(body.get("messages"))
    out: dict[str, Any] = {
        "model": upstream_model,
        "max_tokens": _max_tokens(body, default_max_tokens),
        "messages": messages,
    }
    if system:
        out["system"] = system
    for name in ("temperature", "top_p", "top_k"):
        if body.get(name) is not None:
            out[name] = body[name]
    stop = _stop(body.get("stop"))
    if stop:
        out["stop_sequences"] = stop
    if body.get("stream") is True:
        out["stream"] = True
    out.update(_tooling(body))
    user = body.get("user")
    if isinstance(user, str) and user:
        out["metadata"] = {"user_id": user}
    return out


def _conversation(raw: object) -> tuple[str | list[Block], list[Block]]:
    """The system prompt and the alternating user/assistant turns of ``messages``."""
    if not isinstance(raw, list) or not raw:
        raise InvalidRequest("`messages` must be a non-empty list", param="messages")
    system: list[str | list[Block]] = []
    turns: list[Block] = []
    for i, message in enumerate(raw):
        param = f"messages[{i}]"
        if not isinstance(message, dict):
            raise InvalidRequest(f"{param} must be an object", param=param)
        if message.get("role") in ("system", "developer"):
            system.append(_system_content(message.get("content"), f"{param}.content"))
            continue
        role, blocks = _turn(message, param)
        # Anthropic requires roles to alternate; OpenAI clients often send runs of
        # one role (several tool results in a row, a tool result then a user note).
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        elif blocks:
            turns.append({"role": role, "content": blocks})
    if not turns:
        raise InvalidRequest(
            "`messages` needs at least one user or assistant message", param="messages"
        )
    return _system(system), turns


def _turn(message: dict[str, Any], param: str) -> tuple[str, list[Block]]:
    role = message.get("role")
    content = message.get("content")
    if role == "user":
        return "user", _blocks(content, f"{param}.content")
    if role == "assistant":
        calls = _tool_uses(message.get("tool_calls"), f"{param}.tool_calls")
        return "assistant", _blocks(content, f"{param}.content") + calls
    if role == "tool":
        return "user", [_tool_result(message, param)]
    if role is None:
        raise InvalidRequest(f"{param}.role is required", param=f"{param}.role")
    raise InvalidRequest(
        f"{param}.role must be system, developer, user, assistant or tool, not {role!r}",
        param=f"{param}.role",
    )


def _system_content(content: object, param: str) -> str | list[Block]:
    if isinstance(content, str):
        return content
    blocks = _blocks(content, param)
    if any(b["type"] != "text" for b in blocks):
        raise InvalidRequest(f"{param}: a system message may hold only text", param=param)
    return blocks


def _system(entries: list[str | list[Block]]) -> str | list[Block]:
    texts = [e for e in entries if isinstance(e, str)]
    if len(texts) == len(entries):
        return "\n\n".join(t for t in texts if t)
    blocks: list[Block] = []
    for entry in entries:
        blocks.extend(_blocks(entry, "system") if isinstance(entry, str) else entry)
    return blocks


def _blocks(content: object, param: str) -> list[Block]:
    """OpenAI message content (a string or a list of parts) as Anthropic blocks."""
    if content is None:
        return []
    if isinstance(content, str):
        # Anthropic rejects empty text blocks; an empty string says nothing anyway.
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise InvalidRequest(f"{param} must be a string or a list of parts", param=param)
    blocks = [_part(part, f"{param}[{j}]") for j, part in enumerate(content)]
    return [b for b in blocks if b is not None]


def _part(part: object, param: str) -> Block | None:
    if not isinstance(part, dict):
        raise InvalidRequest(f"{param} must be an object", param=param)
    kind = part.get("type")
    if kind in ("text", "refusal"):
        text = part.get(kind)
        if not isinstance(text, str):
            raise InvalidRequest(f"{param}.{kind} must be a string", param=param)
        return {"type": "text", "text": text} if text else None
    if kind == "image_url":
        return _image(part.get("image_url"), param)
    raise UnsupportedByProvider(
        f"{param}: content parts of type {kind!r} are not supported for Anthropic models",
        param=param,
    )


def _image(value: object, param: str) -> Block:
    url = value.get("url") if isinstance(value, dict) else value
    if not isinstance(url, str):
        raise InvalidRequest(f"{param}.image_url.url must be a string", param=param)
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    header, comma, data = url.removeprefix("data:").partition(",")
    if not url.startswith("data:") or not comma or not header.endswith(";base64"):
        raise InvalidRequest(
            f"{param}.image_url.url must be an http(s) URL or a base64 data URL",
            param=param,
        )
    media_type = header.partition(";")[0]
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}


def _tool_uses(calls: object, param: str) -> list[Block]:
    if calls is None:
        return []
    if not isinstance(calls, list):
        raise InvalidRequest(f"{param} must be a list", param=param)
    return [_tool_use(call, f"{param}[{k}]") for k, call in enumerate(calls)]


def _tool_use(call: object, param: str) -> Block:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(call, dict) or not isinstance(function, dict):
        raise InvalidRequest(f"{param} must be an object with a `function`", param=param)
    if not isinstance(call.get("id"), str) or not isinstance(function.get("name"), str):
        raise InvalidRequest(f"{param} needs a string `id` and `function.name`", param=param)
    arguments = _arguments(function.get("arguments"), f"{param}.function.arguments")
    return {"type": "tool_use", "id": call["id"], "name": function["name"], "input": arguments}


def _arguments(raw: object, param: str) -> dict[str, Any]:
    if raw is None or raw == "":
        return {}  # some clients send no arguments for a function without parameters
    try:
        value = orjson.loads(raw) if isinstance(raw, str) else raw
    except orjson.JSONDecodeError:
        raise InvalidRequest(f"{param} is not valid JSON", param=param) from None
    if not isinstance(value, dict):
        raise InvalidRequest(f"{param} must encode a JSON object", param=param)
    return value


def _tool_result(message: dict[str, Any], param: str) -> Block:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise InvalidRequest(f"{param}.tool_call_id is required", param=f"{param}.tool_call_id")
    result: Block = {"type": "tool_result", "tool_use_id": call_id}
    content = message.get("content")
    if isinstance(content, str):
        if content:
            result["content"] = content
    elif content is not None:
        result["content"] = _blocks(content, f"{param}.content")
    return result


def _max_tokens(body: dict[str, Any], default: int) -> int:
    # Anthropic requires max_tokens; OpenAI makes it optional, so the deployment's
    # setting fills in. max_completion_tokens is the newer OpenAI name and wins.
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InvalidRequest(f"`{name}` must be a positive integer", param=name)
        return value
    return default


def _stop(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return value
    raise InvalidRequest("`stop` must be a string or a list of strings", param="stop")


def _tooling(body: dict[str, Any]) -> dict[str, Any]:
    """``tools`` and ``tool_choice`` for Anthropic, folding in ``parallel_tool_calls``."""
    out: dict[str, Any] = {}
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise InvalidRequest("`tools` must be a list", param="tools")
        out["tools"] = [_tool(tool, f"tools[{i}]") for i, tool in enumerate(tools)]
    choice = _tool_choice(body.get("tool_choice"))
    serial = body.get("parallel_tool_calls") is False
    if serial and (tools or choice) and (choice or {}).get("type") != "none":
        choice = {**(choice or {"type": "auto"}), "disable_parallel_tool_use": True}
    if choice:
        out["tool_choice"] = choice
    return out


def _tool(tool: object, param: str) -> Block:
    function = tool.get("function") if isinstance(tool, dict) else None
    if not isinstance(tool, dict) or tool.get("type", "function") != "function":
        raise UnsupportedByProvider(
            f"{param}: only function tools are supported for Anthropic models", param=param
        )
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise InvalidRequest(f"{param}.function.name is required", param=param)
    out: Block = {"name": function["name"]}
    if isinstance(function.get("description"), str):
        out["description"] = function["description"]
    # Anthropic requires a schema; OpenAI lets a function without parameters omit it.
    out["input_schema"] = function.get("parameters") or {"type": "object", "properties": {}}
    return out


_CHOICES = {"auto": {"type": "auto"}, "required": {"type": "any"}, "none": {"type": "none"}}


def _tool_choice(value: object) -> Block | None:
    if value is None:
        return None
    if isinstance(value, str) and value in _CHOICES:
        return dict(_CHOICES[value])
    function = value.get("function") if isinstance(value, dict) else None
    if isinstance(function, dict) and isinstance(function.get("name"), str):
        return {"type": "tool", "name": function["name"]}
    raise InvalidRequest(
        "`tool_choice` must be auto, required, none or a function", param="tool_choice"
    )
