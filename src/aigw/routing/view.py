"""A snapshot of routing state for people: what ``GET /admin/routing`` shows."""

from __future__ import annotations

from typing import Any

from aigw.routing.balancers import effective_weights
from aigw.routing.group import ModelGroup, Router
from aigw.routing.state import DeploymentState


def snapshot(router: Router, now: float) -> dict[str, Any]:
    return {"models": [_group(g, now) for g in router.groups.values()]}


def _group(group: ModelGroup, now: float) -> dict[str, Any]:
    weights = effective_weights(group.deployments, now)
    hedge = group.hedge_delay()
    return {
        "name": group.name,
        "strategy": group.settings.strategy,
        "fallbacks": group.settings.fallbacks,
        "retry_budget_available": round(group.budget.available(now), 2),
        "hedge_delay_ms": None if hedge is None else round(hedge * 1000, 3),
        "deployments": [_deployment(d, now, weights.get(d.id, 0.0)) for d in group.deployments],
    }


def _deployment(d: DeploymentState, now: float, effective: float) -> dict[str, Any]:
    ejected = d.outlier is not None and d.outlier.ejected(now)
    return {
        "id": d.id,
        "provider": d.provider.kind,
        "model": d.provider.upstream_model,
        "priority": d.priority,
        "weight": d.weight,
        "effective_weight": round(effective, 4),
        "usable": d.usable(now),
        "healthy": d.health.healthy,
        "ejected": ejected,
        "ejected_for_s": round(d.outlier.ejected_until - now, 3) if ejected and d.outlier else 0,
        "breaker": d.breaker_state(now),
        "breaker_retry_after_s": round(d.breaker.retry_after(now), 3) if d.breaker else 0,
        "in_flight": d.in_flight,
        "latency_ewma_ms": round(d.latency(now) * 1000, 3),
        "error_rate": round(d.error_rate, 4),
        "load": d.load,
        "requests": d.requests,
        "failures": d.failures,
    }
