"""Fault injection for the upstream simulator: parse a fault spec, decide per request.

Pure: no I/O, no clock; the caller injects the ``random.Random`` so runs replay from a
seed. Spec grammar (CLI ``--fault``, ``/sim/config`` ``fault``, header ``x-sim-fault``):

    none          answer normally
    status:CODE   answer with HTTP CODE (400..599) and an error body in the dialect;
                  status:CODE:ERRCODE also sets the error's ``code`` (OpenAI dialect),
                  e.g. status:400:context_length_exceeded
    timeout       accept the request and never answer
    reset         drop the TCP connection without a single response byte
    drop:N        stream N content chunks, then close mid-stream (no terminator);
                  a request that does not stream is closed without an answer
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

FaultKind = Literal["none", "status", "timeout", "reset", "drop"]


@dataclass(frozen=True, slots=True)
class Fault:
    kind: FaultKind = "none"
    arg: int = 0  # the status for ``status``, the chunk count for ``drop``
    code: str = ""  # the error code for ``status``, when given

    def __str__(self) -> str:
        if self.kind == "status" and self.code:
            return f"status:{self.arg}:{self.code}"
        if self.kind in ("status", "drop"):
            return f"{self.kind}:{self.arg}"
        return self.kind


NO_FAULT = Fault()


def parse_fault(spec: str) -> Fault:
    """Parse a fault spec; raise ``ValueError`` with a readable message if it is bad."""
    text = spec.strip().lower()
    if text in ("", "none"):
        return NO_FAULT
    if text == "timeout":
        return Fault("timeout")
    if text == "reset":
        return Fault("reset")
    kind, sep, arg = text.partition(":")
    if sep and kind == "status":
        number, _, error_code = arg.partition(":")
        code = _parse_int(number, spec)
        if not 400 <= code <= 599:
            raise ValueError(f"fault {spec!r}: status must be 400..599")
        return Fault("status", code, error_code)
    if sep and kind == "drop":
        chunks = _parse_int(arg, spec)
        if chunks < 0:
            raise ValueError(f"fault {spec!r}: drop count must be >= 0")
        return Fault("drop", chunks)
    raise ValueError(f"fault {spec!r}: expected none, status:CODE, timeout, reset or drop:N")


def _parse_int(text: str, spec: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"fault {spec!r}: {text!r} is not an integer") from None


def parse_rate(text: str) -> float:
    """Parse a fault probability in 0..1."""
    try:
        rate = float(text)
    except ValueError:
        raise ValueError(f"fault rate {text!r} is not a number") from None
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"fault rate {text!r} must be between 0 and 1")
    return rate


def decide(fault: Fault, rate: float, rng: random.Random) -> Fault:
    """The fault this request suffers: ``fault`` with probability ``rate``, else none.

    The generator is consulted only for a real fault with 0 < rate < 1, so adding
    fault-free traffic does not shift a seeded sequence.
    """
    if fault.kind == "none" or rate <= 0.0:
        return NO_FAULT
    if rate >= 1.0 or rng.random() < rate:
        return fault
    return NO_FAULT
