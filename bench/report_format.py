"""What every part of the report shares: verdicts, Markdown tables and cell formats."""

from __future__ import annotations

from dataclasses import dataclass

from loadgen import WrkResult


@dataclass(frozen=True)
class Verdict:
    """One row of the targets table. An `info` row has no threshold, only a figure to
    watch: it reads INFO once measured (`passed` True), n/a otherwise."""

    target: str
    measured: str
    passed: bool | None  # None: not measured
    info: bool = False

    @property
    def label(self) -> str:
        if self.info and self.passed is not None:
            return "INFO"
        return {True: "PASS", False: "FAIL", None: "n/a"}[self.passed]


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def num(value: float | None, fmt: str = ".0f") -> str:
    return "—" if value is None else format(value, fmt)


def core_share(cpu_us: float | None, result: WrkResult) -> str:
    """How busy the metered process was: near 100% means it was the bottleneck."""
    return "—" if cpu_us is None else f"{cpu_us * result.rps / 1e4:.0f}%"


def errors_text(result: WrkResult) -> str:
    if not result.errors:
        return "0"
    parts = [f"{kind} {n}" for kind, n in result.socket_errors.items() if n]
    bad = {s: n for s, n in result.statuses.items() if not s.startswith("2")}
    if bad:
        parts.append("HTTP " + ", ".join(f"{s}x{n}" for s, n in bad.items()))
    return f"{result.errors} ({'; '.join(parts)})"


def rounds_text(rounds: int, seconds: float) -> str:
    if rounds == 1:
        return f"{seconds:g} s per target"
    return (
        f"{rounds} rounds x {seconds:g} s per target, targets alternating; p50/p99 are"
        " medians over rounds"
    )
