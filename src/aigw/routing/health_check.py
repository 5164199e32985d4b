"""Active health checks: the async adapter that feeds each deployment's ``HealthState``.

One task per deployment of a group with ``health_check.enabled``: ``GET`` the
deployment's base URL + ``path`` every ``interval_s``. Any answer below 500 counts as
alive (a 401 or 404 still proves the server is up); a 5xx, a timeout or a refused
connection counts as a failure. The tasks live as long as the runtime that made them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aigw.errors import GatewayError
from aigw.observability.logs import JsonLog
from aigw.observability.metrics import Metrics
from aigw.routing.group import ModelGroup
from aigw.routing.state import DeploymentState
from aigw.upstream.client import Timeouts, UpstreamClient

PROBE_BODY_LIMIT = 256 * 1024


class HealthChecks:
    def __init__(
        self, groups: Sequence[ModelGroup], client: UpstreamClient, metrics: Metrics, log: JsonLog
    ) -> None:
        self.client = client
        self.metrics = metrics
        self.log = log
        self.targets = [
            (g, d) for g in groups if g.settings.health_check.enabled for d in g.deployments
        ]
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._watch(g, d)) for g, d in self.targets]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _watch(self, group: ModelGroup, deployment: DeploymentState) -> None:
        settings = group.settings.health_check
        while True:
            ok = await self.probe(deployment, settings.path, settings.timeout_s)
            self.metrics.health_checks.labels(deployment.id, "ok" if ok else "failed").inc()
            if deployment.health.record(ok):
                state = "healthy" if deployment.health.healthy else "unhealthy"
                self.log.warning("deployment health changed", deployment=deployment.id, state=state)
            await asyncio.sleep(settings.interval_s)

    async def probe(self, deployment: DeploymentState, path: str, timeout_s: float) -> bool:
        provider = deployment.provider
        target = (provider.prefix + path).encode()
        try:
            resp = await self.client.request(
                provider.origin, b"GET", target, provider.headers, b"",
                Timeouts(timeout_s, timeout_s, timeout_s),
            )  # fmt: skip
            await resp.read(PROBE_BODY_LIMIT)
        except GatewayError:
            return False
        return resp.status < 500
