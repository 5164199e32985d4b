"""Section 8 of the report: the local model worker's dynamic batching (see
`batching.py`)."""

from __future__ import annotations

from batching import MODEL_PACKAGE, WorkerArm, WorkerProcess, WorkerRow, WorkerRun
from report_format import Verdict, core_share, errors_text, num, rounds_text, table

SPEEDUP_AT_CONNECTIONS = 32
# What NVIDIA's Triton optimisation guide shows for dynamic batching (Inception, on a
# GPU): the reference the reader has in mind.
TRITON_SPEEDUP = 3.7


def worker_verdict(run: WorkerRun | None) -> Verdict:
    """No threshold: the speed-up at c=32 is a figure to watch (INFO)."""
    c = SPEEDUP_AT_CONNECTIONS
    target = f"dynamic batching speed-up at c={c} (worker RPS on / off; no target)"
    row = run.row(c) if run else None
    if row is None or row.speedup is None:
        return Verdict(target, "not measured", None, info=True)
    measured = (
        f"{row.speedup:.2f}x ({row.on.result.rps:,.0f} vs {row.off.result.rps:,.0f} RPS;"
        f" mean batch {num(row.on.mean_batch, '.1f')} vs {num(row.off.mean_batch, '.1f')};"
        f" errors {errors_text(row.on.result)} / {errors_text(row.off.result)})"
    )
    return Verdict(target, measured, True, info=True)


WORKER_HEADER = ["c", "batching", "RPS", "p50 ms", "p99 ms", "mean batch", "texts embedded"]
WORKER_HEADER += ["CPU µs/text", "% of a core", "errors", "on / off RPS"]


def _arm_row(c: int, label: str, arm: WorkerArm, speedup: str) -> list[str]:
    r = arm.result
    return [
        str(c),
        label,
        f"{r.rps:,.1f}",
        f"{r.p50_us / 1e3:.1f}",
        f"{r.p99_us / 1e3:.1f}",
        num(arm.mean_batch, ".2f"),
        f"{arm.items:,}",
        f"{arm.cpu_us:,.0f}",
        core_share(arm.cpu_us, r),
        errors_text(r),
        speedup,
    ]


def _rows(row: WorkerRow, off: WorkerProcess, on: WorkerProcess) -> list[list[str]]:
    speedup = "—" if row.speedup is None else f"**{row.speedup:.2f}x**"
    return [
        _arm_row(row.connections, f"off (batch {off.max_batch_size})", row.off, ""),
        _arm_row(row.connections, _on_label(on), row.on, speedup),
    ]


def _on_label(on: WorkerProcess) -> str:
    return f"on (≤ {on.max_batch_size}, {num(on.max_queue_delay_ms, 'g')} ms)"


def _process_rows(run: WorkerRun) -> list[list[str]]:
    return [
        [
            f"`{p.name}`",
            str(p.max_batch_size),
            "default" if p.max_queue_delay_ms is None else f"{p.max_queue_delay_ms:g}",
            p.device,
            num(p.load_s, ".2f"),
            f"{p.ready_s:.1f}",
            f"{p.rss_mib:.0f}",
            f"{p.peak_rss_mib:.0f}",
            str(p.problem_lines),
        ]
        for p in (run.off, run.on)
    ]


def _problem_lines(run: WorkerRun) -> list[str]:
    lines = []
    for p in (run.off, run.on):
        if p.problem_lines:
            lines += [f"Worker `{p.name}` log: {p.problem_lines} lines at warning level or worse:"]
            lines += ["", "```", *p.problem_samples, "```", ""]
    return lines


def worker_section(run: WorkerRun | None, round_s: float) -> list[str]:
    """Section 8: embeddings through `aigw worker`, batching off vs on."""
    if run is None:
        return []
    rows = [line for row in run.rows for line in _rows(row, run.off, run.on)]
    summaries = [
        f"c={row.connections}: on/off RPS **{num(row.speedup, '.2f')}x**, p50"
        f" {row.on.result.p50_us / 1e3:.1f} vs {row.off.result.p50_us / 1e3:.1f} ms, CPU"
        f" {row.on.cpu_us:,.0f} vs {row.off.cpu_us:,.0f} µs/text"
        for row in run.rows
    ]
    process_header = ["worker", "--max-batch-size", "--max-queue-delay-ms", "device"]
    process_header += ["model load s (its log)", "spawn → /ready s", "RSS MiB, warmed"]
    process_header += ["peak RSS MiB", "log problems"]
    return [
        "## 8. Local model worker: dynamic batching",
        "",
        f"### Embeddings, `{run.model}` ({MODEL_PACKAGE}): wrk -t1,"
        f" {rounds_text(run.rounds, round_s)}; each round swaps which worker goes first",
        "",
        "Two `aigw worker` processes serve the same model, started together; wrk POSTs"
        " `/v1/embeddings` straight to them, one sentence per request, cycling through"
        " `bench/embed.lua`'s 50 sentences (4 to ~60 words). *off* runs every request"
        " alone; *on* lets requests wait for each other. `--max-queue"
        f" {run.max_queue}` on both, so no request should be refused (a 503 would show"
        " under *errors*).",
        "",
        *table(WORKER_HEADER, rows),
        *[f"- {line}" for line in summaries],
        "",
        "*mean batch* and *texts embedded*: the `aigw_worker_batch_size` histogram's"
        " count and sum over each run, read from `/metrics` once the worker's queue is"
        " empty again (wrk stops with a request on every connection; the worker drops"
        " those still queued and finishes the batch it is running). *CPU µs/text* = the"
        " worker process's CPU (every thread) over the run and that drain / texts"
        " embedded; *% of a core* = that x RPS (two cores: up to 200%). Errors: socket"
        " errors (timeout: 5 s) + non-2xx, 503s from a full queue included. For scale,"
        f" NVIDIA's Triton guide shows ~{TRITON_SPEEDUP:g}x from dynamic batching on a GPU.",
        "",
        *table(process_header, _process_rows(run)),
        *_problem_lines(run),
    ]


def worker_derived(run: WorkerRun) -> dict[str, object]:
    """Per concurrency: on/off RPS, and the mean batch of each."""
    return {
        str(row.connections): {
            "speedup": row.speedup,
            "mean_batch_off": row.off.mean_batch,
            "mean_batch_on": row.on.mean_batch,
            "p50_ms": (row.off.result.p50_us / 1e3, row.on.result.p50_us / 1e3),
            "p99_ms": (row.off.result.p99_us / 1e3, row.on.result.p99_us / 1e3),
        }
        for row in run.rows
    }
