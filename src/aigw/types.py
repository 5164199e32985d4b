"""Types that cross package boundaries: the request the pipeline works on and its results."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol


class Endpoint(StrEnum):
    CHAT = "chat"
    COMPLETION = "completion"
    EMBEDDING = "embedding"
    MESSAGES = "messages"  # Anthropic's Messages API, for clients that speak it


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(slots=True)
class GatewayRequest:
    """One client request as the pipeline sees it, whichever ingress it came from.

    ``body`` is the parsed JSON, ``raw`` the bytes as received (forwarded untouched on
    the fast path). ``deadline`` is an event-loop time. The fields after ``labels`` are
    filled in as the request moves through the pipeline and read by metrics and logs.
    """

    request_id: str
    endpoint: Endpoint
    model: str
    stream: bool
    body: dict[str, Any]
    raw: bytes
    deadline: float
    client_ip: str = ""
    headers: dict[bytes, bytes] = field(default_factory=dict)  # the client's, lower-case
    labels: dict[str, str] = field(default_factory=dict)
    idempotency_key: str = ""
    strict_idempotency: bool = False  # the key came as Idempotency-Key, not X-Request-ID
    attempts: int = 0
    fallbacks: int = 0
    cache: str = ""  # what the cache said: HIT-L1, HIT-L2, HIT-SEMANTIC, MISS
    deployment: str = ""
    upstream_seconds: float = 0.0
    usage: Usage | None = None
    # An OpenAI-shaped answer whose usage is read after the answer has been sent.
    usage_body: bytes | None = None
    prompt_estimate: int = -1  # prompt tokens counted before the call; -1 = not counted
    # Token limits need this stream's usage: ask the upstream for it (OpenAI's
    # include_usage) and keep the usage-only chunk from a client that did not ask.
    needs_usage: bool = False
    # Headers for the answer whatever it is, errors included (rate-limit headers).
    reply_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    # Called once by the ingress when the answer is complete (after a stream's last
    # byte), with the HTTP status: where stages give back what they took.
    finishers: list[Callable[[GatewayRequest, int], None]] = field(default_factory=list)

    def finish(self, status: int) -> None:
        finishers, self.finishers = self.finishers, []
        for finisher in reversed(finishers):
            finisher(self, status)


@dataclass(slots=True)
class GatewayResponse:
    """A complete (non-streamed) answer: JSON bytes in the client's dialect."""

    body: bytes
    status: int = 200
    content_type: bytes = b"application/json"
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


@dataclass(slots=True)
class StreamResponse:
    """A streamed answer: ``chunks`` yields SSE-framed bytes in the client's dialect.

    The iterator raises a ``GatewayError`` if the upstream fails mid-stream; the
    ingress then ends the stream with an error event.
    """

    chunks: AsyncIterator[bytes]
    status: int = 200
    content_type: bytes = b"text/event-stream"
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


Result = GatewayResponse | StreamResponse


def end_user(body: dict[str, Any]) -> str | None:
    """The end user a client names: OpenAI's ``user``, or Anthropic's metadata.user_id."""
    user = body.get("user")
    if isinstance(user, str) and user:
        return user
    metadata = body.get("metadata")
    if isinstance(metadata, dict):
        user = metadata.get("user_id")
        return user if isinstance(user, str) and user else None
    return None


async def close_stream(chunks: AsyncIterator[bytes]) -> None:
    """Close a stream now (an async generator's ``aclose``), not whenever GC gets to it:
    closing is what cancels the upstream call behind it."""
    closer = getattr(chunks, "aclose", None)
    if closer is not None:
        await closer()


Next = Callable[[GatewayRequest], Awaitable[Result]]


class Stage(Protocol):
    """A pipeline stage: does its one job and calls ``call_next`` (or answers itself)."""

    async def __call__(self, req: GatewayRequest, call_next: Next) -> Result: ...
