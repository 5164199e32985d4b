"""Section 7 of the report: the response cache (see `caching.py`)."""

from __future__ import annotations

from caching import CacheRow, CacheRun, VectorRun
from loadgen import WrkResult
from report_format import Verdict, core_share, errors_text, num, rounds_text, table


def hit_share(result: WrkResult, expected: str) -> float:
    """Share of the completed requests whose X-Cache said `expected`."""
    return result.x_cache.get(expected, 0) / max(1, result.requests)


def cache_verdict(run: CacheRun | None) -> Verdict:
    """The target: an L1 hit answers faster (p50, c=1) than a proxied request, and
    every measured request really was a hit."""
    target = "L1 hit faster than proxying (c=1 p50)"
    row = run.row(1) if run else None
    if row is None:
        return Verdict(target, "not measured", None)
    share = hit_share(row.l1, "HIT-L1")
    measured = (
        f"L1 hit {row.l1.p50_us:.0f} µs vs proxied {row.proxied.p50_us:.0f} µs;"
        f" {share:.1%} HIT-L1, {errors_text(row.l1)} errors"
    )
    ok = row.l1.p50_us < row.proxied.p50_us and share == 1.0 and row.l1.errors == 0
    return Verdict(target, measured, ok)


CACHE_HEADER = ["c", "target", "RPS", "p50 µs", "p99 µs", "p50 vs proxied µs", "CPU µs/req"]
CACHE_HEADER += ["% of a core", "X-Cache", "errors"]


def _x_cache_text(result: WrkResult, expected: str) -> str:
    if not expected:
        return "—"
    others = ", ".join(f"{k} {n:,}" for k, n in result.x_cache.items() if k != expected)
    return f"{expected} {hit_share(result, expected):.1%}" + (f"; {others}" if others else "")


def _cache_rows(row: CacheRow) -> list[list[str]]:
    l2_cpu = None if row.l2_cpu_us is None else row.l2_cpu_us + (row.redis_cpu_us or 0.0)
    targets = [
        ("direct (nginx)", row.direct, row.direct_cpu_us, ""),
        ("proxied (aigw, `bench-nginx`)", row.proxied, row.proxied_cpu_us, ""),
        ("L1 hit (aigw, `bench-cached`)", row.l1, row.l1_cpu_us, "HIT-L1"),
        ("L2 hit (aigw-l2 + Redis)", row.l2, l2_cpu, "HIT-L2"),
    ]
    out = []
    for name, result, cpu, expected in targets:
        if result is None:
            out.append([str(row.connections), name, "not run", *["—"] * 7])
            continue
        cpu_text = num(cpu)
        if expected == "HIT-L2" and row.l2_cpu_us is not None:
            cpu_text += f" ({row.l2_cpu_us:.0f} + Redis {num(row.redis_cpu_us)})"
        out.append(
            [
                str(row.connections),
                name,
                f"{result.rps:,.0f}",
                f"{result.p50_us:.0f}",
                f"{result.p99_us:.0f}",
                "—" if result is row.proxied else f"{result.p50_us - row.proxied.p50_us:+.0f}",
                cpu_text,
                core_share(row.l2_cpu_us if expected == "HIT-L2" else cpu, result),
                _x_cache_text(result, expected),
                errors_text(result),
            ]
        )
    return out


def _cache_summary(row: CacheRow) -> str:
    text = (
        f"c={row.connections}: L1 hit p50 **{row.l1.p50_us:.0f} µs** vs proxied"
        f" {row.proxied.p50_us:.0f} µs ({row.l1.p50_us / max(1.0, row.proxied.p50_us):.2f}x)"
        f" and direct {row.direct.p50_us:.0f} µs ({row.l1.p50_us - row.direct.p50_us:+.0f} µs);"
        f" CPU {row.l1_cpu_us:.0f} vs {row.proxied_cpu_us:.0f} µs/req"
    )
    if row.l2 is not None and row.l2_cpu_us is not None:
        text += (
            f". L2 hit p50 **{row.l2.p50_us:.0f} µs**"
            f" ({row.l2.p50_us - row.proxied.p50_us:+.0f} µs vs proxied), p99"
            f" {row.l2.p99_us:.0f} µs, RPS {row.l2.rps / max(1.0, row.proxied.rps):.0%} of"
            f" proxied, gateway CPU {row.l2_cpu_us:.0f} µs/req"
        )
    return text + "."


def _cache_part(run: CacheRun | None) -> list[str]:
    if run is None:
        return []
    warm = f"L1 gateway: {' → '.join(run.l1_warm)}, after the runs {run.l1_after}"
    if run.l2_warm:
        warm += f"; L2 gateway: {' → '.join(run.l2_warm)}, after the runs {run.l2_after}"
    rows = [line for row in run.rows for line in _cache_rows(row)]
    return [
        "### Hits and misses on the instant upstream: wrk -t1,"
        f" {rounds_text(run.rounds, run.round_s)}",
        "",
        "One gateway serves `bench-nginx` (uncached: every request proxied) and"
        " `bench-cached` (`cache: all`, same upstream); a second one (*aigw-l2*) has L1 off"
        " and a `redis-server` on loopback as its state backend, so each of its hits is a"
        " Redis GET. The same request every time: after the first, each `bench-cached`"
        f" request is a hit. Single requests before the load: {warm}.",
        "",
        *table(CACHE_HEADER, rows),
        *[f"- {_cache_summary(row)}" for row in run.rows],
        "",
        "CPU µs/req: nginx (direct), the gateway process tree (proxied, L1), the L2"
        " gateway plus redis-server (L2: Redis's CPU over the rounds / L2 requests; its"
        " *% of a core* is the L2 gateway's alone)."
        " *X-Cache*: the share of completed requests whose header said so, counted by"
        " `post.lua`.",
        "",
        *([f"L2 not measured: `{run.l2_error[:300]}`", ""] if run.l2_error else []),
    ]


def _vector_part(runs: list[VectorRun]) -> list[str]:
    if not runs:
        return []
    header = ["BLAS threads", "entries", "dims", "add µs/entry", "search p50 ms"]
    header += ["search p99 ms", "vectors MiB", "index MiB", "build peak MiB"]
    rows = [
        [
            run.blas_threads,
            f"{s.entries:,}",
            str(s.dims),
            f"{s.add_us:.2f}",
            f"{s.search_p50_ms:.3f}",
            f"{s.search_p99_ms:.3f}",
            f"{s.vectors_mib:.1f}",
            f"{s.index_mib:.1f}",
            f"{s.build_peak_mib:.1f}",
        ]
        for run in runs
        for s in run.sizes
    ]
    queries = runs[0].sizes[0].queries if runs[0].sizes else 0
    return [
        f"### Semantic lookup cost: `bench/vectors.py`, Python {runs[0].python},"
        f" numpy {runs[0].numpy}",
        "",
        "`aigw.cache.vectors.VectorIndex`, random unit vectors, all in one context (a search"
        f" scans the whole context); search = median and p99 of {queries} queries. Run"
        " twice: OpenBLAS with its default threads (one per CPU) and with"
        " `OPENBLAS_NUM_THREADS=1`.",
        "",
        *table(header, rows),
        "*add* = amortised over the build (matrix growth and first-touch page faults"
        " included); *vectors* = entries x dims x 4 bytes; *index* = what the built index"
        " holds (tracemalloc: the matrix grows by doubling, plus ids); *build peak* = the"
        " most held while building (a growth step holds the old and the new matrix).",
        "",
    ]


def cache_section(run: CacheRun | None, vectors: list[VectorRun]) -> list[str]:
    """Section 7 of the report: hits vs proxied, and the semantic lookup cost."""
    parts = _cache_part(run) + _vector_part(vectors)
    return ["## 7. Response cache", "", *parts] if parts else []


def cache_derived(run: CacheRun) -> dict[str, object]:
    """Hits vs proxied and direct, (p50, p99) µs apart; the share of real hits."""

    def vs_proxied(row: CacheRow, hit: WrkResult | None) -> tuple[float, float] | None:
        if hit is None:
            return None
        return hit.p50_us - row.proxied.p50_us, hit.p99_us - row.proxied.p99_us

    return {
        str(row.connections): {
            "l1_vs_proxied_us": vs_proxied(row, row.l1),
            "l2_vs_proxied_us": vs_proxied(row, row.l2),
            "l1_vs_direct_us": (
                row.l1.p50_us - row.direct.p50_us,
                row.l1.p99_us - row.direct.p99_us,
            ),
            "l1_hit_share": hit_share(row.l1, "HIT-L1"),
            "l2_hit_share": hit_share(row.l2, "HIT-L2") if row.l2 else None,
        }
        for row in run.rows
    }
