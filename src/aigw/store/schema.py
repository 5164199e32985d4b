"""The tables, as numbered migrations written once per dialect.

A migration is applied once, in one transaction, and recorded in ``schema_migrations``;
``migrate()`` applies those above the highest recorded version. Never edit a released
migration: add the next one. Lists and ``metadata`` are JSON text in both dialects so
that the two stay row-for-row alike.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Dialect = Literal["sqlite", "postgres"]

MIGRATIONS_TABLE = {
    "sqlite": """CREATE TABLE IF NOT EXISTS schema_migrations (
        version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)""",
    "postgres": """CREATE TABLE IF NOT EXISTS schema_migrations (
        version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)""",
}


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sqlite: tuple[str, ...]
    postgres: tuple[str, ...]

    def statements(self, dialect: Dialect) -> tuple[str, ...]:
        return self.sqlite if dialect == "sqlite" else self.postgres


def _keys(real: str) -> str:
    return f"""CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        hash TEXT NOT NULL UNIQUE,
        prefix TEXT NOT NULL,
        name TEXT NOT NULL DEFAULT '',
        owner TEXT NOT NULL DEFAULT '',
        team TEXT NOT NULL DEFAULT '',
        models TEXT NOT NULL DEFAULT '[]',
        rpm BIGINT,
        tpm BIGINT,
        budget_usd {real},
        expires_at {real},
        cidrs TEXT NOT NULL DEFAULT '[]',
        regions TEXT NOT NULL DEFAULT '[]',
        metadata TEXT NOT NULL DEFAULT '{{}}',
        created_at {real} NOT NULL,
        revoked_at {real},
        signing_secret_hash TEXT)"""


def _spend(real: str) -> str:
    # One row per hour and (key, user, team, model, deployment): bounded by traffic's
    # variety, not its volume. "" stands for "not known" so that the key is never NULL.
    return f"""CREATE TABLE spend_hourly (
        hour BIGINT NOT NULL,
        key_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        team TEXT NOT NULL,
        model TEXT NOT NULL,
        deployment TEXT NOT NULL,
        requests BIGINT NOT NULL,
        prompt_tokens BIGINT NOT NULL,
        completion_tokens BIGINT NOT NULL,
        cost_usd {real} NOT NULL,
        PRIMARY KEY (hour, key_id, user_id, team, model, deployment))"""


def _audit(id_column: str, real: str) -> str:
    return f"""CREATE TABLE audit_log (
        {id_column},
        ts {real} NOT NULL,
        request_id TEXT NOT NULL,
        key_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        team TEXT NOT NULL,
        model TEXT NOT NULL,
        deployment TEXT NOT NULL,
        status INTEGER NOT NULL,
        prompt_tokens BIGINT NOT NULL,
        completion_tokens BIGINT NOT NULL,
        cost_usd {real} NOT NULL,
        client_ip TEXT NOT NULL,
        prompt TEXT,
        completion TEXT)"""


_INDEXES = (
    "CREATE INDEX spend_hourly_key ON spend_hourly (key_id, hour)",
    "CREATE INDEX spend_hourly_user ON spend_hourly (user_id, hour)",
    "CREATE INDEX spend_hourly_team ON spend_hourly (team, hour)",
    "CREATE INDEX audit_log_ts ON audit_log (ts, id)",
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "api keys, hourly spend, audit log",
        sqlite=(
            _keys("REAL"),
            _spend("REAL"),
            _audit("id INTEGER PRIMARY KEY", "REAL"),
            *_INDEXES,
        ),
        postgres=(
            _keys("DOUBLE PRECISION"),
            _spend("DOUBLE PRECISION"),
            _audit("id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY", "DOUBLE PRECISION"),
            *_INDEXES,
        ),
    ),
)

LATEST = MIGRATIONS[-1].version


def pending(applied: Iterable[int]) -> list[Migration]:
    """The migrations above the highest applied version, in order."""
    done = max(applied, default=0)
    return [m for m in MIGRATIONS if m.version > done]
