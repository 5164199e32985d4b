from __future__ import annotations

import pytest

from aigw.resilience.outlier import OutlierDetector


def feed(detector: OutlierDetector, now: float, ok: int, failed: int) -> bool:
    """Record ``ok`` successes then ``failed`` failures at ``now``; True if any ejected."""
    ejected = False
    for _ in range(ok):
        ejected |= detector.record(False, now)
    for _ in range(failed):
        ejected |= detector.record(True, now)
    return ejected


def detector() -> OutlierDetector:
    return OutlierDetector(
        window_s=10.0, min_requests=10, max_error_ratio=0.5, eject_s=30.0, max_eject_s=100.0
    )


def test_not_ejected_below_min_requests_even_if_all_fail() -> None:
    d = detector()
    assert not feed(d, 0.0, ok=0, failed=9)
    assert not d.ejected(0.0)
    assert d.error_ratio(0.0) == 1.0


def test_ratio_at_the_limit_is_tolerated_above_it_ejects() -> None:
    d = detector()
    assert not feed(d, 0.0, ok=5, failed=5)
    assert d.error_ratio(0.0) == 0.5 and not d.ejected(0.0)
    assert d.record(True, 0.0)  # 6/11 > 0.5
    assert d.ejected(0.0)
    assert d.ejected_until == 30.0


def test_ejection_lasts_eject_s_and_clears_the_window() -> None:
    d = detector()
    feed(d, 0.0, ok=0, failed=10)
    assert d.ejected(29.9)
    assert not d.ejected(30.0)
    assert d.error_ratio(30.0) == 0.0
    # stragglers recorded while ejected neither extend it nor count against the return
    assert not feed(d, 1.0, ok=0, failed=20)
    assert d.ejected_until == 30.0
    assert d.error_ratio(30.0) == 0.0
    assert not feed(d, 30.0, ok=0, failed=9)


def test_a_returning_deployment_starts_with_a_clean_window() -> None:
    d = OutlierDetector(window_s=10.0, min_requests=10, eject_s=1.0)
    feed(d, 0.0, ok=0, failed=10)
    assert not d.ejected(1.0)
    # the failures from t=0 are still inside the window but were wiped on ejection
    assert d.error_ratio(1.0) == 0.0
    assert not feed(d, 1.0, ok=0, failed=9)


def test_failures_leave_the_sliding_window() -> None:
    d = detector()
    feed(d, 0.0, ok=0, failed=9)
    assert d.error_ratio(9.0) == 1.0
    # by t=10 the failures at t=0 have aged out of the 10 s window
    assert d.error_ratio(10.0) == 0.0
    assert not feed(d, 10.0, ok=0, failed=1)


def test_window_mixes_buckets_within_the_window() -> None:
    d = detector()
    feed(d, 0.0, ok=4, failed=0)
    feed(d, 5.0, ok=0, failed=4)
    assert d.error_ratio(5.0) == 0.5
    assert d.error_ratio(10.5) == 1.0  # the t=0 bucket has expired, t=5 has not
    assert d.error_ratio(15.0) == 0.0


def test_consecutive_ejections_double_up_to_the_cap() -> None:
    d = detector()
    now = 0.0
    for expected in (30.0, 60.0, 100.0, 100.0):
        assert feed(d, now, ok=0, failed=10)
        assert d.ejected_until == now + expected
        now = d.ejected_until + 1.0  # fails again soon after returning


def test_a_clean_period_resets_the_ejection_time() -> None:
    d = detector()
    feed(d, 0.0, ok=0, failed=10)  # until 30
    feed(d, 31.0, ok=0, failed=10)  # consecutive: 60 s, until 91
    assert d.ejected_until == 91.0
    # healthy for as long as the last ejection (60 s) after it ended: forgiven
    feed(d, 151.0, ok=0, failed=10)
    assert d.ejected_until == 181.0


def test_clean_period_is_at_least_the_window() -> None:
    d = OutlierDetector(window_s=10.0, min_requests=2, eject_s=1.0, max_eject_s=8.0)
    feed(d, 0.0, ok=0, failed=2)  # 1 s, until 1
    feed(d, 9.0, ok=0, failed=2)  # 8 s after returning < window: consecutive, 2 s
    assert d.ejected_until == 11.0
    feed(d, 22.0, ok=0, failed=2)  # 11 s after returning >= window: reset to 1 s
    assert d.ejected_until == 23.0


def test_successes_do_not_eject() -> None:
    d = detector()
    assert not feed(d, 0.0, ok=100, failed=0)
    assert not d.ejected(0.0)
    assert d.ejected_until == 0.0


@pytest.mark.parametrize(
    ("min_requests", "max_error_ratio", "eject_s", "max_eject_s"),
    [(0, 0.5, 30.0, 300.0), (10, 1.0, 30.0, 300.0), (10, 0.5, 0.0, 300.0), (10, 0.5, 60.0, 30.0)],
)
def test_rejects_nonsense_settings(
    min_requests: int, max_error_ratio: float, eject_s: float, max_eject_s: float
) -> None:
    with pytest.raises(ValueError):
        OutlierDetector(
            min_requests=min_requests,
            max_error_ratio=max_error_ratio,
            eject_s=eject_s,
            max_eject_s=max_eject_s,
        )
