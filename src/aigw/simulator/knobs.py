"""The simulator's behaviour knobs and the three places they are set.

CLI flags give the defaults, ``POST /sim/config`` changes them at runtime, and
``x-sim-*`` request headers override them for one request (the header wins). Every
knob has one parser, shared by the three, so they accept the same values. Pure.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from aigw.simulator.faults import NO_FAULT, Fault, parse_fault, parse_rate


@dataclass(frozen=True, slots=True)
class Knobs:
    latency_ms: float = 0.0  # before the response headers
    tokens_per_s: float = 0.0  # streaming pace; 0 sends chunks back to back
    completion_tokens: int = 16  # words in a reply, unless max_tokens is smaller
    embedding_dims: int = 16  # unless the request names ``dimensions``
    fault: Fault = NO_FAULT
    fault_rate: float = 1.0  # probability that ``fault`` applies to a request
    capacity: int = 0  # model calls worked on at once (the rest queue); 0 = no limit
    seed: int = 0  # for the fault dice; not settable per request

    def to_dict(self) -> dict[str, object]:
        data = dataclasses.asdict(self)
        data["fault"] = str(self.fault)
        return data


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0.0:  # also rejects NaN
        raise ValueError(f"{text!r} must be >= 0")
    return value


def _int_in(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise ValueError(f"{text!r} must be between {low} and {high}")
        return value

    return parse


PARSERS: dict[str, Callable[[str], object]] = {
    "latency_ms": _non_negative,
    "tokens_per_s": _non_negative,
    "completion_tokens": _int_in(1, 1_000_000),
    "embedding_dims": _int_in(1, 65_536),
    "fault": parse_fault,
    "fault_rate": parse_rate,
    "capacity": _int_in(0, 1_000_000),
    "seed": int,
}

HEADERS: tuple[tuple[bytes, str], ...] = (
    (b"x-sim-latency-ms", "latency_ms"),
    (b"x-sim-tokens-per-s", "tokens_per_s"),
    (b"x-sim-completion-tokens", "completion_tokens"),
    (b"x-sim-embedding-dims", "embedding_dims"),
    (b"x-sim-fault", "fault"),
    (b"x-sim-fault-rate", "fault_rate"),
)


def update(base: Knobs, changes: Mapping[str, object]) -> Knobs:
    """``base`` with ``changes`` applied; keys may use ``-`` or ``_``.

    Raises ``ValueError`` naming the key for an unknown key or a bad value.
    """
    parsed: dict[str, object] = {}
    for key, raw in changes.items():
        name = key.replace("-", "_")
        parser = PARSERS.get(name)
        if parser is None:
            raise ValueError(f"unknown setting {key!r}; known: {', '.join(PARSERS)}")
        if isinstance(raw, bool) or not isinstance(raw, str | int | float):
            raise ValueError(f"{key}: expected a string or a number")
        try:
            parsed[name] = parser(str(raw))
        except ValueError as exc:
            raise ValueError(f"{key}: {exc}") from None
    return dataclasses.replace(base, **parsed)  # type: ignore[arg-type]  # typed by PARSERS


def from_headers(base: Knobs, headers: Mapping[bytes, bytes]) -> Knobs:
    """Per-request overrides from ``x-sim-*`` headers; ``base`` itself when there are none.

    A fault named in a header applies with the header's rate, or always: a rate
    configured for the default fault should not water down a deliberate header.
    """
    changes: dict[str, object] = {}
    for header, name in HEADERS:
        raw = headers.get(header)
        if raw is not None:
            changes[name] = raw.decode("latin-1")
    if not changes:
        return base
    if "fault" in changes and "fault_rate" not in changes:
        changes["fault_rate"] = "1"
    return update(base, changes)
