from __future__ import annotations

import pytest

from aigw.resilience.window import SlidingCounts


def test_counts_within_the_window_and_forgets_bucket_by_bucket() -> None:
    counts = SlidingCounts(window_s=10.0, buckets=10)
    counts.add(0.5, a=1)
    counts.add(3.2, a=2, b=1)
    assert counts.totals(9.9) == (3, 1)
    assert counts.totals(10.0) == (2, 1)  # the [0, 1) bucket expired
    assert counts.totals(12.9) == (2, 1)
    assert counts.totals(13.0) == (0, 0)


def test_a_long_gap_expires_everything() -> None:
    counts = SlidingCounts(window_s=1.0)
    for i in range(10):
        counts.add(i / 10, a=1, b=1)
    assert counts.totals(0.95) == (10, 10)
    counts.add(1e6, a=1)
    assert counts.totals(1e6) == (1, 0)


def test_a_clock_going_backwards_counts_into_the_newest_bucket() -> None:
    counts = SlidingCounts(window_s=10.0)
    counts.add(5.0, a=1)
    counts.add(2.0, a=1)
    assert counts.totals(5.0) == (2, 0)
    assert counts.totals(15.0) == (0, 0)


def test_clear() -> None:
    counts = SlidingCounts(window_s=10.0)
    counts.add(1.0, a=3, b=2)
    counts.clear()
    assert counts.totals(1.0) == (0, 0)
    counts.add(1.0, b=1)
    assert counts.totals(9.0) == (0, 1)


@pytest.mark.parametrize(("window_s", "buckets"), [(0.0, 10), (1.0, 0)])
def test_rejects_nonsense_settings(window_s: float, buckets: int) -> None:
    with pytest.raises(ValueError):
        SlidingCounts(window_s, buckets)
