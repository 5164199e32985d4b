"""The persistent store: API keys, spend and audit, behind one Protocol.

``sqlite`` (WAL) is the embedded default; ``postgresql`` is for production and many
replicas. Both keep the same tables (``store/schema.py``) and both bound every call by a
timeout: a database that is down, locked or slow raises ``StoreUnavailable`` instead of
hanging its caller. Request handling never awaits a store write: spend and audit
records go through a ``BatchWriter`` (``store/writer.py``).

Keys are kept by the hash of their secret (computed by ``auth``); the store never sees a
plaintext key. Spend is kept as hourly roll-ups per (key, user, team, model,
deployment), so it stays small at any request rate; the audit log keeps one row per
request.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

SpendBy = Literal["key", "user", "team", "model"]
SPEND_BUCKET_S = 3600  # spend roll-up granularity: ``since`` counts whole hours


class StoreError(Exception):
    """Base of the store's errors."""


class StoreUnavailable(StoreError):
    """The database did not answer in time, or at all."""


class KeyConflict(StoreError):
    """A key with this id or this hash already exists."""


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """An API key as stored. ``hash`` is the hex digest of the secret; ``prefix`` is the
    secret's first characters, shown to humans to tell keys apart. Empty lists mean
    "no restriction"; ``None`` limits mean "unlimited"."""

    id: str
    hash: str
    prefix: str
    name: str = ""
    owner: str = ""
    team: str = ""
    models: list[str] = field(default_factory=list)
    rpm: int | None = None
    tpm: int | None = None
    budget_usd: float | None = None
    expires_at: float | None = None
    cidrs: list[str] = field(default_factory=list)
    regions: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)
    revoked_at: float | None = None
    signing_secret_hash: str | None = None

    def active(self, now: float) -> bool:
        """Neither revoked nor expired at ``now``."""
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)


@dataclass(frozen=True, slots=True)
class SpendEntry:
    """One request's usage and cost. Empty strings stand for "not known"."""

    key_id: str
    user: str
    team: str
    model: str
    deployment: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    ts: float


@dataclass(frozen=True, slots=True)
class SpendTotal:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One request, as the audit log keeps it. ``prompt``/``completion`` are ``None``
    unless the operator chose to log bodies."""

    ts: float
    request_id: str
    key_id: str
    user: str
    team: str
    model: str
    deployment: str
    status: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    client_ip: str
    prompt: str | None = None
    completion: str | None = None


class Store(Protocol):
    name: str

    async def migrate(self) -> int:
        """Apply the migrations not yet applied (idempotent, safe from many processes at
        once); returns the schema version now in force."""
        ...

    async def create_key(self, key: KeyRecord) -> KeyRecord:
        """Insert ``key``; raises ``KeyConflict`` if its id or hash is taken."""
        ...

    async def get_key(self, key_id: str) -> KeyRecord | None: ...

    async def get_key_by_hash(self, key_hash: str) -> KeyRecord | None:
        """The key with this hash, revoked or expired ones included (check ``active``)."""
        ...

    async def list_keys(self, include_revoked: bool = False) -> list[KeyRecord]:
        """Keys, oldest first."""
        ...

    async def revoke_key(self, key_id: str, now: float | None = None) -> bool:
        """True if the key existed and was not revoked before."""
        ...

    async def update_key_hash(self, key_id: str, new_hash: str, new_prefix: str) -> bool:
        """Rotate: the key keeps its id and settings under a new secret. False if there is
        no such key or it is revoked; ``KeyConflict`` if the new hash is taken."""
        ...

    async def add_spend(self, entries: Sequence[SpendEntry]) -> None: ...

    async def spend_totals(self, by: SpendBy, since: float | None = None) -> dict[str, SpendTotal]:
        """Totals per key id (or user, team, model), over the hours from the one that
        holds ``since`` on (all time if ``None``)."""
        ...

    async def spend_of(self, kind: SpendBy, ident: str, since: float | None = None) -> float:
        """The spend in USD of one key (or user, team, model), as ``spend_totals``."""
        ...

    async def add_audit(self, records: Sequence[AuditRecord]) -> None: ...

    async def prune_audit(self, older_than_ts: float) -> int:
        """Delete audit rows with ``ts < older_than_ts``; returns how many went."""
        ...

    def export_audit(
        self, since: float | None = None, until: float | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Audit rows with ``since <= ts < until`` in time order, as JSON-ready dicts
        (the ``AuditRecord`` fields), read page by page."""
        ...

    async def count_audit(self) -> int: ...

    async def close(self) -> None: ...
