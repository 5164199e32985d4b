"""The measurements. Each compares a direct run with a run through aigw, in the same run.

A `None` for the aigw side means that the gateway was not running; the direct side is
still measured so that the harness itself can be checked without a gateway.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from loadgen import WrkResult, merge_rounds, run_wrk
from procs import Child, CpuMeter, ProcessGroup, free_port, memory_kib, tree_pids, wait_http_ok
from stack import (
    MODEL_FANOUT,
    MODEL_NGINX,
    MODEL_SLOW,
    MODEL_TTFB,
    UPSTREAM_MODEL,
    Nginx,
    SimulatorSpec,
    gateway_argv,
    python_env,
)
from streams import (
    FanoutSummary,
    TtfbSummary,
    chat_request,
    fan_out,
    paired_sequential,
    summarize_fanout,
    summarize_ttfb,
)

CHAT_PATH = "/v1/chat/completions"
HOP_CONCURRENCY = (1, 16, 64)


@dataclass(frozen=True)
class Plan:
    """How long each measurement runs; `--quick` swaps in a shorter plan.

    Load runs are split into rounds that alternate the targets (direct, nginx, aigw,
    direct, ...) so that every target sees the same background noise.
    """

    hop_rounds: int
    hop_round_s: float
    warmup_s: float
    slow_rounds: int
    slow_round_s: float
    slow_connections: int
    ttfb_requests: int
    ttfb_warmup: int
    fanout_streams: int
    startup_runs: int
    failover_rounds: int
    failover_round_s: float
    hedge_rounds: int
    hedge_round_s: float
    balancer_picks: int
    cache_rounds: int
    cache_round_s: float
    vector_queries: int
    worker_rounds: int
    worker_round_s: float

    @property
    def hop_s(self) -> float:
        return self.hop_rounds * self.hop_round_s

    @property
    def slow_s(self) -> float:
        return self.slow_rounds * self.slow_round_s

    @property
    def failover_s(self) -> float:
        return self.failover_rounds * self.failover_round_s

    @property
    def hedge_s(self) -> float:
        return self.hedge_rounds * self.hedge_round_s

    @property
    def cache_s(self) -> float:
        return self.cache_rounds * self.cache_round_s

    @property
    def worker_s(self) -> float:
        return self.worker_rounds * self.worker_round_s


FULL = Plan(5, 3, 2, 3, 5, 256, 200, 10, 500, 5, 5, 3, 3, 4, 200_000, 5, 2, 200, 3, 4)
QUICK = Plan(1, 2, 1, 1, 3, 256, 30, 3, 500, 3, 1, 2, 1, 3, 20_000, 1, 2, 50, 1, 2)


def chat_url(port: int) -> str:
    return f"http://127.0.0.1:{port}{CHAT_PATH}"


@dataclass(frozen=True)
class Target:
    """Where wrk sends load, and whose CPU to meter meanwhile (0: nobody's)."""

    url: str
    model: str
    meter_pid: int = 0


def interleaved(
    targets: list[Target], connections: int, rounds: int, round_s: float, threads: int = 1
) -> list[tuple[WrkResult, float]]:
    """Run wrk on each target in turn, `rounds` times; return per target the merged
    result and the metered CPU microseconds per completed request."""
    runs: list[list[WrkResult]] = [[] for _ in targets]
    cpu_s = [0.0] * len(targets)
    for _ in range(rounds):
        for i, target in enumerate(targets):
            meter = CpuMeter(target.meter_pid) if target.meter_pid else None
            runs[i].append(
                run_wrk(
                    target.url,
                    connections=connections,
                    duration_s=round_s,
                    model=target.model,
                    threads=threads,
                )
            )
            cpu_s[i] += meter.spent() if meter else 0.0
    merged = [merge_rounds(r) for r in runs]
    return [(m, cpu * 1e6 / max(1, m.requests)) for m, cpu in zip(merged, cpu_s, strict=True)]


# --- 1. instant upstream: added latency and CPU per request ---------------------------


@dataclass(frozen=True)
class HopRow:
    """One concurrency level against the instant upstream, three ways.

    CPU per request: `direct_cpu_us` is nginx serving the response; `nginx_hop_cpu_us`
    is what the proxy hop adds in the same nginx worker (proxy run minus direct run);
    `aigw_cpu_us` is the gateway process tree alone.
    """

    connections: int
    direct: WrkResult
    nginx: WrkResult
    aigw: WrkResult | None
    direct_cpu_us: float
    nginx_hop_cpu_us: float
    aigw_cpu_us: float | None


def measure_hops(nginx: Nginx, gateway: Child | None, plan: Plan) -> list[HopRow]:
    warm = [chat_url(nginx.proxy_port)] + ([chat_url(gateway.port)] if gateway else [])
    for url in warm:
        run_wrk(url, connections=16, duration_s=plan.warmup_s, model=MODEL_NGINX)
    return [_hop_row(nginx, gateway, c, plan) for c in HOP_CONCURRENCY]


def _hop_row(nginx: Nginx, gateway: Child | None, connections: int, plan: Plan) -> HopRow:
    targets = [
        Target(chat_url(nginx.upstream_port), UPSTREAM_MODEL, nginx.child.pid),
        Target(chat_url(nginx.proxy_port), UPSTREAM_MODEL, nginx.child.pid),
    ]
    if gateway is not None:
        targets.append(Target(chat_url(gateway.port), MODEL_NGINX, gateway.pid))
    measured = interleaved(targets, connections, plan.hop_rounds, plan.hop_round_s)
    (direct, direct_cpu), (proxied, proxied_cpu) = measured[:2]
    aigw, aigw_cpu = measured[2] if gateway is not None else (None, None)
    return HopRow(
        connections=connections,
        direct=direct,
        nginx=proxied,
        aigw=aigw,
        direct_cpu_us=direct_cpu,
        nginx_hop_cpu_us=proxied_cpu - direct_cpu,
        aigw_cpu_us=aigw_cpu,
    )


# --- 2. slow upstream at high concurrency ---------------------------------------------


@dataclass(frozen=True)
class SlowRun:
    """The simulator with a fixed latency, many connections, direct vs through aigw.
    CPU per request is metered for the simulator (direct) and the gateway (aigw)."""

    connections: int
    latency_ms: int
    direct: WrkResult
    aigw: WrkResult | None
    simulator_cpu_us: float
    aigw_cpu_us: float | None

    @property
    def ratio(self) -> float | None:
        if self.aigw is None or not self.direct.rps:
            return None
        return self.aigw.rps / self.direct.rps


def measure_slow(sim: Child, spec: SimulatorSpec, gateway: Child | None, plan: Plan) -> SlowRun:
    targets = [Target(chat_url(sim.port), UPSTREAM_MODEL, sim.pid)]
    if gateway is not None:
        targets.append(Target(chat_url(gateway.port), MODEL_SLOW, gateway.pid))
    c = plan.slow_connections
    measured = interleaved(targets, c, plan.slow_rounds, plan.slow_round_s, threads=2)
    (direct, sim_cpu) = measured[0]
    aigw, aigw_cpu = measured[1] if gateway is not None else (None, None)
    return SlowRun(c, spec.latency_ms, direct, aigw, sim_cpu, aigw_cpu)


# --- 3. streaming ---------------------------------------------------------------------


@dataclass(frozen=True)
class TtfbRun:
    """Sequential streamed requests over keep-alive, alternating direct and via aigw."""

    spec: SimulatorSpec
    direct: TtfbSummary
    aigw: TtfbSummary | None

    @property
    def added_p50_ms(self) -> float | None:
        return None if self.aigw is None else self.aigw.ttfb_p50_ms - self.direct.ttfb_p50_ms

    @property
    def added_p99_ms(self) -> float | None:
        return None if self.aigw is None else self.aigw.ttfb_p99_ms - self.direct.ttfb_p99_ms


def measure_ttfb(sim: Child, spec: SimulatorSpec, gateway: Child | None, plan: Plan) -> TtfbRun:
    targets = [(sim.port, chat_request(sim.port, UPSTREAM_MODEL, spec.completion_tokens))]
    if gateway is not None:
        targets.append(
            (gateway.port, chat_request(gateway.port, MODEL_TTFB, spec.completion_tokens))
        )
    runs = asyncio.run(
        paired_sequential(targets, plan.ttfb_requests, plan.ttfb_warmup, timeout_s=30)
    )
    summaries = [summarize_ttfb(run) for run in runs]
    return TtfbRun(spec, summaries[0], summaries[1] if gateway else None)


@dataclass(frozen=True)
class FanoutRun:
    """Many concurrent streams at once: direct (reference) and through aigw."""

    spec: SimulatorSpec
    direct: FanoutSummary
    aigw: FanoutSummary | None


def measure_fanout(sim: Child, spec: SimulatorSpec, gateway: Child | None, plan: Plan) -> FanoutRun:
    direct = _fanout(sim.port, UPSTREAM_MODEL, spec, plan.fanout_streams)
    aigw = _fanout(gateway.port, MODEL_FANOUT, spec, plan.fanout_streams) if gateway else None
    return FanoutRun(spec, direct, aigw)


def _fanout(port: int, model: str, spec: SimulatorSpec, streams: int) -> FanoutSummary:
    request = chat_request(port, model, spec.completion_tokens)
    started = time.perf_counter()
    timings = asyncio.run(fan_out(port, request, streams, timeout_s=60))
    return summarize_fanout(timings, spec.interval_s, time.perf_counter() - started)


# --- 4. start-up ----------------------------------------------------------------------


@dataclass(frozen=True)
class StartupRun:
    """Seconds from spawning `aigw serve` to the first 200 on /health, and to exit on
    SIGTERM once idle."""

    start_s: list[float]
    stop_s: list[float]

    @property
    def median_start_s(self) -> float:
        return statistics.median(self.start_s)

    @property
    def median_stop_s(self) -> float:
        return statistics.median(self.stop_s)


def measure_startup(group: ProcessGroup, config: Path, workers: int, runs: int) -> StartupRun:
    start, stop = [], []
    for i in range(runs):
        port = free_port()
        spawned = time.perf_counter()
        child = group.spawn(f"aigw-startup-{i}", gateway_argv(config, port, workers), python_env())
        wait_http_ok(child, port, "/health", timeout_s=30)
        start.append(time.perf_counter() - spawned)
        stop.append(group.release(child))
    return StartupRun(start, stop)


# --- 5. memory ------------------------------------------------------------------------


@dataclass(frozen=True)
class Memory:
    """Resident memory of the gateway's processes, MiB: the largest one (with several
    workers, one worker) and the sum over all (which counts shared pages in each)."""

    processes: int
    largest_mib: float
    total_mib: float


def read_memory(child: Child, key: str = "VmRSS") -> Memory:
    kib = memory_kib(tree_pids(child.pid), key)
    return Memory(len(kib), max(kib, default=0) / 1024, sum(kib) / 1024)
