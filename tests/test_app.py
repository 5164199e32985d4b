"""The wiring point: what a reload keeps."""

from __future__ import annotations

import random
from typing import Any

import pytest

from aigw.app import GatewayRuntime, Services, build_runtime
from aigw.observability.logs import JsonLog
from aigw.observability.metrics import Metrics
from aigw.settings import parse_settings
from aigw.state.memory import MemoryState
from aigw.upstream.client import UpstreamClient

pytestmark = pytest.mark.anyio


def settings(key: str, **policy: Any) -> Any:
    deployments = [
        {"id": "a", "base_url": "http://127.0.0.1:1/v1", "api_key": key},
        {"id": "b", "base_url": "http://127.0.0.1:2/v1"},
    ]
    return parse_settings({"models": [{"name": "m", "deployments": deployments, **policy}]}, {})


async def test_reload_keeps_what_routing_learned_unless_settings_changed() -> None:
    client = UpstreamClient()
    services = Services(client, Metrics(), MemoryState(), JsonLog(), None, random.Random(1))

    def runtime(previous: GatewayRuntime | None, key: str, **policy: Any) -> GatewayRuntime:
        return build_runtime(settings(key, **policy), services, previous=previous)

    def states(r: GatewayRuntime) -> list[Any]:
        return r.router.groups["m"].deployments

    first = runtime(None, "k1")
    states(first)[0].begin()  # one request in flight survives the reload
    same = runtime(first, "k1")
    assert states(same)[0] is states(first)[0] and states(same)[0].in_flight == 1
    rotated = runtime(same, "k2")
    assert states(rotated)[0] is not states(same)[0]  # a new key: a new deployment
    assert states(rotated)[1] is states(same)[1]
    stricter = runtime(rotated, "k2", breaker={"failure_threshold": 1})
    assert all(n is not o for n, o in zip(states(stricter), states(rotated), strict=True))
    await client.close()
