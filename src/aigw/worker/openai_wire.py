"""The worker's OpenAI wire format, pure: request checks and answer shapes.

Turns request JSON into checked values (400s with the offending ``param``) and model
results into OpenAI-shaped JSON and SSE frames. No I/O; ``app.py`` does the routing.
"""

from __future__ import annotations

import base64
import sys
import time
from array import array
from dataclasses import dataclass
from typing import Any

import orjson

from aigw.errors import (
    InvalidRequest,
    MalformedJSON,
)
from aigw.providers.sse import DONE, frame
from aigw.worker.contract import Generated, GenerationRequest

MAX_STOP = 4  # OpenAI's limit on stop sequences
dumps = orjson.dumps


def json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedJSON(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    return body


def texts(value: object, param: str, limit: int) -> list[str]:
    """A string or a non-empty array of non-empty strings, at most ``limit`` of them."""
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not texts:
        raise InvalidRequest(
            f"`{param}` must be a string or a non-empty array of strings", param=param
        )
    if len(texts) > limit:
        raise InvalidRequest(
            f"`{param}` has {len(texts)} items; this model takes at most {limit}", param=param
        )
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text:
            raise InvalidRequest(f"`{param}[{i}]` must be a non-empty string", param=param)
    return texts


def messages(value: object) -> list[dict[str, object]]:
    """Chat messages with their content as plain text (text parts are joined)."""
    if not isinstance(value, list) or not value:
        raise InvalidRequest("`messages` must be a non-empty array", param="messages")
    out: list[dict[str, object]] = []
    for i, message in enumerate(value):
        role = message.get("role") if isinstance(message, dict) else None
        if not isinstance(role, str):
            raise InvalidRequest(f"`messages[{i}]` needs a string `role`", param="messages")
        out.append({"role": role, "content": content(message.get("content"), i)})
    return out


def content(content: object, i: int) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        parts = []
        for part in content:
            if not (isinstance(part, dict) and part.get("type") == "text"):
                raise InvalidRequest(
                    f"`messages[{i}].content`: only text parts are supported", param="messages"
                )
            text = part.get("text")
            if not isinstance(text, str):
                raise InvalidRequest(f"`messages[{i}].content`: a text part needs `text`")
            parts.append(text)
        return "".join(parts)
    raise InvalidRequest(f"`messages[{i}].content` must be a string or text parts")


def prompt(value: object) -> str:
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if not isinstance(value, str) or not value:
        raise InvalidRequest("`prompt` must be a non-empty string (one prompt)", param="prompt")
    return value


def generation_request(body: dict[str, Any], prompt: str, cap: int) -> GenerationRequest:
    n = body.get("n")
    if n is not None and n != 1:
        raise InvalidRequest("`n` must be 1: one choice per request", param="n")
    param = (
        "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    )
    limit = body.get(param)
    if limit is not None and (type(limit) is not int or limit < 1):
        raise InvalidRequest(f"`{param}` must be a positive integer", param=param)
    temperature = body.get("temperature")
    if temperature is None:
        temperature = 1.0  # OpenAI's default
    if type(temperature) not in (int, float) or not 0 <= temperature <= 2:
        raise InvalidRequest("`temperature` must be a number from 0 to 2", param="temperature")
    return GenerationRequest(
        prompt=prompt,
        max_new_tokens=min(limit or cap, cap),
        temperature=float(temperature),
        stop=stop(body.get("stop")),
    )


def stop(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if not (
        isinstance(stops, list)
        and len(stops) <= MAX_STOP
        and all(isinstance(s, str) and s for s in stops)
    ):
        raise InvalidRequest(
            f"`stop` must be a non-empty string or an array of up to {MAX_STOP}", param="stop"
        )
    return tuple(stops)


def encode_base64(vector: list[float]) -> str:
    packed = array("f", vector)
    if sys.byteorder != "little":
        packed.byteswap()  # OpenAI's base64 embeddings are little-endian float32
    return base64.b64encode(packed.tobytes()).decode("ascii")


# -- answer shapes (pure)


def usage(result: Generated) -> dict[str, int]:
    total = result.prompt_tokens + result.completion_tokens
    return {
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "total_tokens": total,
    }


@dataclass(frozen=True, slots=True)
class Shape:
    """One OpenAI answer dialect: chat completions, or (legacy) completions."""

    is_chat: bool
    ident: str
    created: int

    @classmethod
    def chat(cls, ident: str) -> Shape:
        return cls(True, ident, int(time.time()))

    @classmethod
    def completion(cls, ident: str) -> Shape:
        return cls(False, ident, int(time.time()))

    def whole(self, model: str, result: Generated) -> bytes:
        head = {"id": self.ident, "created": self.created, "model": model}
        if self.is_chat:
            message = {"role": "assistant", "content": result.text, "refusal": None}
            choice = {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": result.finish_reason,
            }
            return dumps(
                {
                    **head,
                    "object": "chat.completion",
                    "choices": [choice],
                    "usage": usage(result),
                    "system_fingerprint": None,
                }
            )
        choice = {
            "text": result.text,
            "index": 0,
            "logprobs": None,
            "finish_reason": result.finish_reason,
        }
        return dumps(
            {**head, "object": "text_completion", "choices": [choice], "usage": usage(result)}
        )

    def stream(self, model: str, include_usage: bool) -> Frames:
        return Frames(self, model, include_usage)


class Frames:
    """The SSE frames of one stream, spliced around a fixed envelope: a piece costs one
    small ``dumps``, not a dict build."""

    def __init__(self, shape: Shape, model: str, include_usage: bool) -> None:
        kind = b"chat.completion.chunk" if shape.is_chat else b"text_completion"
        envelope = b'{"id":%b,"object":"%b","created":%d,"model":%b,' % (
            dumps(shape.ident),
            kind,
            shape.created,
            dumps(model),
        )
        self._envelope = envelope
        self._chat = shape.is_chat
        self._include_usage = include_usage
        tail = b',"usage":null}' if include_usage else b"}"
        if shape.is_chat:
            self._open = envelope + b'"choices":[{"index":0,"delta":'
            self._close = b',"logprobs":null,"finish_reason":%b}]' + tail
            role = b'{"role":"assistant","content":""}'
            self.opening = frame(self._open + role + self._close % b"null")
        else:
            self._open = envelope + b'"choices":[{"text":'
            self._close = b',"index":0,"logprobs":null,"finish_reason":%b}]' + tail
            self.opening = b""
        self._pending = self._close % b"null"

    def piece(self, text: str) -> bytes:
        body = b'{"content":%b}' % dumps(text) if self._chat else dumps(text)
        return frame(self._open + body + self._pending)

    def closing(self, result: Generated) -> bytes:
        empty = b"{}" if self._chat else b'""'
        out = frame(self._open + empty + self._close % dumps(result.finish_reason))
        if self._include_usage:
            out += frame(self._envelope + b'"choices":[],"usage":%b}' % dumps(usage(result)))
        return out + DONE
