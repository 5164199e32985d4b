from __future__ import annotations

import hmac

import pytest

from aigw.auth import keys
from aigw.auth.keys import (
    NEGATIVE,
    KeyCache,
    is_well_formed,
    key_hash,
    key_prefix,
    new_key,
    verify,
)

SECRET = b"s" * 32


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_new_key_has_the_documented_shape_and_a_public_prefix() -> None:
    plaintext, prefix = new_key()
    assert plaintext.startswith("aigw-") and len(plaintext) == 5 + 43
    assert is_well_formed(plaintext)
    assert prefix == plaintext[:13] == key_prefix(plaintext)
    assert new_key()[0] != plaintext


@pytest.mark.parametrize(
    "text",
    [
        "",
        "aigw-",
        "sk-" + "a" * 43,
        "aigw-" + "a" * 42,
        "aigw-" + "a" * 44,
        "aigw-" + "a" * 42 + "=",
    ],
)
def test_malformed_keys_are_recognised_before_any_lookup(text: str) -> None:
    assert not is_well_formed(text)


def test_key_hash_is_keyed_deterministic_hex() -> None:
    plaintext, _ = new_key()
    digest = key_hash(plaintext, SECRET)
    assert digest == key_hash(plaintext, SECRET)
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert digest != key_hash(plaintext, b"t" * 32)
    assert plaintext not in digest


def test_key_hash_refuses_a_short_server_secret() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        key_hash("aigw-x", b"short")


def test_verify_accepts_the_key_and_nothing_else() -> None:
    plaintext, _ = new_key()
    stored = key_hash(plaintext, SECRET)
    assert verify(plaintext, stored, SECRET)
    assert not verify(new_key()[0], stored, SECRET)
    assert not verify(plaintext, stored, b"t" * 32)
    assert not verify(plaintext, "é" * 64, SECRET)  # no TypeError on non-ASCII


def test_verify_compares_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    compare_digest = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return compare_digest(a, b)

    monkeypatch.setattr(keys.hmac, "compare_digest", spy)
    plaintext, _ = new_key()
    assert verify(plaintext, key_hash(plaintext, SECRET), SECRET)
    assert len(calls) == 1


def test_cache_hits_until_the_ttl_passes() -> None:
    clock = FakeClock()
    cache: KeyCache[str] = KeyCache(ttl_s=60, clock=clock)
    assert cache.get("h") is None
    cache.put("h", "record")
    clock.now += 59.9
    assert cache.get("h") == "record"
    clock.now += 0.1
    assert cache.get("h") is None
    assert len(cache) == 0


def test_negative_entries_expire_sooner_and_a_put_replaces_them() -> None:
    clock = FakeClock()
    cache: KeyCache[str] = KeyCache(ttl_s=60, negative_ttl_s=5, clock=clock)
    cache.put_negative("bad")
    assert cache.get("bad") is NEGATIVE
    clock.now += 5
    assert cache.get("bad") is None
    cache.put_negative("new")
    cache.put("new", "created since")
    assert cache.get("new") == "created since"


def test_a_negative_entry_never_shadows_a_record() -> None:
    cache: KeyCache[str] = KeyCache(clock=FakeClock())
    cache.put("h", "record")
    cache.put_negative("h")
    assert cache.get("h") == "record"


def test_invalidate_forgets_records_and_misses() -> None:
    cache: KeyCache[str] = KeyCache(clock=FakeClock())
    cache.put("revoked", "record")
    cache.put_negative("created")
    cache.invalidate("revoked")
    cache.invalidate("created")
    assert cache.get("revoked") is None and cache.get("created") is None


def test_records_are_bounded_least_recently_used_first() -> None:
    cache: KeyCache[int] = KeyCache(max_entries=3, clock=FakeClock())
    for i in range(3):
        cache.put(f"h{i}", i)
    assert cache.get("h0") == 0  # h1 is now the least recently used
    cache.put("h3", 3)
    assert cache.get("h1") is None
    assert [cache.get(f"h{i}") for i in (0, 2, 3)] == [0, 2, 3]


def test_a_flood_of_bad_keys_cannot_push_out_real_ones() -> None:
    cache: KeyCache[str] = KeyCache(max_entries=10, max_negative=100, clock=FakeClock())
    cache.put("real", "record")
    for i in range(10_000):
        cache.put_negative(f"bad{i}")
    assert cache.get("real") == "record"
    assert len(cache) == 1 + 100
    assert cache.get("bad9999") is NEGATIVE and cache.get("bad0") is None


def test_repr_shows_no_hashes() -> None:
    cache: KeyCache[str] = KeyCache(clock=FakeClock())
    digest = key_hash(new_key()[0], SECRET)
    cache.put(digest, "the-record")
    assert digest not in repr(cache) and "the-record" not in repr(cache)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        KeyCache(ttl_s=0)
    with pytest.raises(ValueError):
        KeyCache(max_negative=0)
