"""What a semantic-cache lookup costs: `aigw.cache.vectors.VectorIndex`, add and search.

    python bench/vectors.py [--sizes 10000,100000] [--dims 384] [--queries 200] [--json]

For each size, random unit vectors (seeded) go into one context — the worst case, since
a search scans one context's matrix — and the report gives µs per `add` (amortised over
the whole build, matrix growth included), ms per `search` (median and p99 of
`--queries` random queries), and memory: the vectors alone (entries x dims x 4 bytes)
and what the index holds once built, as `tracemalloc` sees it (numpy reports its
buffers there), in a second build, since tracing slows the first. Standard library and
numpy; prints a Markdown table, or with `--json` one JSON object (what `bench/run.py`
reads).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import time
import tracemalloc
from dataclasses import asdict, dataclass

import numpy as np

from aigw.cache.vectors import VectorIndex

CONTEXT = "bench-context"
WARMUP_ENTRIES = 1_000
THRESHOLD = 0.95  # a random query matches nothing: every search scans the whole context


@dataclass(frozen=True)
class SizeResult:
    entries: int
    dims: int
    add_us: float  # per entry, amortised over the build
    search_p50_ms: float
    search_p99_ms: float
    queries: int
    vectors_mib: float  # entries x dims x 4 bytes
    index_mib: float  # held by the built index (tracemalloc)
    build_peak_mib: float  # peak while building (tracemalloc): growth copies the matrix


def unit_rows(rng: np.random.Generator, n: int, dims: int) -> np.ndarray:
    rows = rng.standard_normal((n, dims), dtype=np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return rows


def build(vectors: np.ndarray, ids: list[str]) -> tuple[VectorIndex, float]:
    index = VectorIndex(max_entries=len(ids))
    add = index.add
    started = time.perf_counter()
    for entry_id, vector in zip(ids, vectors, strict=True):
        add(CONTEXT, entry_id, vector)
    return index, time.perf_counter() - started


def time_searches(index: VectorIndex, queries: np.ndarray) -> list[float]:
    times = []
    for query in queries:
        started = time.perf_counter()
        index.search(CONTEXT, query, THRESHOLD)
        times.append(time.perf_counter() - started)
    return times


def traced_build(vectors: np.ndarray, ids: list[str]) -> tuple[float, float]:
    """(bytes the built index holds, peak bytes while building), from tracemalloc."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        index, _ = build(vectors, ids)
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del index
    return held - before, peak - before


def measure(size: int, dims: int, queries: int, seed: int = 0) -> SizeResult:
    rng = np.random.default_rng(seed)
    vectors = unit_rows(rng, size, dims)
    ids = [f"entry-{i}" for i in range(size)]
    build(vectors[:WARMUP_ENTRIES], ids[:WARMUP_ENTRIES])  # first-call costs, untimed
    index, build_s = build(vectors, ids)
    asked = unit_rows(rng, queries, dims)
    time_searches(index, asked[: min(5, queries)])  # warm-up: caches, BLAS threads
    times = sorted(time_searches(index, asked))
    del index
    held, peak = traced_build(vectors, ids)
    return SizeResult(
        entries=size,
        dims=dims,
        add_us=build_s * 1e6 / size,
        search_p50_ms=statistics.median(times) * 1e3,
        search_p99_ms=times[min(len(times) - 1, int(len(times) * 0.99))] * 1e3,
        queries=queries,
        vectors_mib=size * dims * 4 / 2**20,
        index_mib=held / 2**20,
        build_peak_mib=peak / 2**20,
    )


def markdown(results: list[SizeResult]) -> str:
    header = "| entries | dims | add µs/entry | search p50 ms | search p99 ms | vectors MiB"
    header += " | index MiB | build peak MiB |"
    lines = [header, "|" + "---|" * 8]
    for r in results:
        lines.append(
            f"| {r.entries:,} | {r.dims} | {r.add_us:.2f} | {r.search_p50_ms:.3f}"
            f" | {r.search_p99_ms:.3f} | {r.vectors_mib:.1f} | {r.index_mib:.1f}"
            f" | {r.build_peak_mib:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", type=lambda s: [int(n) for n in s.split(",") if n], default=[10_000, 100_000]
    )
    parser.add_argument("--dims", type=int, default=384)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--json", action="store_true", help="one JSON object, for run.py")
    args = parser.parse_args(argv)
    results = [measure(size, args.dims, args.queries) for size in args.sizes]
    if args.json:
        data = {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "sizes": [asdict(r) for r in results],
        }
        json.dump(data, sys.stdout)
        print()
    else:
        print(f"Python {platform.python_version()}, numpy {np.__version__}\n")
        print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
