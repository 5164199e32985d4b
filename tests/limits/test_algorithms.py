from __future__ import annotations

import math
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from aigw.limits.algorithms import (
    GCRA,
    CalendarQuota,
    ConcurrencyLimit,
    Decision,
    SlidingWindowCounter,
    SlidingWindowLog,
    TokenBucket,
    period_bounds,
)

Limiter = TokenBucket | GCRA | SlidingWindowCounter | SlidingWindowLog | CalendarQuota


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
    "calendar": lambda: CalendarQuota(5, "day"),
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
        "calendar": lambda: CalendarQuota(1, "month", max_keys=3),
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


# -- adjust: charge more, or give back, without checking the limit


@each(ALL_OF_FIVE)
def test_adjust_charges_and_gives_back_without_checking(make: Make) -> None:
    limiter = make()
    assert pattern(limiter, "k", [0.0] * 2) == "AA"
    limiter.adjust("k", 0.0, 3)  # the two requests used three units more than reserved
    assert not limiter.check("k", 0.0).allowed
    limiter.adjust("k", 0.0, -2)  # a failed call returns its reservation
    assert pattern(limiter, "k", [0.0] * 3) == "AAd"


@each(ALL_OF_FIVE)
def test_adjust_past_the_limit_is_debt(make: Make) -> None:
    limiter = make()
    limiter.adjust("k", 0.0, 7)  # never denied, even past the limit
    limiter.adjust("k", 0.0, -1)
    assert not limiter.check("k", 0.0).allowed  # 6 of 5 used
    limiter.adjust("k", 0.0, -2)
    assert pattern(limiter, "k", [0.0] * 2) == "Ad"


@each(ALL_OF_FIVE)
def test_a_give_back_never_makes_more_than_the_limit(make: Make) -> None:
    limiter = make()
    limiter.adjust("fresh", 0.0, -100)
    limiter.check("used", 0.0, cost=4)
    limiter.adjust("used", 0.0, -100)
    for key in ["fresh", "used"]:
        assert pattern(limiter, key, [0.0] * 6) == "AAAAAd"


@each(ALL_OF_FIVE)
def test_adjust_rejects_a_delta_that_is_not_finite(make: Make) -> None:
    for delta in [math.inf, -math.inf, math.nan]:
        with pytest.raises(ValueError, match="delta"):
            make().adjust("k", 0.0, delta)


@each(BUCKET_LIKE)
def test_bucket_debt_is_repaid_by_the_refill(make: Make) -> None:
    limiter = make()  # 5 at once, 4 per second
    assert pattern(limiter, "k", [0.0] * 5) == "AAAAA"
    limiter.adjust("k", 0.0, 3)  # three tokens owed
    denied = limiter.check("k", 0.0)
    assert denied.retry_after_s == pytest.approx(1.0)  # 4 tokens to refill
    assert not limiter.check("k", 0.99).allowed
    assert limiter.check("k", 1.0).allowed
    # Given back after a refill: the tokens come on top of what has refilled, up to full.
    limiter.adjust("k", 1.25, -1)
    assert limiter.check("k", 1.25).remaining == pytest.approx(1)


def test_gcra_give_back_never_moves_before_now() -> None:
    limiter = GCRA(rate_per_s=1, burst=2)
    limiter.check("k", 100.0)
    limiter.adjust("k", 100.0, -10)
    # Full, not 11 ahead: the give-back cannot bank capacity for later.
    assert pattern(limiter, "k", [100.0] * 3) == "AAd"


def test_sliding_counter_give_back_takes_the_rest_from_the_previous_window() -> None:
    limiter = SlidingWindowCounter(limit=10, window_s=10)
    limiter.check("k", 5.0, cost=8)
    limiter.check("k", 15.0, cost=2)  # previous 8 weighs half at 15.0: 4 + 2 used
    limiter.adjust("k", 15.0, -5)  # 2 from current, 3 from previous: 5 * 0.5 + 0
    decision = limiter.check("k", 15.0, cost=7)
    assert decision.allowed
    assert decision.remaining == pytest.approx(0.5)
    limiter.adjust("k", 15.0, -100)
    assert pattern(limiter, "k", [15.0] * 11) == "A" * 10 + "d"


def test_sliding_log_give_back_takes_the_newest_entries_first() -> None:
    limiter = SlidingWindowLog(limit=5, window_s=10)
    limiter.check("k", 0.0, cost=2)
    limiter.check("k", 3.0, cost=2)
    limiter.adjust("k", 4.0, -3)  # the t=3 entry goes, the t=0 one keeps 1
    assert limiter.check("k", 4.0, cost=4).allowed
    denied = limiter.check("k", 4.0)
    assert denied.retry_after_s == pytest.approx(6.0)  # the t=0 remnant expires at 10


def test_sliding_log_charge_is_an_entry_that_expires() -> None:
    limiter = SlidingWindowLog(limit=5, window_s=10)
    limiter.adjust("k", 1.0, 5)
    denied = limiter.check("k", 2.0)
    assert denied.retry_after_s == pytest.approx(9.0)
    assert not limiter.check("k", 10.99).allowed
    assert pattern(limiter, "k", [11.0] * 6) == "AAAAAd"


# -- calendar quotas


def epoch(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("now", "period", "period_id", "end"),
    [
        (epoch(2026, 11, 22, 13, 5), "day", "2026-11-22", epoch(2026, 11, 23)),
        (epoch(2026, 11, 22, 13, 5), "month", "2026-11", epoch(2026, 12, 1)),
        (epoch(2026, 12, 31, 23, 59, 59), "day", "2026-12-31", epoch(2027, 1, 1)),
        (epoch(2026, 12, 31, 23, 59, 59), "month", "2026-12", epoch(2027, 1, 1)),
        (epoch(2027, 1, 1), "day", "2027-01-01", epoch(2027, 1, 2)),  # the boundary is new
        (epoch(2027, 1, 1), "month", "2027-01", epoch(2027, 2, 1)),
        (epoch(2027, 1, 1) - 1e-6, "day", "2026-12-31", epoch(2027, 1, 1)),
        (epoch(2028, 2, 28, 12), "day", "2028-02-28", epoch(2028, 2, 29)),  # leap year
        (epoch(2028, 2, 29, 12), "day", "2028-02-29", epoch(2028, 3, 1)),
        (epoch(2028, 2, 10), "month", "2028-02", epoch(2028, 3, 1)),
        (epoch(2027, 2, 10), "month", "2027-02", epoch(2027, 3, 1)),
        (epoch(2100, 2, 28, 23), "day", "2100-02-28", epoch(2100, 3, 1)),  # not leap
        (epoch(2000, 2, 29), "month", "2000-02", epoch(2000, 3, 1)),  # leap: 400 divides
        (0.0, "day", "1970-01-01", 86400.0),
    ],
)
def test_period_bounds(now: float, period: str, period_id: str, end: float) -> None:
    assert period_bounds(now, period) == (period_id, end)


def test_period_bounds_agree_with_datetime() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        now = float(rng.randrange(0, int(epoch(2200, 1, 1))))
        at = datetime.fromtimestamp(now, UTC)
        day = datetime(at.year, at.month, at.day, tzinfo=UTC)
        month = datetime(at.year + at.month // 12, at.month % 12 + 1, 1, tzinfo=UTC)
        assert period_bounds(now, "day") == (f"{day:%Y-%m-%d}", (day + timedelta(1)).timestamp())
        assert period_bounds(now, "month") == (f"{at:%Y-%m}", month.timestamp())


def test_period_must_be_day_or_month() -> None:
    with pytest.raises(ValueError, match="period"):
        period_bounds(0.0, "week")
    with pytest.raises(ValueError, match="period"):
        CalendarQuota(5, "year")


def test_daily_quota_resets_at_utc_midnight() -> None:
    quota = CalendarQuota(limit=3, period="day")
    evening = epoch(2026, 11, 22, 23, 0)
    decision = quota.check("k", evening)
    assert decision.remaining == 2
    assert decision.reset_s == pytest.approx(3600)
    assert pattern(quota, "k", [evening + 1] * 3) == "AAd"
    denied = quota.check("k", evening + 600)
    assert denied.retry_after_s == pytest.approx(3000)
    assert denied.reset_s == denied.retry_after_s
    assert not quota.check("k", epoch(2026, 11, 23) - 0.001).allowed
    assert pattern(quota, "k", [epoch(2026, 11, 23)] * 4) == "AAAd"


def test_monthly_quota_rolls_over_from_december_to_january() -> None:
    quota = CalendarQuota(limit=2, period="month")
    assert pattern(quota, "k", [epoch(2026, 12, 1), epoch(2026, 12, 31, 23, 59, 59)] * 2) == "AAdd"
    new_year = epoch(2027, 1, 1)
    decision = quota.check("k", new_year)
    assert decision.allowed
    assert decision.reset_s == pytest.approx(31 * 86400)


def test_monthly_quota_in_a_leap_february() -> None:
    quota = CalendarQuota(limit=1, period="month")
    assert quota.check("k", epoch(2028, 2, 1)).reset_s == pytest.approx(29 * 86400)
    assert not quota.check("k", epoch(2028, 2, 29, 23)).allowed  # still February
    assert quota.check("k", epoch(2028, 3, 1)).allowed


def test_calendar_adjust_debt_lasts_until_the_period_ends() -> None:
    quota = CalendarQuota(limit=10, period="day")
    noon = epoch(2026, 11, 22, 12)
    quota.check("k", noon, cost=4)
    quota.adjust("k", noon, 20)  # the response was far longer than reserved
    denied = quota.check("k", noon + 60)
    assert denied.remaining == 0
    assert denied.retry_after_s == pytest.approx(12 * 3600 - 60)
    quota.adjust("k", noon, -1000)
    assert pattern(quota, "k", [noon] * 11) == "A" * 10 + "d"
    # A charge made yesterday does not count today.
    assert quota.check("k", epoch(2026, 11, 23), cost=10).allowed


# -- concurrency leases


def test_concurrency_limit_is_exact_and_release_frees_a_slot() -> None:
    gate = ConcurrencyLimit(limit=2)
    assert gate.acquire("k", "a", 0.0, ttl_s=60) == Decision(True, 2, 1, 0.0, 0.0)
    assert gate.acquire("k", "b", 0.0, ttl_s=60).remaining == 0
    assert gate.acquire("k", "c", 0.0, ttl_s=60) == Decision(False, 2, 0, 1.0, 1.0)
    assert gate.acquire("other", "c", 0.0, ttl_s=60).allowed  # keys are isolated
    gate.release("k", "a", 1.0)
    assert gate.acquire("k", "c", 1.0, ttl_s=60).allowed
    assert not gate.acquire("k", "d", 1.0, ttl_s=60).allowed


def test_release_is_idempotent() -> None:
    gate = ConcurrencyLimit(limit=2)
    gate.acquire("k", "a", 0.0, ttl_s=60)
    gate.acquire("k", "b", 0.0, ttl_s=60)
    gate.release("k", "a", 0.0)
    gate.release("k", "a", 0.0)  # a second release must not free b's slot
    gate.release("k", "never-held", 0.0)
    gate.release("unknown", "a", 0.0)
    assert gate.held("k", 0.0) == 1
    assert gate.acquire("k", "c", 0.0, ttl_s=60).allowed
    assert not gate.acquire("k", "d", 0.0, ttl_s=60).allowed
    gate.release("k", "b", 0.0)
    gate.release("k", "c", 0.0)
    assert len(gate) == 0  # an idle key keeps no state


def test_a_lease_expires_so_a_crashed_holder_cannot_keep_its_slot() -> None:
    gate = ConcurrencyLimit(limit=1)
    assert gate.acquire("k", "crashed", 100.0, ttl_s=30).allowed
    assert not gate.acquire("k", "next", 129.9, ttl_s=30).allowed
    assert gate.acquire("k", "next", 130.0, ttl_s=30).allowed  # expired at 130
    gate.release("k", "crashed", 131.0)  # a late release of an expired lease: no effect
    assert not gate.acquire("k", "third", 131.0, ttl_s=30).allowed


def test_reacquiring_a_lease_renews_it_without_taking_another_slot() -> None:
    gate = ConcurrencyLimit(limit=2)
    gate.acquire("k", "a", 0.0, ttl_s=10)
    renewed = gate.acquire("k", "a", 8.0, ttl_s=10)
    assert renewed.allowed and renewed.remaining == 1
    assert gate.held("k", 15.0) == 1  # expires at 18 now, not 10


def test_concurrency_state_is_bounded() -> None:
    gate = ConcurrencyLimit(limit=1, max_keys=2)
    for key in ["a", "b", "c"]:
        assert gate.acquire(key, "x", 0.0, ttl_s=60).allowed
    assert len(gate) == 2
    assert gate.acquire("a", "y", 0.0, ttl_s=60).allowed  # forgotten: fail open
    assert not gate.acquire("c", "y", 0.0, ttl_s=60).allowed


def test_concurrency_arguments_are_validated() -> None:
    with pytest.raises(ValueError, match="limit"):
        ConcurrencyLimit(limit=0)
    with pytest.raises(ValueError, match="ttl_s"):
        ConcurrencyLimit(limit=1).acquire("k", "a", 0.0, ttl_s=0)
