"""The SQLite store (the embedded default): stdlib sqlite3 on one dedicated thread, WAL
journal, ``synchronous=NORMAL``, every call bounded by the store's timeout. Several aigw
processes may share one file: writers take turns on SQLite's lock (``busy_timeout``)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from aigw.store import rows
from aigw.store.base import AuditRecord, KeyConflict, KeyRecord, SpendBy, SpendEntry, SpendTotal
from aigw.store.schema import MIGRATIONS_TABLE, pending
from aigw.store.sqlite_thread import SqliteThread, transaction

EXPORT_PAGE = 1000
PRUNE_CHUNK = 5000  # rows per delete transaction: a prune never holds the lock for long

_KEYS = ", ".join(rows.KEY_COLUMNS)
_AUDIT = ", ".join(rows.AUDIT_COLUMNS)
_INSERT_KEY = f"INSERT INTO api_keys ({_KEYS}) VALUES ({', '.join('?' * len(rows.KEY_COLUMNS))})"
_INSERT_AUDIT = (
    f"INSERT INTO audit_log ({_AUDIT}) VALUES ({', '.join('?' * len(rows.AUDIT_COLUMNS))})"
)
_UPSERT_SPEND = f"""INSERT INTO spend_hourly ({", ".join(rows.SPEND_COLUMNS)})
    VALUES ({", ".join("?" * len(rows.SPEND_COLUMNS))})
    ON CONFLICT (hour, key_id, user_id, team, model, deployment) DO UPDATE SET
        requests = requests + excluded.requests,
        prompt_tokens = prompt_tokens + excluded.prompt_tokens,
        completion_tokens = completion_tokens + excluded.completion_tokens,
        cost_usd = cost_usd + excluded.cost_usd"""


def _migrate(conn: sqlite3.Connection) -> int:
    with transaction(conn):  # BEGIN IMMEDIATE: one process migrates at a time
        conn.execute(MIGRATIONS_TABLE["sqlite"])
        applied = [v for (v,) in conn.execute("SELECT version FROM schema_migrations")]
        for migration in pending(applied):
            for statement in migration.statements("sqlite"):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.name, time.time()),
            )
            applied.append(migration.version)
    return max(applied, default=0)


class SqliteStore:
    name = "sqlite"

    def __init__(self, path: str, timeout_s: float = 5.0) -> None:
        self.path = path
        self.db = SqliteThread(path, timeout_s)

    async def migrate(self) -> int:
        return await self.db.call(_migrate, timeout_s=max(60.0, self.db.timeout_s))

    async def create_key(self, key: KeyRecord) -> KeyRecord:
        def insert(conn: sqlite3.Connection) -> None:
            try:
                with transaction(conn):
                    conn.execute(_INSERT_KEY, rows.key_row(key))
            except sqlite3.IntegrityError:
                raise KeyConflict(f"a key with id {key.id!r} or this hash exists") from None

        await self.db.call(insert)
        return key

    async def _fetch(self, query: str, args: tuple[Any, ...] = ()) -> list[Any]:
        return await self.db.call(lambda conn: conn.execute(query, args).fetchall())

    async def _write(self, query: str, args: tuple[Any, ...]) -> int:
        """Run one statement in a write transaction; how many rows it changed."""

        def write(conn: sqlite3.Connection) -> int:
            with transaction(conn):
                return conn.execute(query, args).rowcount

        return await self.db.call(write)

    async def _one_key(self, where: str, value: str) -> KeyRecord | None:
        found = await self._fetch(f"SELECT {_KEYS} FROM api_keys WHERE {where} = ?", (value,))
        return rows.key_from_row(found[0]) if found else None

    async def get_key(self, key_id: str) -> KeyRecord | None:
        return await self._one_key("id", key_id)

    async def get_key_by_hash(self, key_hash: str) -> KeyRecord | None:
        return await self._one_key("hash", key_hash)

    async def list_keys(self, include_revoked: bool = False) -> list[KeyRecord]:
        where = "" if include_revoked else "WHERE revoked_at IS NULL"
        query = f"SELECT {_KEYS} FROM api_keys {where} ORDER BY created_at, id"
        found = await self._fetch(query)
        return [rows.key_from_row(row) for row in found]

    async def revoke_key(self, key_id: str, now: float | None = None) -> bool:
        query = "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL"
        return await self._write(query, (time.time() if now is None else now, key_id)) == 1

    async def update_key_hash(self, key_id: str, new_hash: str, new_prefix: str) -> bool:
        query = "UPDATE api_keys SET hash = ?, prefix = ? WHERE id = ? AND revoked_at IS NULL"
        try:
            return await self._write(query, (new_hash, new_prefix, key_id)) == 1
        except sqlite3.IntegrityError:
            raise KeyConflict("a key with this hash exists") from None

    async def add_spend(self, entries: Sequence[SpendEntry]) -> None:
        summed = rows.rollup(entries)
        if not summed:
            return

        def upsert(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                conn.executemany(_UPSERT_SPEND, summed)

        await self.db.call(upsert)

    async def spend_totals(self, by: SpendBy, since: float | None = None) -> dict[str, SpendTotal]:
        column = rows.SPEND_GROUP_COLUMN[by]
        query = f"""SELECT {column}, SUM(requests), SUM(prompt_tokens),
            SUM(completion_tokens), SUM(cost_usd) FROM spend_hourly
            WHERE hour >= ? GROUP BY {column}"""
        start = rows.spend_hour(since) if since is not None else 0
        found = await self._fetch(query, (start,))
        return {ident: SpendTotal(*sums) for ident, *sums in found}

    async def spend_of(self, kind: SpendBy, ident: str, since: float | None = None) -> float:
        column = rows.SPEND_GROUP_COLUMN[kind]
        query = f"SELECT SUM(cost_usd) FROM spend_hourly WHERE {column} = ? AND hour >= ?"
        start = rows.spend_hour(since) if since is not None else 0
        found = await self._fetch(query, (ident, start))
        return float(found[0][0] or 0.0)

    async def add_audit(self, records: Sequence[AuditRecord]) -> None:
        if not records:
            return

        def insert(conn: sqlite3.Connection) -> None:  # rows made on the thread, not the loop
            values = [rows.audit_row(record) for record in records]
            with transaction(conn):
                conn.executemany(_INSERT_AUDIT, values)

        await self.db.call(insert)

    async def prune_audit(self, older_than_ts: float) -> int:
        query = """DELETE FROM audit_log WHERE id IN
            (SELECT id FROM audit_log WHERE ts < ? LIMIT ?)"""
        removed = 0
        while True:
            chunk = await self._write(query, (older_than_ts, PRUNE_CHUNK))
            removed += chunk
            if chunk < PRUNE_CHUNK:
                return removed

    async def export_audit(
        self, since: float | None = None, until: float | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        query = f"""SELECT id, {_AUDIT} FROM audit_log
            WHERE (ts, id) > (?, ?) AND ts < ? ORDER BY ts, id LIMIT {EXPORT_PAGE}"""
        after: tuple[float, int] = (-float("inf") if since is None else since, -1)
        end = float("inf") if until is None else until
        while True:
            page = await self._fetch(query, (*after, end))
            for _id, *row in page:
                yield rows.audit_dict(row)
            if len(page) < EXPORT_PAGE:
                return
            after = (page[-1][1], page[-1][0])

    async def count_audit(self) -> int:
        found = await self._fetch("SELECT COUNT(*) FROM audit_log")
        return int(found[0][0])

    async def close(self) -> None:
        await self.db.close()
