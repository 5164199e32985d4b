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

from loadgen import WrkResult, run_wrk
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
    """How long each measurement runs; `--quick` swaps in a shorter plan."""

    hop_s: float
    warmup_s: float
    slow_s: float
    slow_connections: int
    ttfb_requests: int
    ttfb_warmup: int
    fanout_streams: int
    startup_runs: int


FULL = Plan(10, 2, 15, 256, 200, 10, 500, 5)
QUICK = Plan(2, 1, 3, 256, 30, 3, 500, 3)


def _url(port: int) -> str:
    return f"http://127.0.0.1:{port}{CHAT_PATH}"


def _metered(
    url: str, model: str, connections: int, seconds: float, root: int, threads: int = 1
) -> tuple[WrkResult, float]:
    """One wrk run and the CPU microseconds per completed request of process tree `root`."""
    meter = CpuMeter(root)
    result = run_wrk(url, connections=connections, duration_s=seconds, model=model, threads=threads)
    return result, meter.spent() * 1e6 / max(1, result.requests)


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
    warm = [_url(nginx.proxy_port)] + ([_url(gateway.port)] if gateway else [])
    for url in warm:
        run_wrk(url, connections=16, duration_s=plan.warmup_s, model=MODEL_NGINX)
    return [_hop_row(nginx, gateway, c, plan.hop_s) for c in HOP_CONCURRENCY]


def _hop_row(nginx: Nginx, gateway: Child | None, connections: int, seconds: float) -> HopRow:
    nginx_pid = nginx.child.pid
    direct, direct_cpu = _metered(
        _url(nginx.upstream_port), UPSTREAM_MODEL, connections, seconds, nginx_pid
    )
    proxied, proxied_cpu = _metered(
        _url(nginx.proxy_port), UPSTREAM_MODEL, connections, seconds, nginx_pid
    )
    aigw, aigw_cpu = None, None
    if gateway is not None:
        aigw, aigw_cpu = _metered(
            _url(gateway.port), MODEL_NGINX, connections, seconds, gateway.pid
        )
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
    """The simulator with a fixed latency, many connections, direct vs through aigw."""

    connections: int
    latency_ms: int
    direct: WrkResult
    aigw: WrkResult | None
    aigw_cpu_us: float | None

    @property
    def ratio(self) -> float | None:
        if self.aigw is None or not self.direct.rps:
            return None
        return self.aigw.rps / self.direct.rps


def measure_slow(sim: Child, spec: SimulatorSpec, gateway: Child | None, plan: Plan) -> SlowRun:
    c, seconds = plan.slow_connections, plan.slow_s
    direct = run_wrk(
        _url(sim.port), connections=c, duration_s=seconds, model=UPSTREAM_MODEL, threads=2
    )
    aigw, aigw_cpu = None, None
    if gateway is not None:
        aigw, aigw_cpu = _metered(_url(gateway.port), MODEL_SLOW, c, seconds, gateway.pid, 2)
    return SlowRun(c, spec.latency_ms, direct, aigw, aigw_cpu)


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


def rss_mib(child: Child, key: str = "VmRSS") -> float:
    """Resident memory of the gateway's process tree, MiB."""
    return memory_kib(tree_pids(child.pid), key) / 1024
