"""Model groups: the deployments behind one model name, and which one gets a request.

``choose`` filters (priority tier first, then health, ejection, breaker, capacity,
deployments this request already tried) and lets the group's balancer pick. When no
deployment is usable it tries the least bad one whose breaker is not open, rather than
failing blind; when every breaker is open it returns None (the caller answers 503).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection, Sequence

from aigw.errors import ModelNotFound
from aigw.resilience.latency import LatencyQuantile
from aigw.resilience.retry import RetryBudget
from aigw.routing.balancers import make_balancer
from aigw.routing.state import DeploymentState
from aigw.settings import ModelSettings
from aigw.types import GatewayRequest, end_user


class ModelGroup:
    def __init__(
        self, settings: ModelSettings, deployments: Sequence[DeploymentState], rng: random.Random
    ) -> None:
        self.settings = settings
        self.name = settings.name
        self.deployments = list(deployments)
        self.tiers = sorted({d.priority for d in self.deployments})
        self.balancer = make_balancer(settings.strategy, rng=rng)
        r = settings.retry
        self.budget = RetryBudget(r.budget_ratio, r.budget_min_per_s)
        self.latencies = LatencyQuantile()
        self.chain: list[ModelGroup] = [self]  # this group, then its fallbacks in order
        self._hash_key = _hash_key_reader(settings.hash_key)

    def hash_key(self, req: GatewayRequest) -> str | None:
        if self.settings.strategy != "consistent-hash":
            return None
        return self._hash_key(req)

    def choose(
        self, now: float, key: str | None, avoid: Collection[str] = (), first: bool = True
    ) -> DeploymentState | None:
        """A deployment for an attempt; ``first=False`` for retries and hedges.

        Only first attempts go through the balancer, so that a retry or a hedge does not
        use up another deployment's turn (round-robin would otherwise keep sending first
        attempts to a slow deployment); the others take the cheapest usable one.
        """
        for tier in self.tiers:
            candidates = [
                d for d in self.deployments
                if d.priority == tier and d.id not in avoid and d.usable(now)
            ]  # fmt: skip
            picked = self._pick(candidates, now, key) if first else self._cheapest(candidates, now)
            if picked is not None:
                return picked
        rest = [d for d in self.deployments if d.id not in avoid and d.tryable(now)]
        rest.sort(key=lambda d: d.badness(now))
        for d in rest:
            if d.admit(now):
                return d
        return None

    def _pick(
        self, candidates: list[DeploymentState], now: float, key: str | None
    ) -> DeploymentState | None:
        while candidates:
            picked = self.balancer.pick(candidates, now, key)
            if picked.admit(now):  # a half-open breaker may have no trial slot left
                return picked
            candidates.remove(picked)
        return None

    @staticmethod
    def _cheapest(candidates: list[DeploymentState], now: float) -> DeploymentState | None:
        candidates.sort(key=lambda d: (d.latency(now) * (d.in_flight + 1), d.error_rate))
        for d in candidates:
            if d.admit(now):
                return d
        return None

    def retry_after(self, now: float) -> float:
        waits = [d.retry_after(now) for d in self.deployments]
        known = [w for w in waits if w > 0]
        return min(known) if known else self.settings.degraded.retry_after_s

    def hedge_delay(self) -> float | None:
        hedge = self.settings.hedge
        if not hedge.enabled or len(self.deployments) < 2:
            return None
        if hedge.delay_s > 0:
            return hedge.delay_s
        quantile = self.latencies.quantile(hedge.quantile)
        return None if quantile is None else max(quantile, hedge.min_delay_s)


def _hash_key_reader(spec: str) -> Callable[[GatewayRequest], str | None]:
    if spec.startswith("header:"):
        name = spec.removeprefix("header:").lower().encode()
        return lambda req: _decoded(req.headers.get(name))
    if spec == "api-key":
        return lambda req: _decoded(req.headers.get(b"authorization"))
    return lambda req: end_user(req.body)


def _decoded(value: bytes | None) -> str | None:
    return value.decode("latin-1") if value else None


class Router:
    """Model name → group. Built whole from settings; replaced whole on reload."""

    def __init__(self, groups: Sequence[ModelGroup]) -> None:
        self.groups = {g.name: g for g in groups}
        for group in groups:
            group.chain = [group, *(self.groups[name] for name in group.settings.fallbacks)]

    def group(self, model: str) -> ModelGroup:
        group = self.groups.get(model)
        if group is None:
            raise ModelNotFound(f"The model `{model}` does not exist", param="model")
        return group
