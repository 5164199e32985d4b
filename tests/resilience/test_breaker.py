from __future__ import annotations

from typing import Any

import pytest

from aigw.resilience.breaker import CircuitBreaker


def tripped(
    changes: list[tuple[str, str]] | None = None, half_open_requests: int = 1
) -> CircuitBreaker:
    """A breaker (threshold 3, open 5 s, max 20 s) opened at t=100."""
    breaker = CircuitBreaker(
        failure_threshold=3,
        open_s=5.0,
        max_open_s=20.0,
        half_open_requests=half_open_requests,
        on_change=None if changes is None else lambda old, new: changes.append((old, new)),
    )
    for _ in range(3):
        assert breaker.allow(100.0)
        breaker.record(False, 100.0)
    return breaker


def test_closed_allows_and_opens_after_consecutive_failures() -> None:
    breaker = CircuitBreaker(failure_threshold=3)
    assert breaker.state(0.0) == "closed"
    breaker.record(False, 0.0)
    breaker.record(False, 0.0)
    breaker.record(True, 0.0)  # a success resets the streak
    breaker.record(False, 0.0)
    breaker.record(False, 0.0)
    assert breaker.state(0.0) == "closed" and breaker.allow(0.0)
    breaker.record(False, 0.0)
    assert breaker.state(0.0) == "open"
    assert not breaker.allow(0.0)


def test_open_refuses_until_the_open_period_ends_then_half_opens() -> None:
    changes: list[tuple[str, str]] = []
    breaker = tripped(changes)
    assert breaker.retry_after(101.0) == pytest.approx(4.0)
    assert not breaker.allow(104.9)
    assert breaker.state(104.9) == "open"
    assert breaker.allow(105.0)
    assert breaker.state(105.0) == "half-open"
    assert breaker.retry_after(105.0) == 0.0
    assert changes == [("closed", "open"), ("open", "half-open")]


def test_results_arriving_while_open_are_ignored() -> None:
    breaker = tripped()
    breaker.record(True, 101.0)
    breaker.record(True, 101.0)
    assert breaker.state(101.0) == "open"
    assert breaker.retry_after(101.0) == pytest.approx(4.0)


def test_half_open_limits_trials_in_flight() -> None:
    breaker = tripped(half_open_requests=2)
    assert breaker.allow(105.0)
    assert breaker.allow(105.0)
    assert not breaker.allow(105.0)
    breaker.record(True, 105.5)  # one trial done: its slot frees
    assert breaker.state(105.5) == "half-open"
    assert breaker.allow(105.5)
    assert not breaker.allow(105.5)


def test_release_frees_a_trial_slot_without_a_verdict() -> None:
    changes: list[tuple[str, str]] = []
    breaker = tripped(changes)
    assert breaker.allow(105.0)
    assert not breaker.allow(105.0)
    breaker.release(105.1)
    assert breaker.state(105.1) == "half-open"
    assert breaker.allow(105.1)
    breaker.release(105.2)
    breaker.release(105.2)  # an extra release cannot make room for two trials
    assert breaker.allow(105.2)
    assert not breaker.allow(105.2)
    assert changes[-1] == ("open", "half-open")


def test_a_straggler_result_in_half_open_cannot_free_a_slot_it_never_took() -> None:
    breaker = tripped(half_open_requests=2)
    assert breaker.state(105.0) == "half-open"
    breaker.record(True, 105.0)  # from a request allowed before the breaker opened
    assert breaker.allow(105.0) and breaker.allow(105.0)
    assert not breaker.allow(105.0)


def test_release_outside_half_open_changes_nothing() -> None:
    breaker = CircuitBreaker(failure_threshold=1)
    breaker.release(0.0)
    assert breaker.state(0.0) == "closed"
    breaker.record(False, 0.0)
    breaker.release(1.0)
    assert breaker.state(1.0) == "open"


def test_half_open_closes_after_enough_successful_trials() -> None:
    changes: list[tuple[str, str]] = []
    breaker = tripped(changes, half_open_requests=2)
    assert breaker.allow(105.0) and breaker.allow(105.0)
    breaker.record(True, 105.1)
    assert breaker.state(105.1) == "half-open"
    breaker.record(True, 105.2)
    assert breaker.state(105.2) == "closed"
    assert changes == [("closed", "open"), ("open", "half-open"), ("half-open", "closed")]
    # closing starts a fresh failure streak
    breaker.record(False, 106.0)
    breaker.record(False, 106.0)
    assert breaker.state(106.0) == "closed"


def test_failed_trial_reopens_with_the_open_period_doubled_up_to_the_cap() -> None:
    breaker = tripped()
    now = 100.0
    for expected in (10.0, 20.0, 20.0):
        now += breaker.retry_after(now)
        assert breaker.allow(now)
        breaker.record(False, now)
        assert breaker.state(now) == "open"
        assert breaker.retry_after(now) == pytest.approx(expected)
        assert breaker.open_period == expected


def test_closing_resets_the_open_period() -> None:
    breaker = tripped()
    assert breaker.allow(105.0)
    breaker.record(False, 105.0)  # reopened for 10 s
    assert breaker.allow(115.0)
    breaker.record(True, 115.0)
    assert breaker.state(115.0) == "closed"
    for _ in range(3):
        breaker.record(False, 120.0)
    assert breaker.retry_after(120.0) == pytest.approx(5.0)


def test_on_change_fires_once_per_change_and_can_be_wired_later() -> None:
    breaker = CircuitBreaker(failure_threshold=1, open_s=1.0)
    changes: list[tuple[str, str]] = []
    breaker.on_change = lambda old, new: changes.append((old, new))
    breaker.record(False, 0.0)
    breaker.record(False, 0.5)  # ignored while open
    for t in (1.0, 1.1, 1.2):
        breaker.state(t)
    assert changes == [("closed", "open"), ("open", "half-open")]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"failure_threshold": 0},
        {"half_open_requests": 0},
        {"open_s": 0.0},
        {"open_s": 10.0, "max_open_s": 5.0},
    ],
)
def test_rejects_nonsense_settings(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(**kwargs)
