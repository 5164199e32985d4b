"""The results of one run, judged against the targets, as Markdown and JSON."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field

from batching import WorkerRun
from caching import CacheRun, VectorRun
from failover import DEAD_ID, BalancerRun, FailoverRun, HedgeArm, HedgeRun
from limits import LimitsRun
from loadgen import WrkResult
from measure import FanoutRun, HopRow, Memory, Plan, SlowRun, StartupRun, TtfbRun
from report_cache import cache_derived, cache_section, cache_verdict
from report_format import Verdict, core_share, errors_text, num, rounds_text, table
from report_limits import limits_derived, limits_section, limits_verdicts
from report_worker import worker_derived, worker_section, worker_verdict
from streams import FanoutSummary, TtfbSummary

# The targets, in the units the report prints.
ADDED_P50_US = 150.0
ADDED_P99_US = 400.0
CPU_PER_REQUEST_US = 150.0
CPU_AT_CONNECTIONS = 16
SLOW_RPS_RATIO = 0.90
ADDED_TTFB_MS = 1.0
RSS_IDLE_MIB = 80.0
STARTUP_S = 1.0
BALANCER_PICK_US = 10.0

TTFB_HEADER = ["target", "requests", "errors", "TTFB p50 ms", "TTFB p99 ms"]
TTFB_HEADER += ["total p50 ms", "total p99 ms"]
FANOUT_HEADER = ["target", "streams", "completed", "errors", "wall s", "TTFB p50/p99 ms"]
FANOUT_HEADER += ["max gap ms", "p99 of max gaps ms", "stalled"]


@dataclass
class Results:
    """Everything one run measured; a field stays empty when its section did not run."""

    machine: dict[str, str]
    plan: Plan
    quick: bool
    workers: int
    access_log: bool
    started_at: str
    elapsed_s: float = 0.0
    hops: list[HopRow] = field(default_factory=list)
    slow: SlowRun | None = None
    ttfb: TtfbRun | None = None
    fanout: FanoutRun | None = None
    startup: StartupRun | None = None
    failover: FailoverRun | None = None
    hedging: HedgeRun | None = None
    balancers: BalancerRun | None = None
    cache: CacheRun | None = None
    vectors: list[VectorRun] = field(default_factory=list)
    worker: WorkerRun | None = None
    limits: LimitsRun | None = None
    rss_idle: Memory | None = None
    rss_after: Memory | None = None
    rss_peak: Memory | None = None  # VmHWM
    gateway_problem_lines: int = 0
    gateway_problem_samples: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    background_cpu: float | None = None  # share of the machine used by other processes
    steal: float | None = None  # share taken by the hypervisor


def added_us(row: HopRow, hop: WrkResult | None) -> tuple[float, float] | None:
    """(p50, p99) that a hop adds over the direct run, microseconds."""
    if hop is None:
        return None
    return hop.p50_us - row.direct.p50_us, hop.p99_us - row.direct.p99_us


def _hop(results: Results, connections: int) -> HopRow | None:
    return next((row for row in results.hops if row.connections == connections), None)


# --- verdicts -------------------------------------------------------------------------


def _latency_verdicts(results: Results) -> list[Verdict]:
    row = _hop(results, 1)
    added = added_us(row, row.aigw) if row else None
    if added is None:
        return [
            Verdict(f"added latency c=1 p50 ≤ {ADDED_P50_US:g} µs", "not measured", None),
            Verdict(f"added latency c=1 p99 ≤ {ADDED_P99_US:g} µs", "not measured", None),
        ]
    return [
        Verdict(
            f"added latency c=1 p50 ≤ {ADDED_P50_US:g} µs",
            f"{added[0]:.0f} µs",
            added[0] <= ADDED_P50_US,
        ),
        Verdict(
            f"added latency c=1 p99 ≤ {ADDED_P99_US:g} µs",
            f"{added[1]:.0f} µs",
            added[1] <= ADDED_P99_US,
        ),
    ]


def _cpu_verdict(results: Results) -> Verdict:
    target = f"gateway CPU per request at c={CPU_AT_CONNECTIONS} ≤ {CPU_PER_REQUEST_US:g} µs"
    row = _hop(results, CPU_AT_CONNECTIONS)
    if row is None or row.aigw_cpu_us is None or row.aigw is None:
        return Verdict(target, "not measured", None)
    ok = row.aigw_cpu_us <= CPU_PER_REQUEST_US and row.aigw.errors == 0
    return Verdict(target, f"{row.aigw_cpu_us:.0f} µs ({row.aigw.errors} errors)", ok)


def _slow_verdicts(results: Results) -> list[Verdict]:
    slow = results.slow
    c = slow.connections if slow else 256
    ratio_target = f"50 ms upstream @{c} conns: aigw RPS ≥ {SLOW_RPS_RATIO:.0%} of direct"
    errors_target = f"50 ms upstream @{c} conns: 0 errors through aigw"
    if slow is None or slow.aigw is None or slow.ratio is None:
        return [Verdict(ratio_target, "not measured", None), Verdict(errors_target, "", None)]
    return [
        Verdict(
            ratio_target,
            f"{slow.ratio:.1%} ({slow.aigw.rps:.0f} / {slow.direct.rps:.0f})",
            slow.ratio >= SLOW_RPS_RATIO,
        ),
        Verdict(errors_target, errors_text(slow.aigw), slow.aigw.errors == 0),
    ]


def _streaming_verdicts(results: Results) -> list[Verdict]:
    ttfb_target = f"streaming added TTFB p50 ≤ {ADDED_TTFB_MS:g} ms"
    added = results.ttfb.added_p50_ms if results.ttfb else None
    if added is None or results.ttfb is None or results.ttfb.aigw is None:
        ttfb = Verdict(ttfb_target, "not measured", None)
    else:
        errors = results.ttfb.aigw.errors
        ttfb = Verdict(
            ttfb_target, f"{added:.3f} ms ({errors} errors)", added <= ADDED_TTFB_MS and not errors
        )
    fan = results.fanout.aigw if results.fanout else None
    n = results.plan.fanout_streams
    fan_target = f"{n} concurrent streams through aigw: all complete, no stall"
    if fan is None:
        return [ttfb, Verdict(fan_target, "not measured", None)]
    ok = fan.completed == fan.streams and fan.errors == 0 and fan.stalled_streams == 0
    measured = (
        f"{fan.completed}/{fan.streams} complete, {fan.errors} errors, "
        f"max gap {fan.max_gap_ms:.0f} ms, {fan.stalled_streams} stalled"
    )
    return [ttfb, Verdict(fan_target, measured, ok)]


def _process_verdicts(results: Results) -> list[Verdict]:
    rss_target = f"RSS idle ≤ {RSS_IDLE_MIB:g} MiB (largest gateway process)"
    start_target = f"start-up (spawn → /health 200, median) ≤ {STARTUP_S:g} s"
    rss = results.rss_idle.largest_mib if results.rss_idle else None
    start = results.startup
    return [
        Verdict(rss_target, "not measured", None)
        if rss is None
        else Verdict(rss_target, f"{rss:.1f} MiB", rss <= RSS_IDLE_MIB),
        Verdict(start_target, "not measured", None)
        if start is None
        else Verdict(
            start_target, f"{start.median_start_s:.3f} s", start.median_start_s <= STARTUP_S
        ),
    ]


def _failover_verdicts(results: Results) -> list[Verdict]:
    dead_target = "1 dead of 3: 0 client errors"
    pick_target = f"balancer pick ≤ {BALANCER_PICK_US:g} µs (slowest strategy)"
    run, balancers = results.failover, results.balancers
    if run is None:
        dead = Verdict(dead_target, "not measured", None)
    else:
        result = run.one_dead
        measured = f"errors: {errors_text(result)} of {result.requests:,} requests"
        if gone := run.dead:
            measured += f"; dead one: breaker {gone.breaker}, {gone.requests} attempts"
        dead = Verdict(dead_target, measured, result.errors == 0)
    if balancers is None:
        return [dead, Verdict(pick_target, "not measured", None)]
    strategy, n, ns = balancers.worst
    measured = f"{ns / 1e3:.2f} µs ({strategy}, {n} candidates)"
    return [dead, Verdict(pick_target, measured, ns / 1e3 <= BALANCER_PICK_US)]


def verdicts(results: Results) -> list[Verdict]:
    return [
        *_latency_verdicts(results),
        _cpu_verdict(results),
        *_slow_verdicts(results),
        *_streaming_verdicts(results),
        *_process_verdicts(results),
        *_failover_verdicts(results),
        cache_verdict(results.cache),
        worker_verdict(results.worker),
        *limits_verdicts(results.limits),
    ]


# --- Markdown -------------------------------------------------------------------------


NOISY_SHARE = 0.05


def _noise_note(results: Results) -> list[str]:
    other, steal = results.background_cpu or 0.0, results.steal or 0.0
    if other < NOISY_SHARE and steal < NOISY_SHARE:
        return []
    return [
        f"> **Noisy machine**: other processes used {other:.0%} and the hypervisor took"
        f" {steal:.0%} of the CPU during this run; tail latencies are unreliable. Re-run"
        " on a quiet machine before drawing conclusions.",
        "",
    ]


def _verdict_section(results: Results) -> list[str]:
    rows = [[v.target, v.measured, f"**{v.label}**"] for v in verdicts(results)]
    return [
        "## Targets",
        "",
        *_noise_note(results),
        *table(["target", "measured", "result"], rows),
    ]


def _machine_section(results: Results) -> list[str]:
    rows = [[key, value] for key, value in results.machine.items()]
    if results.background_cpu is not None and results.steal is not None:
        rows.append(["CPU used by other processes during the run", f"{results.background_cpu:.1%}"])
        rows.append(["CPU stolen by the hypervisor during the run", f"{results.steal:.1%}"])
    rows.append(["aigw workers", str(results.workers)])
    rows.append(["aigw access log", "on" if results.access_log else "off"])
    return ["## Machine", "", *table(["", ""], rows)]


def _hop_rows(row: HopRow) -> list[list[str]]:
    out = []
    cpu = {"direct": row.direct_cpu_us, "nginx": row.nginx_hop_cpu_us, "aigw": row.aigw_cpu_us}
    names = {"direct": "direct", "nginx": "nginx proxy_pass", "aigw": "aigw"}
    for key, result in (("direct", row.direct), ("nginx", row.nginx), ("aigw", row.aigw)):
        if result is None:
            out.append([str(row.connections), names[key], "not run", *["—"] * 7])
            continue
        added = added_us(row, result) if key != "direct" else None
        out.append(
            [
                str(row.connections),
                names[key],
                f"{result.rps:,.0f}",
                f"{result.p50_us:.0f}",
                f"{result.p99_us:.0f}",
                num(added[0] if added else None),
                num(added[1] if added else None),
                num(cpu[key]),
                core_share(cpu[key], result),
                errors_text(result),
            ]
        )
    return out


def _hops_section(results: Results) -> list[str]:
    if not results.hops:
        return []
    header = ["c", "target", "RPS", "p50 µs", "p99 µs", "added p50 µs", "added p99 µs"]
    header += ["CPU µs/req", "% of a core", "errors"]
    rows = [line for row in results.hops for line in _hop_rows(row)]
    return [
        "## 1. Instant upstream (nginx `return 200`), wrk -t1,"
        f" {rounds_text(results.plan.hop_rounds, results.plan.hop_round_s)}",
        "",
        *table(header, rows),
        "CPU µs/req: *direct* = the nginx worker serving the response; *nginx proxy_pass* ="
        " what the hop adds in that same worker (proxy run - direct run); *aigw* = the"
        " gateway process tree alone ((utime+stime) / completed requests). *% of a core* ="
        " CPU µs/req x RPS: near 100% (x workers) the process was the bottleneck.",
        "",
    ]


def _slow_section(results: Results) -> list[str]:
    slow = results.slow
    if slow is None:
        return []
    rows = []
    for name, result in (("direct", slow.direct), ("aigw", slow.aigw)):
        if result is None:
            rows.append([name, "not run", *["—"] * 5])
            continue
        cpu = slow.aigw_cpu_us if name == "aigw" else slow.simulator_cpu_us
        rows.append(
            [
                name,
                f"{result.rps:,.0f}",
                f"{result.p50_us / 1e3:.1f}",
                f"{result.p99_us / 1e3:.1f}",
                num(cpu),
                core_share(cpu, result),
                errors_text(result),
            ]
        )
    ratio = "—" if slow.ratio is None else f"{slow.ratio:.1%}"
    return [
        f"## 2. Simulator at {slow.latency_ms} ms, wrk -t2 -c{slow.connections},"
        f" {rounds_text(results.plan.slow_rounds, results.plan.slow_round_s)}",
        "",
        *table(["target", "RPS", "p50 ms", "p99 ms", "CPU µs/req", "% of a core", "errors"], rows),
        f"aigw / direct RPS: **{ratio}**. CPU µs/req: the simulator (direct row), the gateway"
        " (aigw row).",
        "",
    ]


def _ttfb_row(name: str, summary: TtfbSummary | None) -> list[str]:
    if summary is None:
        return [name, "not run", *["—"] * 5]
    return [
        name,
        str(summary.requests),
        str(summary.errors),
        f"{summary.ttfb_p50_ms:.3f}",
        f"{summary.ttfb_p99_ms:.3f}",
        f"{summary.total_p50_ms:.1f}",
        f"{summary.total_p99_ms:.1f}",
    ]


def _fanout_row(name: str, summary: FanoutSummary | None) -> list[str]:
    if summary is None:
        return [name, "not run", *["—"] * 7]
    return [
        name,
        str(summary.streams),
        str(summary.completed),
        str(summary.errors),
        f"{summary.wall_s:.2f}",
        f"{summary.ttfb_p50_ms:.1f} / {summary.ttfb_p99_ms:.1f}",
        f"{summary.max_gap_ms:.0f}",
        f"{summary.p99_max_gap_ms:.0f}",
        str(summary.stalled_streams),
    ]


def _streaming_section(results: Results) -> list[str]:
    lines = ["## 3. Streaming", ""]
    if ttfb := results.ttfb:
        spec = ttfb.spec
        lines += [
            f"Sequential streamed requests over keep-alive, direct and via aigw alternating;"
            f" simulator latency {spec.latency_ms} ms, {spec.tokens_per_s:g} tokens/s,"
            f" {spec.completion_tokens} tokens.",
            "",
            *table(
                [*TTFB_HEADER],
                [_ttfb_row("direct", ttfb.direct), _ttfb_row("aigw", ttfb.aigw)],
            ),
            f"Added TTFB: p50 **{num(ttfb.added_p50_ms, '.3f')} ms**,"
            f" p99 {num(ttfb.added_p99_ms, '.3f')} ms",
            "",
        ]
    if fan := results.fanout:
        spec, stall = fan.spec, fan.direct.stall_factor * fan.direct.expected_interval_ms
        lines += [
            f"Concurrent streams, one connection each; simulator {spec.tokens_per_s:g}"
            f" tokens/s, {spec.completion_tokens} tokens; a stream *stalls* when two of its"
            f" events are more than {stall:.0f} ms apart ({fan.direct.stall_factor:g}x the"
            f" {fan.direct.expected_interval_ms:.0f} ms token interval).",
            "",
            *table(
                [*FANOUT_HEADER],
                [_fanout_row("direct", fan.direct), _fanout_row("aigw", fan.aigw)],
            ),
        ]
        samples = (fan.aigw.error_samples if fan.aigw else []) + fan.direct.error_samples
        lines += [f"- error: `{s}`" for s in samples] + ([""] if samples else [])
    return lines if len(lines) > 2 else []


def _process_section(results: Results) -> list[str]:
    rows = []
    if start := results.startup:
        runs = ", ".join(f"{s:.3f}" for s in start.start_s)
        rows.append(["start-up s (spawn → /health 200)", f"median {start.median_start_s:.3f}"])
        rows.append(["start-up runs s", runs])
        rows.append(["graceful stop s (SIGTERM → exit), median", f"{start.median_stop_s:.3f}"])
    for label, memory in (
        ("RSS idle MiB", results.rss_idle),
        ("RSS after load MiB", results.rss_after),
        ("peak RSS (VmHWM) MiB", results.rss_peak),
    ):
        rows.append([label, _memory_text(memory)])
    return ["## 4-5. Start-up and memory", "", *table(["", ""], rows)]


def _memory_text(memory: Memory | None) -> str:
    if memory is None:
        return "—"
    if memory.processes == 1:
        return f"{memory.largest_mib:.1f}"
    return (
        f"{memory.largest_mib:.1f} largest process; {memory.total_mib:.1f} over"
        f" {memory.processes} processes"
    )


def _failover_table(run: FailoverRun) -> list[str]:
    rows = []
    for model, what, result, cpu in (
        ("bench-3way", "3 x nginx", run.three_way, run.three_way_cpu_us),
        ("bench-1dead", "2 x nginx + 1 refused port", run.one_dead, run.one_dead_cpu_us),
    ):
        rows.append(
            [
                model,
                what,
                f"{result.rps:,.0f}",
                f"{result.p50_us:.0f}",
                f"{result.p99_us:.0f}",
                f"{cpu:.0f}",
                core_share(cpu, result),
                errors_text(result),
            ]
        )
    header = ["model", "deployments (p2c-ewma)", "RPS", "p50 µs", "p99 µs", "CPU µs/req"]
    return table([*header, "% of a core", "errors"], rows)


def _routing_lines(run: FailoverRun, workers: int) -> list[str]:
    if not run.deployments:
        return [f"`GET /admin/routing` could not be read: `{run.admin_error[:300]}`", ""]
    rows = [
        [
            f"`{d.id}`" + (" (dead)" if d.id == DEAD_ID else ""),
            d.breaker,
            f"{d.requests:,}",
            f"{d.failures:,}",
            "yes" if d.ejected else "no",
        ]
        for d in run.deployments
    ]
    one_worker = " (one worker's view)" if workers > 1 else ""
    return [
        f"bench-1dead after its runs, from `GET /admin/routing`{one_worker}:",
        "",
        *table(["deployment", "breaker", "requests", "failures", "ejected"], rows),
        "Upstream attempts per client request:"
        f" {num(_one_worker(run.attempts_per_request, workers), '.4f')} (every failed"
        " attempt on the dead deployment was retried on a live one; — with several"
        " workers, whose counts the admin API does not add up).",
        "",
    ]


def _one_worker(value: float | None, workers: int) -> float | None:
    """A ratio of admin counts to all client requests: only whole with one worker."""
    return value if workers == 1 else None


def _dead_part(results: Results) -> list[str]:
    run = results.failover
    if run is None:
        return []
    p50, p99 = run.added_us
    ratio = run.one_dead.rps / run.three_way.rps if run.three_way.rps else 0.0
    return [
        f"### One dead deployment of three: wrk -t1 -c{run.connections},"
        f" {rounds_text(run.rounds, results.plan.failover_round_s)}",
        "",
        "Both models through the same gateway to the instant upstream; bench-1dead starts"
        " with every breaker closed, so its first round includes finding out that one"
        " deployment refuses connections.",
        "",
        *_failover_table(run),
        f"1 dead vs 3-way: added p50 **{p50:.0f} µs**, p99 **{p99:.0f} µs**, CPU"
        f" **{run.added_cpu_us:+.1f} µs/req**; RPS {ratio:.1%} of 3-way.",
        "",
        *_routing_lines(run, results.workers),
    ]


def _hedge_row(arm: HedgeArm, label: str, workers: int) -> list[str]:
    r = arm.result
    return [
        label,
        f"{r.rps:,.0f}",
        f"{r.p50_us / 1e3:.1f}",
        f"{r.p99_us / 1e3:.1f}",
        f"{arm.attempts_per_request:.3f}",
        num(arm.requests_to("fast"), ",d") + " / " + num(arm.requests_to("slow"), ",d"),
        num(_one_worker(arm.slow_first_share, workers), ".0%"),
        f"{arm.cpu_us:.0f}",
        errors_text(r),
    ]


def _hedge_part(results: Results) -> list[str]:
    run = results.hedging
    if run is None:
        return []
    header = ["model", "RPS", "p50 ms", "p99 ms", "upstream attempts / request"]
    header += ["attempts fast / slow", "first attempt on slow", "CPU µs/req", "errors"]
    rows = [
        _hedge_row(run.off, run.off.model, results.workers),
        _hedge_row(run.on, f"{run.on.model} (after {run.delay_s * 1e3:g} ms)", results.workers),
    ]
    note = [f"`GET /admin/routing` could not be read: `{run.admin_error[:300]}`", ""]
    view = " (one worker's view)" if results.workers > 1 else ""
    return [
        f"### Hedging: deployments at {run.fast_ms} ms and {run.slow_ms} ms, round-robin;"
        f" wrk -t1 -c{run.connections}, {rounds_text(run.rounds, results.plan.hedge_round_s)}",
        "",
        *table(header, rows),
        f"p99 without hedging **{run.off.result.p99_us / 1e3:.1f} ms**, with hedging"
        f" **{run.on.result.p99_us / 1e3:.1f} ms** (no target). Upstream attempts = the"
        " simulator's `requests_total` delta / requests sent (completed + one cut off per"
        " connection when wrk stops); attempts per deployment from `GET /admin/routing`"
        f"{view};"
        " *first attempt on slow* = the slow deployment's attempts / requests sent (50%"
        " is a fair rotation).",
        "",
        *(note if run.admin_error else []),
    ]


def _balancer_part(results: Results) -> list[str]:
    run = results.balancers
    if run is None:
        return []
    sizes = list(next(iter(run.pick_ns.values()), {}))
    rows = [[strategy, *(f"{row[n]:,.0f}" for n in sizes)] for strategy, row in run.pick_ns.items()]
    rows += [
        [name, f"{ns:,.0f}", *[""] * (len(sizes) - 1)] for name, ns in run.estimator_ns.items()
    ]
    header = ["strategy / estimator", *(f"{n} candidates, ns/pick" for n in sizes)]
    return [
        f"### Balancer pick cost: `bench/balancers.py`, {run.picks:,} picks per cell,"
        f" Python {run.python}",
        "",
        *table(header, rows),
        "The estimator rows are ns per call (`PeakEwma`: latency, `DecayingRate`: error rate).",
        "",
    ]


def _failover_section(results: Results) -> list[str]:
    parts = _dead_part(results) + _hedge_part(results) + _balancer_part(results)
    return ["## 6. Routing and resilience", "", *parts] if parts else []


def _cache_section(results: Results) -> list[str]:
    return cache_section(results.cache, results.vectors)


def _worker_section(results: Results) -> list[str]:
    return worker_section(results.worker, results.plan.worker_round_s)


def _limits_section(results: Results) -> list[str]:
    return limits_section(results.limits)


def _problems_section(results: Results) -> list[str]:
    lines = []
    if results.errors:
        lines += ["## Sections that did not run", ""]
        lines += [f"- **{name}**: `{why[:500]}`" for name, why in results.errors.items()]
        lines.append("")
    if results.gateway_problem_lines:
        lines += [
            f"## Gateway log: {results.gateway_problem_lines} lines at warning level or worse",
            "",
            "```",
            *results.gateway_problem_samples,
            "```",
            "",
        ]
    if results.cache and results.cache.l2_problem_lines:
        lines += [
            f"## Gateway log (aigw-l2): {results.cache.l2_problem_lines} lines at warning"
            " level or worse",
            "",
            "```",
            *results.cache.l2_problem_samples,
            "```",
            "",
        ]
    return lines


def render_markdown(results: Results) -> str:
    title = "# aigw benchmark" + (" (quick)" if results.quick else "")
    sections: list[Callable[[Results], list[str]]] = [
        _verdict_section,
        _hops_section,
        _slow_section,
        _streaming_section,
        _process_section,
        _failover_section,
        _cache_section,
        _worker_section,
        _limits_section,
        _problems_section,
        _machine_section,
    ]
    lines = [title, "", f"{results.started_at}, {results.elapsed_s:.0f} s in all.", ""]
    for section in sections:
        lines += section(results)
    return "\n".join(lines).rstrip() + "\n"


def to_json(results: Results) -> str:
    """The raw results plus the verdicts and the derived figures, for tools."""
    data = dataclasses.asdict(results)
    data["verdicts"] = [dataclasses.asdict(v) | {"result": v.label} for v in verdicts(results)]
    data["derived"] = {
        "added_us": {
            str(row.connections): {
                "nginx": added_us(row, row.nginx),
                "aigw": added_us(row, row.aigw),
            }
            for row in results.hops
        },
        "slow_ratio": results.slow.ratio if results.slow else None,
        "added_ttfb_ms": {
            "p50": results.ttfb.added_p50_ms,
            "p99": results.ttfb.added_p99_ms,
        }
        if results.ttfb
        else None,
        "startup_median_s": results.startup.median_start_s if results.startup else None,
        **_failover_derived(results),
        "cache": cache_derived(results.cache) if results.cache else None,
        "worker": worker_derived(results.worker) if results.worker else None,
        "limits": limits_derived(results.limits) if results.limits else None,
    }
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def _failover_derived(results: Results) -> dict[str, object]:
    run, hedge, balancers = results.failover, results.hedging, results.balancers
    return {
        "failover": {
            "added_us": run.added_us,
            "added_cpu_us": run.added_cpu_us,
            "attempts_per_request": _one_worker(run.attempts_per_request, results.workers),
        }
        if run
        else None,
        "hedging": {
            "p99_ms_off": hedge.off.result.p99_us / 1e3,
            "p99_ms_on": hedge.on.result.p99_us / 1e3,
            "attempts_per_request_off": hedge.off.attempts_per_request,
            "attempts_per_request_on": hedge.on.attempts_per_request,
            "slow_first_share_off": _one_worker(hedge.off.slow_first_share, results.workers),
            "slow_first_share_on": _one_worker(hedge.on.slow_first_share, results.workers),
        }
        if hedge
        else None,
        "balancer_worst_ns": balancers.worst if balancers else None,
    }
