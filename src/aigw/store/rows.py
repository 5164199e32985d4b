"""Records ⇄ table rows, the same for every dialect: column orders, JSON-encoded lists,
and the hourly roll-up of spend entries. Pure: no I/O, no clock."""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from aigw.store.base import SPEND_BUCKET_S, AuditRecord, KeyRecord, SpendBy, SpendEntry

KEY_COLUMNS = (
    "id", "hash", "prefix", "name", "owner", "team", "models", "rpm", "tpm", "budget_usd",
    "expires_at", "cidrs", "regions", "metadata", "created_at", "revoked_at",
    "signing_secret_hash",
)  # fmt: skip
SPEND_COLUMNS = (
    "hour", "key_id", "user_id", "team", "model", "deployment", "requests", "prompt_tokens",
    "completion_tokens", "cost_usd",
)  # fmt: skip
AUDIT_COLUMNS = (
    "ts", "request_id", "key_id", "user_id", "team", "model", "deployment", "status",
    "prompt_tokens", "completion_tokens", "cost_usd", "client_ip", "prompt", "completion",
)  # fmt: skip
# The AuditRecord field each audit column holds ("user" is a reserved word in SQL).
AUDIT_FIELDS = tuple("user" if c == "user_id" else c for c in AUDIT_COLUMNS)
SPEND_GROUP_COLUMN: dict[SpendBy, str] = {
    "key": "key_id",
    "user": "user_id",
    "team": "team",
    "model": "model",
}
SpendRow = tuple[int, str, str, str, str, str, int, int, int, float]


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def key_row(key: KeyRecord) -> tuple[Any, ...]:
    return (
        key.id, key.hash, key.prefix, key.name, key.owner, key.team, _json(key.models),
        key.rpm, key.tpm, key.budget_usd, key.expires_at, _json(key.cidrs),
        _json(key.regions), _json(key.metadata), key.created_at, key.revoked_at,
        key.signing_secret_hash,
    )  # fmt: skip


def key_from_row(row: Sequence[Any]) -> KeyRecord:
    """A ``KEY_COLUMNS``-ordered row back into a record."""
    values = dict(zip(KEY_COLUMNS, row, strict=True))
    for name in ("models", "cidrs", "regions", "metadata"):
        values[name] = orjson.loads(values[name])
    return KeyRecord(**values)


def spend_hour(ts: float) -> int:
    """The start of the roll-up bucket that holds ``ts``."""
    return int(ts // SPEND_BUCKET_S) * SPEND_BUCKET_S


@dataclass(slots=True)
class _Sum:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


def rollup(entries: Iterable[SpendEntry]) -> list[SpendRow]:
    """One row per hour and (key, user, team, model, deployment), sorted: a batch never
    touches a row twice (Postgres refuses that in one upsert), and every writer locks
    rows in the same order (no deadlocks between replicas)."""
    sums: dict[tuple[int, str, str, str, str, str], _Sum] = {}
    for e in entries:
        group = (spend_hour(e.ts), e.key_id, e.user, e.team, e.model, e.deployment)
        total = sums.get(group)
        if total is None:
            total = sums[group] = _Sum()
        total.requests += 1
        total.prompt_tokens += e.prompt_tokens
        total.completion_tokens += e.completion_tokens
        total.cost_usd += e.cost_usd
    return [
        (*group, s.requests, s.prompt_tokens, s.completion_tokens, s.cost_usd)
        for group, s in sorted(sums.items())
    ]


_audit_values = operator.attrgetter(*AUDIT_FIELDS)


def audit_row(record: AuditRecord) -> tuple[Any, ...]:
    # PostgreSQL text cannot hold NUL and a prompt may: both dialects store U+FFFD.
    values = _audit_values(record)
    return tuple([v.replace("\x00", "\ufffd") if type(v) is str else v for v in values])


def audit_dict(row: Sequence[Any]) -> dict[str, Any]:
    """An ``AUDIT_COLUMNS``-ordered row as the JSON-ready dict that exports write."""
    return dict(zip(AUDIT_FIELDS, row, strict=True))
