"""What the numbers were measured on."""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import time
from importlib import metadata
from pathlib import Path


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.processor() or "unknown"


def _first_line(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({exc})"
    lines = (done.stdout + done.stderr).strip().splitlines()
    return lines[0] if lines else "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _mem_total() -> str:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    return "unknown"


def machine_info() -> dict[str, str]:
    """Facts about the host and the tools, as strings for the report."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "cpu_count": str(os.cpu_count()),
        "cpu_model": _cpu_model(),
        "memory": _mem_total(),
        "kernel": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "uvloop": _version("uvloop"),
        "httptools": _version("httptools"),
        "orjson": _version("orjson"),
        "wrk": _first_line(["wrk", "-v"]),
        "nginx": _first_line(["nginx", "-v"]),
        "nofile_limit": f"{soft}/{hard}",
        "loadavg_at_start": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }


def _cpu_jiffies() -> tuple[int, int]:
    """(busy, steal) jiffies of the whole machine since boot, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return user + nice + system + irq + softirq, steal


def _own_cpu_s() -> float:
    """CPU seconds of this process and of every child it has waited for."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


class BackgroundMeter:
    """How much of the machine other processes used while the benchmark ran.

    Read `shares()` after every child has exited (so that their CPU time is in
    RUSAGE_CHILDREN): whatever the machine was busy with beyond that was someone else.
    """

    def __init__(self) -> None:
        self._jiffies = _cpu_jiffies()
        self._own = _own_cpu_s()
        self._started = time.monotonic()

    def shares(self) -> tuple[float, float]:
        """(other processes, hypervisor steal) as fractions of the machine's capacity."""
        busy, steal = (now - then for now, then in zip(_cpu_jiffies(), self._jiffies, strict=True))
        tick = os.sysconf("SC_CLK_TCK")
        capacity = (time.monotonic() - self._started) * len(os.sched_getaffinity(0))
        foreign = max(0.0, busy / tick - (_own_cpu_s() - self._own))
        return foreign / capacity, steal / tick / capacity
