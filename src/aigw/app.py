"""The one wiring point: settings in, a runnable request pipeline out.

Stages run in the order listed in ``build_runtime``; a stage is an object called with
the request and the next stage. A feature that is switched off is simply not in the
list, so it costs nothing.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aigw.observability.logs import JsonLog
from aigw.observability.metrics import Metrics
from aigw.providers.registry import make_provider
from aigw.resilience.executor import Executor
from aigw.resilience.idempotency import IdempotencyStage
from aigw.routing.group import ModelGroup, Router
from aigw.routing.health_check import HealthChecks
from aigw.routing.state import DeploymentState
from aigw.routing.view import snapshot
from aigw.settings import Settings
from aigw.state.base import StateBackend
from aigw.types import GatewayRequest, Next, Result, Stage
from aigw.upstream.client import UpstreamClient


def chain(stages: Sequence[Stage], last: Next) -> Next:
    handler = last
    for stage in reversed(stages):
        handler = _link(stage, handler)
    return handler


def _link(stage: Stage, call_next: Next) -> Next:
    async def run(req: GatewayRequest) -> Result:
        return await stage(req, call_next)

    return run


@dataclass(slots=True)
class GatewayRuntime:
    """Everything built from one settings file; swapped whole on reload."""

    settings: Settings
    router: Router
    pipeline: Next
    model_names: list[str]
    request_timeout_s: float
    access_log: bool
    health: HealthChecks
    admin_key: bytes

    def routing_snapshot(self) -> dict[str, Any]:
        return snapshot(self.router, asyncio.get_running_loop().time())

    def start(self) -> None:
        self.health.start()

    async def close(self) -> None:
        await self.health.close()


def build_runtime(
    settings: Settings,
    client: UpstreamClient,
    metrics: Metrics,
    state: StateBackend,
    log: JsonLog,
    rng: random.Random | None = None,
) -> GatewayRuntime:
    rng = rng or random.Random()
    groups = [
        ModelGroup(
            m,
            [DeploymentState(make_provider(d), m, on_breaker_change=metrics.breaker_changed)
             for d in m.deployments],
            rng,
        )
        for m in settings.models
    ]  # fmt: skip
    router = Router(groups)
    stages: list[Stage] = []  # authenticate, admit, cache … join here, in this order
    if settings.idempotency.enabled:
        stages.append(IdempotencyStage(state, settings.idempotency, metrics, log))
    pipeline = chain(stages, Executor(router, client, metrics, rng))
    names = [m.name for m in settings.models]
    metrics.known_models = frozenset(names)
    return GatewayRuntime(
        settings=settings,
        router=router,
        pipeline=pipeline,
        model_names=names,
        request_timeout_s=settings.server.request_timeout_s,
        access_log=settings.server.access_log,
        health=HealthChecks(groups, client, metrics, log),
        admin_key=admin.get_secret_value().encode() if (admin := settings.admin.key) else b"",
    )
