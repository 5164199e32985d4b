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
from aigw.limits.capacity import Capacity
from aigw.limits.rules import Rule, build_rules
from aigw.limits.shedding import Shedder, ShedStage
from aigw.limits.stage import LimitStage
from aigw.limits.tokens import TokenCounter
from aigw.observability.logs import JsonLog
from aigw.observability.metrics import Metrics
from aigw.providers.registry import make_provider
from aigw.resilience.executor import Executor
from aigw.resilience.idempotency import IdempotencyStage
from aigw.routing.group import ModelGroup, Router
from aigw.routing.health_check import HealthChecks
from aigw.routing.state import DeploymentState
from aigw.routing.view import snapshot
from aigw.settings import (
    DeploymentSettings,
    LimitsSettings,
    ModelSettings,
    Settings,
    SheddingSettings,
)
from aigw.state.base import StateBackend
from aigw.state.factory import make_state
from aigw.types import Next, Stage
from aigw.upstream.client import UpstreamClient

if TYPE_CHECKING:
    from redis import asyncio as aioredis

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
    shedder: Shedder | None = None
    counter: TokenCounter | None = None
    redis: aioredis.Redis | None = None  # the limits' own client, made on first use

    def token_counter(self, mode: str, models: list[str]) -> TokenCounter:
        if self.counter is None or self.counter.mode != mode:
            self.counter = TokenCounter(mode)
        self.counter.warm(models)  # at start-up or reload, never on a request
        return self.counter

    def limits_redis(self, settings: Settings) -> aioredis.Redis | None:
        backend = settings.limits.backend
        if backend == "memory" or (backend == "auto" and settings.state.backend != "redis"):
            return None
        shared: aioredis.Redis | None = getattr(self.state, "client", None)
        if self.state.name == "redis" and shared is not None:
            return shared  # the state backend's pool: one per process is enough
        if self.redis is None:
            from redis import asyncio as aioredis

            timeout = max(settings.limits.backend_timeout_s, 0.05)
            self.redis = aioredis.Redis.from_url(
                settings.state.url, socket_timeout=timeout, socket_connect_timeout=timeout,
                max_connections=256,
            )  # fmt: skip
        return self.redis

    def load_shedder(self, settings: SheddingSettings) -> Shedder:
        """The process's shedder; a reload changes its bounds but keeps who is in flight."""
        if self.shedder is None:
            metrics = self.metrics
            priorities = settings.priorities

            def on_shed(rank: int, reason: str) -> None:
                name = priorities[rank] if rank < len(priorities) else str(rank)
                metrics.shed.labels(name, reason).inc()

            self.shedder = Shedder(
                settings.max_in_flight, settings.queue, settings.queue_timeout_s,
                settings.retry_after_s, on_shed,
            )  # fmt: skip
            shedder = self.shedder
            metrics.shed_queue.set_function(lambda: shedder.queued)
        else:
            self.shedder.reconfigure(
                settings.max_in_flight, settings.queue, settings.queue_timeout_s,
                settings.retry_after_s,
            )  # fmt: skip
        return self.shedder

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
        if self.redis is not None:
            await self.redis.aclose()


@dataclass(slots=True)
class GatewayRuntime:
    """Everything built from one settings file; swapped whole on reload."""

    settings: Settings
    rules: list[Rule]
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
    limits = settings.limits
    deployments = [d for m in settings.models for d in m.deployments]
    tokens_needed = any(r.tokens for r in limits.rules) or any(d.tpm for d in deployments)
    mode = limits.token_counting if tokens_needed else "estimate"
    counter = services.token_counter(mode, [d.model for d in deployments])
    redis = services.limits_redis(settings)
    capacity = None
    if any(d.rpm or d.tpm for d in deployments):
        timeout = limits.backend_timeout_s
        capacity = Capacity(deployments, redis, timeout, counter, limits.completion_tokens, metrics)
    stages: list[Stage] = []  # authenticate, shed, admit, cache … join here, in this order
    if settings.shedding.max_in_flight:
        shed = settings.shedding
        shedder = services.load_shedder(shed)
        stages.append(
            ShedStage(shedder, shed.priority_header, shed.priorities, shed.default_priority)
        )
    if settings.idempotency.enabled:
        stages.append(IdempotencyStage(state, settings.idempotency, metrics, log))
    executor = Executor(router, client, metrics, rng, capacity)
    modes = {m.name: m.cache for m in settings.models if m.cache != "off"}
    cache = None
    if modes:
        l2 = state if settings.cache.l2 and settings.state.backend == "redis" else None
        semantic = _semantic(settings, services, executor)
        cache = CacheStage(settings.cache, modes, services.l1, l2, metrics, log, semantic)
    if limits.rules:
        rules = _reusable_rules(previous, limits) or build_rules(limits, redis)
        upstream = {m.name: m.deployments[0].model for m in settings.models}
        stale = frozenset(m.name for m in settings.models if m.on_limited == "cache")
        stages.append(
            LimitStage(
                rules, counter, upstream, limits.completion_tokens, metrics, log,
                cache.stale if cache else None, stale, redis=redis,
                timeout_s=limits.backend_timeout_s,
                request_timeout_s=settings.server.request_timeout_s,
            )
        )  # fmt: skip
    if cache is not None:
        stages.append(cache)
    pipeline = chain(stages, executor)
    names = [m.name for m in settings.models]
    metrics.known_models = frozenset(names)
    return GatewayRuntime(
        settings=settings,
        rules=rules if limits.rules else [],
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


def _reusable_rules(previous: GatewayRuntime | None, limits: LimitsSettings) -> list[Rule]:
    """A reload keeps the limits' counters when the limits did not change."""
    if previous is None or previous.settings.limits != limits:
        return []
    return previous.rules


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
