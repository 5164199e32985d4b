"""The one wiring point: settings in, a runnable request pipeline out.

Stages run in the order listed in ``build_runtime``; a stage is an object called with
the request and the next stage. A feature that is switched off is simply not in the
list, so it costs nothing.
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aigw.cache.lru import ByteLRU
from aigw.cache.stage import CacheStage, Semantic
from aigw.observability.logs import JsonLog
from aigw.observability.metrics import Metrics
from aigw.providers.registry import make_provider
from aigw.resilience.executor import Executor
from aigw.resilience.idempotency import IdempotencyStage
from aigw.routing.group import ModelGroup, Router
from aigw.routing.health_check import HealthChecks
from aigw.routing.state import DeploymentState
from aigw.routing.view import snapshot
from aigw.settings import DeploymentSettings, ModelSettings, Settings
from aigw.state.base import StateBackend
from aigw.state.factory import make_state
from aigw.types import Next, Stage
from aigw.upstream.client import UpstreamClient

if TYPE_CHECKING:
    from aigw.cache.semantic import SemanticCache


def chain(stages: Sequence[Stage], last: Next) -> Next:
    handler = last
    for stage in reversed(stages):
        # partial, not a wrapper coroutine: each stage costs one frame per request, not two
        handler = functools.partial(stage.__call__, call_next=handler)
    return handler


@dataclass(slots=True)
class Services:
    """What lives as long as the process, shared by every runtime a reload builds."""

    client: UpstreamClient
    metrics: Metrics
    state: StateBackend
    log: JsonLog
    l1: ByteLRU | None
    rng: random.Random
    semantic: SemanticCache | None = None

    def semantic_cache(self, settings: Settings) -> SemanticCache:
        """The process's semantic index, made on first use (numpy loads only then)."""
        if self.semantic is None:
            from aigw.cache.semantic import SemanticCache

            shared = self.state if settings.state.backend == "redis" else None
            self.semantic = SemanticCache(shared, settings.cache.semantic_max_entries, self.log)
            self.semantic.start()
        return self.semantic

    @classmethod
    def create(cls, settings: Settings, client: UpstreamClient, log: JsonLog) -> Services:
        metrics = Metrics()
        size = settings.cache.l1_max_bytes
        l1 = ByteLRU(size, time.time) if size > 0 else None
        if l1 is not None:
            metrics.cache_entries.set_function(lambda: len(l1))
            metrics.cache_bytes.set_function(lambda: l1.bytes)
        return cls(client, metrics, make_state(settings.state), log, l1, random.Random())

    async def close(self) -> None:
        if self.semantic is not None:
            await self.semantic.close()
        await self.client.close()
        await self.state.close()


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
    settings: Settings, services: Services, previous: GatewayRuntime | None = None
) -> GatewayRuntime:
    client, metrics, state, log, rng = (
        services.client,
        services.metrics,
        services.state,
        services.log,
        services.rng,
    )
    kept = _reusable_states(previous)
    groups = [
        ModelGroup(m, [_deployment_state(m, d, kept, metrics) for d in m.deployments], rng)
        for m in settings.models
    ]
    router = Router(groups)
    stages: list[Stage] = []  # authenticate, admit, cache … join here, in this order
    if settings.idempotency.enabled:
        stages.append(IdempotencyStage(state, settings.idempotency, metrics, log))
    executor = Executor(router, client, metrics, rng)
    modes = {m.name: m.cache for m in settings.models if m.cache != "off"}
    if modes:
        l2 = state if settings.cache.l2 and settings.state.backend == "redis" else None
        semantic = _semantic(settings, services, executor)
        stages.append(CacheStage(settings.cache, modes, services.l1, l2, metrics, log, semantic))
    pipeline = chain(stages, executor)
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


def _reusable_states(
    previous: GatewayRuntime | None,
) -> dict[str, tuple[DeploymentState, ModelSettings]]:
    """A reload keeps what routing learned about deployments whose settings did not change."""
    if previous is None:
        return {}
    return {
        d.id: (d, _policy(g.settings))
        for g in previous.router.groups.values()
        for d in g.deployments
    }


def _policy(model: ModelSettings) -> ModelSettings:
    return model.model_copy(update={"deployments": []})


def _deployment_state(
    model: ModelSettings,
    settings: DeploymentSettings,
    kept: dict[str, tuple[DeploymentState, ModelSettings]],
    metrics: Metrics,
) -> DeploymentState:
    old = kept.get(settings.id)
    # pydantic compares every field, secrets included, so a new key means a new state
    if old is not None and old[0].provider.settings == settings and old[1] == _policy(model):
        return old[0]
    provider = make_provider(settings)
    return DeploymentState(provider, model, on_breaker_change=metrics.breaker_changed)


def _semantic(settings: Settings, services: Services, executor: Executor) -> Semantic | None:
    models = {m.name: m.semantic_cache for m in settings.models if m.semantic_cache}
    if not models:
        return None
    from aigw.cache.semantic import embedder

    embed = embedder(executor, settings.cache.embedding_timeout_s)
    return Semantic(services.semantic_cache(settings), embed, models)
