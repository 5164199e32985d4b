"""Run wrk with bench/post.lua and parse its text report into numbers."""

from __future__ import annotations

import re
import statistics
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from procs import BenchError

POST_LUA = Path(__file__).with_name("post.lua")

_TIME_UNITS_US = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}
_PERCENTILE = re.compile(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.MULTILINE)
_REQUESTS = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)", re.MULTILINE)
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_SOCKET_ERRORS = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", re.MULTILINE
)
_NON_2XX_3XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_LUA_LINE = re.compile(r"^aigw-bench non2xx=(\d+) statuses=(\S*)(?: xcache=(\S*))?", re.MULTILINE)


@dataclass(frozen=True)
class WrkResult:
    """One wrk run. Latencies in microseconds; errors = socket errors + non-2xx.
    `x_cache`: responses per value of their X-Cache header (none: the header was absent)."""

    requests: int
    duration_s: float
    rps: float
    p50_us: float
    p99_us: float
    socket_errors: dict[str, int] = field(default_factory=dict)
    non2xx: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    x_cache: dict[str, int] = field(default_factory=dict)

    @property
    def errors(self) -> int:
        return sum(self.socket_errors.values()) + self.non2xx


def parse_wrk(text: str) -> WrkResult:
    """Parse wrk 4.x output (needs `--latency` and post.lua's done() line)."""
    percentiles = {p: float(v) * _TIME_UNITS_US[u] for p, v, u in _PERCENTILE.findall(text)}
    requests = _REQUESTS.search(text)
    rps = _RPS.search(text)
    if requests is None or rps is None or set(percentiles) != {"50", "99"}:
        raise BenchError(f"cannot parse wrk output:\n{text}")
    socket_errors = dict.fromkeys(("connect", "read", "write", "timeout"), 0)
    if match := _SOCKET_ERRORS.search(text):
        socket_errors = dict(zip(socket_errors, map(int, match.groups()), strict=True))
    return WrkResult(
        requests=int(requests.group(1)),
        duration_s=float(requests.group(2)) * _TIME_UNITS_US[requests.group(3)] / 1e6,
        rps=float(rps.group(1)),
        p50_us=percentiles["50"],
        p99_us=percentiles["99"],
        socket_errors=socket_errors,
        non2xx=_non2xx(text),
        statuses=_counts(text, 2),
        x_cache=_counts(text, 3),
    )


def _non2xx(text: str) -> int:
    if match := _LUA_LINE.search(text):
        return int(match.group(1))
    # Without the script's line, fall back on wrk's own count (4xx and 5xx only).
    match = _NON_2XX_3XX.search(text)
    return int(match.group(1)) if match else 0


def _counts(text: str, group: int) -> dict[str, int]:
    """post.lua's `key:count,...` list in `group` of its line (statuses, X-Cache values)."""
    match = _LUA_LINE.search(text)
    if match is None or not match.group(group):
        return {}
    pairs = (item.rsplit(":", 1) for item in match.group(group).split(","))
    return {key: int(count) for key, count in pairs}


def merge_rounds(rounds: list[WrkResult]) -> WrkResult:
    """Several short runs of one target as one: counts add up, RPS is the overall rate,
    and each percentile is the median of the rounds' (robust to one noisy round)."""
    if len(rounds) == 1:
        return rounds[0]
    duration = sum(r.duration_s for r in rounds)
    requests = sum(r.requests for r in rounds)
    socket_errors: dict[str, int] = {}
    statuses: dict[str, int] = {}
    x_cache: dict[str, int] = {}
    for r in rounds:
        for total, counts in (
            (socket_errors, r.socket_errors),
            (statuses, r.statuses),
            (x_cache, r.x_cache),
        ):
            for key, n in counts.items():
                total[key] = total.get(key, 0) + n
    return WrkResult(
        requests=requests,
        duration_s=duration,
        rps=requests / duration if duration else 0.0,
        p50_us=statistics.median(r.p50_us for r in rounds),
        p99_us=statistics.median(r.p99_us for r in rounds),
        socket_errors=socket_errors,
        non2xx=sum(r.non2xx for r in rounds),
        statuses=statuses,
        x_cache=x_cache,
    )


def run_wrk(
    url: str,
    *,
    connections: int,
    duration_s: float,
    model: str,
    threads: int = 1,
    timeout_s: float = 5.0,
    script: Path = POST_LUA,
) -> WrkResult:
    """POST requests at `url` for `duration_s` with a fixed number of connections: chat
    requests (post.lua), or what `script` sends; `model` is the script's argument."""
    argv = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        f"--timeout={timeout_s:g}s",
        "--latency",
        "-s",
        str(script),
        url,
        "--",
        model,
    ]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=duration_s + timeout_s + 30, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"wrk did not finish: {' '.join(argv)}") from exc
    if done.returncode != 0:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    return parse_wrk(done.stdout)
