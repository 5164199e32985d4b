"""One attempt: one request to one deployment, with everything routing learns from it.

The deployment's state hears the outcome (latency, success or failure, reported load)
exactly once, when the attempt ends: at the answer for a complete response, at the
end of the relay for a stream. A stream is handed on only once its first chunk is
ready, so a failure before that can still be retried elsewhere.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator

from aigw.errors import GatewayError
from aigw.observability.metrics import Metrics
from aigw.providers.base import Provider
from aigw.resilience.retry import is_retryable, parse_retry_after
from aigw.routing.state import DeploymentState
from aigw.types import GatewayRequest, GatewayResponse, Result, StreamResponse, close_stream
from aigw.upstream.client import UpstreamClient, UpstreamResponse

ERROR_BODY_LIMIT = 1024 * 1024
# A failure counts as this slow for latency-aware balancers, so that a deployment which
# only fails (and so never reports a latency) does not look like the fastest.
FAILURE_LATENCY_S = 1.0


class Attempter:
    def __init__(self, client: UpstreamClient, metrics: Metrics) -> None:
        self.client = client
        self.metrics = metrics
        self.loop = client.loop

    async def attempt(self, req: GatewayRequest, deployment: DeploymentState) -> Result:
        provider = deployment.provider
        call = provider.build(req)
        headers = call.headers + b"x-request-id: " + req.request_id.encode() + b"\r\n"
        deployment.begin()
        started = time.perf_counter()
        verdict: bool | None = None
        handed_on = False
        try:
            resp = await self.client.request(
                provider.origin, call.method, call.target, headers, call.body,
                provider.timeouts, req.deadline,
            )  # fmt: skip
            deployment.report_load(_load_header(provider, resp))
            if resp.status >= 300:
                raise await self._error(provider, resp)
            if req.stream:
                stream = await self._first_chunk(req, deployment, provider, resp, started)
                handed_on = True
                return stream
            body = await resp.read()
            deployment.observe_latency(time.perf_counter() - started, self.loop.time())
            verdict = True
            return GatewayResponse(provider.parse(req, body))
        except GatewayError as err:
            verdict = not is_retryable(err)  # a client's mistake says nothing of the upstream
            raise
        finally:
            if not handed_on:
                self._end(req, deployment, started, verdict)

    async def _error(self, provider: Provider, resp: UpstreamResponse) -> GatewayError:
        body = await resp.read(ERROR_BODY_LIMIT)
        err = provider.error(resp.status, body)
        err.retry_after = parse_retry_after(resp.headers.get(b"retry-after"), time.time())
        return err

    async def _first_chunk(
        self, req: GatewayRequest, deployment: DeploymentState, provider: Provider,
        resp: UpstreamResponse, started: float,
    ) -> StreamResponse:  # fmt: skip
        relay = self._relay(req, deployment, provider, resp, started)
        try:
            first = await anext(relay)
        except StopAsyncIteration:
            first = b""
        except BaseException:
            await relay.aclose()
            raise
        deployment.observe_latency(time.perf_counter() - started, self.loop.time())
        return StreamResponse(_prepend(first, relay))

    async def _relay(
        self, req: GatewayRequest, deployment: DeploymentState, provider: Provider,
        resp: UpstreamResponse, started: float,
    ) -> AsyncGenerator[bytes, None]:  # fmt: skip
        verdict: bool | None = None
        try:
            async for chunk in provider.relay(req, resp.iter_chunks()):
                yield chunk
            verdict = True
        except GatewayError as err:
            verdict = not is_retryable(err)
            raise
        finally:
            resp.close()
            self._end(req, deployment, started, verdict)

    def _end(
        self, req: GatewayRequest, deployment: DeploymentState, started: float, verdict: bool | None
    ) -> None:
        seconds = time.perf_counter() - started
        req.upstream_seconds = seconds
        outcome = {True: "ok", False: "failed", None: "cancelled"}[verdict]
        self.metrics.upstream_done(deployment.id, outcome, seconds)
        if verdict is False:
            deployment.observe_latency(max(seconds, FAILURE_LATENCY_S), self.loop.time())
        if deployment.end(verdict, self.loop.time()):
            self.metrics.ejections.labels(deployment.id).inc()


def _load_header(provider: Provider, resp: UpstreamResponse) -> bytes | None:
    name = provider.load_header
    return resp.headers.get(name) if name else None


async def _prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    try:
        if first:
            yield first
        async for chunk in rest:
            yield chunk
    finally:
        await close_stream(rest)
