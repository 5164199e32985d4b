"""The response cache under load (section `cache`): an L1 hit, an L2 hit and a proxied
request side by side, and what a semantic-cache lookup costs.

The run's gateway gets a model `bench-cached` (`cache: all`, on the instant upstream)
beside the uncached `bench-nginx`. A second gateway (`aigw-l2`) has L1 off
(`cache.l1_max_bytes: 0`) and Redis as its state backend, so every hit it serves comes
from a `redis-server` this section starts on a free loopback port (no persistence) and
stops when it is done. Every response's `X-Cache` header is counted by `post.lua`, so
the report shows how many measured requests really were hits.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from failover import require_alive
from loadgen import WrkResult, run_wrk
from measure import Plan, Target, chat_url, interleaved
from procs import BenchError, Child, CpuMeter, ProcessGroup, free_port, wait_tcp
from stack import (
    MODEL_NGINX,
    START_TIMEOUT_S,
    UPSTREAM_MODEL,
    Nginx,
    gateway_log_problems,
    keep_gateway_logs,
    python_env,
    start_gateway,
    write_gateway_config,
)

MODEL_CACHED = "bench-cached"
L2_GATEWAY = "aigw-l2"
CACHE_CONCURRENCY = (1, 16)
VECTORS_SCRIPT = Path(__file__).with_name("vectors.py")
# How long single requests may take to see a hit: the gateway writes the L2 entry after
# answering, and with several workers the first hit must land on the worker that missed.
WARM_WAIT_S = 2.0


def cached_model(nginx_port: int) -> dict[str, Any]:
    """`bench-cached`: the instant upstream, every answer cached (`cache: all`)."""
    return {
        "name": MODEL_CACHED,
        "cache": "all",
        "deployments": [
            {
                "provider": "openai",
                "base_url": f"http://127.0.0.1:{nginx_port}/v1",
                "model": UPSTREAM_MODEL,
            }
        ],
    }


# --- the L2 gateway and its Redis -----------------------------------------------------


def start_redis(group: ProcessGroup) -> Child:
    """redis-server on a free loopback port, nothing written to disk."""
    port = free_port()
    argv = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", ""]
    argv += ["--appendonly", "no", "--dir", str(group.workdir), "--loglevel", "warning"]
    child = group.spawn("redis", argv)
    wait_tcp(child, port, START_TIMEOUT_S)
    return child


@contextmanager
def l2_gateway(
    group: ProcessGroup, nginx_port: int, access_log: bool, workers: int
) -> Iterator[tuple[Child, Child]]:
    """(redis, gateway): a gateway whose cache is Redis alone; both stopped on exit, so
    the sections after this one run without them."""
    redis = start_redis(group)
    try:
        config = group.workdir / "aigw-l2.yaml"
        sections = {
            "state": {"backend": "redis", "url": f"redis://127.0.0.1:{redis.port}/0"},
            "cache": {"l1_max_bytes": 0},
        }
        write_gateway_config(config, {}, access_log, [cached_model(nginx_port)], sections=sections)
        gateway = start_gateway(group, config, workers, name=L2_GATEWAY)
        try:
            yield redis, gateway
        finally:
            group.release(gateway)
    finally:
        group.release(redis)


def run_cache(
    group: ProcessGroup,
    nginx: Nginx,
    gateway: Child,
    plan: Plan,
    *,
    access_log: bool,
    workers: int,
    out: Path,
) -> CacheRun:
    """The whole section: start Redis and the L2 gateway (without them, the L1 side is
    still measured), measure, stop them, keep the L2 gateway's logs in `out`."""
    with ExitStack() as context:
        try:
            l2 = context.enter_context(l2_gateway(group, nginx.upstream_port, access_log, workers))
            l2_error = ""
        except (BenchError, OSError) as exc:
            l2, l2_error = None, f"Redis or the L2 gateway did not start: {exc}"
        run = measure_cache(nginx, gateway, l2, plan, l2_error)
    if l2 is None:
        return run
    problems, samples = gateway_log_problems(l2[1])  # stopped: its logs are complete
    keep_gateway_logs(l2[1], out, L2_GATEWAY)
    return replace(run, l2_problem_lines=problems, l2_problem_samples=samples)


# --- one request, to read X-Cache ----------------------------------------------------

# The same request as post.lua's (the cache key is the parsed body, not its bytes).
_MESSAGES = [
    {"role": "system", "content": "You are a terse assistant."},
    {"role": "user", "content": "Say hello in one short sentence."},
]


def x_cache(port: int, model: str) -> str:
    """POST post.lua's request once, on a fresh connection; return `STATUS X-Cache`."""
    body = json.dumps({"model": model, "messages": _MESSAGES, "max_tokens": 16, "temperature": 0})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
    except (OSError, http.client.HTTPException) as exc:
        raise BenchError(f"POST {model} on port {port}: {exc}") from exc
    finally:
        conn.close()
    return f"{response.status} {response.getheader('x-cache', '(no X-Cache)')}"


def warm(port: int, expected: str, wait_s: float = 0.0) -> list[str]:
    """The first request (a miss that fills the cache), then requests until one answers
    `200 expected` or `wait_s` has passed; returns what each answered."""
    seen = [x_cache(port, MODEL_CACHED)]
    deadline = time.monotonic() + wait_s
    while True:
        seen.append(x_cache(port, MODEL_CACHED))
        if seen[-1] == f"200 {expected}" or time.monotonic() >= deadline:
            return seen
        time.sleep(0.05)


# --- the measurement ------------------------------------------------------------------


@dataclass(frozen=True)
class CacheRow:
    """One concurrency level: direct to nginx, proxied through aigw (`bench-nginx`), an
    L1 hit and an L2 hit (`bench-cached`); CPU µs per request of the process serving
    (nginx; the gateway; the L2 gateway, and Redis apart in `redis_cpu_us`)."""

    connections: int
    direct: WrkResult
    proxied: WrkResult
    l1: WrkResult
    l2: WrkResult | None
    direct_cpu_us: float
    proxied_cpu_us: float
    l1_cpu_us: float
    l2_cpu_us: float | None
    redis_cpu_us: float | None


@dataclass(frozen=True)
class CacheRun:
    rounds: int
    round_s: float
    rows: list[CacheRow]
    # What single requests answered ("200 HIT-L1"...): the first, and those after it.
    l1_warm: list[str]
    l2_warm: list[str] = field(default_factory=list)
    # X-Cache after all the runs: did the entries survive the load?
    l1_after: str = ""
    l2_after: str = ""
    l2_error: str = ""  # why there is no L2 column
    # The L2 gateway's log lines at warning level or worse (see stack.gateway_log_problems).
    l2_problem_lines: int = 0
    l2_problem_samples: list[str] = field(default_factory=list)

    def row(self, connections: int) -> CacheRow | None:
        return next((r for r in self.rows if r.connections == connections), None)


def measure_cache(
    nginx: Nginx, gateway: Child, l2: tuple[Child, Child] | None, plan: Plan, l2_error: str = ""
) -> CacheRun:
    l1_warm = warm(gateway.port, "HIT-L1", WARM_WAIT_S)
    l2_warm = warm(l2[1].port, "HIT-L2", WARM_WAIT_S) if l2 else []
    targets = [
        Target(chat_url(nginx.upstream_port), UPSTREAM_MODEL, nginx.child.pid),
        Target(chat_url(gateway.port), MODEL_NGINX, gateway.pid),
        Target(chat_url(gateway.port), MODEL_CACHED, gateway.pid),
    ]
    if l2:
        targets.append(Target(chat_url(l2[1].port), MODEL_CACHED, l2[1].pid))
    for target in targets[1:]:  # pooled connections, and every worker's L1 filled
        run_wrk(target.url, connections=16, duration_s=plan.warmup_s, model=target.model)
    rows = [_row(targets, c, l2[0] if l2 else None, plan) for c in CACHE_CONCURRENCY]
    for child in (gateway, l2[1]) if l2 else (gateway,):
        require_alive(child, "the cache runs")
    return CacheRun(
        rounds=plan.cache_rounds,
        round_s=plan.cache_round_s,
        rows=rows,
        l1_warm=l1_warm,
        l2_warm=l2_warm,
        l1_after=x_cache(gateway.port, MODEL_CACHED),
        l2_after=x_cache(l2[1].port, MODEL_CACHED) if l2 else "",
        l2_error=l2_error,
    )


def _row(targets: list[Target], c: int, redis: Child | None, plan: Plan) -> CacheRow:
    # Redis serves only the L2 target; idle between its rounds, it costs next to nothing.
    redis_meter = CpuMeter(redis.pid) if redis else None
    measured = interleaved(targets, c, plan.cache_rounds, plan.cache_round_s)
    (direct, direct_cpu), (proxied, proxied_cpu), (l1, l1_cpu) = measured[:3]
    l2, l2_cpu = measured[3] if len(measured) > 3 else (None, None)
    redis_cpu = None
    if redis_meter and l2:
        redis_cpu = redis_meter.spent() * 1e6 / max(1, l2.requests)
    return CacheRow(c, direct, proxied, l1, l2, direct_cpu, proxied_cpu, l1_cpu, l2_cpu, redis_cpu)


# --- semantic lookup cost -------------------------------------------------------------


@dataclass(frozen=True)
class VectorSize:
    """`bench/vectors.py` for one index size (all entries in one context)."""

    entries: int
    dims: int
    add_us: float
    search_p50_ms: float
    search_p99_ms: float
    queries: int
    vectors_mib: float
    index_mib: float
    build_peak_mib: float


@dataclass(frozen=True)
class VectorRun:
    """One run of `bench/vectors.py`, with OpenBLAS's threads as `blas_threads` says."""

    blas_threads: str  # "default" (one per CPU) or a count
    python: str
    numpy: str
    sizes: list[VectorSize]


# A matrix-vector product runs on OpenBLAS's threads; on a busy machine handing work to
# a second thread can cost more than the product, so both settings are measured.
BLAS_SETTINGS = ("default", "1")
BLAS_VARIABLES = ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS")


def measure_vectors(queries: int) -> list[VectorRun]:
    return [_vectors(queries, threads) for threads in BLAS_SETTINGS]


def _vectors(queries: int, blas_threads: str) -> VectorRun:
    argv = [sys.executable, str(VECTORS_SCRIPT), "--queries", str(queries), "--json"]
    env = {k: v for k, v in python_env().items() if k not in BLAS_VARIABLES}
    if blas_threads != "default":
        env["OPENBLAS_NUM_THREADS"] = blas_threads
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=300, env=env, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{VECTORS_SCRIPT.name} did not finish in 300 s") from exc
    if done.returncode != 0:
        raise BenchError(f"{VECTORS_SCRIPT.name} failed ({done.returncode}): {done.stderr}")
    try:
        data = json.loads(done.stdout)
        sizes = [VectorSize(**size) for size in data["sizes"]]
        return VectorRun(blas_threads, data["python"], data["numpy"], sizes)
    except (ValueError, KeyError, TypeError) as exc:
        raise BenchError(f"cannot read {VECTORS_SCRIPT.name} output: {done.stdout[:300]}") from exc
