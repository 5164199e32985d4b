"""The execute stage: send a request to the deployment routing picked, within its deadline.

It owns the upstream call's life: request id and timeouts go upstream, an error
answer becomes a ``GatewayError`` carrying the provider's message, a success becomes
a ``GatewayResponse`` or a ``StreamResponse`` whose chunks are relayed as they arrive.
Retries, hedging and fallbacks build on this (see DESIGN.md, resilience/).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from aigw.errors import DeadlineExceeded, GatewayError
from aigw.observability.metrics import Metrics
from aigw.providers.base import Provider
from aigw.routing.group import Router
from aigw.types import GatewayRequest, GatewayResponse, Result, StreamResponse
from aigw.upstream.client import UpstreamClient, UpstreamResponse

ERROR_BODY_LIMIT = 1024 * 1024


class Executor:
    def __init__(self, router: Router, client: UpstreamClient, metrics: Metrics) -> None:
        self.router = router
        self.client = client
        self.metrics = metrics
        self.loop = client.loop

    async def __call__(self, req: GatewayRequest) -> Result:
        provider = self.router.group(req.model).pick()
        req.deployment = provider.id
        call = provider.build(req)
        headers = call.headers + b"x-request-id: " + req.request_id.encode() + b"\r\n"
        if req.deadline <= self.loop.time():
            raise DeadlineExceeded("request deadline passed before the upstream call")
        started = time.perf_counter()
        try:
            resp = await self.client.request(
                provider.origin,
                call.method,
                call.target,
                headers,
                call.body,
                provider.timeouts,
                req.deadline,
            )
            if resp.status >= 300:
                body = await resp.read(ERROR_BODY_LIMIT)
                raise provider.error(resp.status, body)
            if req.stream:
                return StreamResponse(self._relay(req, provider, resp, started))
            body = await resp.read()
        except GatewayError as err:
            self._done(req, provider, started, type(err).__name__)
            raise
        self._done(req, provider, started, "ok")
        return GatewayResponse(provider.parse(req, body))

    async def _relay(
        self, req: GatewayRequest, provider: Provider, resp: UpstreamResponse, started: float
    ) -> AsyncIterator[bytes]:
        outcome = "incomplete"
        try:
            async for chunk in provider.relay(req, resp.iter_chunks()):
                yield chunk
            outcome = "ok"
        except GatewayError as err:
            outcome = type(err).__name__
            raise
        finally:
            resp.close()
            self._done(req, provider, started, outcome)

    def _done(self, req: GatewayRequest, provider: Provider, started: float, outcome: str) -> None:
        seconds = time.perf_counter() - started
        req.upstream_seconds = seconds
        self.metrics.upstream_done(provider.id, outcome, seconds)
