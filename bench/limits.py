"""Rate limits and load shedding (section `limits`): what one limit check costs, what
three limits add to a request, and whether load shedding keeps latency under overload.

1. `bench/limit_checks.py` times `check` for every algorithm in memory and on a
   `redis-server` this section starts (free loopback port, no persistence), and the
   whole admit stage with the three limits below.
2. Three gateways on the instant upstream, identical but for their limits: none; three
   limits (requests and tokens per minute by API key, concurrent requests globally,
   all too large ever to refuse) in memory; the same three on that Redis. wrk sends an
   API key (`post_key.lua`), so every rule charges every request; the gateways' own
   `/metrics` show how many checks ran and whether any Redis call failed (a limit that
   fails open would hide it otherwise), Redis's INFO how many scripts it ran.
3. Load shedding under four times the upstream's capacity: see `overload.py`.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from caching import start_redis
from failover import require_alive
from loadgen import WrkResult, merge_rounds, run_wrk
from measure import chat_url
from overload import (
    GatewayLog,
    Phase,
    gateway_metrics,
    metric_sum,
    run_overload,
    start_named,
    stop_and_keep,
)
from procs import BenchError, Child, CpuMeter, ProcessGroup
from stack import MODEL_NGINX, Nginx, python_env

LIMITS_CONCURRENCY = (1, 16)
POST_KEY_LUA = Path(__file__).with_name("post_key.lua")
CHECKS_SCRIPT = Path(__file__).with_name("limit_checks.py")
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
# LimitsSettings.backend_timeout_s's default, and a bucket of the gateway's histogram of
# Redis check times: the share of checks slower than it would have failed open.
DEFAULT_TIMEOUT_BUCKET = "0.005"
NO_LIMITS, MEMORY, REDIS = "no limits", "3 limits, memory", "3 limits, Redis"
GATEWAY_NAMES = {NO_LIMITS: "aigw-nolimits", MEMORY: "aigw-limits", REDIS: "aigw-limits-redis"}


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


# --- Redis's own count of what it ran ------------------------------------------------------


def _bulk_end(data: bytes) -> int:
    head, _, _ = data.partition(b"\r\n")
    if not head.startswith(b"$"):
        raise BenchError(f"unexpected reply from Redis: {data[:100]!r}")
    return len(head) + 2 + int(head[1:]) + 2


def redis_scripts_run(port: int) -> int:
    """EVALSHA and EVAL calls a Redis has served (INFO commandstats also counts the
    commands each script runs inside; those are not round trips)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"INFO commandstats\r\n")
        data = b""
        # The reply is one bulk string: $LENGTH CRLF, the text, CRLF.
        while b"\r\n" not in data or len(data) < _bulk_end(data):
            chunk = sock.recv(65536)
            if not chunk:
                raise BenchError(f"Redis on port {port} closed the connection: {data[:100]!r}")
            data += chunk
    calls = 0
    for line in data.decode(errors="replace").splitlines():
        name, _, stats = line.partition(":")
        if name in ("cmdstat_evalsha", "cmdstat_eval"):
            calls += int(stats.split("calls=")[1].split(",")[0])
    return calls


# --- 1. the cost of one check ------------------------------------------------------------


@dataclass(frozen=True)
class CheckCosts:
    """`bench/limit_checks.py`: mean µs per call. The Redis figures are empty when
    Redis did not run; `stage_error` and `tokens_error` say why a row is missing."""

    python: str
    loop: str
    checks: int
    redis_checks: int
    local_us: dict[str, float]
    local_concurrency_us: float
    redis_us: dict[str, float] = field(default_factory=dict)
    redis_concurrency_us: float | None = None
    local_stage_us: float | None = None  # the admit stage with THREE_RULES, per request
    redis_stage_us: float | None = None
    stage_error: str = ""
    tokens_us: dict[str, float] = field(default_factory=dict)
    tokens_error: str = ""


def measure_checks(plan: LimitsPlan, redis: Child | None) -> CheckCosts:
    argv = [sys.executable, str(CHECKS_SCRIPT), "--json", "--checks", str(plan.checks)]
    argv += ["--redis-checks", str(plan.redis_checks), "--rules", json.dumps(THREE_RULES)]
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
    if arm == NO_LIMITS:
        return {}
    if arm == MEMORY:
        return {"limits": {"rules": THREE_RULES}}
    assert redis is not None
    return {
        "state": {"backend": "redis", "url": f"redis://127.0.0.1:{redis.port}/0"},
        "limits": {"rules": THREE_RULES, "backend_timeout_s": REDIS_LIMIT_TIMEOUT_S},
    }


@dataclass(frozen=True)
class ArmResult:
    """One gateway at one concurrency, its rounds merged. From its `/metrics` over the
    runs: limit checks admitted and limited, Redis-backed checks (count, total seconds,
    and how many took at most DEFAULT_TIMEOUT_BUCKET s), checks whose backend failed
    (`aigw_limit_backend_errors_total`: the rule failed open or closed) and give-backs
    lost (`aigw_state_errors_total`: a slot's release or a token reconciliation)."""

    arm: str
    result: WrkResult
    cpu_us: float
    checks_admitted: float = 0.0
    checks_limited: float = 0.0
    backend_checks: float = 0.0
    backend_seconds: float = 0.0
    backend_fast: float = 0.0
    backend_errors: float = 0.0
    give_backs_lost: float = 0.0
    redis_cpu_us: float | None = None
    redis_scripts_per_request: float | None = None


@dataclass(frozen=True)
class OverheadRow:
    connections: int
    arms: list[ArmResult]

    def arm(self, name: str) -> ArmResult | None:
        return next((a for a in self.arms if a.arm == name), None)

    def added_us(self, name: str) -> tuple[float, float] | None:
        base, other = self.arm(NO_LIMITS), self.arm(name)
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
    redis_scripts: int = 0
    counters: dict[str, float] = field(default_factory=dict)


def _counters(port: int) -> dict[str, float]:
    text = gateway_metrics(port)
    return {
        "admitted": metric_sum(text, "aigw_limit_checks_total", result="admitted"),
        "limited": metric_sum(text, "aigw_limit_checks_total", result="limited"),
        "backend_checks": metric_sum(text, "aigw_limit_backend_duration_seconds_count"),
        "backend_seconds": metric_sum(text, "aigw_limit_backend_duration_seconds_sum"),
        "backend_fast": metric_sum(
            text, "aigw_limit_backend_duration_seconds_bucket", le=DEFAULT_TIMEOUT_BUCKET
        ),
        "backend_errors": metric_sum(text, "aigw_limit_backend_errors_total"),
        "give_backs_lost": metric_sum(text, "aigw_state_errors_total", feature="limits"),
    }


def _one_round(gateway: Child, redis: Child | None, c: int, seconds: float, tally: _Tally) -> None:
    before = _counters(gateway.port)
    meter, redis_meter = CpuMeter(gateway.pid), CpuMeter(redis.pid) if redis else None
    scripts = redis_scripts_run(redis.port) if redis else 0
    url = chat_url(gateway.port)
    tally.runs.append(
        run_wrk(url, connections=c, duration_s=seconds, model=MODEL_NGINX, script=POST_KEY_LUA)
    )
    tally.cpu_s += meter.spent()
    if redis is not None and redis_meter is not None:
        tally.redis_cpu_s += redis_meter.spent()
        tally.redis_scripts += redis_scripts_run(redis.port) - scripts
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
        backend_fast=get("backend_fast", 0.0),
        backend_errors=get("backend_errors", 0.0),
        give_backs_lost=get("give_backs_lost", 0.0),
        redis_cpu_us=tally.redis_cpu_s * 1e6 / n if redis else None,
        redis_scripts_per_request=tally.redis_scripts / n if redis else None,
    )


@dataclass(frozen=True)
class Overhead:
    """The rows, and each limited gateway's backend failures over its whole life, the
    warm-up included: (checks whose backend failed, give-backs lost)."""

    rows: list[OverheadRow]
    lifetime_backend_errors: dict[str, tuple[float, float]]


def measure_overhead(gateways: dict[str, Child], redis: Child | None, plan: LimitsPlan) -> Overhead:
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
                arm_redis = redis if arm == REDIS else None
                _one_round(gateway, arm_redis, c, plan.round_s, tallies[arm])
        rows.append(OverheadRow(c, [_arm_result(a, t, a == REDIS) for a, t in tallies.items()]))
    for arm, gateway in gateways.items():
        require_alive(gateway, f"the limits runs ({arm})")
    lifetime = {}
    for arm, gateway in gateways.items():
        if arm != NO_LIMITS:
            counts = _counters(gateway.port)
            lifetime[arm] = (counts["backend_errors"], counts["give_backs_lost"])
    return Overhead(rows, lifetime)


# --- the whole section -------------------------------------------------------------------


@dataclass(frozen=True)
class LimitsRun:
    plan: LimitsPlan
    checks: CheckCosts | None
    overhead: Overhead | None
    shedding: list[Phase]
    workers: int
    errors: dict[str, str] = field(default_factory=dict)  # part → why it did not run
    logs: list[GatewayLog] = field(default_factory=list)

    def phase(self, gateway: str, name: str) -> Phase | None:
        return next((p for p in self.shedding if p.gateway == gateway and p.name == name), None)


def _overhead(
    group: ProcessGroup,
    nginx: Nginx,
    redis: Child | None,
    plan: LimitsPlan,
    options: tuple[bool, int, Path],
    logs: list[GatewayLog],
) -> Overhead:
    access_log, workers, out = options
    model = [_nginx_model(nginx.upstream_port)]
    gateways: dict[str, Child] = {}
    try:
        for arm in (NO_LIMITS, MEMORY, REDIS) if redis else (NO_LIMITS, MEMORY):
            sections = _arm_sections(arm, redis)
            name = GATEWAY_NAMES[arm]
            gateways[arm] = start_named(group, name, model, sections, access_log, workers)
        return measure_overhead(gateways, redis, plan)
    finally:
        logs += stop_and_keep(group, gateways, out)


def run_limits(
    group: ProcessGroup,
    nginx: Nginx | None,
    plan: LimitsPlan,
    *,
    access_log: bool,
    workers: int,
    out: Path,
) -> LimitsRun:
    """The whole section. A part that cannot run is recorded in `errors` and the others
    still run; every process it starts is stopped before it returns."""
    errors: dict[str, str] = {}
    logs: list[GatewayLog] = []
    checks, overhead, shedding = None, None, []
    redis = None
    try:
        try:
            redis = start_redis(group)
        except (BenchError, OSError) as exc:
            errors["redis"] = f"redis-server did not start (the Redis rows are not run): {exc}"
        try:
            checks = measure_checks(plan, redis)
        except (BenchError, OSError) as exc:
            errors["checks"] = str(exc)
        if nginx is None:
            errors["overhead"] = "nginx did not start"
        else:
            try:
                options = (access_log, workers, out)
                overhead = _overhead(group, nginx, redis, plan, options, logs)
            except (BenchError, OSError) as exc:
                errors["overhead"] = str(exc)
    finally:
        if redis is not None:
            group.release(redis)
    try:
        seconds = (plan.baseline_s, plan.overload_s)
        shedding = run_overload(group, seconds, access_log, out, logs)
    except (BenchError, OSError) as exc:
        errors["shedding"] = str(exc)
    return LimitsRun(plan, checks, overhead, shedding, workers, errors, logs)
