"""The simulator's fault settings: parsing and the per-request decision (pure)."""

from __future__ import annotations

import random

import pytest

from aigw.simulator.faults import NO_FAULT, Fault, decide, parse_fault, parse_rate
from aigw.simulator.knobs import Knobs, from_headers, update


@pytest.mark.parametrize(
    ("spec", "fault"),
    [
        ("none", NO_FAULT),
        ("", NO_FAULT),
        (" NONE ", NO_FAULT),
        ("status:500", Fault("status", 500)),
        ("status:429", Fault("status", 429)),
        ("timeout", Fault("timeout")),
        ("Reset", Fault("reset")),
        ("drop:3", Fault("drop", 3)),
        ("drop:0", Fault("drop", 0)),
    ],
)
def test_parse_fault(spec: str, fault: Fault) -> None:
    assert parse_fault(spec) == fault
    assert parse_fault(str(fault)) == fault  # the spec round-trips through str()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("status:200", "400..599"),
        ("status:abc", "not an integer"),
        ("status", "expected none"),
        ("drop:-1", ">= 0"),
        ("explode", "expected none"),
        ("timeout:5", "expected none"),
    ],
)
def test_parse_fault_rejects(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_fault(spec)


@pytest.mark.parametrize("text", ["-0.1", "1.5", "nan", "often"])
def test_parse_rate_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="fault rate"):
        parse_rate(text)


def test_parse_rate_accepts_bounds() -> None:
    assert [parse_rate(t) for t in ("0", "0.25", "1")] == [0.0, 0.25, 1.0]


def test_decide_certain_rates_do_not_roll_the_dice() -> None:
    rng = random.Random(1)
    state = rng.getstate()
    boom = Fault("status", 503)
    assert decide(boom, 1.0, rng) is boom
    assert decide(boom, 0.0, rng) is NO_FAULT
    assert decide(NO_FAULT, 0.5, rng) is NO_FAULT
    assert rng.getstate() == state


def test_decide_applies_the_rate_and_replays_from_a_seed() -> None:
    boom = Fault("reset")

    def run(seed: int) -> list[bool]:
        rng = random.Random(seed)
        return [decide(boom, 0.3, rng) is boom for _ in range(2000)]

    hits = run(7)
    assert 500 < sum(hits) < 700
    assert run(7) == hits
    assert run(8) != hits


def test_update_accepts_cli_and_json_spellings() -> None:
    knobs = update(Knobs(), {"latency-ms": "50", "fault_rate": 0.5, "fault": "drop:2"})
    assert (knobs.latency_ms, knobs.fault_rate, knobs.fault) == (50.0, 0.5, Fault("drop", 2))
    assert knobs.to_dict()["fault"] == "drop:2"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"latency_ms": -5}, "latency_ms"),
        ({"completion_tokens": 0}, "completion_tokens"),
        ({"fault": "status:99"}, "400..599"),
        ({"speed": 1}, "unknown setting 'speed'"),
        ({"seed": True}, "seed: expected"),
    ],
)
def test_update_rejects(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        update(Knobs(), changes)


def test_header_fault_applies_always_unless_the_header_names_a_rate() -> None:
    base = Knobs(fault=Fault("status", 500), fault_rate=0.1)
    assert from_headers(base, {b"x-other": b"1"}) is base
    forced = from_headers(base, {b"x-sim-fault": b"timeout"})
    assert (forced.fault, forced.fault_rate) == (Fault("timeout"), 1.0)
    rated = from_headers(base, {b"x-sim-fault": b"reset", b"x-sim-fault-rate": b"0.2"})
    assert rated.fault_rate == 0.2
    assert from_headers(base, {b"x-sim-latency-ms": b"7"}).fault_rate == 0.1
