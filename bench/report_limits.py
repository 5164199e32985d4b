"""Section 9 of the report: rate limits and load shedding (see `limits.py` and
`overload.py`)."""

from __future__ import annotations

from limits import (
    DEFAULT_TIMEOUT_BUCKET,
    MEMORY,
    NO_LIMITS,
    REDIS,
    REDIS_LIMIT_TIMEOUT_S,
    ArmResult,
    CheckCosts,
    LimitsRun,
    OverheadRow,
)
from overload import (
    BASELINE_LOAD,
    BREAKER_OPENED,
    CAPACITY_RPS,
    OVERLOAD,
    REQUEST_TIMEOUT_S,
    SHED_OFF,
    SHED_ON,
    SHEDDING,
    SIM_CAPACITY,
    SIM_LATENCY_MS,
    Phase,
)
from report_format import Verdict, core_share, errors_text, num, rounds_text, table

# The targets, in the units the report prints.
CHECK_US = 10.0  # one local check, slowest algorithm: as a balancer pick
ADDED_P50_US = 50.0  # three limits in memory, c=1: a third of the gateway's 150 µs
ACCEPTED_P99_RATIO = 2.0  # shedding on, overload p99 of the 200s / baseline p99
GOODPUT_SHARE = 0.8  # shedding on, overload: 200s per second / the upstream's capacity
GENERATOR_RATE_SHARE = 0.97
# The generator is late by at most this share of what it measures (a late send is
# charged to the request, so lateness inflates the latencies reported).
GENERATOR_LAG_SHARE = 0.1
RULES_PER_REQUEST = 3


# --- verdicts -------------------------------------------------------------------------------


def _check_verdict(checks: CheckCosts | None) -> Verdict:
    target = f"one limit check in memory ≤ {CHECK_US:g} µs (slowest algorithm)"
    if checks is None or not checks.local_us:
        return Verdict(target, "not measured", None)
    algorithm, us = max(checks.local_us.items(), key=lambda item: item[1])
    return Verdict(target, f"{us:.2f} µs ({algorithm})", us <= CHECK_US)


def _overhead_verdicts(run: LimitsRun | None) -> list[Verdict]:
    added_target = f"3 limits in memory: added latency c=1 p50 ≤ {ADDED_P50_US:g} µs"
    clean_target = (
        f"3 limits (memory, Redis): 0 errors, {RULES_PER_REQUEST} checks a request, none"
        " failed open, no give-back lost"
    )
    redis_target = "3 limits on Redis: added latency c=1 p50 (no target)"
    row = _row(run, 1)
    added = row.added_us(MEMORY) if row else None
    if run is None or row is None or added is None:
        return [
            Verdict(added_target, "not measured", None),
            Verdict(clean_target, "not measured", None),
            Verdict(redis_target, "not measured", None, info=True),
        ]
    redis_added = row.added_us(REDIS)
    redis = Verdict(redis_target, "not measured", None, info=True)
    if redis_added is not None:
        redis = Verdict(redis_target, f"{redis_added[0]:.0f} µs", True, info=True)
    assert run.overhead is not None  # _row found a row
    problems = [
        f"{a.arm}, c={c}: {why}" for c, a in _arms(run) if (why := _arm_problem(a, run.workers))
    ]
    problems += [
        f"{arm}: {_lifetime_text(counts)} (whole run, warm-up included)"
        for arm, counts in run.overhead.lifetime_backend_errors.items()
        if any(counts)
    ]
    clean = Verdict(clean_target, "; ".join(problems) or "yes, at every c", not problems)
    return [Verdict(added_target, f"{added[0]:.0f} µs", added[0] <= ADDED_P50_US), clean, redis]


def _lifetime_text(counts: tuple[float, float]) -> str:
    checks, give_backs = counts
    return f"{checks:.0f} checks failed open, {give_backs:.0f} give-backs lost"


def _arms(run: LimitsRun) -> list[tuple[int, ArmResult]]:
    rows = run.overhead.rows if run.overhead else []
    return [(r.connections, a) for r in rows for a in r.arms if a.arm != NO_LIMITS]


def _arm_problem(arm: ArmResult, workers: int) -> str:
    """What is wrong with a limited gateway's runs; `/metrics` answers from one worker,
    so with several the checks per request cannot be known."""
    per_request = arm.checks_admitted / max(1, arm.result.requests)
    out = []
    if arm.result.errors:
        out.append(f"errors {errors_text(arm.result)}")
    if (workers == 1 and per_request < RULES_PER_REQUEST) or arm.checks_limited:
        out.append(f"{per_request:.2f} checks a request, {arm.checks_limited:.0f} refused")
    return ", ".join(out)


def _shed_verdicts(run: LimitsRun | None) -> list[Verdict]:
    load = f"{OVERLOAD:g}x capacity"
    p99_target = f"shedding, {load}: p99 of the 200s ≤ {ACCEPTED_P99_RATIO:g}x baseline p99"
    fast_target = f"shedding, {load}: 503 p99 ≤ baseline p50 of the 200s, no other failure"
    goodput_target = f"shedding, {load}: 200s ≥ {GOODPUT_SHARE:.0%} of the upstream's capacity"
    off_target = f"no shedding, {load}: p99 of the 200s (no target)"
    base = run.phase(SHED_ON, "baseline") if run else None
    over = run.phase(SHED_ON, "overload") if run else None
    off = run.phase(SHED_OFF, "overload") if run else None
    off_base = run.phase(SHED_OFF, "baseline") if run else None
    off_verdict = Verdict(off_target, "not measured", None, info=True)
    if off is not None and off_base is not None and off.ok.p99_ms is not None:
        measured = (
            f"{off.ok.p99_ms:,.0f} ms (baseline {num(off_base.ok.p99_ms, ',.0f')} ms;"
            f" timeout {REQUEST_TIMEOUT_S:g} s); {_failures(off)}"
        )
        off_verdict = Verdict(off_target, measured, True, info=True)
    if base is None or over is None or base.ok.p99_ms is None or base.ok.p50_ms is None:
        targets = (p99_target, fast_target, goodput_target, "shedding: every slot back")
        return [*[Verdict(t, "not measured", None) for t in targets], off_verdict]
    ratio = (over.ok.p99_ms or float("inf")) / base.ok.p99_ms
    p99 = Verdict(
        p99_target,
        f"{num(over.ok.p99_ms, '.0f')} vs {base.ok.p99_ms:.0f} ms ({ratio:.2f}x)",
        ratio <= ACCEPTED_P99_RATIO,
    )
    shed_p99 = over.shed.p99_ms
    fast_ok = shed_p99 is not None and shed_p99 <= base.ok.p50_ms and not _other(over)
    fast = Verdict(
        fast_target,
        f"{num(shed_p99, '.1f')} ms vs {base.ok.p50_ms:.0f} ms; {_failures(over)}",
        fast_ok,
    )
    share = over.accepted_rate / CAPACITY_RPS
    goodput = Verdict(
        goodput_target,
        f"{over.accepted_rate:.0f}/s of {CAPACITY_RPS:g}/s ({share:.0%})",
        share >= GOODPUT_SHARE,
    )
    slots_target = (
        f"shedding: every slot back after the overload ({SIM_CAPACITY} requests at once, all 200)"
    )
    slots = Verdict(slots_target, "not measured", None)
    if over.probe_ok is not None:
        slots = Verdict(
            slots_target, f"{over.probe_ok} of {SIM_CAPACITY}", over.probe_ok == SIM_CAPACITY
        )
    return [p99, fast, goodput, slots, off_verdict]


def _other(phase: Phase) -> int:
    return sum(phase.other.values()) + phase.no_answer


def _failures(phase: Phase) -> str:
    parts = [f"HTTP {s} x{n:,}" for s, n in phase.other.items()]
    parts += [f"{kind} x{n:,}" for kind, n in phase.errors.items()]
    return "other failures: " + (", ".join(parts) if parts else "none")


def _generator_verdict(run: LimitsRun | None) -> Verdict:
    target = (
        f"harness: open-loop generator sent ≥ {GENERATOR_RATE_SHARE:.0%} of its rate; send"
        f" lag p99 ≤ {GENERATOR_LAG_SHARE:.0%} of the phase's 200 p50"
    )
    if run is None or not run.shedding:
        return Verdict(target, "not measured", None)
    worst_rate = min(run.shedding, key=lambda p: p.achieved_rate / p.rate)
    worst_lag = max(run.shedding, key=_lag_share)
    rate_share = worst_rate.achieved_rate / worst_rate.rate
    measured = (
        f"lowest {rate_share:.1%} ({worst_rate.gateway}, {worst_rate.name}); worst lag p99"
        f" {worst_lag.lag_p99_ms:.1f} ms vs 200 p50 {num(worst_lag.ok.p50_ms, ',.0f')} ms"
        f" ({worst_lag.gateway}, {worst_lag.name})"
    )
    ok = rate_share >= GENERATOR_RATE_SHARE and _lag_share(worst_lag) <= GENERATOR_LAG_SHARE
    return Verdict(target, measured, ok)


def _lag_share(phase: Phase) -> float:
    """How late the generator sent, against the latency it measured."""
    return phase.lag_p99_ms / phase.ok.p50_ms if phase.ok.p50_ms else float("inf")


def limits_verdicts(run: LimitsRun | None) -> list[Verdict]:
    return [
        _check_verdict(run.checks if run else None),
        *_overhead_verdicts(run),
        *_shed_verdicts(run),
        _generator_verdict(run),
    ]


# --- Markdown -------------------------------------------------------------------------------


def _row(run: LimitsRun | None, connections: int) -> OverheadRow | None:
    if run is None:
        return None
    rows = run.overhead.rows if run.overhead else []
    return next((r for r in rows if r.connections == connections), None)


def _checks_part(c: CheckCosts | None) -> list[str]:
    if c is None:
        return []
    rows = [
        [name, f"{us:.2f}", num(c.redis_us.get(name), ",.0f")] for name, us in c.local_us.items()
    ]
    rows.append(
        [
            "concurrency: acquire + release",
            f"{c.local_concurrency_us:.2f}",
            num(c.redis_concurrency_us, ",.0f"),
        ]
    )
    rows.append(
        [
            "**admit stage, the 3 limits below, per request**",
            num(c.local_stage_us, ".1f"),
            num(c.redis_stage_us, ",.0f"),
        ]
    )
    rows += [[f"`prompt_tokens`, {name}", f"{us:.2f}", ""] for name, us in c.tokens_us.items()]
    notes = []
    if c.stage_error:
        notes.append(f"Admit stage not measured: `{c.stage_error[:300]}`.")
    if c.tokens_error:
        notes.append(f"`TokenCounter.prompt_tokens` not measured: `{c.tokens_error[:300]}`.")
    redis_checks = f"{c.redis_checks:,} one at a time" if c.redis_checks else "not run"
    return [
        f"### Cost of one limit check: `bench/limit_checks.py`, Python {c.python}, {c.loop}",
        "",
        f"Mean µs per call: in memory over {c.checks:,} calls (1,024 keys cycled, limits"
        f" never reached); on Redis (this section's `redis-server`) {redis_checks}, each"
        " awaited: the round trip a request waits, through redis-py as the gateway uses it."
        " The admit stage row is one request through `LimitStage` with the three limits of"
        " the next table (token counting, three checks, rate-limit headers, metrics, and the"
        " give-back once the answer is complete) minus the same loop without the stage. The"
        " `prompt_tokens` rows count post.lua's chat body (2 short messages).",
        "",
        *table(["what", "memory µs", "Redis µs"], rows),
        *notes,
        *([""] if notes else []),
    ]


OVERHEAD_HEADER = ["c", "gateway", "RPS", "p50 µs", "p99 µs", "added p50 µs", "added p99 µs"]
OVERHEAD_HEADER += ["CPU µs/req", "added CPU µs/req", "% of a core", "checks/req"]
OVERHEAD_HEADER += ["Redis scripts/req", "Redis CPU µs/req"]
OVERHEAD_HEADER += [f"Redis checks > {float(DEFAULT_TIMEOUT_BUCKET) * 1e3:g} ms", "errors"]


def _checks_per_request(arm: ArmResult, workers: int) -> str:
    if arm.arm == NO_LIMITS or workers > 1:
        return "—"
    return f"{arm.checks_admitted / max(1, arm.result.requests):.2f}"


def _overhead_rows(row: OverheadRow, workers: int) -> list[list[str]]:
    base = row.arm(NO_LIMITS)
    out = []
    for arm in row.arms:
        r, added = arm.result, row.added_us(arm.arm) if arm is not base else None
        added_cpu = arm.cpu_us - base.cpu_us if base is not None and arm is not base else None
        out.append(
            [
                str(row.connections),
                arm.arm,
                f"{r.rps:,.0f}",
                f"{r.p50_us:.0f}",
                f"{r.p99_us:.0f}",
                num(added[0] if added else None, "+.0f"),
                num(added[1] if added else None, "+.0f"),
                f"{arm.cpu_us:.0f}",
                num(added_cpu, "+.0f"),
                core_share(arm.cpu_us, r),
                _checks_per_request(arm, workers),
                num(arm.redis_scripts_per_request, ".2f"),
                num(arm.redis_cpu_us, ".0f"),
                _slow_share(arm),
                errors_text(r)
                + (f"; {arm.backend_errors:.0f} failed open" if arm.backend_errors else "")
                + (f"; {arm.give_backs_lost:.0f} give-backs lost" if arm.give_backs_lost else ""),
            ]
        )
    return out


def _slow_share(arm: ArmResult) -> str:
    if not arm.backend_checks:
        return "—"
    return f"{1 - arm.backend_fast / arm.backend_checks:.1%}"


def _overhead_summary(row: OverheadRow) -> str:
    parts = []
    for name in (MEMORY, REDIS):
        arm, added = row.arm(name), row.added_us(name)
        if arm is None or added is None:
            continue
        text = f"{name} adds p50 **{added[0]:+.0f} µs**, p99 {added[1]:+.0f} µs"
        if arm.backend_checks:
            mean = arm.backend_seconds / arm.backend_checks * 1e6
            text += f" (a Redis check as the gateway timed it: {mean:,.0f} µs mean)"
        parts.append(text)
    return f"c={row.connections}: " + "; ".join(parts) + "."


def _overhead_part(run: LimitsRun) -> list[str]:
    if run.overhead is None:
        return []
    rows = [line for row in run.overhead.rows for line in _overhead_rows(row, run.workers)]
    lifetime = "; ".join(
        f"{arm}: {_lifetime_text(counts)}"
        for arm, counts in run.overhead.lifetime_backend_errors.items()
    )
    workers = f", {run.workers} workers each" if run.workers > 1 else ""
    return [
        "### Three limits on the instant upstream: wrk -t1 with an API key,"
        f" {rounds_text(run.plan.rounds, run.plan.round_s)}",
        "",
        "Three gateways, identical but for their limits, in front of nginx (`return 200`)"
        f"{workers}: *no limits*; *3 limits, memory*: requests per minute by API key, tokens"
        " per minute by API key (prompts counted exactly, `gpt-4o-mini` upstream), concurrent"
        " requests globally, all too large ever to refuse; *3 limits, Redis*: the same on a"
        f" `redis-server` on loopback (`limits.backend_timeout_s: {REDIS_LIMIT_TIMEOUT_S:g}`).",
        "",
        *table(OVERHEAD_HEADER, rows),
        *[f"- {_overhead_summary(row)}" for row in run.overhead.rows],
        "",
        "*added* = this gateway - *no limits*, same c, same run. CPU µs/req: the gateway"
        " process tree; *Redis CPU* = redis-server's over the Redis gateway's rounds /"
        " its requests. *checks/req*: the gateway's `aigw_limit_checks_total` (admitted)"
        " over the runs / requests completed (3 rules: 3; a little more, since wrk stops"
        " with one request in flight per connection; — with several workers, since"
        " `/metrics` answers from one). *Redis scripts/req*: EVALSHA calls"
        " Redis served / requests (three checks, then the concurrency slot's release and"
        " the token charge's reconciliation, off the request path). *errors*: socket"
        " errors + non-2xx, then checks that failed open"
        " (`aigw_limit_backend_errors_total`: a Redis check that timed out is counted in"
        " the process instead, and the client never knows) and give-backs lost"
        " (`aigw_state_errors_total` for limits: a slot's release or a token"
        " reconciliation that timed out; the slot then stays taken until its lease"
        f" expires). Over each gateway's whole life, warm-up included: {lifetime}."
        f" *Redis checks > {float(DEFAULT_TIMEOUT_BUCKET) * 1e3:g} ms*: the share of Redis"
        " requests/tokens checks the gateway timed above"
        f" {float(DEFAULT_TIMEOUT_BUCKET) * 1e3:g} ms (its"
        " `aigw_limit_backend_duration_seconds` histogram), the default"
        " `limits.backend_timeout_s`: with the default, those checks would have failed"
        " open (counted in this process only).",
        "",
    ]


SHED_HEADER = ["gateway", "phase", "offered req/s (sent)", "requests", "200s", "200s per s"]
SHED_HEADER += ["200s per s by third", f"{SIM_CAPACITY} at once after"]
SHED_HEADER += ["200 p50 ms", "200 p99 ms", "200 max ms", "503s", "503 p50 / p99 ms"]
SHED_HEADER += ["other", "upstream calls (peak in flight)", "gateway CPU µs/req"]
GENERATOR_HEADER = ["gateway", "phase", "send lag p99 / max ms", "generator CPU µs/req"]
GENERATOR_HEADER += ["peak connections", "loop"]


def _shed_row(p: Phase) -> list[str]:
    shed = "—" if not p.shed.count else f"{num(p.shed.p50_ms, '.1f')} / {num(p.shed.p99_ms, '.1f')}"
    reasons = ", ".join(f"{k} {v:,.0f}" for k, v in p.gateway_counts.items() if k != BREAKER_OPENED)
    breaker = p.gateway_counts.get(BREAKER_OPENED)
    return [
        p.gateway,
        f"{p.name} ({p.load:g}x)",
        f"{p.rate:,.0f} ({p.achieved_rate:,.1f})",
        f"{p.sent:,}",
        f"{p.ok.count:,}",
        f"{p.accepted_rate:,.0f}",
        " / ".join(f"{n:.0f}" for n in p.ok_per_s_by_third),
        "—" if p.probe_ok is None else f"{p.probe_ok} of {SIM_CAPACITY}",
        num(p.ok.p50_ms, ",.1f"),
        num(p.ok.p99_ms, ",.1f"),
        num(p.ok.max_ms, ",.1f"),
        f"{p.shed.count:,}" + (f" ({reasons})" if reasons else ""),
        shed,
        _failures(p).removeprefix("other failures: ")
        + (f"; breaker opened x{breaker:.0f}" if breaker else ""),
        f"{p.sim_calls:,} ({p.sim_peak_in_flight:,})",
        f"{p.gateway_cpu_us:.0f}",
    ]


def _generator_row(p: Phase) -> list[str]:
    return [
        p.gateway,
        p.name,
        f"{p.lag_p99_ms:.1f} / {p.lag_max_ms:.1f}",
        f"{p.generator_cpu_us:.0f}",
        f"{p.peak_connections:,}",
        p.generator_loop,
    ]


def _shed_summary(run: LimitsRun) -> list[str]:
    lines = []
    for label in (SHED_ON, SHED_OFF):
        base, over = run.phase(label, "baseline"), run.phase(label, "overload")
        if base is None or over is None:
            continue
        lines.append(
            f"- {label}: under {OVERLOAD:g}x the 200s took p50 **{num(over.ok.p50_ms, ',.0f')}"
            f" ms**, p99 **{num(over.ok.p99_ms, ',.0f')} ms** (baseline"
            f" {num(base.ok.p50_ms, '.0f')} / {num(base.ok.p99_ms, '.0f')} ms), at"
            f" {over.accepted_rate:,.0f}/s; {_shed_text(over)}; {_failures(over)}."
        )
    return lines


def _shed_text(phase: Phase) -> str:
    if not phase.shed.count:
        return "none answered 503"
    return f"{phase.shed.count:,} answered 503 (p99 {num(phase.shed.p99_ms, ',.1f')} ms)"


def _shed_part(run: LimitsRun) -> list[str]:
    if not run.shedding:
        return []
    shedding = ", ".join(f"`{k}: {v:g}`" for k, v in SHEDDING.items())
    return [
        f"### Load shedding at {OVERLOAD:g}x the upstream's capacity: open-loop,"
        f" {run.plan.baseline_s:g} s baseline then {run.plan.overload_s:g} s overload",
        "",
        f"The simulator works on {SIM_CAPACITY} calls at once, {SIM_LATENCY_MS} ms each"
        f" (capacity {CAPACITY_RPS:g} req/s; the rest queue inside it). Two gateways, one"
        f" process each, `server.request_timeout_s: {REQUEST_TIMEOUT_S:g}`: *{SHED_ON}*"
        f" ({shedding}) and *{SHED_OFF}*. `bench/openloop.py` sends requests at fixed"
        f" intervals, {BASELINE_LOAD:g}x then {OVERLOAD:g}x the capacity, whatever the"
        " answers do, and times each from when it was due (a late send is charged to the"
        " request). Each phase starts with the simulator idle.",
        "",
        *table(SHED_HEADER, [_shed_row(p) for p in run.shedding]),
        *_shed_summary(run),
        "",
        "*offered*: the schedule's rate (the rate achieved). *200s per s*: 200s / the time"
        " from the first request's due time to the last 200 (an overloaded gateway keeps"
        " answering after the last request is sent); *by third*: 200s among the requests due"
        f" in each third of the phase, per second. *{SIM_CAPACITY} at once after* (shedding"
        " on only): once the overload is over and the simulator idle,"
        f" {SIM_CAPACITY} requests sent together, as many as the gateway lets in flight: how"
        " many got a 200 (all, unless the shedder lost slots; a request that finds none"
        " waits out the queue timeout and gets a 503). *503s*: with the shedder's reasons"
        " from `aigw_shed_requests_total`. *other*: other statuses (504: the gateway's"
        " request timeout), requests with no answer, and how often the deployment's breaker"
        " opened (after 5 failures in a row, timeouts included; while open, requests get"
        " 503 `no_deployment_available`). *upstream calls*: model calls the simulator"
        " received, queued ones included (peak: the most it held at once, queue included)."
        " *gateway CPU*: per request sent.",
        "",
        "The generator, which runs on the same two cores (its send lag is how late a request"
        " left after it was due):",
        "",
        *table(GENERATOR_HEADER, [_generator_row(p) for p in run.shedding]),
    ]


def _log_part(run: LimitsRun) -> list[str]:
    lines = []
    for log in run.logs:
        if log.problem_lines:
            lines += [
                f"Gateway `{log.name}` log: {log.problem_lines} lines at warning level or"
                f" worse (all of it in `OUT/{log.name}.stderr`, `.stdout.tail`):",
                "",
                "```",
                *log.samples,
                "```",
                "",
            ]
    return lines


def limits_section(run: LimitsRun | None) -> list[str]:
    """Section 9: limit check cost, what three limits add, load shedding."""
    if run is None:
        return []
    parts = _checks_part(run.checks) + _overhead_part(run) + _shed_part(run) + _log_part(run)
    return ["## 9. Rate limits and load shedding", "", *parts] if parts else []


def limits_derived(run: LimitsRun) -> dict[str, object]:
    """Added (p50, p99) µs per concurrency and limits backend; the shedding ratios."""
    on_base, on_over = run.phase(SHED_ON, "baseline"), run.phase(SHED_ON, "overload")
    off_over = run.phase(SHED_OFF, "overload")
    ratio = None
    if on_base and on_over and on_base.ok.p99_ms and on_over.ok.p99_ms:
        ratio = on_over.ok.p99_ms / on_base.ok.p99_ms
    return {
        "added_us": {
            str(row.connections): {name: row.added_us(name) for name in (MEMORY, REDIS)}
            for row in (run.overhead.rows if run.overhead else [])
        },
        "shed_p99_ratio": ratio,
        "shed_goodput_share": on_over.accepted_rate / CAPACITY_RPS if on_over else None,
        "noshed_p99_ms": off_over.ok.p99_ms if off_over else None,
    }
