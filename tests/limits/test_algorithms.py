from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from aigw.limits.algorithms import (
    GCRA,
    Decision,
    SlidingWindowCounter,
    SlidingWindowLog,
    TokenBucket,
)

Limiter = TokenBucket | GCRA | SlidingWindowCounter | SlidingWindowLog


Make = Callable[[], Limiter]

# Limiters of 5 at once, refilled at 4 per second.
BUCKET_LIKE: dict[str, Make] = {
    "token_bucket": lambda: TokenBucket(rate_per_s=4, burst=5),
    "gcra": lambda: GCRA(rate_per_s=4, burst=5),
}
# Every limiter, each allowing 5 at once.
ALL_OF_FIVE: dict[str, Make] = {
    **BUCKET_LIKE,
    "sliding_window_counter": lambda: SlidingWindowCounter(5, 10),
    "sliding_window_log": lambda: SlidingWindowLog(5, 10),
}


def each(makers: dict[str, Make]) -> pytest.MarkDecorator:
    """Parametrize ``make``: builds a fresh limiter per test."""
    return pytest.mark.parametrize("make", [pytest.param(m, id=n) for n, m in makers.items()])


def pattern(limiter: Limiter, key: str, times: list[float]) -> str:
    return "".join("A" if limiter.check(key, t).allowed else "d" for t in times)


@each(ALL_OF_FIVE)
def test_burst_allowed_then_denied(make: Make) -> None:
    limiter = make()
    decisions = [limiter.check("k", 100.0) for _ in range(7)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False] * 2
    assert [d.remaining for d in decisions[:5]] == pytest.approx([4, 3, 2, 1, 0])
    assert all(d.limit == 5 for d in decisions)
    assert decisions[0].retry_after_s == 0
    assert decisions[5].retry_after_s > 0


@each(BUCKET_LIKE)
def test_refill_over_time_and_retry_after_is_exact(make: Make) -> None:
    limiter = make()
    assert pattern(limiter, "k", [0.0] * 6) == "AAAAAd"
    denied = limiter.check("k", 0.0)
    assert denied.retry_after_s == pytest.approx(0.25)
    assert denied.reset_s == pytest.approx(0.25)
    assert not limiter.check("k", 0.24).allowed
    assert limiter.check("k", 0.25).allowed
    # After a long idle the bucket is full again, not fuller.
    assert pattern(limiter, "k", [100.0] * 6) == "AAAAAd"
    assert limiter.check("k", 101.0).remaining == pytest.approx(3)


@each(BUCKET_LIKE)
def test_reset_is_time_until_full(make: Make) -> None:
    limiter = make()
    limiter.check("k", 0.0, cost=2)
    decision = limiter.check("k", 0.0)
    assert decision.remaining == pytest.approx(2)
    assert decision.reset_s == pytest.approx(0.75)


@each(ALL_OF_FIVE)
def test_denied_checks_do_not_consume(make: Make) -> None:
    limiter = make()
    for _ in range(5):
        assert limiter.check("k", 0.0).allowed
    first = limiter.check("k", 0.0)
    for _ in range(100):
        again = limiter.check("k", 0.0)
    assert not again.allowed
    assert again == first


@each(ALL_OF_FIVE)
def test_cost_greater_than_one(make: Make) -> None:
    limiter = make()
    assert limiter.check("k", 0.0, cost=3).allowed
    big = limiter.check("k", 0.0, cost=3)
    assert not big.allowed
    assert big.remaining == pytest.approx(2)
    assert limiter.check("k", 0.0, cost=2).allowed  # the denied 3 took nothing
    never = limiter.check("other", 0.0, cost=6)
    assert not never.allowed and math.isinf(never.retry_after_s)


@each(ALL_OF_FIVE)
def test_keys_are_isolated(make: Make) -> None:
    limiter = make()
    assert pattern(limiter, "a", [0.0] * 6) == "AAAAAd"
    assert pattern(limiter, "b", [0.0] * 6) == "AAAAAd"


@each(
    {
        "token_bucket": lambda: TokenBucket(1, 1, max_keys=3),
        "gcra": lambda: GCRA(1, 1, max_keys=3),
        "sliding_window_counter": lambda: SlidingWindowCounter(1, 10, max_keys=3),
        "sliding_window_log": lambda: SlidingWindowLog(1, 10, max_keys=3),
    }
)
def test_state_is_bounded_and_oldest_key_dropped(make: Make) -> None:
    limiter = make()
    for key in ["a", "b", "c", "d"]:
        assert limiter.check(key, 0.0).allowed
    assert len(limiter) == 3
    assert limiter.check("a", 0.0).allowed  # dropped, so full again
    assert not limiter.check("d", 0.0).allowed  # still tracked


def test_max_keys_must_be_positive() -> None:
    with pytest.raises(ValueError):
        GCRA(1, 1, max_keys=0)


def test_sliding_counter_weights_previous_window_at_the_edge() -> None:
    limiter = SlidingWindowCounter(limit=10, window_s=10)
    assert pattern(limiter, "k", [5.0] * 10) == "A" * 10
    # At 10.0 the previous window still weighs fully; at 15.0 it weighs half.
    edge = limiter.check("k", 10.0)
    assert not edge.allowed
    assert edge.retry_after_s == pytest.approx(1.0)  # 10*(1 - 1/10) + 0 <= 9 at 11.0
    assert pattern(limiter, "k", [15.0] * 6) == "AAAAAd"
    assert limiter.check("k", 15.0).remaining == pytest.approx(0)
    # Two windows later nothing is remembered.
    assert pattern(limiter, "k", [30.0] * 11) == "A" * 10 + "d"


def test_sliding_counter_retry_after_spans_into_next_window() -> None:
    limiter = SlidingWindowCounter(limit=10, window_s=10)
    assert pattern(limiter, "k", [2.0] * 11) == "A" * 10 + "d"
    # Current count 10 becomes the previous one at 10.0 and must decay to 9 by 11.0.
    assert limiter.check("k", 2.0).retry_after_s == pytest.approx(9.0)
    assert not limiter.check("k", 10.9).allowed
    assert limiter.check("k", 11.0).allowed


def test_sliding_log_is_exact() -> None:
    limiter = SlidingWindowLog(limit=3, window_s=10)
    assert pattern(limiter, "k", [0.0, 4.0, 9.0, 9.5]) == "AAAd"
    denied = limiter.check("k", 9.5)
    assert denied.retry_after_s == pytest.approx(0.5)  # the t=0 entry expires at 10.0
    assert not limiter.check("k", 9.999).allowed
    assert pattern(limiter, "k", [10.0, 10.0]) == "Ad"
    assert limiter.check("k", 14.0).allowed  # t=4 expired, exactly one slot
    decision = limiter.check("k", 14.0)
    assert not decision.allowed
    assert decision.retry_after_s == pytest.approx(5.0)  # t=9 expires at 19.0


def test_sliding_log_reset_and_cost() -> None:
    limiter = SlidingWindowLog(limit=5, window_s=10)
    limiter.check("k", 0.0, cost=2)
    decision = limiter.check("k", 3.0, cost=2)
    assert decision.remaining == pytest.approx(1)
    assert decision.reset_s == pytest.approx(10.0 - 3.0 + 3.0)  # last entry expires at 13
    denied = limiter.check("k", 3.0, cost=3)
    assert denied.retry_after_s == pytest.approx(7.0)  # freeing the t=0 entry is enough


def test_negative_cost_is_rejected() -> None:
    with pytest.raises(ValueError):
        TokenBucket(1, 1).check("k", 0.0, cost=-1)


def test_decision_is_immutable() -> None:
    decision = GCRA(1, 1).check("k", 0.0)
    assert decision == Decision(True, 1, 0, 1.0, 0.0)
    with pytest.raises(AttributeError):
        decision.allowed = False  # type: ignore[misc]  # frozen dataclass, on purpose
