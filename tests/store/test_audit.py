"""The audit log: batched inserts, pruning by age, and a JSONL export in time order."""

from __future__ import annotations

import dataclasses
import json

import pytest

from aigw.store import AuditRecord, Store
from aigw.store import postgres as postgres_store
from aigw.store import sqlite as sqlite_store

pytestmark = pytest.mark.anyio

T0 = 1_800_000_000.0


def record(n: int, ts: float, **fields: object) -> AuditRecord:
    base = AuditRecord(
        ts=ts, request_id=f"req-{n}", key_id="k1", user="ann", team="red", model="gpt",
        deployment="openai-us", status=200, prompt_tokens=n, completion_tokens=2 * n,
        cost_usd=0.001 * n, client_ip="203.0.113.9",
    )  # fmt: skip
    return dataclasses.replace(base, **fields)  # type: ignore[arg-type]


async def exported(store: Store, since: float | None = None, until: float | None = None) -> list:
    return [row async for row in store.export_audit(since, until)]


async def test_inserted_records_come_back_as_their_fields(store: Store) -> None:
    first = record(1, T0, prompt="hello", completion="world")
    second = record(2, T0 + 1, status=429, user="", prompt=None, completion=None)
    await store.add_audit([first, second])
    await store.add_audit([])
    assert await store.count_audit() == 2
    rows = await exported(store)
    assert rows == [dataclasses.asdict(first), dataclasses.asdict(second)]
    for row in rows:
        assert json.loads(json.dumps(row)) == row  # JSONL-ready as it is


async def test_export_is_in_time_order_whatever_the_insert_order(store: Store) -> None:
    await store.add_audit([record(3, T0 + 3), record(1, T0 + 1)])
    await store.add_audit([record(2, T0 + 2), record(0, T0 + 1)])  # a tie on ts with req-1
    assert [r["request_id"] for r in await exported(store)] == [
        "req-1",
        "req-0",
        "req-2",
        "req-3",
    ]  # fmt: skip  (ties keep insertion order)


async def test_export_bounds_are_since_inclusive_until_exclusive(store: Store) -> None:
    await store.add_audit([record(n, T0 + n) for n in range(10)])
    ids = [r["request_id"] for r in await exported(store, since=T0 + 3, until=T0 + 6)]
    assert ids == ["req-3", "req-4", "req-5"]
    assert len(await exported(store, until=T0 + 2)) == 2
    assert len(await exported(store, since=T0 + 8)) == 2


async def test_export_reads_page_by_page_without_losing_or_repeating_rows(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_store, "EXPORT_PAGE", 7)
    monkeypatch.setattr(postgres_store, "EXPORT_PAGE", 7)
    # 50 rows over 10 distinct timestamps: pages break inside runs of equal ts
    await store.add_audit([record(n, T0 + n // 5) for n in range(50)])
    rows = await exported(store)
    assert [r["request_id"] for r in rows] == [f"req-{n}" for n in range(50)]


async def test_prune_removes_only_older_rows(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_store, "PRUNE_CHUNK", 4)  # several delete rounds
    monkeypatch.setattr(postgres_store, "PRUNE_CHUNK", 4)
    await store.add_audit([record(n, T0 + n) for n in range(20)])
    assert await store.prune_audit(older_than_ts=T0 + 13) == 13
    assert await store.count_audit() == 7
    assert (await exported(store))[0]["request_id"] == "req-13"
    assert await store.prune_audit(older_than_ts=T0 + 13) == 0


async def test_text_with_nul_bytes_is_kept_readable(store: Store) -> None:
    await store.add_audit([record(1, T0, prompt="a\x00b", completion="ok")])
    (row,) = await exported(store)
    assert row["prompt"] == "a\ufffdb"
