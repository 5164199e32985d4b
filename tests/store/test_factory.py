"""Store URLs."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from aigw.store import make_store
from aigw.store.postgres import PostgresStore
from aigw.store.sqlite import SqliteStore

pytestmark = pytest.mark.anyio


def test_sqlite_urls_name_a_path() -> None:
    relative = make_store("sqlite:///aigw.db")
    assert isinstance(relative, SqliteStore)
    assert relative.path == "aigw.db"
    absolute = make_store("sqlite:////var/lib/aigw/aigw.db")
    assert isinstance(absolute, SqliteStore)
    assert absolute.path == "/var/lib/aigw/aigw.db"


def test_postgres_urls() -> None:
    for url in ("postgresql://u:p@db:5432/aigw", "postgres://db/aigw"):
        store = make_store(url, timeout_s=2.0)
        assert isinstance(store, PostgresStore)
        assert (store.dsn, store.timeout_s) == (url, 2.0)


@pytest.mark.parametrize("url", ["mysql://db/aigw", "sqlite://aigw.db", "sqlite:///", ""])
def test_unknown_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="URL"):
        make_store(url)


async def test_memory_sqlite_works_for_tests() -> None:
    store = make_store("sqlite:///:memory:")
    await store.migrate()
    assert await store.count_audit() == 0
    await store.close()


async def test_a_sqlite_file_is_in_wal_mode(tmp_path: Path) -> None:
    store = make_store(f"sqlite:///{tmp_path / 'a.db'}")
    await store.migrate()
    await store.close()
    conn = sqlite3.connect(tmp_path / "a.db")
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        conn.close()
