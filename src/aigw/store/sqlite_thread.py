"""One thread that owns one sqlite3 connection: calls run there one at a time, in order,
and each is bounded by a timeout. A call that runs past its timeout is interrupted
(``sqlite3_interrupt``), so the thread is free again and its transaction rolled back."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

from aigw.store.base import StoreUnavailable

T = TypeVar("T")


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A write transaction that takes the write lock up front (``BEGIN IMMEDIATE``), so a
    writer waits on ``busy_timeout`` at the start instead of failing at commit."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.rollback()
        raise
    conn.commit()


class _Call:
    __slots__ = ("abandoned",)

    def __init__(self) -> None:
        self.abandoned = False  # its caller timed out: do not start it


class SqliteThread:
    def __init__(self, path: str, timeout_s: float) -> None:
        self.path = path
        self.timeout_s = timeout_s
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aigw-sqlite")
        self._conn: sqlite3.Connection | None = None  # opened, used and closed on the thread
        self._lock = threading.Lock()  # guards _running against a late interrupt
        self._running: _Call | None = None
        self._closed = False

    async def call(self, fn: Callable[[sqlite3.Connection], T], timeout_s: float = 0.0) -> T:
        """Run ``fn(connection)`` on the thread; ``StoreUnavailable`` if it takes longer
        than ``timeout_s`` (the store's timeout unless given) or the database is locked,
        busy or failing."""
        timeout_s = timeout_s or self.timeout_s
        if self._closed:
            raise StoreUnavailable("sqlite: the store is closed")
        call = _Call()
        future = asyncio.get_running_loop().run_in_executor(self._executor, self._run, call, fn)
        try:
            async with asyncio.timeout(timeout_s):
                return await future
        except TimeoutError:
            self._abandon(call)
            raise StoreUnavailable(f"sqlite: no answer in {timeout_s}s") from None
        except (sqlite3.OperationalError, sqlite3.InternalError) as exc:
            raise StoreUnavailable(f"sqlite: {exc}") from None

    def _run(self, call: _Call, fn: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            if call.abandoned:
                raise StoreUnavailable("sqlite: abandoned before it started")
            self._running = call
        try:
            return fn(self._connection())
        finally:
            with self._lock:
                self._running = None

    def _abandon(self, call: _Call) -> None:
        with self._lock:
            call.abandoned = True
            if self._running is call and self._conn is not None:
                self._conn.interrupt()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            # isolation_level=None: no implicit transactions; writes use `transaction`.
            conn = sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None)
            _wal(conn, self.timeout_s)
            conn.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoints; WAL-safe
            conn.execute(f"PRAGMA busy_timeout={int(self.timeout_s * 1000)}")
            self._conn = conn
        return self._conn

    def _close_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout_s):
                await loop.run_in_executor(self._executor, self._close_connection)
        except TimeoutError:
            with self._lock:
                if self._conn is not None:
                    self._conn.interrupt()
        self._executor.shutdown(wait=False, cancel_futures=True)


def _wal(conn: sqlite3.Connection, timeout_s: float) -> None:
    """Switch to WAL. The switch needs the file to itself and SQLite does not wait on
    ``busy_timeout`` for it, so processes opening a new file at once retry here."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)
