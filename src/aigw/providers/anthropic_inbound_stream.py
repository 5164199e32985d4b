"""OpenAI answers → Anthropic Messages answers, whole and streamed.

The response half of ``anthropic_inbound.py``: a client speaking the Anthropic
Messages API is served by an OpenAI-dialect upstream. ``chat_to_message`` translates a
``chat.completion``; ``ChunkTranslator`` is fed one ``chat.completion.chunk`` at a time
and returns the ``(event, data)`` pairs to send; ``relay_as_messages`` is the thin
async adapter that decodes and encodes the bytes. All but the adapter are pure.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from aigw.errors import UpstreamError, UpstreamProtocolError
from aigw.providers.anthropic_stream import prompt_tokens, token_count
from aigw.providers.sse import SSEDecoder, SSEEvent

Block = dict[str, Any]
Event = tuple[str, dict[str, Any]]

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def stop_reason(finish_reason: object, used_tools: bool) -> str:
    """Anthropic's ``stop_reason`` for an OpenAI ``finish_reason``."""
    # No reason, or one added after this was written, still ended the turn.
    reason = "end_turn"
    if isinstance(finish_reason, str):
        reason = STOP_REASONS.get(finish_reason, reason)
    # Some OpenAI-compatible servers end a tool-calling turn with "stop"; Anthropic
    # clients run the tools only when the stop reason says tool_use.
    return "tool_use" if used_tools and reason == "end_turn" else reason


def message_usage(usage: dict[str, Any]) -> dict[str, int]:
    """OpenAI ``usage`` as Anthropic's: cache reads are counted apart from input_tokens."""
    prompt = token_count(usage.get("prompt_tokens"))
    details = usage.get("prompt_tokens_details")
    cached = token_count(details.get("cached_tokens")) if isinstance(details, dict) else 0
    cached = min(cached, prompt)
    out = {
        "input_tokens": prompt - cached,
        "output_tokens": token_count(usage.get("completion_tokens")),
    }
    if cached:
        out["cache_read_input_tokens"] = cached
    return out


def chat_to_message(data: dict[str, Any], model: str, *, fallback_id: str = "unknown") -> Block:
    """An OpenAI ``chat.completion`` as an Anthropic ``message``.

    The id is the completion's with ``msg_`` for ``chatcmpl-`` (``fallback_id`` when it
    has none). Raises ``UpstreamProtocolError`` if there is no choice to translate.
    """
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise UpstreamProtocolError("upstream answer has no choices")
    message = choices[0].get("message")
    message = message if isinstance(message, dict) else {}
    chat_id = data.get("id")
    suffix = chat_id.removeprefix("chatcmpl-") if isinstance(chat_id, str) and chat_id else ""
    message_id = f"msg_{suffix or fallback_id}"
    calls = _list(message.get("tool_calls"))
    uses = [_tool_use(c, f"toolu_{suffix or fallback_id}_{k}") for k, c in enumerate(calls)]
    usage = data.get("usage")
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": _texts(message) + uses or [{"type": "text", "text": ""}],
        "stop_reason": stop_reason(choices[0].get("finish_reason"), bool(uses)),
        "stop_sequence": None,  # OpenAI does not say which stop sequence matched
        "usage": message_usage(usage if isinstance(usage, dict) else {}),
    }


def _texts(message: dict[str, Any]) -> list[Block]:
    # A refusal is the model's answer too; the client should see it.
    texts = (message.get("content"), message.get("refusal"))
    return [{"type": "text", "text": t} for t in texts if isinstance(t, str) and t]


def _tool_use(call: object, fallback_id: str) -> Block:
    call = call if isinstance(call, dict) else {}
    function = call.get("function")
    function = function if isinstance(function, dict) else {}
    call_id = call.get("id")
    return {
        "type": "tool_use",
        # The client echoes the id in its tool_result, which must not be empty.
        "id": call_id if isinstance(call_id, str) and call_id else fallback_id,
        "name": str(function.get("name") or ""),
        "input": _tool_input(function.get("arguments")),
    }


def _tool_input(arguments: object) -> dict[str, Any]:
    if isinstance(arguments, dict):
        return arguments  # a few compatible servers send the object itself
    try:
        value = orjson.loads(arguments) if isinstance(arguments, str) else None
    except orjson.JSONDecodeError:
        value = None
    # Anthropic's input is always an object; a model's broken JSON cannot be repaired.
    return value if isinstance(value, dict) else {}


def usage_of_message(data: dict[str, Any]) -> tuple[int, int] | None:
    """``(prompt, completion)`` tokens of an Anthropic message, cached input included."""
    usage = data.get("usage")
    if not isinstance(usage, dict):
        return None
    return prompt_tokens(usage), token_count(usage.get("output_tokens"))


# ---- streams: OpenAI chunks → Anthropic events ----


def encode(event: str, data: dict[str, Any]) -> bytes:
    """One Anthropic SSE frame: the event name, then its JSON."""
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class ChunkTranslator:
    """Feed it OpenAI stream chunks in order; it returns Anthropic events to emit.

    ``message_id`` is used as is. ``finish()`` ends the message and must be called
    once the upstream is done; ``usage`` is ``(prompt, completion)`` once reported.
    A chunk carrying ``error`` raises ``UpstreamError``.
    """

    def __init__(self, model: str, message_id: str) -> None:
        self.model = model
        self.message_id = message_id
        self.finish_reason: str | None = None
        self.done = False
        self._started = False
        self._blocks = 0  # blocks started so far; the last one is the only one open
        self._open: str | None = None  # the type of the open block, if one is
        self._tools: dict[int | str, int] = {}  # OpenAI tool call key → block index
        self._last_tool: int | str = 0
        self._counts: dict[str, int] | None = None

    @property
    def usage(self) -> tuple[int, int] | None:
        if self._counts is None:
            return None
        prompt = self._counts["input_tokens"] + self._counts.get("cache_read_input_tokens", 0)
        return prompt, self._counts["output_tokens"]

    def feed(self, chunk: dict[str, Any]) -> list[Event]:
        if self.done:
            return []
        _raise_for_error(chunk)
        events = self._start()
        if isinstance(chunk.get("usage"), dict):
            self._counts = message_usage(chunk["usage"])
        for choice in _list(chunk.get("choices")):
            # The request never asks for n > 1, so only the first choice exists.
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                events += self._choice(choice)
        return events

    def finish(self) -> list[Event]:
        if self.done:
            return []
        self.done = True
        events = self._start()
        if self._blocks == 0:
            # Match the non-streamed answer, whose content is never empty.
            events.append(self._block_start({"type": "text", "text": ""}))
        events += self._close()
        reason = stop_reason(self.finish_reason, bool(self._tools))
        counts = self._counts or {"input_tokens": 0, "output_tokens": 0}
        delta = {"stop_reason": reason, "stop_sequence": None}
        events.append(("message_delta", {"type": "message_delta", "delta": delta, "usage": counts}))
        events.append(("message_stop", {"type": "message_stop"}))
        return events

    def _start(self) -> list[Event]:
        if self._started:
            return []
        self._started = True
        message: dict[str, Any] = {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            # Counts arrive in the upstream's last chunk; message_delta reports them.
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return [("message_start", {"type": "message_start", "message": message})]

    def _choice(self, choice: dict[str, Any]) -> list[Event]:
        delta = choice.get("delta")
        delta = delta if isinstance(delta, dict) else {}
        events: list[Event] = []
        for key in ("content", "refusal"):
            if isinstance(delta.get(key), str) and delta[key]:
                events += self._text(delta[key])
        for call in _list(delta.get("tool_calls")):
            if isinstance(call, dict):
                events += self._tool_call(call)
        if isinstance(choice.get("finish_reason"), str):
            self.finish_reason = choice["finish_reason"]
        return events

    def _text(self, text: str) -> list[Event]:
        events: list[Event] = []
        if self._open != "text":
            events = [*self._close(), self._block_start({"type": "text", "text": ""})]
        return [*events, self._delta(self._blocks - 1, {"type": "text_delta", "text": text})]

    def _tool_call(self, call: dict[str, Any]) -> list[Event]:
        key = self._tool_key(call)
        function = call.get("function")
        function = function if isinstance(function, dict) else {}
        events: list[Event] = []
        if key not in self._tools:
            call_id = call.get("id")
            if not isinstance(call_id, str) or not call_id:
                call_id = f"toolu_{self.message_id}_{self._blocks}"
            name = function.get("name")
            block = {"type": "tool_use", "id": call_id, "name": str(name or ""), "input": {}}
            events = [*self._close(), self._block_start(block)]
            self._tools[key] = self._blocks - 1
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            # OpenAI sends calls one after another. Should an odd upstream interleave
            # them, the fragment still goes to its own block: clients index by block.
            partial = {"type": "input_json_delta", "partial_json": arguments}
            events.append(self._delta(self._tools[key], partial))
        return events

    def _tool_key(self, call: dict[str, Any]) -> int | str:
        # OpenAI numbers calls with ``index``; a few compatible servers omit it and
        # name the call by id instead, or only on its first fragment.
        index, call_id = call.get("index"), call.get("id")
        if isinstance(index, int) and not isinstance(index, bool):
            self._last_tool = index
        elif isinstance(call_id, str) and call_id:
            self._last_tool = call_id
        return self._last_tool

    def _block_start(self, block: dict[str, Any]) -> Event:
        self._open = block["type"]
        self._blocks += 1
        data = {"type": "content_block_start", "index": self._blocks - 1, "content_block": block}
        return "content_block_start", data

    def _delta(self, index: int, delta: dict[str, Any]) -> Event:
        return "content_block_delta", {
            "type": "content_block_delta",
            "index": index,
            "delta": delta,
        }

    def _close(self) -> list[Event]:
        if self._open is None:
            return []
        self._open = None
        return [("content_block_stop", {"type": "content_block_stop", "index": self._blocks - 1})]


def _raise_for_error(chunk: dict[str, Any]) -> None:
    error = chunk.get("error")
    if error is None:
        return
    message = error.get("message") if isinstance(error, dict) else error
    raise UpstreamError(f"upstream stream failed: {message or 'unknown error'}")


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


async def relay_as_messages(
    chunks: AsyncIterator[bytes],
    model: str,
    message_id: str,
    on_usage: Callable[[int, int], None],
) -> AsyncIterator[bytes]:
    """An upstream OpenAI SSE stream as Anthropic Messages SSE frames.

    ``on_usage(prompt, completion)`` is called as soon as the upstream reports usage,
    so it is known even if the client goes away before the end.
    """
    translator = ChunkTranslator(model, message_id)
    decoder = SSEDecoder()
    seen_done = False
    async for data in chunks:
        for event in decoder.feed(data):
            if seen_done:
                continue  # read to the end so the upstream connection can be reused
            seen_done = event.data == b"[DONE]"
            for frame in _translate(translator, event, on_usage):
                yield frame
    if not seen_done and translator.finish_reason is None:
        # Closing the message here would pass a cut-off answer off as complete.
        raise UpstreamError("upstream stream ended early")
    for name, payload in translator.finish():
        yield encode(name, payload)


def _translate(
    translator: ChunkTranslator, event: SSEEvent, on_usage: Callable[[int, int], None]
) -> list[bytes]:
    if event.data in (b"[DONE]", b""):
        return []
    before = translator.usage
    events = translator.feed(_chunk(event.data))
    usage = translator.usage
    if usage is not None and usage != before:
        on_usage(*usage)  # before yielding: the client may leave at any frame
    return [encode(name, payload) for name, payload in events]


def _chunk(data: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise UpstreamProtocolError("upstream sent a stream chunk that is not a JSON object")
    return value
