"""Anthropic Messages streaming events → OpenAI ``chat.completion.chunk`` objects.

``StreamTranslator`` is pure: it is fed one decoded event at a time and returns the
chunks to send, so the whole mapping is testable without a socket or an event loop.
The finish-reason and usage mappings live here too because the non-streamed
translation in ``anthropic.py`` shares them.
"""

from __future__ import annotations

from typing import Any

from aigw.errors import UpstreamError
from aigw.types import Usage

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "pause_turn": "stop",
    "refusal": "content_filter",
}


def finish_reason(stop_reason: object) -> str | None:
    """OpenAI's ``finish_reason`` for an Anthropic ``stop_reason``."""
    if stop_reason is None:
        return None
    # A stop reason added after this was written still ended the turn.
    return FINISH_REASONS.get(str(stop_reason), "stop")


def prompt_tokens(usage: dict[str, Any]) -> int:
    """Anthropic counts cached input apart from ``input_tokens``; OpenAI counts it all."""
    fields = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    return sum(token_count(usage.get(name)) for name in fields)


def openai_usage(usage: Usage, cached: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }
    if cached:
        out["prompt_tokens_details"] = {"cached_tokens": cached}
    return out


def token_count(value: object) -> int:
    """A count from an upstream usage object; anything but an integer counts as 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


class StreamTranslator:
    """Feed it Anthropic stream events in order; it returns OpenAI chunks to emit.

    ``done`` turns true at ``message_stop``; ``usage`` is set once the upstream has
    reported any token counts. An ``error`` event raises ``UpstreamError``.
    """

    def __init__(self, model: str, created: int, include_usage: bool, fallback_id: str) -> None:
        self.model = model
        self.created = created
        self.include_usage = include_usage
        self.id = f"chatcmpl-{fallback_id}"
        self.done = False
        self.usage: Usage | None = None
        self._cached = 0
        self._tools: dict[object, int] = {}  # content block index → OpenAI tool call index

    def feed(self, event: str, data: dict[str, Any]) -> list[dict[str, Any]]:
        handler = self._handlers.get(event)
        # ping, content_block_stop and event kinds Anthropic may add carry nothing for us.
        return handler(self, data) if handler else []

    def _message_start(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        message = _dict(data.get("message"))
        if isinstance(message.get("id"), str):
            self.id = f"chatcmpl-{message['id']}"
        self._count(_dict(message.get("usage")))
        return [self._chunk({"role": "assistant", "content": ""})]

    def _block_start(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        block = _dict(data.get("content_block"))
        if block.get("type") == "text" and block.get("text"):
            return [self._chunk({"content": block["text"]})]
        if block.get("type") != "tool_use":
            return []  # thinking and server-side tool blocks have no OpenAI counterpart
        index = len(self._tools)
        self._tools[data.get("index")] = index
        call = {
            "index": index,
            "id": block.get("id"),
            "type": "function",
            "function": {"name": block.get("name"), "arguments": ""},
        }
        return [self._chunk({"tool_calls": [call]})]

    def _block_delta(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        delta = _dict(data.get("delta"))
        kind = delta.get("type")
        if kind == "text_delta" and delta.get("text"):
            return [self._chunk({"content": delta["text"]})]
        if kind == "input_json_delta" and delta.get("partial_json"):
            index = self._tools.get(data.get("index"))
            if index is None:
                return []  # the input of a block we did not announce (a server tool)
            call = {"index": index, "function": {"arguments": delta["partial_json"]}}
            return [self._chunk({"tool_calls": [call]})]
        return []

    def _message_delta(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        self._count(_dict(data.get("usage")))
        reason = finish_reason(_dict(data.get("delta")).get("stop_reason"))
        return [self._chunk({}, reason)]

    def _message_stop(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        self.done = True
        if not self.include_usage:
            return []
        chunk = self._envelope([])
        chunk["usage"] = openai_usage(self.usage or Usage(), self._cached)
        return [chunk]

    def _error(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        error = _dict(data.get("error"))
        message = error.get("message") or "unknown error"
        kind = error.get("type") or "error"
        raise UpstreamError(f"upstream stream failed ({kind}): {message}")

    def _count(self, usage: dict[str, Any]) -> None:
        """Take the counts an event reports; Anthropic's counts are cumulative."""
        if not usage:
            return
        known = self.usage or Usage()
        prompt, completion = known.prompt_tokens, known.completion_tokens
        if isinstance(usage.get("input_tokens"), int):
            prompt = prompt_tokens(usage)
            self._cached = token_count(usage.get("cache_read_input_tokens"))
        if isinstance(usage.get("output_tokens"), int):
            completion = usage["output_tokens"]
        self.usage = Usage(prompt, completion)

    def _envelope(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }
        if self.include_usage:
            chunk["usage"] = None  # as OpenAI does: only the last chunk carries usage
        return chunk

    def _chunk(self, delta: dict[str, Any], reason: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}
        return self._envelope([choice])

    _handlers = {
        "message_start": _message_start,
        "content_block_start": _block_start,
        "content_block_delta": _block_delta,
        "message_delta": _message_delta,
        "message_stop": _message_stop,
        "error": _error,
    }
