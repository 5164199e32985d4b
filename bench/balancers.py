"""What one balancer pick costs: ns per pick for every strategy, 3 and 8 candidates.

    python bench/balancers.py [--picks 200000] [--json]

Candidates are fakes whose latency is a real ``PeakEwma`` read, as a deployment's is;
their in-flight counts differ, so least-inflight and p2c have work to do. The
consistent-hash rows hash a different key each pick (1,024 keys, cycled). The last rows
are the estimators alone. Standard library only; prints a Markdown table, or with
``--json`` the same figures as one JSON object (what ``bench/run.py`` reads).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aigw.routing.balancers import STRATEGIES, make_balancer
from aigw.routing.ewma import DecayingRate, PeakEwma

SIZES = (3, 8)


@dataclass(slots=True)
class FakeDeployment:
    id: str
    weight: float
    in_flight: int
    error_rate: float = 0.0
    load: float = 0.0
    ewma: PeakEwma = field(default_factory=PeakEwma)

    def latency(self, now: float) -> float:
        return self.ewma.value(now)


def candidates(n: int) -> list[FakeDeployment]:
    out = []
    for i in range(n):
        d = FakeDeployment(f"deployment-{i}", weight=1.0 + i % 3, in_flight=i % 4)
        d.error_rate = 0.02 * i
        d.load = 0.1 * (i % 5)
        d.ewma.observe(0.2 + 0.05 * i, now=0.0)
        out.append(d)
    return out


def time_picks(strategy: str, n: int, picks: int) -> float:
    balancer = make_balancer(strategy, rng=random.Random(1))
    cands = candidates(n)
    keys = [f"user-{i}" for i in range(1024)] if strategy == "consistent-hash" else [None]
    mask = len(keys) - 1
    pick = balancer.pick
    now = 1.0
    for i in range(1000):
        pick(cands, now, keys[i & mask])
    start = time.perf_counter_ns()
    for i in range(picks):
        pick(cands, now, keys[i & mask])
    return (time.perf_counter_ns() - start) / picks


def time_calls(call: Callable[[float], object], calls: int) -> float:
    start = time.perf_counter_ns()
    for i in range(calls):
        call(i * 0.001)
    return (time.perf_counter_ns() - start) / calls


def estimator_rows(calls: int) -> list[tuple[str, float]]:
    ewma, rate = PeakEwma(), DecayingRate()
    ewma.observe(0.3, 0.0)
    return [
        ("PeakEwma.observe", time_calls(lambda now: ewma.observe(0.25, now), calls)),
        ("PeakEwma.value", time_calls(ewma.value, calls)),
        ("DecayingRate.observe", time_calls(lambda now: rate.observe(False, now), calls)),
        ("DecayingRate.value", time_calls(rate.value, calls)),
    ]


def measure(picks: int) -> dict[str, object]:
    """Every figure, in ns: per strategy and candidate count, then per estimator call."""
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "picks": picks,
        "sizes": list(SIZES),
        "pick_ns": {s: {str(n): time_picks(s, n, picks) for n in SIZES} for s in STRATEGIES},
        "estimator_ns": dict(estimator_rows(picks)),
    }


def markdown(data: dict[str, Any]) -> str:
    lines = [f"Python {data['python']} on {data['machine']}, {data['picks']:,} picks", ""]
    lines.append("| strategy | " + " | ".join(f"{n} candidates (ns/pick)" for n in SIZES) + " |")
    lines.append("|---|" + "---:|" * len(SIZES))
    for strategy, cells in data["pick_ns"].items():
        lines.append(f"| {strategy} | " + " | ".join(f"{ns:,.0f}" for ns in cells.values()) + " |")
    lines += ["", "| estimator | ns/call |", "|---|---:|"]
    lines += [f"| {name} | {ns:,.0f} |" for name, ns in data["estimator_ns"].items()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--picks", type=int, default=200_000)
    parser.add_argument("--json", action="store_true", help="print JSON, not Markdown")
    args = parser.parse_args()
    data = measure(args.picks)
    print(json.dumps(data, indent=2) if args.json else markdown(data))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
