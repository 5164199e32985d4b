"""Child processes of the benchmark: start them, wait until ready, measure them, stop them.

Every child runs in its own session (so a terminal Ctrl-C reaches only the harness, which
then stops the children in order) and is killed by the kernel if the harness dies.
Its stdout and stderr go to files, never to pipes: a gateway that writes one access-log
line per request would otherwise block once a pipe filled up.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

CLK_TCK = os.sysconf("SC_CLK_TCK")
_PR_SET_PDEATHSIG = 1


class BenchError(RuntimeError):
    """A benchmark step could not run: a process did not start, a tool failed or hung."""


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: ask the kernel to SIGKILL it when the
    # harness dies, so that a killed harness leaves no nginx or gateway behind.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class Child:
    """One started process, its log files and (once known) the port it listens on."""

    name: str
    proc: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path
    port: int = 0

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout_s: float = 5.0) -> float:
        """SIGTERM, wait, then SIGKILL; returns the seconds the graceful exit took."""
        if not self.alive():
            return 0.0
        started = time.perf_counter()
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=timeout_s)
        return time.perf_counter() - started

    def tail(self, lines: int = 15) -> list[str]:
        """The last lines of stderr and stdout, for error messages."""
        out: list[str] = []
        for path in (self.stderr_path, self.stdout_path):
            with contextlib.suppress(OSError):
                out += path.read_text(errors="replace").splitlines()[-lines:]
        return out


@dataclass
class ProcessGroup:
    """Owns every child of a run; stops them all, newest first, on exit (Ctrl-C included)."""

    workdir: Path
    children: list[Child] = field(default_factory=list)

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()

    def stop_all(self) -> None:
        while self.children:
            self.children.pop().stop()

    def spawn(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> Child:
        stdout_path = self.workdir / f"{name}.stdout"
        stderr_path = self.workdir / f"{name}.stderr"
        with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        child = Child(name, proc, stdout_path, stderr_path)
        self.children.append(child)
        return child

    def release(self, child: Child) -> float:
        """Stop one child now and forget it; returns its graceful-exit seconds."""
        self.children.remove(child)
        return child.stop()


def free_port() -> int:
    """A port that was free a moment ago (the usual small race is accepted)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_listening_line(child: Child, timeout_s: float) -> int:
    """Wait for the JSON `{"msg": "listening", "port": N}` line on stdout; return N."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        port = _find_listening_port(child.stdout_path)
        if port:
            child.port = port
            return port
        if not child.alive():
            raise BenchError(f"{child.name} exited ({child.proc.returncode}): {child.tail()}")
        time.sleep(0.01)
    raise BenchError(f"{child.name} printed no listening line in {timeout_s}s: {child.tail()}")


def _find_listening_port(path: Path) -> int:
    with path.open("rb") as stream:
        for raw in stream:
            with contextlib.suppress(ValueError):
                line = json.loads(raw)
                if isinstance(line, dict) and line.get("msg") == "listening":
                    return int(line["port"])
    return 0


def wait_tcp(child: Child, port: int, timeout_s: float) -> None:
    """Wait until something accepts TCP connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            child.port = port
            return
        if not child.alive():
            raise BenchError(f"{child.name} exited ({child.proc.returncode}): {child.tail()}")
        time.sleep(0.01)
    raise BenchError(f"{child.name} did not accept connections in {timeout_s}s: {child.tail()}")


def http_status(port: int, path: str, timeout_s: float = 1.0) -> int:
    """Status of one GET on a fresh connection; 0 when nothing answers."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return 0
    finally:
        conn.close()


def wait_http_ok(child: Child, port: int, path: str, timeout_s: float) -> float:
    """Poll GET path until it answers 200; returns the seconds since the call."""
    started = time.perf_counter()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if http_status(port, path, timeout_s=0.5) == 200:
            return time.perf_counter() - started
        if not child.alive():
            raise BenchError(f"{child.name} exited ({child.proc.returncode}): {child.tail()}")
        time.sleep(0.005)
    raise BenchError(f"{child.name}: GET {path} gave no 200 in {timeout_s}s: {child.tail()}")


# --- /proc readings -------------------------------------------------------------------


def _proc_stat_fields(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    # The command name may contain spaces and parentheses; fields resume after the last ")".
    return text[text.rindex(")") + 2 :].split()


def tree_pids(root: int) -> list[int]:
    """root and all its descendants (a multi-worker gateway is measured as a whole)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            ppid = int(_proc_stat_fields(int(entry.name))[1])
            parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += parents.get(pid, [])
    return found


def cpu_seconds(pids: Sequence[int]) -> float:
    """utime + stime of the given processes, in seconds (resolution 1/CLK_TCK)."""
    ticks = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = _proc_stat_fields(pid)
            ticks += int(fields[11]) + int(fields[12])
    return ticks / CLK_TCK


def memory_kib(pids: Sequence[int], key: str = "VmRSS") -> list[int]:
    """One /proc/PID/status field (VmRSS, VmHWM) in KiB, per process still alive."""
    values = []
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    values.append(int(line.split()[1]))
    return values


class CpuMeter:
    """CPU seconds a process tree spends between construction and `spent()`."""

    def __init__(self, root: int) -> None:
        self._pids = tree_pids(root)
        self._start = cpu_seconds(self._pids)

    def spent(self) -> float:
        return cpu_seconds(self._pids) - self._start
