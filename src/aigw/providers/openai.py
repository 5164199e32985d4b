"""OpenAI and every OpenAI-compatible host (vLLM, Ollama, TGI, Together, Groq …).

The fast path: the client's body goes upstream as received when the upstream model
name is the one the client sent, else re-encoded with only ``model`` changed; answers
and stream chunks come back byte for byte. Bodies are only read to learn token usage.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson

from aigw.errors import UpstreamProtocolError
from aigw.providers.anthropic_inbound import chat_to_message, messages_to_chat, relay_as_messages
from aigw.providers.base import (
    Provider,
    UpstreamCall,
    forwarded_body,
    relay_noting_usage,
    usage_from,
)
from aigw.types import Endpoint, GatewayRequest, Usage

PATHS = {
    Endpoint.CHAT: b"/chat/completions",
    Endpoint.MESSAGES: b"/chat/completions",
    Endpoint.COMPLETION: b"/completions",
    Endpoint.EMBEDDING: b"/embeddings",
}


class OpenAIProvider(Provider):
    kind = "openai"

    def auth_headers(self, api_key: str) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        if api_key:
            headers["authorization"] = f"Bearer {api_key}"
        return headers

    def target(self, endpoint: Endpoint) -> bytes:
        return self.prefix.encode() + PATHS[endpoint]

    def build(self, req: GatewayRequest) -> UpstreamCall:
        return UpstreamCall(self.target(req.endpoint), self.headers, self.body(req))

    def body(self, req: GatewayRequest) -> bytes:
        if req.endpoint is Endpoint.MESSAGES:
            return orjson.dumps(messages_to_chat(req.body, self.upstream_model))
        return forwarded_body(req, self.upstream_model)

    def parse(self, req: GatewayRequest, body: bytes) -> bytes:
        if req.endpoint is Endpoint.MESSAGES:
            return self._as_message(req, body)
        req.usage_body = body  # read for usage after the client has its answer
        return body

    def relay(self, req: GatewayRequest, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        if req.endpoint is Endpoint.MESSAGES:
            return relay_as_messages(
                chunks, req.model, f"msg_{req.request_id}", lambda p, c: _set_usage(req, p, c)
            )
        return relay_noting_usage(req, chunks)

    def _as_message(self, req: GatewayRequest, body: bytes) -> bytes:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict):
            raise UpstreamProtocolError("upstream sent an answer that is not a JSON object")
        message = chat_to_message(data, req.model, fallback_id=req.request_id)
        req.usage = usage_from(data)
        return orjson.dumps(message)


class AzureProvider(OpenAIProvider):
    """Azure OpenAI: the deployment is in the URL, the key in ``api-key``."""

    kind = "azure"

    def auth_headers(self, api_key: str) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        if api_key:
            headers["api-key"] = api_key
        return headers

    def target(self, endpoint: Endpoint) -> bytes:
        version = self.settings.api_version
        path = f"{self.prefix}/openai/deployments/{self.upstream_model}"
        return path.encode() + PATHS[endpoint] + f"?api-version={version}".encode()

    def body(self, req: GatewayRequest) -> bytes:
        if req.endpoint is Endpoint.MESSAGES:
            return super().body(req)
        return forwarded_body(req, None)  # Azure takes the model from the URL


def _set_usage(req: GatewayRequest, prompt: int, completion: int) -> None:
    req.usage = Usage(prompt, completion)


class WorkerProvider(OpenAIProvider):
    """``aigw worker``: OpenAI-compatible, and it reports its load in every answer."""

    kind = "aigw-worker"
