from __future__ import annotations

import math

import pytest

from aigw.routing.ewma import DecayingRate, PeakEwma


def test_peak_ewma_is_initial_value_until_first_sample_then_takes_it() -> None:
    assert PeakEwma().value(100.0) == 0.0
    ewma = PeakEwma(initial_s=0.5)
    assert ewma.value(100.0) == 0.5
    ewma.observe(0.2, now=100.0)
    assert ewma.value(100.0) == pytest.approx(0.2)


def test_peak_ewma_jumps_to_a_peak_at_once() -> None:
    ewma = PeakEwma(tau_s=10.0)
    ewma.observe(0.1, now=0.0)
    ewma.observe(2.0, now=0.001)
    assert ewma.value(0.001) == pytest.approx(2.0)


def test_peak_ewma_gives_a_lower_sample_weight_by_the_time_it_stands_for() -> None:
    ewma = PeakEwma(tau_s=10.0)
    ewma.observe(1.0, now=0.0)
    ewma.observe(0.1, now=0.001)
    assert ewma.value(0.001) == pytest.approx(1.0, abs=1e-3)
    ewma = PeakEwma(tau_s=10.0)
    ewma.observe(1.0, now=0.0)
    ewma.observe(0.1, now=10.0)
    w = math.exp(-1.0)
    assert ewma.value(10.0) == pytest.approx(1.0 * w * w + 0.1 * (1 - w))


def test_peak_ewma_decays_toward_zero_without_samples_and_reads_are_pure() -> None:
    ewma = PeakEwma(tau_s=10.0)
    ewma.observe(1.0, now=50.0)
    for _ in range(5):
        assert ewma.value(60.0) == pytest.approx(math.exp(-1.0))
    assert ewma.value(90.0) == pytest.approx(math.exp(-4.0))
    assert ewma.value(40.0) == pytest.approx(1.0)


def test_peak_ewma_steady_latency_stays_and_a_spike_wears_off() -> None:
    ewma = PeakEwma(tau_s=10.0)
    now = 0.0
    for _ in range(100):
        now += 0.1
        ewma.observe(0.3, now)
    assert ewma.value(now) == pytest.approx(0.3)
    ewma.observe(5.0, now)
    assert ewma.value(now) == pytest.approx(5.0)
    for _ in range(600):
        now += 0.1
        ewma.observe(0.3, now)
    assert ewma.value(now) == pytest.approx(0.3, rel=0.05)


def test_peak_ewma_rejects_a_non_positive_tau() -> None:
    with pytest.raises(ValueError):
        PeakEwma(tau_s=0.0)


def test_decaying_rate_is_zero_without_outcomes() -> None:
    assert DecayingRate().value(10.0) == 0.0


def test_decaying_rate_is_the_recent_failure_share() -> None:
    rate = DecayingRate(tau_s=30.0)
    for i in range(200):
        rate.observe(i % 4 == 0, now=i * 0.01)
    assert rate.value(2.0) == pytest.approx(0.25, abs=0.01)


def test_decaying_rate_needs_min_samples_before_claiming_a_high_rate() -> None:
    rate = DecayingRate(min_samples=5.0)
    rate.observe(True, now=0.0)
    assert rate.value(0.0) == pytest.approx(0.2)
    for _ in range(9):
        rate.observe(True, now=0.0)
    assert rate.value(0.0) == pytest.approx(1.0)


def test_decaying_rate_recovers_with_successes_and_with_idle_time() -> None:
    rate = DecayingRate(tau_s=30.0, min_samples=5.0)
    for _ in range(100):
        rate.observe(True, now=0.0)
    assert rate.value(30.0) == pytest.approx(1.0)  # the memory is tau, not one sample
    assert rate.value(180.0) < 0.1  # idle: decays toward 0
    for second in range(1, 121):
        rate.observe(False, now=float(second))
    assert rate.value(120.0) < 0.1


def test_decaying_rate_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError):
        DecayingRate(tau_s=0.0)
    with pytest.raises(ValueError):
        DecayingRate(min_samples=0.0)
