"""Anthropic clients to Anthropic upstreams (``POST /v1/messages``): the fast path.

As with OpenAI, the body goes upstream as received unless the model name changes,
and answers and stream events come back byte for byte; they are only read for usage.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson

from aigw.providers.base import usage_from
from aigw.providers.sse import SSEDecoder
from aigw.types import GatewayRequest, Usage


def native_body(req: GatewayRequest, upstream_model: str) -> bytes:
    if req.model == upstream_model:
        return req.raw
    body = dict(req.body)
    body["model"] = upstream_model
    return orjson.dumps(body)


async def relay_native(req: GatewayRequest, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Relay Anthropic SSE as is; usage comes in message_start (input) and message_delta."""
    decoder = SSEDecoder()
    async for chunk in chunks:
        for event in decoder.feed(chunk):
            if b'"usage"' in event.data:
                _note_usage(req, event.data)
        yield chunk


def _note_usage(req: GatewayRequest, data: bytes) -> None:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return
    if not isinstance(value, dict):
        return
    message = value.get("message")
    found = usage_from(message if isinstance(message, dict) else value)
    if found is None:
        return
    seen = req.usage or Usage()
    req.usage = Usage(
        max(seen.prompt_tokens, found.prompt_tokens),
        max(seen.completion_tokens, found.completion_tokens),
    )
