from __future__ import annotations

import math
import random
import statistics

import pytest

from aigw.resilience.latency import LatencyQuantile


def test_none_until_min_samples() -> None:
    lq = LatencyQuantile(min_samples=20)
    for i in range(19):
        lq.observe(float(i))
        assert lq.quantile(0.5) is None
    lq.observe(19.0)
    assert lq.quantile(0.5) == pytest.approx(9.5)
    assert len(lq) == 20


def test_linear_interpolation_between_ranks() -> None:
    lq = LatencyQuantile(window=100, refresh=1)
    values = list(range(1, 101))
    random.Random(3).shuffle(values)
    for v in values:
        lq.observe(float(v))
    assert lq.quantile(0.0) == 1.0
    assert lq.quantile(1.0) == 100.0
    assert lq.quantile(0.5) == pytest.approx(50.5)
    assert lq.quantile(0.95) == pytest.approx(95.05)
    # q outside [0, 1] clamps instead of extrapolating
    assert lq.quantile(-1.0) == 1.0
    assert lq.quantile(2.0) == 100.0


def test_matches_the_exact_quantiles_of_the_window() -> None:
    rng = random.Random(11)
    lq = LatencyQuantile(window=512, refresh=1)
    samples = [rng.expovariate(10.0) for _ in range(2000)]
    for s in samples:
        lq.observe(s)
    window = samples[-512:]
    exact = statistics.quantiles(window, n=100, method="inclusive")
    for pct in (50, 90, 95, 99):
        assert lq.quantile(pct / 100) == pytest.approx(exact[pct - 1])


def test_estimates_known_distributions() -> None:
    rng = random.Random(5)
    uniform = LatencyQuantile()
    lognormal = LatencyQuantile()
    for _ in range(5000):
        uniform.observe(rng.uniform(0.0, 2.0))
        lognormal.observe(rng.lognormvariate(-1.0, 0.5))
    assert uniform.quantile(0.5) == pytest.approx(1.0, abs=0.1)
    assert uniform.quantile(0.9) == pytest.approx(1.8, abs=0.1)
    # lognormal: the p-quantile is exp(mu + sigma * z_p)
    z95 = statistics.NormalDist().inv_cdf(0.95)
    assert lognormal.quantile(0.95) == pytest.approx(math.exp(-1.0 + 0.5 * z95), rel=0.1)
    assert lognormal.quantile(0.5) == pytest.approx(math.exp(-1.0), rel=0.1)


def test_forgets_samples_older_than_the_window() -> None:
    lq = LatencyQuantile(window=50, min_samples=10, refresh=1)
    for _ in range(50):
        lq.observe(10.0)
    for _ in range(50):
        lq.observe(0.1)
    assert lq.quantile(1.0) == 0.1
    assert len(lq) == 50


def test_snapshot_is_refreshed_every_refresh_observations() -> None:
    lq = LatencyQuantile(window=100, min_samples=10, refresh=5)
    for _ in range(10):
        lq.observe(1.0)
    assert lq.quantile(1.0) == 1.0
    for _ in range(4):
        lq.observe(9.0)
        assert lq.quantile(1.0) == 1.0  # still the cached snapshot
    lq.observe(9.0)
    assert lq.quantile(1.0) == 9.0


@pytest.mark.parametrize("bad", [-0.5, math.nan])
def test_drops_negative_and_nan_samples(bad: float) -> None:
    lq = LatencyQuantile(min_samples=1)
    lq.observe(bad)
    assert len(lq) == 0
    lq.observe(0.25)
    assert lq.quantile(0.5) == 0.25


@pytest.mark.parametrize(
    ("window", "min_samples", "refresh"), [(0, 1, 1), (10, 0, 1), (10, 11, 1), (10, 5, 0)]
)
def test_rejects_nonsense_settings(window: int, min_samples: int, refresh: int) -> None:
    with pytest.raises(ValueError):
        LatencyQuantile(window, min_samples=min_samples, refresh=refresh)
