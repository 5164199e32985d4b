"""The admit stage's pure helpers: OpenAI-style durations and headers."""

from __future__ import annotations

import math

import pytest

from aigw.limits.stage import _duration


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0ms"), (0.0201, "21ms"), (0.999, "999ms"), (1.0, "1s"), (1.5, "1.5s"),
        (59.25, "59.25s"), (60.0, "1m0s"), (360.0, "6m0s"), (3725.5, "1h2m5.5s"),
        (math.inf, "0s"),
    ],
)  # fmt: skip
def test_duration_as_openai_writes_it(seconds: float, text: str) -> None:
    assert _duration(seconds) == text
