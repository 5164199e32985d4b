"""The PostgreSQL store (production, many replicas): an asyncpg pool, every call bounded
by the store's timeout (waiting for a pooled connection included). Migrations take an
advisory lock, so replicas that start together migrate once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg

from aigw.store import rows
from aigw.store.base import (
    AuditRecord,
    KeyConflict,
    KeyRecord,
    SpendBy,
    SpendEntry,
    SpendTotal,
    StoreUnavailable,
)
from aigw.store.schema import MIGRATIONS_TABLE, pending

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    Conn = PoolConnectionProxy[asyncpg.Record]

T = TypeVar("T")

EXPORT_PAGE = 1000
PRUNE_CHUNK = 5000  # rows per delete statement: a prune never holds its locks for long
MIGRATE_LOCK = 0x616967770001  # pg_advisory_xact_lock id: "aigw" + 1
# Errors that mean "the database is not there for us now", not "the query is wrong".
UNAVAILABLE = (
    TimeoutError,
    OSError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # shutdown, cannot connect now, cancel
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
)

_KEYS = ", ".join(rows.KEY_COLUMNS)
_AUDIT = ", ".join(rows.AUDIT_COLUMNS)
_INSERT_KEY = (
    f"INSERT INTO api_keys ({_KEYS}) "
    f"VALUES ({', '.join(f'${i + 1}' for i in range(len(rows.KEY_COLUMNS)))})"
)
_SPEND_TYPES = ("int8", "text", "text", "text", "text", "text", "int8", "int8", "int8", "float8")
# One statement for the whole batch: arrays in, one row per roll-up group out.
_UPSERT_SPEND = f"""INSERT INTO spend_hourly ({", ".join(rows.SPEND_COLUMNS)})
    SELECT * FROM unnest({", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(_SPEND_TYPES))})
    ON CONFLICT (hour, key_id, user_id, team, model, deployment) DO UPDATE SET
        requests = spend_hourly.requests + excluded.requests,
        prompt_tokens = spend_hourly.prompt_tokens + excluded.prompt_tokens,
        completion_tokens = spend_hourly.completion_tokens + excluded.completion_tokens,
        cost_usd = spend_hourly.cost_usd + excluded.cost_usd"""


def _changed(status: str) -> int:
    """Rows a command changed, from its status tag (``UPDATE 1``, ``DELETE 42``)."""
    return int(status.rsplit(" ", 1)[-1])


async def _migrate(conn: Conn) -> int:
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATE_LOCK)
        await conn.execute(MIGRATIONS_TABLE["postgres"])
        applied = [r[0] for r in await conn.fetch("SELECT version FROM schema_migrations")]
        for migration in pending(applied):
            for statement in migration.statements("postgres"):
                await conn.execute(statement)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                time.time(),
            )
            applied.append(migration.version)
    return max(applied, default=0)


class PostgresStore:
    name = "postgres"

    def __init__(
        self, dsn: str, timeout_s: float = 5.0, pool_min: int = 1, pool_max: int = 10
    ) -> None:
        self.dsn = dsn
        self.timeout_s = timeout_s
        self.pool_min = pool_min
        self.pool_max = pool_max
        self._pool: asyncpg.Pool[asyncpg.Record] | None = None
        self._opening = asyncio.Lock()
        self._closed = False

    async def _connected(self) -> asyncpg.Pool[asyncpg.Record]:
        if self._closed:
            raise StoreUnavailable("postgres: the store is closed")
        if self._pool is not None:
            return self._pool
        async with self._opening:
            if self._pool is None:
                # No command_timeout: each call's own deadline cancels its query.
                pool = asyncpg.create_pool(self.dsn, min_size=self.pool_min, max_size=self.pool_max)
                try:
                    async with asyncio.timeout(self.timeout_s):
                        await pool
                except BaseException:
                    pool.terminate()
                    raise
                self._pool = pool
        return self._pool

    async def _call(self, fn: Callable[[Conn], Awaitable[T]], timeout_s: float = 0.0) -> T:
        """Run ``fn`` on a pooled connection; ``StoreUnavailable`` if the database does
        not answer in time or at all. The store's timeout bounds the whole call,
        connecting and waiting for a pooled connection included; ``timeout_s`` gives a
        longer time to the work alone (migrations)."""
        try:
            async with asyncio.timeout(timeout_s or self.timeout_s):
                pool = await self._connected()
                async with pool.acquire(timeout=self.timeout_s) as conn:
                    return await fn(conn)
        except UNAVAILABLE as exc:
            raise StoreUnavailable(f"postgres: {type(exc).__name__}: {exc}") from None

    async def _fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        return await self._call(lambda conn: conn.fetch(query, *args))

    async def _execute(self, query: str, *args: Any) -> int:
        return _changed(await self._call(lambda conn: conn.execute(query, *args)))

    async def migrate(self) -> int:
        return await self._call(_migrate, timeout_s=max(60.0, self.timeout_s))

    async def create_key(self, key: KeyRecord) -> KeyRecord:
        try:
            await self._execute(_INSERT_KEY, *rows.key_row(key))
        except asyncpg.UniqueViolationError:
            raise KeyConflict(f"a key with id {key.id!r} or this hash exists") from None
        return key

    async def _one_key(self, where: str, value: str) -> KeyRecord | None:
        found = await self._fetch(f"SELECT {_KEYS} FROM api_keys WHERE {where} = $1", value)
        return rows.key_from_row(tuple(found[0])) if found else None

    async def get_key(self, key_id: str) -> KeyRecord | None:
        return await self._one_key("id", key_id)

    async def get_key_by_hash(self, key_hash: str) -> KeyRecord | None:
        return await self._one_key("hash", key_hash)

    async def list_keys(self, include_revoked: bool = False) -> list[KeyRecord]:
        where = "" if include_revoked else "WHERE revoked_at IS NULL"
        found = await self._fetch(f"SELECT {_KEYS} FROM api_keys {where} ORDER BY created_at, id")
        return [rows.key_from_row(tuple(row)) for row in found]

    async def revoke_key(self, key_id: str, now: float | None = None) -> bool:
        query = "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL"
        return await self._execute(query, time.time() if now is None else now, key_id) == 1

    async def update_key_hash(self, key_id: str, new_hash: str, new_prefix: str) -> bool:
        query = "UPDATE api_keys SET hash = $1, prefix = $2 WHERE id = $3 AND revoked_at IS NULL"
        try:
            return await self._execute(query, new_hash, new_prefix, key_id) == 1
        except asyncpg.UniqueViolationError:
            raise KeyConflict("a key with this hash exists") from None

    async def add_spend(self, entries: Sequence[SpendEntry]) -> None:
        summed = rows.rollup(entries)
        if summed:
            columns = [list(column) for column in zip(*summed, strict=True)]
            await self._execute(_UPSERT_SPEND, *columns)

    async def spend_totals(self, by: SpendBy, since: float | None = None) -> dict[str, SpendTotal]:
        column = rows.SPEND_GROUP_COLUMN[by]
        query = f"""SELECT {column}, SUM(requests)::int8, SUM(prompt_tokens)::int8,
            SUM(completion_tokens)::int8, SUM(cost_usd) FROM spend_hourly
            WHERE hour >= $1 GROUP BY {column}"""
        start = rows.spend_hour(since) if since is not None else 0
        return {r[0]: SpendTotal(r[1], r[2], r[3], r[4]) for r in await self._fetch(query, start)}

    async def spend_of(self, kind: SpendBy, ident: str, since: float | None = None) -> float:
        column = rows.SPEND_GROUP_COLUMN[kind]
        query = f"SELECT SUM(cost_usd) FROM spend_hourly WHERE {column} = $1 AND hour >= $2"
        start = rows.spend_hour(since) if since is not None else 0
        found = await self._fetch(query, ident, start)
        return float(found[0][0] or 0.0)

    async def add_audit(self, records: Sequence[AuditRecord]) -> None:
        if not records:
            return
        values = [rows.audit_row(record) for record in records]
        # COPY: about twice executemany's or unnest's rate at 500-row batches (measured).
        await self._call(
            lambda conn: conn.copy_records_to_table(
                "audit_log", records=values, columns=rows.AUDIT_COLUMNS
            )
        )

    async def prune_audit(self, older_than_ts: float) -> int:
        query = """DELETE FROM audit_log WHERE id IN
            (SELECT id FROM audit_log WHERE ts < $1 LIMIT $2)"""
        removed = 0
        while True:
            chunk = await self._execute(query, older_than_ts, PRUNE_CHUNK)
            removed += chunk
            if chunk < PRUNE_CHUNK:
                return removed

    async def export_audit(
        self, since: float | None = None, until: float | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        query = f"""SELECT id, {_AUDIT} FROM audit_log
            WHERE (ts, id) > ($1, $2) AND ts < $3 ORDER BY ts, id LIMIT {EXPORT_PAGE}"""
        after: tuple[float, int] = (-float("inf") if since is None else since, -1)
        end = float("inf") if until is None else until
        while True:
            page = await self._fetch(query, *after, end)
            for row in page:
                yield rows.audit_dict(tuple(row)[1:])
            if len(page) < EXPORT_PAGE:
                return
            after = (page[-1][1], page[-1][0])

    async def count_audit(self) -> int:
        found = await self._fetch("SELECT COUNT(*) FROM audit_log")
        return int(found[0][0])

    async def close(self) -> None:
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            async with asyncio.timeout(self.timeout_s):
                await pool.close()
        except TimeoutError:
            pool.terminate()
