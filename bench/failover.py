"""Routing and resilience under load (section `failover`): one dead deployment of
three, hedging a slow deployment, and what one balancer pick costs.

The models live in the run's one gateway beside the others (`failover_models`); what
routing did is read back from the gateway's `GET /admin/routing` and from the
simulator's `GET /sim/stats`.
"""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from loadgen import WrkResult, merge_rounds, run_wrk
from measure import Plan, Target, chat_url, interleaved
from procs import BenchError, Child, CpuMeter
from stack import UPSTREAM_MODEL, SimulatorSpec, python_env

MODEL_3WAY = "bench-3way"
MODEL_1DEAD = "bench-1dead"
MODEL_HEDGE_OFF = "hedge-off"
MODEL_HEDGE_ON = "hedge-on"
DEAD_ID = f"{MODEL_1DEAD}-dead"
ADMIN_KEY = "bench-admin-key"
FAILOVER_CONNECTIONS = 16
HEDGE_CONNECTIONS = 8
HEDGE_FAST_MS = 20
HEDGE_SLOW_MS = 300
HEDGE_DELAY_S = 0.05
# Latency comes from each deployment's x-sim-latency-ms header, not from the default.
HEDGE_SIM = SimulatorSpec("hedge", latency_ms=0, tokens_per_s=0, completion_tokens=16)
BALANCERS_SCRIPT = Path(__file__).with_name("balancers.py")
# After a wrk run, time for the gateway to see the disconnects and for any attempt
# already under way to reach the simulator, before its counter is read.
SETTLE_S = 0.5


class DeadPort:
    """A loopback port bound but never listening: connects to it are refused at once,
    and no other process can take it while this holds it."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]

    def __enter__(self) -> DeadPort:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._sock.close()


# --- the gateway's models -------------------------------------------------------------


def _deployment(id: str, port: int, headers: dict[str, str] | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {
        "id": id,
        "provider": "openai",
        "base_url": f"http://127.0.0.1:{port}/v1",
        "model": UPSTREAM_MODEL,
    }
    if headers:
        d["headers"] = headers
    return d


def _hedge_pair(model: str, sim_port: int) -> list[dict[str, Any]]:
    return [
        _deployment(f"{model}-fast", sim_port, {"x-sim-latency-ms": str(HEDGE_FAST_MS)}),
        _deployment(f"{model}-slow", sim_port, {"x-sim-latency-ms": str(HEDGE_SLOW_MS)}),
    ]


def failover_models(nginx_port: int, dead_port: int, sim_port: int) -> list[dict[str, Any]]:
    """bench-3way: three deployments on nginx; bench-1dead: two on nginx and one on a
    refused port; hedge-off / hedge-on: a 20 ms and a 300 ms deployment, round-robin."""
    return [
        {
            "name": MODEL_3WAY,
            "strategy": "p2c-ewma",
            "deployments": [_deployment(f"{MODEL_3WAY}-{i}", nginx_port) for i in range(3)],
        },
        {
            "name": MODEL_1DEAD,
            "strategy": "p2c-ewma",
            "deployments": [
                *(_deployment(f"{MODEL_1DEAD}-{i}", nginx_port) for i in range(2)),
                _deployment(DEAD_ID, dead_port),
            ],
        },
        {
            "name": MODEL_HEDGE_OFF,
            "strategy": "round-robin",
            "deployments": _hedge_pair(MODEL_HEDGE_OFF, sim_port),
        },
        {
            "name": MODEL_HEDGE_ON,
            "strategy": "round-robin",
            "hedge": {"enabled": True, "delay_s": HEDGE_DELAY_S},
            "deployments": _hedge_pair(MODEL_HEDGE_ON, sim_port),
        },
    ]


# --- reading what routing did ---------------------------------------------------------


@dataclass(frozen=True)
class DeploymentCount:
    """One deployment as `GET /admin/routing` showed it after the runs."""

    id: str
    breaker: str
    requests: int
    failures: int
    ejected: bool


def _get_json(port: int, path: str, headers: dict[str, str] | None = None) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        body = response.read()
    except (OSError, http.client.HTTPException) as exc:
        raise BenchError(f"GET {path} on port {port}: {exc}") from exc
    finally:
        conn.close()
    if response.status != 200:
        raise BenchError(f"GET {path} on port {port}: {response.status} {body[:300]!r}")
    try:
        return json.loads(body)
    except ValueError as exc:
        raise BenchError(f"GET {path} on port {port}: not JSON: {body[:300]!r}") from exc


def deployment_counts(gateway_port: int, model: str) -> list[DeploymentCount]:
    """A model's deployments from the gateway's admin API (with several workers: the
    one worker that answered)."""
    auth = {"Authorization": f"Bearer {ADMIN_KEY}"}
    snapshot = _get_json(gateway_port, "/admin/routing", auth)
    group = next((g for g in snapshot.get("models", []) if g.get("name") == model), None)
    if group is None:
        raise BenchError(f"/admin/routing shows no model {model!r}")
    return [
        DeploymentCount(
            d["id"], d["breaker"], int(d["requests"]), int(d["failures"]), bool(d["ejected"])
        )
        for d in group["deployments"]
    ]


def simulator_requests(port: int) -> int:
    return int(_get_json(port, "/sim/stats")["requests_total"])


def require_alive(gateway: Child, during: str) -> None:
    """Numbers from a run the gateway did not survive mean nothing: say so instead."""
    if not gateway.alive():
        tail = " | ".join(line[:200] for line in gateway.tail(5))
        raise BenchError(f"aigw exited ({gateway.proc.returncode}) during {during}: {tail}")


def sent_requests(result: WrkResult, connections: int, runs: int) -> int:
    """Requests the client sent: the completed ones plus one per connection cut off
    when each wrk run stopped (closed-loop load keeps every connection busy)."""
    return result.requests + connections * runs


# --- 1. one dead deployment of three --------------------------------------------------


@dataclass(frozen=True)
class FailoverRun:
    """bench-3way vs bench-1dead through the gateway, rounds alternating; CPU µs per
    request of the gateway process tree. `deployments`: bench-1dead's, after the runs."""

    connections: int
    rounds: int
    three_way: WrkResult
    one_dead: WrkResult
    three_way_cpu_us: float
    one_dead_cpu_us: float
    deployments: list[DeploymentCount] = field(default_factory=list)
    admin_error: str = ""

    @property
    def dead(self) -> DeploymentCount | None:
        return next((d for d in self.deployments if d.id == DEAD_ID), None)

    @property
    def added_us(self) -> tuple[float, float]:
        """(p50, p99) of bench-1dead minus bench-3way, microseconds."""
        return (
            self.one_dead.p50_us - self.three_way.p50_us,
            self.one_dead.p99_us - self.three_way.p99_us,
        )

    @property
    def added_cpu_us(self) -> float:
        return self.one_dead_cpu_us - self.three_way_cpu_us

    @property
    def attempts_per_request(self) -> float | None:
        if not self.deployments:
            return None
        attempts = sum(d.requests for d in self.deployments)
        return attempts / max(1, sent_requests(self.one_dead, self.connections, self.rounds))


def measure_failover(gateway: Child, plan: Plan) -> FailoverRun:
    url = chat_url(gateway.port)
    # Warm bench-3way's connections to nginx; bench-1dead starts cold, with every
    # breaker closed, so its first round includes finding out that one deployment is dead.
    run_wrk(url, connections=FAILOVER_CONNECTIONS, duration_s=plan.warmup_s, model=MODEL_3WAY)
    targets = [Target(url, MODEL_3WAY, gateway.pid), Target(url, MODEL_1DEAD, gateway.pid)]
    c, rounds = FAILOVER_CONNECTIONS, plan.failover_rounds
    (three, three_cpu), (dead, dead_cpu) = interleaved(targets, c, rounds, plan.failover_round_s)
    require_alive(gateway, "the failover runs")
    try:
        deployments, admin_error = deployment_counts(gateway.port, MODEL_1DEAD), ""
    except BenchError as exc:
        deployments, admin_error = [], str(exc)
    return FailoverRun(c, rounds, three, dead, three_cpu, dead_cpu, deployments, admin_error)


# --- 2. hedging a slow deployment -----------------------------------------------------


@dataclass(frozen=True)
class HedgeArm:
    """One model's runs: wrk's figures, the gateway's CPU µs per request, attempts the
    simulator received, requests the client sent, and the model's deployments."""

    model: str
    result: WrkResult
    cpu_us: float
    upstream_requests: int
    client_requests: int
    deployments: list[DeploymentCount] = field(default_factory=list)

    @property
    def attempts_per_request(self) -> float:
        return self.upstream_requests / max(1, self.client_requests)

    def requests_to(self, suffix: str) -> int | None:
        """Attempts the deployment `MODEL-suffix` received, if the admin API answered."""
        wanted = f"{self.model}-{suffix}"
        return next((d.requests for d in self.deployments if d.id == wanted), None)

    @property
    def slow_first_share(self) -> float | None:
        """Share of requests whose first attempt went to the slow deployment. A hedge
        never goes there (the fast one answers before the hedge delay), so every attempt
        it received was a first one."""
        slow = self.requests_to("slow")
        return None if slow is None else slow / max(1, self.client_requests)


@dataclass(frozen=True)
class HedgeRun:
    connections: int
    rounds: int
    fast_ms: int
    slow_ms: int
    delay_s: float
    off: HedgeArm
    on: HedgeArm
    admin_error: str = ""


def measure_hedging(sim: Child, gateway: Child, plan: Plan) -> HedgeRun:
    url, c = chat_url(gateway.port), HEDGE_CONNECTIONS
    models = (MODEL_HEDGE_OFF, MODEL_HEDGE_ON)
    runs: dict[str, list[WrkResult]] = {m: [] for m in models}
    cpu_s = dict.fromkeys(models, 0.0)
    upstream = dict.fromkeys(models, 0)
    for _ in range(plan.hedge_rounds):
        for model in models:
            before, meter = simulator_requests(sim.port), CpuMeter(gateway.pid)
            runs[model].append(
                run_wrk(url, connections=c, duration_s=plan.hedge_round_s, model=model)
            )
            time.sleep(SETTLE_S)
            cpu_s[model] += meter.spent()
            upstream[model] += simulator_requests(sim.port) - before
            require_alive(gateway, f"the {model} run")
    arms = []
    admin_error = ""
    for model in models:
        merged = merge_rounds(runs[model])
        try:
            deployments = deployment_counts(gateway.port, model)
        except BenchError as exc:
            deployments, admin_error = [], str(exc)
        sent = sent_requests(merged, c, plan.hedge_rounds)
        cpu_us = cpu_s[model] * 1e6 / max(1, merged.requests)
        arms.append(HedgeArm(model, merged, cpu_us, upstream[model], sent, deployments))
    off, on = arms
    return HedgeRun(
        c, plan.hedge_rounds, HEDGE_FAST_MS, HEDGE_SLOW_MS, HEDGE_DELAY_S, off, on, admin_error
    )


# --- 3. balancer pick cost ------------------------------------------------------------


@dataclass(frozen=True)
class BalancerRun:
    """`bench/balancers.py --json`: ns per pick by strategy and candidate count, and ns
    per call of the latency and error-rate estimators."""

    python: str
    picks: int
    pick_ns: dict[str, dict[str, float]]
    estimator_ns: dict[str, float]

    @property
    def worst(self) -> tuple[str, str, float]:
        """(strategy, candidates, ns) of the slowest pick."""
        cells = [(s, n, ns) for s, row in self.pick_ns.items() for n, ns in row.items()]
        return max(cells, key=lambda cell: cell[2])


def measure_balancers(picks: int) -> BalancerRun:
    argv = [sys.executable, str(BALANCERS_SCRIPT), "--picks", str(picks), "--json"]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=300, env=python_env(), check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{BALANCERS_SCRIPT.name} did not finish in 300 s") from exc
    if done.returncode != 0:
        raise BenchError(f"{BALANCERS_SCRIPT.name} failed ({done.returncode}): {done.stderr}")
    try:
        data = json.loads(done.stdout)
        return BalancerRun(data["python"], data["picks"], data["pick_ns"], data["estimator_ns"])
    except (ValueError, KeyError) as exc:
        raise BenchError(
            f"cannot read {BALANCERS_SCRIPT.name} output: {done.stdout[:300]}"
        ) from exc
