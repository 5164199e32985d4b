from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

from aigw.errors import ModelNotFound
from aigw.providers.registry import make_provider
from aigw.routing.group import ModelGroup, Router
from aigw.routing.state import DeploymentState
from aigw.settings import DeploymentSettings, ModelSettings

NOW = 1000.0


def group(*deployments: dict[str, Any], **model: Any) -> ModelGroup:
    specs = [
        DeploymentSettings(model="m", base_url="http://127.0.0.1:1/v1", **d) for d in deployments
    ]
    settings = ModelSettings(name="m", deployments=specs, **model)
    states = [DeploymentState(make_provider(s), settings, clock=lambda: NOW) for s in specs]
    return ModelGroup(settings, states, random.Random(1))


def by_id(g: ModelGroup, name: str) -> DeploymentState:
    return next(d for d in g.deployments if d.id == name)


def test_weighted_proportions() -> None:
    g = group({"id": "a", "weight": 3}, {"id": "b", "weight": 1})
    picks = Counter(g.choose(NOW, None).id for _ in range(8))  # type: ignore[union-attr]
    assert picks == {"a": 6, "b": 2}


def test_priority_tiers_and_avoidance() -> None:
    g = group({"id": "primary"}, {"id": "backup", "priority": 1})
    assert {g.choose(NOW, None).id for _ in range(5)} == {"primary"}  # type: ignore[union-attr]
    chosen = g.choose(NOW, None, {"primary"})
    assert chosen is not None and chosen.id == "backup"


def test_open_breakers_are_skipped_then_none() -> None:
    g = group({"id": "a"}, {"id": "b"}, breaker={"failure_threshold": 1, "open_s": 5})
    for name in ("a",):
        d = by_id(g, name)
        d.begin()
        d.end(False, NOW)
    assert {g.choose(NOW, None).id for _ in range(4)} == {"b"}  # type: ignore[union-attr]
    d = by_id(g, "b")
    d.begin()
    d.end(False, NOW)
    assert g.choose(NOW, None) is None
    assert 4.9 < g.retry_after(NOW) <= 5.0
    half_open = g.choose(NOW + 5.1, None)  # one trial each after the open period
    assert half_open is not None


def test_least_bad_is_tried_when_nothing_is_healthy() -> None:
    g = group({"id": "a"}, {"id": "b"})
    for name, errors in (("a", 3), ("b", 1)):
        d = by_id(g, name)
        d.health.healthy = False
        for _ in range(errors):
            d.begin()
            d.end(False, NOW)
    chosen = g.choose(NOW, None)
    assert chosen is not None and chosen.id == "b"


def test_concurrency_cap() -> None:
    g = group({"id": "small", "max_concurrency": 1, "weight": 100}, {"id": "big"})
    by_id(g, "small").begin()
    assert {g.choose(NOW, None).id for _ in range(5)} == {"big"}  # type: ignore[union-attr]


def test_consistent_hash_key_sources() -> None:
    g = group({"id": "a"}, {"id": "b"}, strategy="consistent-hash", hash_key="header:X-Tenant")
    from aigw.types import Endpoint, GatewayRequest

    req = GatewayRequest("r", Endpoint.CHAT, "m", False, {}, b"", 0.0, headers={b"x-tenant": b"t1"})
    assert g.hash_key(req) == "t1"
    picks = {g.choose(NOW, g.hash_key(req)).id for _ in range(10)}  # type: ignore[union-attr]
    assert len(picks) == 1


def test_router_chains_and_unknown_model() -> None:
    a = group({"id": "a"}, fallbacks=["m"])
    router = Router([a])
    assert [g.name for g in router.group("m").chain] == ["m", "m"]
    with pytest.raises(ModelNotFound):
        router.group("x")
