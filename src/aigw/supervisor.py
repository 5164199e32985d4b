"""``--workers N``: one process per core, all accepting on the same port.

The supervisor binds the port first (so ``--port 0`` resolves once), then forks N
workers that each listen on it with SO_REUSEPORT, so the kernel spreads connections.
It forwards SIGHUP (reload) and SIGTERM/SIGINT (drain), and restarts a worker that
dies unexpectedly. Workers hold no shared state apart from their caches.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable

from aigw.observability.logs import JsonLog


def reuseport_socket(host: str, port: int, listen: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    if listen:
        sock.listen(2048)
        sock.setblocking(False)
    return sock


class Supervisor:
    def __init__(
        self, workers: int, host: str, port: int, run_worker: Callable[[socket.socket], None],
        log: JsonLog, stop_timeout_s: float,
    ) -> None:  # fmt: skip
        self.workers = workers
        self.host = host
        self.run_worker = run_worker
        self.log = log
        self.stop_timeout_s = stop_timeout_s
        self.reserved = reuseport_socket(host, port, listen=False)
        self.port: int = self.reserved.getsockname()[1]
        self.children: dict[int, int] = {}
        self.stopping = False
        self.pending: list[int] = []

    def _spawn(self, slot: int) -> None:
        self.log.flush()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    signal.signal(sig, signal.SIG_DFL)
                self.reserved.close()
                self.run_worker(reuseport_socket(self.host, self.port, listen=True))
            except BaseException:  # a worker must never return into the supervisor's loop
                code = 1
            finally:
                os._exit(code)
        self.children[pid] = slot

    def _signal(self, signum: int, _frame: object) -> None:
        self.pending.append(signum)

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._signal)
        for slot in range(self.workers):
            self._spawn(slot)
        self.log.info("supervisor started", workers=self.workers, port=self.port, pid=os.getpid())
        self.log.flush()
        deadline = None
        while self.children:
            while self.pending:
                signum = self.pending.pop(0)
                if signum in (signal.SIGTERM, signal.SIGINT) and not self.stopping:
                    self.stopping = True
                    deadline = time.monotonic() + self.stop_timeout_s + 5
                self._forward(signal.SIGHUP if signum == signal.SIGHUP else signal.SIGTERM)
            self._reap()
            if deadline is not None and time.monotonic() > deadline:
                self._forward(signal.SIGKILL)
            time.sleep(0.05)
        self.reserved.close()
        self.log.info("supervisor stopped")
        self.log.flush()
        return 0

    def _forward(self, signum: int) -> None:
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):  # it exited; _reap will see it
                os.kill(pid, signum)

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            slot = self.children.pop(pid, None)
            if slot is not None and not self.stopping:
                code = os.waitstatus_to_exitcode(status)
                self.log.error("worker died; restarting", pid=pid, exit_code=code)
                time.sleep(0.5)
                self._spawn(slot)
