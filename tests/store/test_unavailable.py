"""A database that is locked, silent or closed raises ``StoreUnavailable`` within the
store's timeout; it never hangs its caller, and the store works again afterwards."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from aigw.store import AuditRecord, StoreUnavailable, make_store
from aigw.store.sqlite_thread import SqliteThread

pytestmark = pytest.mark.anyio

AUDIT = AuditRecord(1.0, "r", "k", "u", "t", "m", "d", 200, 1, 1, 0.0, "127.0.0.1")


async def test_a_write_blocked_by_another_sqlite_writer_gives_up_in_time(
    tmp_path: Path,
) -> None:
    path = tmp_path / "locked.db"
    store = make_store(f"sqlite:///{path}", timeout_s=0.3)
    await store.migrate()
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await store.add_audit([AUDIT])
        assert time.monotonic() - started < 3.0
        assert await store.count_audit() == 0  # WAL: readers are not blocked by a writer
    finally:
        other.execute("ROLLBACK")
        other.close()
    await store.add_audit([AUDIT])
    assert await store.count_audit() == 1
    await store.close()


async def test_a_runaway_sqlite_query_is_interrupted_and_the_thread_freed() -> None:
    thread = SqliteThread(":memory:", timeout_s=0.2)
    endless = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT max(i) FROM n"
    with pytest.raises(StoreUnavailable, match="no answer"):
        await thread.call(lambda conn: conn.execute(endless).fetchall())
    # the next call runs at once: the runaway query did not keep the only thread busy
    assert await thread.call(lambda conn: conn.execute("SELECT 42").fetchall()) == [(42,)]
    await thread.close()
    with pytest.raises(StoreUnavailable, match="closed"):
        await thread.call(lambda conn: conn.execute("SELECT 1").fetchall())


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts connections and never says a word."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


async def test_a_silent_postgres_gives_up_in_time(silent_server: int) -> None:
    store = make_store(f"postgresql://aigw@127.0.0.1:{silent_server}/aigw", timeout_s=0.3)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        await store.get_key_by_hash("0" * 64)
    with pytest.raises(StoreUnavailable):
        await store.migrate()
    assert time.monotonic() - started < 5.0
    await store.close()


async def test_a_postgres_write_blocked_by_a_lock_gives_up_in_time(postgres_url: str) -> None:
    store = make_store(postgres_url, timeout_s=0.3)
    await store.migrate()
    other = await asyncpg.connect(postgres_url)
    locked = other.transaction()
    await locked.start()
    await other.execute("LOCK TABLE audit_log IN ACCESS EXCLUSIVE MODE")
    try:
        with pytest.raises(StoreUnavailable):
            await store.add_audit([AUDIT])
    finally:
        await locked.rollback()
        await other.close()
    await store.add_audit([AUDIT])  # the pool recovered its cancelled connection
    assert await store.count_audit() == 1
    await store.close()
    with pytest.raises(StoreUnavailable, match="closed"):
        await store.count_audit()


async def test_a_connection_lost_mid_call_is_unavailable_then_replaced(
    postgres_url: str,
) -> None:
    store = make_store(postgres_url, timeout_s=5.0)
    await store.migrate()
    other = await asyncpg.connect(postgres_url)
    locked = other.transaction()
    await locked.start()
    await other.execute("LOCK TABLE audit_log IN ACCESS EXCLUSIVE MODE")
    write = asyncio.create_task(store.add_audit([AUDIT]))
    waiting = """SELECT pid FROM pg_stat_activity WHERE datname = current_database()
        AND wait_event_type = 'Lock'"""
    async with asyncio.timeout(5):
        while not (pids := [r[0] for r in await other.fetch(waiting)]):  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    # the server ends the session mid-call, as a restart or a failover would
    await other.execute("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) pid", pids)
    with pytest.raises(StoreUnavailable):
        await write
    await locked.rollback()
    await other.close()
    await store.add_audit([AUDIT])  # the pool replaced the lost connection
    assert await store.count_audit() == 1
    await store.close()
