"""Migrations: versioned, idempotent, safe when several processes start at once."""

from __future__ import annotations

import asyncio

import pytest

from aigw.store import make_store
from aigw.store.schema import LATEST, MIGRATIONS, Migration, pending

pytestmark = pytest.mark.anyio


def test_pending_is_what_lies_above_the_highest_applied_version() -> None:
    later = Migration(2, "later", ("SELECT 1",), ("SELECT 1",))
    assert pending([]) == list(MIGRATIONS)
    assert pending([1]) == []
    assert [m.version for m in pending([0, 1, 0])] == []
    assert later.statements("postgres") == ("SELECT 1",)


def test_versions_are_numbered_from_one_without_gaps() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    assert all(m.sqlite and m.postgres for m in MIGRATIONS)


async def test_migrate_twice_applies_once(store_url: str) -> None:
    store = make_store(store_url)
    try:
        assert await store.migrate() == LATEST
        assert await store.migrate() == LATEST  # nothing left to apply, no error
        assert await store.count_audit() == 0
    finally:
        await store.close()
    again = make_store(store_url)  # a restart finds the schema in place
    try:
        assert await again.migrate() == LATEST
    finally:
        await again.close()


async def test_replicas_migrating_at_once_apply_each_migration_once(store_url: str) -> None:
    stores = [make_store(store_url, timeout_s=10.0) for _ in range(4)]
    try:
        versions = await asyncio.gather(*(s.migrate() for s in stores))
        assert versions == [LATEST] * 4
    finally:
        for s in stores:
            await s.close()
