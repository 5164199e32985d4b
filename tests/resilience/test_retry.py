from __future__ import annotations

import random

import pytest

from aigw.errors import (
    DeadlineExceeded,
    GatewayError,
    InvalidRequest,
    MalformedJSON,
    ModelNotFound,
    ServiceUnavailable,
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamRejected,
)
from aigw.resilience.retry import (
    RetryBudget,
    backoff_s,
    is_retryable,
    parse_retry_after,
    parse_retry_after_ms,
)

# -- is_retryable


@pytest.mark.parametrize(
    "err",
    [
        UpstreamConnectError("refused"),
        UpstreamError("connection dropped"),
        UpstreamProtocolError("bad chunk"),
        UpstreamError("boom", upstream_status=500),
        UpstreamError("bad gateway", upstream_status=502),
        UpstreamError("unavailable", upstream_status=503, retry_after=2.0),
        UpstreamError("gateway timeout", upstream_status=504),
        UpstreamError("cloudflare timeout", upstream_status=524),
        UpstreamError("overloaded", upstream_status=529),
        UpstreamRejected("slow down", status=429),
        UpstreamRejected("request timeout", status=408),
        UpstreamRejected("lock timeout", status=409),
        UpstreamRejected("too early", status=425),
        DeadlineExceeded("upstream first-byte deadline exceeded"),
    ],
    ids=repr,
)
def test_retryable(err: GatewayError) -> None:
    assert is_retryable(err)


@pytest.mark.parametrize(
    "err",
    [
        UpstreamRejected("bad request", status=400),
        UpstreamRejected("bad key", status=401),
        UpstreamRejected("forbidden", status=403),
        UpstreamRejected("no such model", status=404),
        UpstreamRejected("too long", status=413),
        UpstreamRejected("unprocessable", status=422),
        UpstreamError("not implemented", upstream_status=501),
        UpstreamError("http version", upstream_status=505),
        UpstreamError("redirect", upstream_status=302),
        InvalidRequest("messages is required"),
        MalformedJSON("bad json"),
        ModelNotFound("no model"),
        ServiceUnavailable("every deployment is ejected"),
        GatewayError("bug"),
    ],
    ids=repr,
)
def test_not_retryable(err: GatewayError) -> None:
    assert not is_retryable(err)


# -- backoff_s


def test_backoff_is_full_jitter_within_the_exponential_ceiling() -> None:
    rng = random.Random(42)
    for attempt, ceiling in [(0, 0.1), (1, 0.2), (2, 0.4), (3, 0.8), (4, 1.0), (10, 1.0)]:
        delays = [backoff_s(attempt, 0.1, 1.0, rng) for _ in range(2000)]
        assert all(0.0 <= d < ceiling for d in delays)
        # full jitter: spread over the whole interval, mean near its middle
        assert min(delays) < 0.05 * ceiling and max(delays) > 0.95 * ceiling
        assert sum(delays) / len(delays) == pytest.approx(ceiling / 2, rel=0.05)


def test_backoff_is_reproducible_with_a_seeded_rng() -> None:
    first = [backoff_s(a, 0.5, 30.0, random.Random(7)) for a in range(5)]
    again = [backoff_s(a, 0.5, 30.0, random.Random(7)) for a in range(5)]
    assert first == again


def test_backoff_survives_huge_attempt_numbers() -> None:
    assert 0.0 <= backoff_s(10_000, 0.1, 5.0, random.Random(1)) < 5.0


def test_backoff_rejects_negative_attempt() -> None:
    with pytest.raises(ValueError):
        backoff_s(-1, 0.1, 1.0, random.Random(1))


# -- Retry-After

NOW = 784111777.0  # Sun, 06 Nov 1994 08:49:37 GMT


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (b"120", 120.0),
        (" 7 ", 7.0),
        ("1.5", 1.5),
        ("0", 0.0),
        ("-3", 0.0),
        ("Sun, 06 Nov 1994 08:51:37 GMT", 120.0),  # IMF-fixdate
        (b"Sunday, 06-Nov-94 08:51:37 GMT", 120.0),  # obsolete RFC 850
        ("Sun Nov  6 08:51:37 1994", 120.0),  # obsolete asctime
        ("Sun, 06 Nov 1994 09:51:37 +0100", 120.0),  # an offset is honoured
        ("Sun, 06 Nov 1994 08:48:37 GMT", 0.0),  # in the past
    ],
)
def test_parse_retry_after(value: bytes | str, expected: float) -> None:
    assert parse_retry_after(value, NOW) == pytest.approx(expected)


GARBAGE = [None, "", "   ", "soon", "nan", "inf", "-inf", "1e999", "12s"]


@pytest.mark.parametrize("value", [*GARBAGE, "Sun, 32 Nov 1994 08:49:37 GMT"])
def test_parse_retry_after_garbage(value: str | None) -> None:
    assert parse_retry_after(value, NOW) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1500", 1.5), (b"250.5", 0.2505), ("0", 0.0), ("-20", 0.0), (None, None), ("x", None)],
)
def test_parse_retry_after_ms(value: bytes | str | None, expected: float | None) -> None:
    assert parse_retry_after_ms(value) == pytest.approx(expected)


# -- RetryBudget


def spend_all(budget: RetryBudget, now: float) -> int:
    spent = 0
    while budget.try_spend(now):
        spent += 1
        assert spent < 10_000
    return spent


def test_budget_reserve_allows_min_per_s_times_window_with_no_traffic() -> None:
    budget = RetryBudget(ratio=0.2, min_per_s=1.0, window_s=10.0)
    assert budget.available(0.0) == 10.0
    assert spend_all(budget, 0.0) == 10
    assert budget.available(0.0) == 0.0
    assert not budget.try_spend(0.0)


def test_budget_grows_with_first_attempts_at_the_ratio() -> None:
    budget = RetryBudget(ratio=0.2, min_per_s=0.0, window_s=10.0)
    for _ in range(100):
        budget.record_request(0.0)
    assert budget.available(0.0) == pytest.approx(20.0)
    assert spend_all(budget, 0.0) == 20
    for _ in range(4):
        budget.record_request(1.0)
    assert budget.available(1.0) == pytest.approx(0.8)  # fractional: not yet a retry
    assert not budget.try_spend(1.0)
    budget.record_request(1.0)
    assert budget.try_spend(1.0)


def test_budget_refills_as_spent_retries_leave_the_window() -> None:
    budget = RetryBudget(ratio=0.0, min_per_s=0.5, window_s=10.0)
    assert spend_all(budget, 0.0) == 5
    assert not budget.try_spend(9.9)
    assert spend_all(budget, 10.0) == 5


def test_budget_shrinks_when_traffic_falls() -> None:
    budget = RetryBudget(ratio=0.5, min_per_s=0.0, window_s=10.0)
    for _ in range(10):
        budget.record_request(0.0)
    for _ in range(10):
        budget.record_request(5.0)
    assert spend_all(budget, 5.0) == 10
    # the t=0 requests leave the window but the retries at t=5 have not
    assert budget.available(10.0) == pytest.approx(-5.0)
    assert not budget.try_spend(10.0)
    assert budget.available(15.0) == 0.0


def test_budget_rejects_negative_settings() -> None:
    with pytest.raises(ValueError):
        RetryBudget(ratio=-0.1)
    with pytest.raises(ValueError):
        RetryBudget(min_per_s=-1.0)
