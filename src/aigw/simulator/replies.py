"""What the simulator says, independent of dialect. Pure and deterministic.

A reply is "This is a simulated reply to: <first 40 chars of the last user message>",
padded with filler words or cut to the token budget; one whitespace-separated word is
one token. Prompt tokens are the words in all message text (at least 1). A tool call
names the first tool (or the one the request forces) with ``"sim"`` for each required
argument.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from itertools import cycle, islice

import orjson

PREFIX = "This is a simulated reply to:"
FILLER = ("lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit")
ECHO_CHARS = 40


@dataclass(frozen=True, slots=True)
class ToolCall:
    name: str
    arguments: str  # JSON text of an object

    @property
    def pieces(self) -> tuple[str, str]:
        """The arguments in two pieces, as a stream delivers them (``{}`` included)."""
        half = len(self.arguments) // 2
        return self.arguments[:half], self.arguments[half:]

    @property
    def tokens(self) -> int:
        return max(1, len(self.arguments) // 4)  # a tokenizer's ~4 chars per token


@dataclass(frozen=True, slots=True)
class Reply:
    pieces: tuple[str, ...]  # stream chunks; all but the first start with a space
    text: str
    truncated: bool  # the request's max_tokens cut the reply short
    prompt_tokens: int
    tool: ToolCall | None = None

    @property
    def completion_tokens(self) -> int:
        return self.tool.tokens if self.tool is not None else len(self.pieces)


def text_of(content: object) -> str:
    """The text in a message ``content``: a string, or a list of parts with ``text``."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [p["text"] for p in content if isinstance(p, dict) and "text" in p]
        return " ".join(t for t in texts if isinstance(t, str))
    return ""


def count_words(texts: list[str]) -> int:
    return max(1, sum(len(t.split()) for t in texts))


def budget(default: int, max_tokens: object) -> tuple[int, bool]:
    """Tokens to emit, and whether the request's limit is what stopped the reply."""
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens >= default:
        return default, False
    return max(1, max_tokens), True


@lru_cache(maxsize=4096)
def words_for(prompt: str, tokens: int) -> tuple[tuple[str, ...], str]:
    """Stream pieces and full text of the reply to ``prompt`` in ``tokens`` words."""
    words = (PREFIX + " " + prompt[:ECHO_CHARS]).split()
    if len(words) < tokens:
        words += islice(cycle(FILLER), tokens - len(words))
    words = words[:tokens]
    pieces = tuple(w if i == 0 else " " + w for i, w in enumerate(words))
    return pieces, "".join(pieces)


def text_reply(prompt: str, prompt_tokens: int, default_tokens: int, max_tokens: object) -> Reply:
    tokens, truncated = budget(default_tokens, max_tokens)
    pieces, text = words_for(prompt[:ECHO_CHARS], tokens)  # a short key: more cache hits
    return Reply(pieces, text, truncated, prompt_tokens)


def tool_reply(tool: ToolCall, prompt_tokens: int) -> Reply:
    return Reply((), "", False, prompt_tokens, tool)


def wants_tool(last_user: str) -> bool:
    return "call tool" in last_user.lower()


def tool_call(name: str, schema: object) -> ToolCall:
    required = schema.get("required") if isinstance(schema, dict) else None
    names = [r for r in required if isinstance(r, str)] if isinstance(required, list) else []
    return ToolCall(name, orjson.dumps(dict.fromkeys(names, "sim")).decode())


def pick_tool(
    tools: list[tuple[str, object]], forced: bool, named: str | None, last_user: str
) -> ToolCall | None:
    """The tool call to answer with, or None for a text reply.

    ``tools`` holds (name, JSON schema) pairs in request order; ``forced`` means the
    tool choice demands some tool; ``named`` is the tool it demands by name.
    """
    if not tools:
        return None
    if named is not None:
        for name, schema in tools:
            if name == named:
                return tool_call(name, schema)
        return None
    if forced or wants_tool(last_user):
        return tool_call(*tools[0])
    return None


def conversation(body: dict[str, object]) -> tuple[list[str], str]:
    """The text of every message, and of the last user message."""
    messages = body.get("messages")
    messages = [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []
    texts = [text_of(m.get("content")) for m in messages]
    users = [t for m, t in zip(messages, texts, strict=True) if m.get("role") == "user"]
    return texts, users[-1] if users else ""
