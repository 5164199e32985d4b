"""The execute stage: get an answer from the best deployment, surviving upstream failure.

For one request: walk the model's fallback chain (its own group first); in each group
choose a deployment, attempt it, and on a retryable failure retry on a different
deployment (when there is one) after a jittered backoff, within the group's retry
budget and the request's deadline. Non-streamed requests may be hedged: a second
attempt goes to another deployment after the group's p95 latency and the first answer
wins. A stream can fail over only until its first byte is ready for the client: the
executor waits for that first chunk before handing the stream on.
"""

from __future__ import annotations

import asyncio
import random
import time

import orjson

from aigw.errors import CapacityExhausted, GatewayError, NoDeploymentAvailable
from aigw.limits.capacity import Capacity, Hold
from aigw.observability.metrics import Metrics
from aigw.resilience.attempt import Attempter
from aigw.resilience.fallback import content_filtered, fallback_trigger
from aigw.resilience.retry import backoff_s, is_retryable
from aigw.routing.group import ModelGroup, Router
from aigw.routing.state import DeploymentState
from aigw.types import GatewayRequest, GatewayResponse, Result
from aigw.upstream.client import UpstreamClient


class _Filtered(Exception):
    """A complete answer the upstream's content filter cut: try the next group if any."""

    def __init__(self, result: GatewayResponse) -> None:
        super().__init__("content filtered")
        self.result = result


class Executor:
    def __init__(
        self,
        router: Router,
        client: UpstreamClient,
        metrics: Metrics,
        rng: random.Random,
        capacity: Capacity | None = None,
    ) -> None:
        self.router = router
        self.capacity = capacity
        self.metrics = metrics
        self.rng = rng
        self.loop = client.loop
        self.attempter = Attempter(client, metrics)

    async def __call__(self, req: GatewayRequest) -> Result:
        chain = self.router.group(req.model).chain
        filtered: GatewayResponse | None = None
        reason: str | None
        for index, group in enumerate(chain):
            last = index + 1 == len(chain)
            check = not last and "content_policy" in group.settings.fallback_on
            try:
                return await self._run_group(req, group, check_filter=check)
            except _Filtered as cut:
                filtered, reason = cut.result, "content_policy"
            except GatewayError as err:
                reason = fallback_trigger(err)
                if last or reason not in group.settings.fallback_on:
                    return self._degrade(chain[0], err)
            req.fallbacks += 1
            self.metrics.fallbacks.labels(group.name, chain[index + 1].name, str(reason)).inc()
        assert filtered is not None
        return filtered

    def _degrade(self, group: ModelGroup, err: GatewayError) -> Result:
        degraded = group.settings.degraded
        if not isinstance(err, NoDeploymentAvailable) or degraded.mode != "response":
            raise err
        self.metrics.degraded.labels(group.name).inc()
        return GatewayResponse(_degraded_body(group.name, degraded.message))

    async def _run_group(
        self, req: GatewayRequest, group: ModelGroup, check_filter: bool
    ) -> Result:
        now = self.loop.time()
        group.budget.record_request(now)
        key = group.hash_key(req)
        tried: list[str] = []
        last_error: GatewayError | None = None
        for attempt in range(group.settings.retry.attempts):
            deployment, hold, full_for = await self._choose_with_room(req, group, now, key, tried)
            if deployment is None:
                if last_error is not None:
                    raise last_error
                if full_for is not None:
                    raise CapacityExhausted(
                        f"every deployment of `{group.name}` is at its rate limit",
                        kind="requests", retry_after=full_for,
                    )  # fmt: skip
                raise NoDeploymentAvailable(
                    f"no deployment of `{group.name}` can take requests now",
                    retry_after=group.retry_after(now),
                )
            tried.append(deployment.id)
            delay = None if req.stream else group.hedge_delay()
            try:
                if delay is None:
                    result = await self._attempt(req, group, deployment, hold)
                else:
                    result = await self._hedged(req, group, deployment, hold, tried, key, delay)
            except GatewayError as err:
                last_error = err
                if not is_retryable(err) or attempt + 1 >= group.settings.retry.attempts:
                    raise
                now = self.loop.time()
                await self._before_retry(req, group, deployment, err, attempt, now)
                now = self.loop.time()
                continue
            if check_filter and isinstance(result, GatewayResponse) and content_filtered(result):
                raise _Filtered(result)
            return result
        assert last_error is not None
        raise last_error

    async def _choose_with_room(
        self, req: GatewayRequest, group: ModelGroup, now: float, key: str | None,
        tried: list[str],
    ) -> tuple[DeploymentState | None, Hold | None, float | None]:  # fmt: skip
        """A deployment with room under its own rpm/tpm, charged for this attempt; else
        None and, if some were only full, the seconds until the first has room again."""
        capacity = self.capacity
        full: list[str] = []
        waits: list[float] = []
        while True:
            deployment = self._choose(group, now, key, tried + full)
            if deployment is None or deployment.id in full:
                return None, None, min(waits) if waits else None
            if capacity is None or not capacity.limits(deployment.id):
                return deployment, None, None
            hold, wait = await capacity.take(req, deployment.id)
            if hold is not None:
                return deployment, hold, None
            full.append(deployment.id)
            waits.append(wait)

    def _choose(
        self, group: ModelGroup, now: float, key: str | None, tried: list[str]
    ) -> DeploymentState | None:
        first = not tried
        choice = group.choose(now, key, set(tried), first)
        if choice is None and tried:  # all tried: any but the one that just failed
            avoid = {tried[-1]} if len(group.deployments) > 1 else set()
            choice = group.choose(now, key, avoid, first)
        return choice

    async def _before_retry(
        self, req: GatewayRequest, group: ModelGroup, failed: DeploymentState,
        err: GatewayError, attempt: int, now: float,
    ) -> None:  # fmt: skip
        if err.retry_after:
            failed.cool_down(err.retry_after, now)
        if not group.budget.try_spend(now):
            self.metrics.retries.labels(group.name, "budget_exhausted").inc()
            raise err
        retry = group.settings.retry
        delay = backoff_s(attempt, retry.backoff_base_s, retry.backoff_max_s, self.rng)
        others = any(d.usable(now) for d in group.deployments if d is not failed)
        if err.retry_after and not others:
            delay = max(delay, err.retry_after)  # only one place to go: wait as asked
        if now + delay >= req.deadline:
            self.metrics.retries.labels(group.name, "no_time_left").inc()
            raise err
        self.metrics.retries.labels(group.name, "retried").inc()
        await asyncio.sleep(delay)

    async def _attempt(
        self, req: GatewayRequest, group: ModelGroup, deployment: DeploymentState,
        hold: Hold | None,
    ) -> Result:  # fmt: skip
        req.attempts += 1
        started = time.perf_counter()
        try:
            result = await self.attempter.attempt(req, deployment)
        except BaseException:
            if hold is not None:
                hold.failed()
            raise
        if hold is not None:
            req.finishers.append(hold.finish)
        if isinstance(result, GatewayResponse):
            group.latencies.observe(time.perf_counter() - started)
        req.deployment = deployment.id
        return result

    async def _hedged(
        self, req: GatewayRequest, group: ModelGroup, first: DeploymentState,
        hold: Hold | None, tried: list[str], key: str | None, delay: float,
    ) -> Result:  # fmt: skip
        tasks = [asyncio.create_task(self._attempt(req, group, first, hold))]
        try:
            done, _ = await asyncio.wait(tasks, timeout=delay)
            if not done:
                second = group.choose(self.loop.time(), key, set(tried), first=False)
                second_hold = None
                if second is not None and self.capacity and self.capacity.limits(second.id):
                    second_hold, _ = await self.capacity.take(req, second.id)
                    second = second if second_hold is not None else None
                if second is not None:
                    tried.append(second.id)
                    self.metrics.hedges.labels(group.name).inc()
                    attempt = self._attempt(req, group, second, second_hold)
                    tasks.append(asyncio.create_task(attempt))
            return await _first_success(tasks)
        finally:
            for task in tasks:
                if not task.done():
                    task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def _first_success(tasks: list[asyncio.Task[Result]]) -> Result:
    pending = set(tasks)
    error: BaseException | None = None
    while pending:
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            exc = task.exception()
            if exc is None:
                return task.result()
            error = exc
    assert error is not None
    raise error


def _degraded_body(model: str, message: str) -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-degraded",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "degraded": True,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": message},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        }
    )
