"""API keys: create, look up by hash, list, revoke and rotate, on every backend."""

from __future__ import annotations

import pytest

from aigw.store import KeyConflict, KeyRecord, Store

pytestmark = pytest.mark.anyio


def make_key(n: int, **fields: object) -> KeyRecord:
    defaults: dict[str, object] = {
        "id": f"key-{n}", "hash": f"{n:064x}", "prefix": f"sk-{n:04d}", "created_at": 1000.0 + n,
    }  # fmt: skip
    return KeyRecord(**{**defaults, **fields})  # type: ignore[arg-type]


FULL = make_key(
    1,
    name="ci bot",
    owner="alice@example.com",
    team="search",
    models=["gpt-4o-mini", "claude-sonnet"],
    rpm=60,
    tpm=100_000,
    budget_usd=12.5,
    expires_at=2_000_000_000.0,
    cidrs=["10.0.0.0/8", "2001:db8::/32"],
    regions=["eu-west"],
    metadata={"ticket": "OPS-1", "nested": {"a": [1, 2]}, "unicode": "é✓"},
    signing_secret_hash="ab" * 32,
)


async def test_a_key_comes_back_by_hash_and_id_with_every_field(store: Store) -> None:
    assert await store.create_key(FULL) == FULL
    assert await store.get_key_by_hash(FULL.hash) == FULL
    assert await store.get_key(FULL.id) == FULL
    assert await store.get_key_by_hash("0" * 63 + "f") is None
    assert await store.get_key("nope") is None


async def test_defaults_round_trip(store: Store) -> None:
    plain = make_key(2)
    await store.create_key(plain)
    found = await store.get_key(plain.id)
    assert found == plain
    assert found is not None
    assert (found.models, found.rpm, found.budget_usd, found.metadata) == ([], None, None, {})


async def test_duplicate_id_or_hash_is_a_conflict(store: Store) -> None:
    await store.create_key(make_key(1))
    with pytest.raises(KeyConflict):
        await store.create_key(make_key(1, hash="f" * 64))
    with pytest.raises(KeyConflict):
        await store.create_key(make_key(9, hash=make_key(1).hash))
    assert [k.id for k in await store.list_keys()] == ["key-1"]


async def test_list_is_oldest_first_and_hides_revoked_unless_asked(store: Store) -> None:
    for n in (3, 1, 2):
        await store.create_key(make_key(n))
    assert [k.id for k in await store.list_keys()] == ["key-1", "key-2", "key-3"]
    assert await store.revoke_key("key-2", now=5000.0)
    assert [k.id for k in await store.list_keys()] == ["key-1", "key-3"]
    every = await store.list_keys(include_revoked=True)
    assert [(k.id, k.revoked_at) for k in every] == [
        ("key-1", None), ("key-2", 5000.0), ("key-3", None),
    ]  # fmt: skip


async def test_revoke_once_then_lookups_see_it_revoked(store: Store) -> None:
    await store.create_key(make_key(1))
    assert await store.revoke_key("key-1", now=5000.0) is True
    assert await store.revoke_key("key-1", now=6000.0) is False  # already revoked
    assert await store.revoke_key("missing") is False
    found = await store.get_key_by_hash(make_key(1).hash)
    assert found is not None
    assert found.revoked_at == 5000.0  # the first revocation stands
    assert not found.active(now=5001.0)


async def test_rotate_moves_the_key_to_a_new_secret(store: Store) -> None:
    await store.create_key(FULL)
    assert await store.update_key_hash(FULL.id, "c" * 64, "sk-new1")
    assert await store.get_key_by_hash(FULL.hash) is None  # the old secret stops working
    rotated = await store.get_key_by_hash("c" * 64)
    assert rotated is not None
    assert (rotated.id, rotated.prefix, rotated.models, rotated.budget_usd) == (
        FULL.id, "sk-new1", FULL.models, FULL.budget_usd,
    )  # fmt: skip


async def test_rotate_refuses_missing_revoked_and_taken_hashes(store: Store) -> None:
    await store.create_key(make_key(1))
    await store.create_key(make_key(2))
    assert not await store.update_key_hash("missing", "d" * 64, "sk-d")
    with pytest.raises(KeyConflict):
        await store.update_key_hash("key-1", make_key(2).hash, "sk-x")
    await store.revoke_key("key-2")
    assert not await store.update_key_hash("key-2", "e" * 64, "sk-e")
    assert await store.get_key_by_hash("e" * 64) is None


def test_active_checks_revocation_and_expiry() -> None:
    key = make_key(1, expires_at=100.0)
    assert key.active(now=99.0)
    assert not key.active(now=100.0)
    assert make_key(2).active(now=1e12)
    assert not make_key(3, revoked_at=5.0).active(now=1.0)
