from __future__ import annotations

import pytest

from aigw.routing.health import HealthState


def run(state: HealthState, results: str) -> str:
    """Feed probe results ("+" ok, "-" failed); the state after each, "U"p or "D"own."""
    after = ""
    for r in results:
        state.record(r == "+")
        after += "U" if state.healthy else "D"
    return after


def test_goes_down_after_consecutive_failures_only() -> None:
    state = HealthState(unhealthy_after=3, healthy_after=2)
    assert state.healthy
    assert not state.record(False)
    assert not state.record(False)
    assert state.record(True) is False  # breaks the streak
    assert not state.record(False)
    assert not state.record(False)
    assert state.record(False) is True
    assert not state.healthy


def test_comes_back_after_consecutive_successes_only() -> None:
    state = HealthState(unhealthy_after=3, healthy_after=2, start_healthy=False)
    assert not state.healthy
    assert run(state, "+-+") == "DDD"
    assert state.record(True) is True
    assert state.healthy


def test_record_reports_changes_only() -> None:
    state = HealthState(unhealthy_after=1, healthy_after=1)
    changed = [state.record(ok) for ok in (True, False, False, True, True)]
    assert changed == [False, True, False, True, False]


def test_full_cycle_with_defaults() -> None:
    state = HealthState()
    assert run(state, "---++--+++") == "UUDDUUUUUU"
    assert run(state, "-+---") == "UUUUD"


@pytest.mark.parametrize(("unhealthy_after", "healthy_after"), [(0, 2), (3, 0)])
def test_rejects_thresholds_below_one(unhealthy_after: int, healthy_after: int) -> None:
    with pytest.raises(ValueError):
        HealthState(unhealthy_after=unhealthy_after, healthy_after=healthy_after)
