"""Rate limits and load shedding (section `limits`): what one limit check costs, what
three limits add to a request, and whether load shedding keeps latency under overload.

1. `bench/limit_checks.py` times `check` for every algorithm in memory and on a
   `redis-server` this section starts (free loopback port, no persistence).
2. Three gateways on the instant upstream, identical but for their limits: none; three
   limits (requests and tokens per minute by API key, concurrent requests globally,
   all too large ever to refuse) in memory; the same three on that Redis. wrk sends an
   API key (`post_key.lua`), so every rule charges every request; the gateways' own
   `/metrics` show how many checks ran and whether any Redis call failed (a limit that
   fails open would hide it otherwise).
3. A simulator that works on 16 calls at once (100 ms each: ~160 requests/s) behind
   two gateways, one shedding load and one not, each driven by `openloop.py` at a fixed
   arrival rate: half the capacity, then four times it.
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
from typing import Any

from caching import start_redis
from failover import require_alive
from loadgen import WrkResult, merge_rounds, run_wrk
from measure import chat_url
from procs import BenchError, Child, CpuMeter, ProcessGroup, wait_listening_line
from stack import (
    MODEL_NGINX,
    START_TIMEOUT_S,
    Nginx,
    gateway_log_problems,
    keep_gateway_logs,
    python_env,
    start_gateway,
    write_gateway_config,
)

LIMITS_CONCURRENCY = (1, 16)
POST_KEY_LUA = Path(__file__).with_name("post_key.lua")
CHECKS_SCRIPT = Path(__file__).with_name("limit_checks.py")
OPENLOOP_SCRIPT = Path(__file__).with_name("openloop.py")
# An OpenAI model name upstream, so the tokens rule counts prompts exactly (tiktoken),
# as it would in production; nginx answers whatever the model.
COUNTED_MODEL = "gpt-4o-mini"
# Large enough never to refuse: what is measured is the cost of checking.
THREE_RULES: list[dict[str, Any]] = [
    {"name": "rpm-by-key", "by": "api_key", "requests": 1e9, "per": "minute"},
    {"name": "tpm-by-key", "by": "api_key", "tokens": 1e12, "per": "minute"},
    {"name": "concurrent-global", "by": "global", "concurrent": 100_000},
]
REDIS_LIMIT_TIMEOUT_S = 0.05
ARMS = ("no limits", "3 limits, memory", "3 limits, Redis")

# Load shedding: the upstream's capacity, and what the shedding gateway allows.
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


@dataclass(frozen=True)
class LimitsPlan:
    """How long this section's runs are (the shared `Plan` stays as it is)."""

    rounds: int
    round_s: float
    warmup_s: float
    checks: int
    redis_checks: int
    baseline_s: float
    overload_s: float


LIMITS_FULL = LimitsPlan(5, 2, 2, 200_000, 5_000, 5, 15)
LIMITS_QUICK = LimitsPlan(1, 2, 1, 20_000, 1_000, 3, 6)


# --- small readers: /metrics, the simulator, Redis -------------------------------------


def _http(port: int, method: str, path: str) -> bytes:
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


def metrics(port: int) -> str:
    return _http(port, "GET", "/metrics").decode()


def redis_commands(port: int) -> int:
    """Commands a Redis has run so far (INFO commandstats, INFO itself left out)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"INFO commandstats\r\n")
        data = b""
        while not data.endswith(b"\r\n") or data.count(b"\r\n") < 2:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    calls = 0
    for line in data.decode(errors="replace").splitlines():
        name, _, stats = line.partition(":")
        if name.startswith("cmdstat_") and name != "cmdstat_info":
            calls += int(stats.split("calls=")[1].split(",")[0])
    return calls


# --- 1. the cost of one check ------------------------------------------------------------


@dataclass(frozen=True)
class CheckCosts:
    """`bench/limit_checks.py`: mean µs per call. `redis_us` is empty when Redis did
    not run; `tokens_error` says why `tokens_us` is empty."""

    python: str
    loop: str
    checks: int
    redis_checks: int
    local_us: dict[str, float]
    local_concurrency_us: float
    redis_us: dict[str, float] = field(default_factory=dict)
    redis_concurrency_us: float | None = None
    tokens_us: dict[str, float] = field(default_factory=dict)
    tokens_error: str = ""


def measure_checks(plan: LimitsPlan, redis: Child | None) -> CheckCosts:
    argv = [sys.executable, str(CHECKS_SCRIPT), "--json", "--checks", str(plan.checks)]
    argv += ["--redis-checks", str(plan.redis_checks)]
    if redis is not None:
        argv += ["--redis-url", f"redis://127.0.0.1:{redis.port}/0"]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=300, env=python_env(), check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{CHECKS_SCRIPT.name} did not finish in 300 s") from exc
    if done.returncode != 0:
        raise BenchError(f"{CHECKS_SCRIPT.name} failed ({done.returncode}): {done.stderr}")
    try:
        return CheckCosts(**json.loads(done.stdout))
    except (ValueError, TypeError) as exc:
        raise BenchError(f"cannot read {CHECKS_SCRIPT.name} output: {done.stdout[:300]}") from exc


# --- 2. what three limits add ------------------------------------------------------------


def _nginx_model(nginx_port: int) -> dict[str, Any]:
    return {
        "name": MODEL_NGINX,
        "deployments": [
            {
                "provider": "openai",
                "base_url": f"http://127.0.0.1:{nginx_port}/v1",
                "model": COUNTED_MODEL,
            }
        ],
    }


def _arm_sections(arm: str, redis: Child | None) -> dict[str, object]:
    if arm == ARMS[0]:
        return {}
    if arm == ARMS[1]:
        return {"limits": {"rules": THREE_RULES}}
    assert redis is not None
    return {
        "state": {"backend": "redis", "url": f"redis://127.0.0.1:{redis.port}/0"},
        "limits": {"rules": THREE_RULES, "backend_timeout_s": REDIS_LIMIT_TIMEOUT_S},
    }


@dataclass(frozen=True)
class ArmResult:
    """One gateway at one concurrency, its rounds merged. From its `/metrics` over the
    runs: limit checks admitted and limited, Redis-backed checks (count and total
    seconds) and backend failures (limit checks that failed open, give-backs lost)."""

    arm: str
    result: WrkResult
    cpu_us: float
    checks_admitted: float = 0.0
    checks_limited: float = 0.0
    backend_checks: float = 0.0
    backend_seconds: float = 0.0
    backend_errors: float = 0.0
    redis_cpu_us: float | None = None
    redis_commands_per_request: float | None = None


@dataclass(frozen=True)
class OverheadRow:
    connections: int
    arms: list[ArmResult]

    def arm(self, name: str) -> ArmResult | None:
        return next((a for a in self.arms if a.arm == name), None)

    def added_us(self, name: str) -> tuple[float, float] | None:
        base, other = self.arm(ARMS[0]), self.arm(name)
        if base is None or other is None:
            return None
        return (
            other.result.p50_us - base.result.p50_us,
            other.result.p99_us - base.result.p99_us,
        )


@dataclass
class _Tally:
    """What one arm accumulates over its rounds at one concurrency."""

    runs: list[WrkResult] = field(default_factory=list)
    cpu_s: float = 0.0
    redis_cpu_s: float = 0.0
    redis_commands: int = 0
    counters: dict[str, float] = field(default_factory=dict)


def _counters(port: int) -> dict[str, float]:
    text = metrics(port)
    return {
        "admitted": metric_sum(text, "aigw_limit_checks_total", result="admitted"),
        "limited": metric_sum(text, "aigw_limit_checks_total", result="limited"),
        "backend_checks": metric_sum(text, "aigw_limit_backend_duration_seconds_count"),
        "backend_seconds": metric_sum(text, "aigw_limit_backend_duration_seconds_sum"),
        "backend_errors": metric_sum(text, "aigw_limit_backend_errors_total")
        + metric_sum(text, "aigw_state_errors_total"),
    }


def _one_round(gateway: Child, redis: Child | None, c: int, seconds: float, tally: _Tally) -> None:
    before = _counters(gateway.port)
    meter, redis_meter = CpuMeter(gateway.pid), CpuMeter(redis.pid) if redis else None
    commands = redis_commands(redis.port) if redis else 0
    url = chat_url(gateway.port)
    tally.runs.append(
        run_wrk(url, connections=c, duration_s=seconds, model=MODEL_NGINX, script=POST_KEY_LUA)
    )
    tally.cpu_s += meter.spent()
    if redis is not None and redis_meter is not None:
        tally.redis_cpu_s += redis_meter.spent()
        tally.redis_commands += redis_commands(redis.port) - commands
    after = _counters(gateway.port)
    for key, value in after.items():
        tally.counters[key] = tally.counters.get(key, 0.0) + value - before[key]


def _arm_result(arm: str, tally: _Tally, redis: bool) -> ArmResult:
    result = merge_rounds(tally.runs)
    n = max(1, result.requests)
    get = tally.counters.get
    return ArmResult(
        arm,
        result,
        tally.cpu_s * 1e6 / n,
        checks_admitted=get("admitted", 0.0),
        checks_limited=get("limited", 0.0),
        backend_checks=get("backend_checks", 0.0),
        backend_seconds=get("backend_seconds", 0.0),
        backend_errors=get("backend_errors", 0.0),
        redis_cpu_us=tally.redis_cpu_s * 1e6 / n if redis else None,
        redis_commands_per_request=tally.redis_commands / n if redis else None,
    )


def measure_overhead(
    gateways: dict[str, Child], redis: Child | None, plan: LimitsPlan
) -> list[OverheadRow]:
    for gateway in gateways.values():  # pooled connections, encodings, Redis scripts loaded
        url = chat_url(gateway.port)
        run_wrk(
            url, connections=16, duration_s=plan.warmup_s, model=MODEL_NGINX, script=POST_KEY_LUA
        )
    rows = []
    for c in LIMITS_CONCURRENCY:
        tallies = {arm: _Tally() for arm in gateways}
        for _ in range(plan.rounds):
            for arm, gateway in gateways.items():
                arm_redis = redis if arm == ARMS[2] else None
                _one_round(gateway, arm_redis, c, plan.round_s, tallies[arm])
        rows.append(OverheadRow(c, [_arm_result(a, t, a == ARMS[2]) for a, t in tallies.items()]))
    for arm, gateway in gateways.items():
        require_alive(gateway, f"the limits runs ({arm})")
    return rows


# --- 3. load shedding under overload ----------------------------------------------------


def start_capacity_simulator(group: ProcessGroup) -> Child:
    """The simulator at 100 ms a call, 16 calls at once; the rest queue inside it."""
    argv = [sys.executable, "-m", "aigw.simulator", "--host", "127.0.0.1", "--port", "0"]
    argv += ["--latency-ms", str(SIM_LATENCY_MS), "--capacity", str(SIM_CAPACITY)]
    child = group.spawn("sim-capacity", argv, python_env())
    wait_listening_line(child, START_TIMEOUT_S)
    return child


def shed_sections(shedding: bool, access_log: bool) -> dict[str, object]:
    """`server` replaces the section `write_gateway_config` writes: access_log again."""
    server = {"access_log": access_log, "request_timeout_s": REQUEST_TIMEOUT_S}
    return {"server": server, **({"shedding": SHEDDING} if shedding else {})}


def shed_model(sim_port: int) -> dict[str, Any]:
    return {
        "name": SHED_MODEL,
        "deployments": [
            {
                "provider": "openai",
                "base_url": f"http://127.0.0.1:{sim_port}/v1",
                "model": "bench-model",
            }
        ],
    }


def _percentile(values: list[float], q: float) -> float | None:
    """Nearest rank on sorted values; None when there are none."""
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
        return cls(
            len(values),
            _percentile(values, 0.5),
            _percentile(values, 0.99),
            max(values, default=None),
        )


@dataclass(frozen=True)
class Phase:
    """One open-loop run against one gateway. Latencies run from when each request was
    due (not when it was sent); `ok` = 200s, `shed` = 503s, `other` = any other status,
    `errors` = no answer (timeout after `CLIENT_TIMEOUT_S`, refused, reset...)."""

    gateway: str
    name: str  # baseline | overload
    load: float  # x capacity
    rate: float
    seconds: float
    sent: int
    achieved_rate: float
    ok: Latencies
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
    shed_reasons: dict[str, float] = field(default_factory=dict)

    @property
    def accepted_rate(self) -> float:
        return self.ok.count / self.seconds


def _sim_stats(port: int) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(_http(port, "GET", "/sim/stats"))
    return data


def _sim_idle(sim: Child) -> None:
    """Wait until the simulator works on nothing, then zero its counters."""
    deadline = time.monotonic() + SIM_DRAIN_S
    while _sim_stats(sim.port)["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.1)
    _http(sim.port, "POST", "/sim/reset")


def _shed_reasons(port: int) -> dict[str, float]:
    text = metrics(port)
    reasons = ("queue_full", "timeout", "displaced")
    return {r: metric_sum(text, "aigw_shed_requests_total", reason=r) for r in reasons}


def open_loop(port: int, rate: float, seconds: float) -> dict[str, Any]:
    argv = [sys.executable, str(OPENLOOP_SCRIPT), "--port", str(port), "--model", SHED_MODEL]
    argv += ["--rate", f"{rate:g}", "--seconds", f"{seconds:g}"]
    argv += ["--timeout", f"{CLIENT_TIMEOUT_S:g}"]
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


def run_phase(
    gateway: Child, label: str, sim: Child, name: str, load: float, seconds: float
) -> Phase:
    _sim_idle(sim)
    shed_before = _shed_reasons(gateway.port)
    meter = CpuMeter(gateway.pid)
    data = open_loop(gateway.port, load * CAPACITY_RPS, seconds)
    cpu_s = meter.spent()
    stats = _sim_stats(sim.port)
    records = data["records"]
    by_status: dict[int, list[float]] = {}
    errors: dict[str, int] = {}
    for _, status, latency_ms, _, error in records:
        if error:
            errors[error] = errors.get(error, 0) + 1
        else:
            by_status.setdefault(status, []).append(latency_ms)
    lags = sorted(r[3] for r in records)
    shed_after = _shed_reasons(gateway.port)
    return Phase(
        gateway=label,
        name=name,
        load=load,
        rate=data["rate"],
        seconds=seconds,
        sent=data["sent"],
        achieved_rate=data["achieved_rate"],
        ok=Latencies.of(by_status.pop(200, [])),
        shed=Latencies.of(by_status.pop(503, [])),
        other={str(s): len(v) for s, v in sorted(by_status.items())},
        errors=errors,
        lag_p99_ms=_percentile(lags, 0.99) or 0.0,
        lag_max_ms=lags[-1] if lags else 0.0,
        generator_cpu_us=data["cpu_us_per_request"],
        generator_loop=data["loop"],
        peak_connections=data["peak_connections"],
        gateway_cpu_us=cpu_s * 1e6 / max(1, data["sent"]),
        sim_calls=int(stats["requests_total"]),
        sim_peak_in_flight=int(stats["peak_in_flight"]),
        shed_reasons={k: v - shed_before[k] for k, v in shed_after.items() if v - shed_before[k]},
    )


def measure_shedding(gateways: dict[str, Child], sim: Child, plan: LimitsPlan) -> list[Phase]:
    phases = []
    for label, gateway in gateways.items():
        for name, load, seconds in (
            ("baseline", BASELINE_LOAD, plan.baseline_s),
            ("overload", OVERLOAD, plan.overload_s),
        ):
            phases.append(run_phase(gateway, label, sim, name, load, seconds))
        require_alive(gateway, f"the load-shedding runs ({label})")
    return phases


# --- the whole section -------------------------------------------------------------------


@dataclass(frozen=True)
class GatewayLog:
    name: str
    problem_lines: int
    samples: list[str]


@dataclass(frozen=True)
class LimitsRun:
    plan: LimitsPlan
    checks: CheckCosts | None
    overhead: list[OverheadRow]
    shedding: list[Phase]
    workers: int
    errors: dict[str, str] = field(default_factory=dict)  # part → why it did not run
    logs: list[GatewayLog] = field(default_factory=list)

    def phase(self, gateway: str, name: str) -> Phase | None:
        return next((p for p in self.shedding if p.gateway == gateway and p.name == name), None)


def _stop(group: ProcessGroup, gateways: dict[str, Child], out: Path) -> list[GatewayLog]:
    """Stop the gateways (their logs are then complete), keep their logs in `out`."""
    logs = []
    for gateway in gateways.values():
        group.release(gateway)
        count, samples = gateway_log_problems(gateway)
        keep_gateway_logs(gateway, out, gateway.name)
        logs.append(GatewayLog(gateway.name, count, samples))
    return logs


def _start(
    group: ProcessGroup,
    name: str,
    models: list[dict[str, Any]],
    sections: dict[str, object],
    access_log: bool,
    workers: int,
) -> Child:
    config = write_gateway_config(
        group.workdir / f"{name}.yaml", {}, access_log, models, sections=sections
    )
    return start_gateway(group, config, workers, name=name)


def _overhead(
    group: ProcessGroup,
    nginx: Nginx,
    redis: Child | None,
    plan: LimitsPlan,
    access_log: bool,
    workers: int,
    logs: list[GatewayLog],
    out: Path,
) -> list[OverheadRow]:
    model = [_nginx_model(nginx.upstream_port)]
    arms = ARMS if redis is not None else ARMS[:2]
    gateways: dict[str, Child] = {}
    try:
        for i, arm in enumerate(arms):
            name = ("aigw-nolimits", "aigw-limits", "aigw-limits-redis")[i]
            gateways[arm] = _start(
                group, name, model, _arm_sections(arm, redis), access_log, workers
            )
        return measure_overhead(gateways, redis, plan)
    finally:
        logs += _stop(group, gateways, out)


def _shedding(
    group: ProcessGroup, plan: LimitsPlan, access_log: bool, logs: list[GatewayLog], out: Path
) -> list[Phase]:
    sim = start_capacity_simulator(group)
    gateways: dict[str, Child] = {}
    try:
        model = [shed_model(sim.port)]
        # One process each: shedding bounds what one process has in flight.
        for label, name, on in (
            ("shedding on", "aigw-shed", True),
            ("shedding off", "aigw-noshed", False),
        ):
            gateways[label] = _start(
                group, name, model, shed_sections(on, access_log), access_log, 1
            )
        return measure_shedding(gateways, sim, plan)
    finally:
        logs += _stop(group, gateways, out)
        group.release(sim)


def run_limits(
    group: ProcessGroup,
    nginx: Nginx | None,
    plan: LimitsPlan,
    *,
    access_log: bool,
    workers: int,
    out: Path,
) -> LimitsRun:
    """The whole section. Each part that cannot run is recorded in `errors` and the
    others still run; every process it starts is stopped before it returns."""
    errors: dict[str, str] = {}
    logs: list[GatewayLog] = []
    checks, overhead, shedding = None, [], []
    redis = None
    try:
        try:
            redis = start_redis(group)
        except (BenchError, OSError) as exc:
            errors["redis"] = f"redis-server did not start: {exc}"
        try:
            checks = measure_checks(plan, redis)
        except (BenchError, OSError) as exc:
            errors["checks"] = str(exc)
        if nginx is None:
            errors["overhead"] = "nginx did not start"
        else:
            try:
                overhead = _overhead(group, nginx, redis, plan, access_log, workers, logs, out)
            except (BenchError, OSError) as exc:
                errors["overhead"] = str(exc)
    finally:
        if redis is not None:
            group.release(redis)
    try:
        shedding = _shedding(group, plan, access_log, logs, out)
    except (BenchError, OSError) as exc:
        errors["shedding"] = str(exc)
    return LimitsRun(plan, checks, overhead, shedding, workers, errors, logs)
