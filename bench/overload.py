"""Load shedding under overload (the third part of section `limits`).

A simulator that works on 16 model calls at once, 100 ms each (~160 requests/s; the
rest queue inside it, like a busy model server), behind two gateways that differ only
in `shedding`: *on* lets 16 requests in flight, 16 more wait at most 50 ms, and turns
the rest away with a 503; *off* lets everything through. `openloop.py` drives each at a
fixed arrival rate, whatever the answers do: half the capacity (the baseline), then four
times it. Before each phase the harness waits for the simulator to be idle and zeroes
its counters, so each phase starts from an empty queue.

Also the helpers the section's other parts share: gateways started and stopped by
name with their logs kept, `/metrics` sums, GET/POST on loopback.
"""

from __future__ import annotations

import http.client
import json
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from failover import require_alive
from procs import BenchError, Child, CpuMeter, ProcessGroup, wait_listening_line
from stack import (
    START_TIMEOUT_S,
    UPSTREAM_MODEL,
    gateway_log_problems,
    keep_gateway_logs,
    python_env,
    start_gateway,
    write_gateway_config,
)

OPENLOOP_SCRIPT = Path(__file__).with_name("openloop.py")
SHED_MODEL = "bench-shed"
SIM_LATENCY_MS = 100
SIM_CAPACITY = 16
CAPACITY_RPS = SIM_CAPACITY * 1000 / SIM_LATENCY_MS
SHEDDING = {"max_in_flight": SIM_CAPACITY, "queue": 16, "queue_timeout_s": 0.05}
REQUEST_TIMEOUT_S = 10.0
CLIENT_TIMEOUT_S = REQUEST_TIMEOUT_S + 5  # the gateway answers 504 first
BASELINE_LOAD = 0.5
OVERLOAD = 4.0
SIM_DRAIN_S = 20.0
SHED_ON, SHED_OFF = "shedding on", "shedding off"
BREAKER_OPENED = "breaker opened"


# --- helpers shared by the section ------------------------------------------------------


def http_call(port: int, method: str, path: str) -> bytes:
    """The body of one request on a fresh loopback connection; BenchError unless 200."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        body = response.read()
    except (OSError, http.client.HTTPException) as exc:
        raise BenchError(f"{method} {path} on port {port}: {exc}") from exc
    finally:
        conn.close()
    if response.status != 200:
        raise BenchError(f"{method} {path} on port {port}: {response.status} {body[:200]!r}")
    return body


def metric_sum(text: str, name: str, **labels: str) -> float:
    """The sum of a Prometheus metric's samples whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name) or line[len(name) : len(name) + 1] not in ("{", " "):
            continue
        series, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in series for k, v in labels.items()):
            total += float(value)
    return total


def gateway_metrics(port: int) -> str:
    return http_call(port, "GET", "/metrics").decode()


@dataclass(frozen=True)
class GatewayLog:
    """One of the section's gateways: its log lines at warning level or worse."""

    name: str
    problem_lines: int
    samples: list[str]


def start_named(
    group: ProcessGroup,
    name: str,
    models: list[dict[str, Any]],
    sections: dict[str, object],
    access_log: bool,
    workers: int,
) -> Child:
    """A gateway serving only `models`, with the top-level settings `sections`."""
    path = group.workdir / f"{name}.yaml"
    config = write_gateway_config(path, {}, access_log, models, sections=sections)
    return start_gateway(group, config, workers, name=name)


def stop_and_keep(group: ProcessGroup, gateways: dict[str, Child], out: Path) -> list[GatewayLog]:
    """Stop the gateways (their logs are then complete) and keep their logs in `out`."""
    logs = []
    for gateway in gateways.values():
        group.release(gateway)
        count, samples = gateway_log_problems(gateway)
        keep_gateway_logs(gateway, out, gateway.name)
        logs.append(GatewayLog(gateway.name, count, samples))
    return logs


# --- the processes ----------------------------------------------------------------------


def start_capacity_simulator(group: ProcessGroup) -> Child:
    argv = [sys.executable, "-m", "aigw.simulator", "--host", "127.0.0.1", "--port", "0"]
    argv += ["--latency-ms", str(SIM_LATENCY_MS), "--capacity", str(SIM_CAPACITY)]
    child = group.spawn("sim-capacity", argv, python_env())
    wait_listening_line(child, START_TIMEOUT_S)
    return child


def shed_sections(shedding: bool, access_log: bool) -> dict[str, object]:
    # `server` replaces the section write_gateway_config writes: access_log goes again.
    server = {"access_log": access_log, "request_timeout_s": REQUEST_TIMEOUT_S}
    return {"server": server, **({"shedding": SHEDDING} if shedding else {})}


def shed_model(sim_port: int) -> dict[str, Any]:
    deployment = {
        "provider": "openai",
        "base_url": f"http://127.0.0.1:{sim_port}/v1",
        "model": UPSTREAM_MODEL,
    }
    return {"name": SHED_MODEL, "deployments": [deployment]}


# --- one phase ----------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    """Nearest rank on sorted `values`; None when there are none."""
    if not values:
        return None
    return values[min(len(values) - 1, max(0, round(q * len(values)) - 1))]


@dataclass(frozen=True)
class Latencies:
    count: int
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None

    @classmethod
    def of(cls, values: list[float]) -> Latencies:
        values = sorted(values)
        last = values[-1] if values else None
        return cls(len(values), percentile(values, 0.5), percentile(values, 0.99), last)


@dataclass(frozen=True)
class Phase:
    """One open-loop run against one gateway. Latencies run from when each request was
    due, not from when it was sent. `ok` = 200s, `shed` = 503s, `other` = any other
    status; `errors` = no answer (`timeout` after CLIENT_TIMEOUT_S, `pool_full`,
    refused, reset...). `ok_span_s`: from the first request's due time to the last 200
    (the 200s of an overloaded gateway keep coming after the last request is sent).
    CPU figures are per request sent."""

    gateway: str
    name: str  # baseline | overload
    load: float  # x CAPACITY_RPS
    rate: float
    seconds: float
    sent: int
    achieved_rate: float
    ok: Latencies
    ok_span_s: float
    shed: Latencies
    other: dict[str, int]
    errors: dict[str, int]
    lag_p99_ms: float
    lag_max_ms: float
    generator_cpu_us: float
    generator_loop: str
    peak_connections: int
    gateway_cpu_us: float
    sim_calls: int
    sim_peak_in_flight: int
    # The shedder's refusals by reason, and BREAKER_OPENED: the deployment's breaker
    # opening (its 503s say no_deployment_available), from the gateway's /metrics.
    gateway_counts: dict[str, float] = field(default_factory=dict)
    ok_per_s_by_third: list[float] = field(default_factory=list)  # by due time
    # After an overload, once all is idle: 200s of SIM_CAPACITY requests sent at once
    # (all of them, unless the gateway lost in-flight slots). None: not probed.
    probe_ok: int | None = None

    @property
    def accepted_rate(self) -> float:
        """200s per second while they came: what the upstream got done for clients."""
        return self.ok.count / self.ok_span_s if self.ok_span_s > 0 else 0.0

    @property
    def no_answer(self) -> int:
        return sum(self.errors.values())


def _sim_stats(port: int) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(http_call(port, "GET", "/sim/stats"))
    return data


def _sim_idle(sim: Child) -> None:
    """Wait until the simulator works on nothing, then zero its counters."""
    deadline = time.monotonic() + SIM_DRAIN_S
    while _sim_stats(sim.port)["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.1)
    http_call(sim.port, "POST", "/sim/reset")


def _gateway_counts(port: int) -> dict[str, float]:
    """The shedder's refusals by reason, and how often a breaker opened."""
    text = gateway_metrics(port)
    reasons = ("queue_full", "timeout", "displaced")
    counts = {r: metric_sum(text, "aigw_shed_requests_total", reason=r) for r in reasons}
    counts[BREAKER_OPENED] = metric_sum(text, "aigw_breaker_transitions_total", to="open")
    return counts


def _max_connections() -> int:
    """As many as the gateway can hold (two sockets each: client and upstream) within
    the open-files limit the harness raised and its children inherit; past that, the
    generator counts a request as `pool_full` rather than the gateway failing."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(64, min(8000, (soft - 256) // 2))


def open_loop(port: int, rate: float, seconds: float) -> dict[str, Any]:
    argv = [sys.executable, str(OPENLOOP_SCRIPT), "--port", str(port), "--model", SHED_MODEL]
    argv += ["--rate", f"{rate:g}", "--seconds", f"{seconds:g}"]
    argv += ["--timeout", f"{CLIENT_TIMEOUT_S:g}", "--max-connections", str(_max_connections())]
    limit = seconds + CLIENT_TIMEOUT_S + 30
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=limit, check=False)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{OPENLOOP_SCRIPT.name} did not finish in {limit:g} s") from exc
    if done.returncode != 0:
        raise BenchError(f"{OPENLOOP_SCRIPT.name} failed ({done.returncode}): {done.stderr}")
    try:
        data: dict[str, Any] = json.loads(done.stdout)
    except ValueError as exc:
        raise BenchError(f"cannot read {OPENLOOP_SCRIPT.name} output: {done.stdout[:300]}") from exc
    return data


def _phase(label: str, name: str, load: float, seconds: float, data: dict[str, Any]) -> Phase:
    """Everything but the gateway's and simulator's counters, from openloop's records."""
    by_status: dict[int, list[float]] = {}
    errors: dict[str, int] = {}
    ok_end = 0.0
    thirds = [0, 0, 0]
    for offset, status, latency_ms, _, error in data["records"]:
        if error:
            errors[error] = errors.get(error, 0) + 1
            continue
        by_status.setdefault(status, []).append(latency_ms)
        if status == 200:
            ok_end = max(ok_end, offset + latency_ms / 1e3)
            thirds[min(2, int(3 * offset / seconds))] += 1
    lags = sorted(record[3] for record in data["records"])
    return Phase(
        gateway=label,
        name=name,
        load=load,
        rate=data["rate"],
        seconds=seconds,
        sent=data["sent"],
        achieved_rate=data["achieved_rate"],
        ok=Latencies.of(by_status.pop(200, [])),
        ok_span_s=ok_end,
        shed=Latencies.of(by_status.pop(503, [])),
        other={str(s): len(v) for s, v in sorted(by_status.items())},
        errors=errors,
        lag_p99_ms=percentile(lags, 0.99) or 0.0,
        lag_max_ms=lags[-1] if lags else 0.0,
        generator_cpu_us=data["cpu_us_per_request"],
        generator_loop=data["loop"],
        peak_connections=data["peak_connections"],
        gateway_cpu_us=0.0,
        sim_calls=0,
        sim_peak_in_flight=0,
        ok_per_s_by_third=[n * 3 / seconds for n in thirds],
    )


def run_phase(
    gateway: Child, label: str, sim: Child, name: str, load: float, seconds: float
) -> Phase:
    _sim_idle(sim)
    before = _gateway_counts(gateway.port)
    meter = CpuMeter(gateway.pid)
    data = open_loop(gateway.port, load * CAPACITY_RPS, seconds)
    cpu_s = meter.spent()
    stats = _sim_stats(sim.port)
    after = _gateway_counts(gateway.port)
    # Only with shedding: without, the timeouts of the overload open the breaker, which
    # turns requests away for a while after, slots or not.
    probe = _probe(gateway, sim) if name == "overload" and label == SHED_ON else None
    return replace(
        _phase(label, name, load, seconds, data),
        gateway_cpu_us=cpu_s * 1e6 / max(1, data["sent"]),
        sim_calls=int(stats["requests_total"]),
        sim_peak_in_flight=int(stats["peak_in_flight"]),
        gateway_counts={k: n - before[k] for k, n in after.items() if n > before[k]},
        probe_ok=probe,
    )


def _probe(gateway: Child, sim: Child) -> int:
    """200s of SIM_CAPACITY requests at once to the idle gateway: a shedder that lost
    slots during the overload lets fewer in, and the rest wait out its queue timeout."""
    _sim_idle(sim)
    burst_s = 0.01
    data = open_loop(gateway.port, SIM_CAPACITY / burst_s, burst_s)
    return sum(1 for record in data["records"] if record[1] == 200)


def measure_shedding(
    gateways: dict[str, Child], sim: Child, seconds: tuple[float, float]
) -> list[Phase]:
    """Each gateway in turn: the baseline, then the overload, for `seconds` each."""
    phases = []
    for label, gateway in gateways.items():
        for name, load, length in (
            ("baseline", BASELINE_LOAD, seconds[0]),
            ("overload", OVERLOAD, seconds[1]),
        ):
            phases.append(run_phase(gateway, label, sim, name, load, length))
        require_alive(gateway, f"the load-shedding runs ({label})")
    return phases


def run_overload(
    group: ProcessGroup,
    seconds: tuple[float, float],
    access_log: bool,
    out: Path,
    logs: list[GatewayLog],
) -> list[Phase]:
    """Start the simulator and both gateways, measure, stop them all (the gateways' logs
    go to `logs`, even when a step fails). One process per gateway whatever `--workers`
    says: shedding bounds what one process has in flight."""
    sim = start_capacity_simulator(group)
    gateways: dict[str, Child] = {}
    try:
        model = [shed_model(sim.port)]
        for label, name, on in ((SHED_ON, "aigw-shed", True), (SHED_OFF, "aigw-noshed", False)):
            sections = shed_sections(on, access_log)
            gateways[label] = start_named(group, name, model, sections, access_log, 1)
        return measure_shedding(gateways, sim, seconds)
    finally:
        logs += stop_and_keep(group, gateways, out)
        group.release(sim)
