"""Retry policy, pure: which failures to retry, how long to wait, and how many to allow.

* ``is_retryable`` — whether a failure is of a kind worth another attempt.
* ``backoff_s`` — exponential backoff with full jitter.
* ``parse_retry_after`` / ``parse_retry_after_ms`` — the upstream's own advice.
* ``RetryBudget`` — caps retries at a share of recent traffic, so that retries cannot
  multiply load on an upstream that is already failing.
"""

from __future__ import annotations

import math
import random
from datetime import UTC
from email.utils import parsedate_to_datetime

from aigw.errors import DeadlineExceeded, GatewayError, UpstreamError, UpstreamRejected
from aigw.resilience.window import SlidingCounts

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524, 529})
"""Upstream statuses worth retrying (on this deployment or another).

408 request timeout, 409 conflict (OpenAI's "lock timeout"; the OpenAI and Anthropic
SDKs retry it), 425 too early (RFC 8470: replay later), 429 rate limited; 500, 502,
503, 504; 520-524 (Cloudflare, in front of several providers: origin down or slow);
529 (Anthropic: overloaded). Not 501/505 (the deployment cannot do it, now or later)
nor any other 4xx (the request itself is wrong and would fail again).
"""

_MAX_DOUBLINGS = 64


def is_retryable(err: GatewayError) -> bool:
    """Whether ``err`` is a failure that another attempt might not repeat.

    Retryable: connect errors, dropped connections and malformed responses
    (``UpstreamError`` with no upstream status), ``UpstreamError`` and
    ``UpstreamRejected`` whose status is in ``RETRYABLE_STATUS``, and
    ``DeadlineExceeded`` (an upstream timeout; the caller must still check that the
    request's own deadline leaves time for another attempt). Everything else, the
    gateway's own ``InvalidRequest``/``ModelNotFound``/``ServiceUnavailable``
    included, is final. Whether a retry is *safe* (no stream bytes sent to the
    client yet) is also the caller's call.
    """
    if isinstance(err, UpstreamError):
        return err.upstream_status is None or err.upstream_status in RETRYABLE_STATUS
    if isinstance(err, UpstreamRejected):
        return err.status in RETRYABLE_STATUS
    return isinstance(err, DeadlineExceeded)


def backoff_s(attempt: int, base_s: float, max_s: float, rng: random.Random) -> float:
    """AWS "full jitter": uniform in ``[0, min(max_s, base_s * 2**attempt))``.

    ``attempt`` is 0 for the first retry. Full jitter spreads a crowd of clients
    retrying after the same failure evenly over the interval instead of in waves.
    """
    if attempt < 0:
        raise ValueError("attempt must be >= 0")
    ceiling = min(max_s, base_s * 2.0 ** min(attempt, _MAX_DOUBLINGS))
    return rng.random() * ceiling


def parse_retry_after(value: bytes | str | None, now_epoch: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (RFC 9110 §10.2.3), or None.

    Accepts delay-seconds (leniently: decimals too) or an HTTP-date in any of the
    three RFC 9110 forms, measured from ``now_epoch`` (Unix time). A date in the past
    or a negative number gives 0; anything unparseable gives None. Not capped: a
    huge value is returned as is, for the caller to weigh against its deadline.
    """
    text = _text(value)
    if text is None:
        return None
    seconds = _number(text)
    if seconds is None:
        seconds = _http_date_delay(text, now_epoch)
    return None if seconds is None else max(seconds, 0.0)


def parse_retry_after_ms(value: bytes | str | None) -> float | None:
    """Seconds to wait from a ``retry-after-ms`` value (milliseconds), or None.

    OpenAI and Anthropic send it beside ``Retry-After`` with finer resolution;
    prefer it when both are present. Negative gives 0, garbage None.
    """
    text = _text(value)
    millis = None if text is None else _number(text)
    return None if millis is None else max(millis / 1000.0, 0.0)


def _text(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    return text.strip() or None


def _number(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _http_date_delay(text: str, now_epoch: float) -> float | None:
    try:
        when = parsedate_to_datetime(text)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return when.timestamp() - now_epoch
    except (ValueError, OverflowError):
        return None


class RetryBudget:
    """A Finagle-style retry budget over a sliding window.

    Over the last ``window_s`` seconds (10 time buckets), with ``requests`` first
    attempts recorded and ``retries`` retries spent::

        available = ratio * requests + min_per_s * window_s - retries

    and a retry may be spent while ``available >= 1``. So retries stay within
    ``ratio`` of traffic (20% by default: at most 1.2x load on a failing upstream),
    plus a reserve of ``min_per_s`` per second so that a quiet deployment can still
    retry. The reserve is spendable at once: up to ``min_per_s * window_s`` retries
    in a burst. Spent retries expire with the window, which is how the budget refills.
    Only first attempts count as requests; a retry never earns budget for more.
    """

    def __init__(self, ratio: float = 0.2, min_per_s: float = 5.0, window_s: float = 10.0) -> None:
        if ratio < 0 or min_per_s < 0:
            raise ValueError("ratio and min_per_s must be >= 0")
        self.ratio = ratio
        self.reserve = min_per_s * window_s
        self._counts = SlidingCounts(window_s)

    def record_request(self, now: float) -> None:
        """Count a first attempt."""
        self._counts.add(now, a=1)

    def try_spend(self, now: float) -> bool:
        """Take one retry from the budget; False (taking nothing) if it is spent."""
        if self.available(now) < 1:
            return False
        self._counts.add(now, b=1)
        return True

    def available(self, now: float) -> float:
        """Retries the budget would allow at ``now`` (may be fractional, or negative
        after traffic fell)."""
        requests, retries = self._counts.totals(now)
        return self.ratio * requests + self.reserve - retries
