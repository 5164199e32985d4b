from __future__ import annotations

from collections import Counter

import pytest

from aigw.errors import ModelNotFound
from aigw.providers.registry import make_provider
from aigw.routing.group import ModelGroup, Router
from aigw.settings import DeploymentSettings


def deployment(name: str, weight: float) -> DeploymentSettings:
    return DeploymentSettings(id=name, model="m", base_url="http://127.0.0.1:1/v1", weight=weight)


def test_smooth_weighted_round_robin_is_proportional_and_interleaved() -> None:
    group = ModelGroup(
        "m", "weighted", [make_provider(deployment("a", 3)), make_provider(deployment("b", 1))]
    )
    picks = [group.pick().id for _ in range(8)]
    assert Counter(picks) == {"a": 6, "b": 2}
    assert "bb" not in "".join(p[0] for p in picks) and "aaaa" not in "".join(picks)


def test_round_robin_ignores_weights() -> None:
    group = ModelGroup(
        "m", "round-robin", [make_provider(deployment("a", 5)), make_provider(deployment("b", 1))]
    )
    assert [group.pick().id for _ in range(4)] == ["a", "b", "a", "b"]


def test_router_unknown_model() -> None:
    router = Router([ModelGroup("m", "weighted", [make_provider(deployment("a", 1))])])
    assert router.group("m").pick().id == "a"
    with pytest.raises(ModelNotFound):
        router.group("x")
