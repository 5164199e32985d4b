from __future__ import annotations

import pytest

from aigw.cache.lru import ByteLRU


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_put_get_and_size(clock: FakeClock) -> None:
    lru = ByteLRU(100, clock)
    assert lru.put("a", b"12345", 10.0) == 0
    assert lru.put("b", b"xyz", 10.0) == 0
    assert lru.get("a") == b"12345"
    assert lru.get("missing") is None
    assert len(lru) == 2 and lru.bytes == 8


def test_replacing_a_key_counts_its_new_size_only(clock: FakeClock) -> None:
    lru = ByteLRU(100, clock)
    lru.put("a", b"x" * 40, 10.0)
    lru.put("a", b"y" * 10, 10.0)
    assert lru.get("a") == b"y" * 10
    assert len(lru) == 1 and lru.bytes == 10 and lru.evictions == 0


def test_entries_expire_at_their_own_ttl(clock: FakeClock) -> None:
    lru = ByteLRU(100, clock)
    lru.put("short", b"s", 5.0)
    lru.put("long", b"l", 50.0)
    clock.now += 4.999
    assert lru.get("short") == b"s"
    clock.now += 0.001
    assert lru.get("short") is None
    assert len(lru) == 1 and lru.bytes == 1  # an expired read frees its bytes
    clock.now += 40.0
    assert lru.get("long") == b"l"


def test_byte_bound_evicts_least_recently_used_first(clock: FakeClock) -> None:
    lru = ByteLRU(30, clock)
    for name in "abc":
        lru.put(name, name.encode() * 10, 60.0)
    assert lru.get("a") is not None  # a is now the most recently used; b is the coldest
    assert lru.put("d", b"d" * 10, 60.0) == 1
    assert lru.get("b") is None
    assert [lru.get(k) is not None for k in "acd"] == [True, True, True]
    assert lru.bytes == 30 and lru.evictions == 1


def test_one_put_can_evict_several_entries(clock: FakeClock) -> None:
    lru = ByteLRU(30, clock)
    for name in "abc":
        lru.put(name, b"x" * 10, 60.0)
    assert lru.put("big", b"y" * 25, 60.0) == 3
    assert len(lru) == 1 and lru.bytes == 25 and lru.evictions == 3
    assert lru.put("e", b"z" * 5, 60.0) == 0
    assert lru.put("f", b"z" * 5, 60.0) == 1
    assert lru.get("big") is None and lru.evictions == 4


def test_expired_entries_pushed_out_are_not_counted_as_evictions(clock: FakeClock) -> None:
    lru = ByteLRU(20, clock)
    lru.put("old", b"o" * 10, 1.0)
    lru.put("live", b"l" * 10, 60.0)
    clock.now += 2.0
    assert lru.put("new", b"n" * 10, 60.0) == 0
    assert lru.evictions == 0
    assert lru.get("live") == b"l" * 10 and lru.get("new") == b"n" * 10


def test_oversize_value_is_not_stored_and_evicts_nothing(clock: FakeClock) -> None:
    lru = ByteLRU(10, clock)
    lru.put("a", b"a" * 10, 60.0)
    assert lru.put("huge", b"h" * 11, 60.0) == 0
    assert lru.get("huge") is None
    assert lru.get("a") == b"a" * 10 and lru.evictions == 0


def test_a_failed_put_drops_the_older_value(clock: FakeClock) -> None:
    lru = ByteLRU(10, clock)
    lru.put("a", b"old", 60.0)
    lru.put("a", b"n" * 11, 60.0)
    assert lru.get("a") is None and lru.bytes == 0
    lru.put("b", b"old", 60.0)
    lru.put("b", b"new", 0.0)
    assert lru.get("b") is None and len(lru) == 0


def test_value_of_exactly_max_bytes_fits(clock: FakeClock) -> None:
    lru = ByteLRU(10, clock)
    lru.put("a", b"x" * 10, 60.0)
    assert lru.get("a") == b"x" * 10


def test_zero_capacity_stores_nothing(clock: FakeClock) -> None:
    lru = ByteLRU(0, clock)
    assert lru.put("a", b"x", 60.0) == 0
    assert lru.get("a") is None and len(lru) == 0
    lru.put("empty", b"", 60.0)  # an empty value takes no room
    assert lru.get("empty") == b""


def test_delete(clock: FakeClock) -> None:
    lru = ByteLRU(100, clock)
    lru.put("a", b"abc", 60.0)
    lru.delete("a")
    lru.delete("never-there")
    assert lru.get("a") is None and len(lru) == 0 and lru.bytes == 0


def test_negative_capacity_is_rejected(clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        ByteLRU(-1, clock)
