"""Persistent data: API keys, spend and audit, in SQLite (default) or PostgreSQL."""

from aigw.store.base import (
    AuditRecord,
    KeyConflict,
    KeyRecord,
    SpendEntry,
    SpendTotal,
    Store,
    StoreError,
    StoreUnavailable,
)
from aigw.store.factory import make_store
from aigw.store.writer import BatchWriter

__all__ = [
    "AuditRecord",
    "BatchWriter",
    "KeyConflict",
    "KeyRecord",
    "SpendEntry",
    "SpendTotal",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "make_store",
]
