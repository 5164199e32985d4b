"""The one wiring point: settings in, a runnable request pipeline out.

Stages run in the order listed in ``build_runtime``; a stage is an object called with
the request and the next stage. A feature that is switched off is simply not in the
list, so it costs nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from aigw.observability.metrics import Metrics
from aigw.providers.registry import make_provider
from aigw.resilience.executor import Executor
from aigw.routing.group import ModelGroup, Router
from aigw.settings import Settings
from aigw.types import GatewayRequest, Result
from aigw.upstream.client import UpstreamClient

Next = Callable[[GatewayRequest], Awaitable[Result]]


class Stage(Protocol):
    async def __call__(self, req: GatewayRequest, call_next: Next) -> Result: ...


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


def build_runtime(settings: Settings, client: UpstreamClient, metrics: Metrics) -> GatewayRuntime:
    groups = [
        ModelGroup(m.name, m.strategy, [make_provider(d) for d in m.deployments])
        for m in settings.models
    ]
    router = Router(groups)
    stages: list[Stage] = []  # authenticate, admit, cache … join here, in this order
    pipeline = chain(stages, Executor(router, client, metrics))
    names = [m.name for m in settings.models]
    metrics.known_models = frozenset(names)
    return GatewayRuntime(
        settings=settings,
        router=router,
        pipeline=pipeline,
        model_names=names,
        request_timeout_s=settings.server.request_timeout_s,
        access_log=settings.server.access_log,
    )
