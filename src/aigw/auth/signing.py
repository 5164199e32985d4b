"""HMAC request signing: proof that a request was made by a holder of a secret, is
recent, is not a replay, and was not changed on the way (method, path, query, body).

A client signs each request with its signing secret and sends three headers:

    x-aigw-timestamp   Unix time in whole seconds, decimal digits: 1767225600
    x-aigw-nonce       16 to 128 characters of [A-Za-z0-9_-], new for every request
    x-aigw-signature   64 lowercase hex digits: HMAC-SHA256(secret, canonical string)

The canonical string is six lines joined by a single ``\\n`` (no trailing newline),
encoded as UTF-8:

    AIGW1-HMAC-SHA256
    <METHOD, upper case>                    POST
    <path and query exactly as sent>        /v1/chat/completions?api-version=2
    <x-aigw-timestamp, as sent>             1767225600
    <x-aigw-nonce, as sent>                 0f8b6c1e4a2d4e5f9a7b3c2d1e0f9a8b
    <hex SHA-256 of the body bytes>         e3b0c44298fc1c149afbf4c8996fb924…
                                            (that of b"" when there is no body)

The path is not normalised: sign the request target byte for byte as it goes on the
wire, percent-escapes as they are (it is ASCII there; a proxy that rewrites paths breaks
signatures). No field may contain a newline.

The gateway accepts a timestamp within ``window_s`` (300 s) of its own clock either
way, and each nonce once within that window. Failures name a ``Reason``; check order:
missing or malformed headers, stale timestamp, bad signature, replayed nonce (a nonce
is remembered only once its signature has been verified, so forged requests cannot
fill the nonce cache).
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import math
import re
from collections.abc import Mapping
from typing import Final

from aigw.auth.identity import Reason

SCHEME: Final = "AIGW1-HMAC-SHA256"
TIMESTAMP_HEADER: Final = "x-aigw-timestamp"
NONCE_HEADER: Final = "x-aigw-nonce"
SIGNATURE_HEADER: Final = "x-aigw-signature"
DEFAULT_WINDOW_S: Final = 300.0
MIN_SECRET_BYTES: Final = 32

_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_NONCE = re.compile(r"[A-Za-z0-9_-]{16,128}")
_SIGNATURE = re.compile(r"[0-9a-f]{64}")
_METHOD = re.compile(r"[A-Z]{1,16}")

_HEADERS = (TIMESTAMP_HEADER.encode(), NONCE_HEADER.encode(), SIGNATURE_HEADER.encode())


def canonical_string(method: str, path: str, timestamp: str, nonce: str, body: bytes) -> bytes:
    """The bytes that are signed (see the module docstring). Raises ``ValueError`` for
    fields that could make two different requests sign alike."""
    method = method.upper()
    if not _METHOD.fullmatch(method):
        raise ValueError("method must be letters only")
    if not path.startswith("/") or "\n" in path:
        raise ValueError("path must start with / and hold no newline")
    if not _TIMESTAMP.fullmatch(timestamp):
        raise ValueError("timestamp must be whole seconds in decimal digits")
    if not _NONCE.fullmatch(nonce):
        raise ValueError("nonce must be 16 to 128 characters of [A-Za-z0-9_-]")
    digest = hashlib.sha256(body).hexdigest()
    return "\n".join((SCHEME, method, path, timestamp, nonce, digest)).encode()


def sign(
    secret: bytes, method: str, path: str, timestamp: int | str, nonce: str, body: bytes
) -> str:
    """The ``x-aigw-signature`` value for a request: lowercase hex HMAC-SHA256."""
    _check_secret(secret)
    message = canonical_string(method, path, str(timestamp), nonce, body)
    return hmac.digest(secret, message, "sha256").hex()


def _check_secret(secret: bytes) -> None:
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"the signing secret must be at least {MIN_SECRET_BYTES} bytes")


class NonceCache:
    """Nonces seen within the window, each kept until its timestamp leaves the window.

    Bounded by ``max_entries``. When full, the nonce with the oldest timestamp is
    dropped and the window's old edge moves up past it (``fresh`` then refuses that
    timestamp and older ones): the window shrinks instead of a replay getting through.
    """

    def __init__(self, window_s: float = DEFAULT_WINDOW_S, max_entries: int = 100_000) -> None:
        if not window_s > 0:
            raise ValueError(f"window_s must be > 0, got {window_s!r}")
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries!r}")
        self.window_s = window_s
        self.max_entries = max_entries
        self._expiry: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []  # (expiry, nonce), the soonest first
        self._floor = -math.inf  # timestamps at or below it may have been forgotten

    def fresh(self, timestamp: float, now: float) -> bool:
        """Whether a request made at ``timestamp`` is inside the window at ``now``."""
        return abs(now - timestamp) <= self.window_s and timestamp > self._floor

    def add(self, nonce: str, timestamp: float, now: float) -> bool:
        """Remember ``nonce``; ``False`` if it was already seen within the window."""
        self._forget_expired(now)
        if nonce in self._expiry:
            return False
        while len(self._expiry) >= self.max_entries:
            expiry, oldest = heapq.heappop(self._heap)
            del self._expiry[oldest]
            self._floor = max(self._floor, expiry - self.window_s)
        expiry = timestamp + self.window_s
        self._expiry[nonce] = expiry
        heapq.heappush(self._heap, (expiry, nonce))
        return True

    def _forget_expired(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] < now:
            del self._expiry[heapq.heappop(heap)[1]]

    def __len__(self) -> int:
        return len(self._expiry)

    def __repr__(self) -> str:
        return f"NonceCache(window_s={self.window_s}, entries={len(self._expiry)})"


def verify_signature(
    secret: bytes,
    *,
    method: str,
    path: str,
    timestamp: str,
    nonce: str,
    signature: str,
    body: bytes,
    now: float,
    nonces: NonceCache,
) -> Reason | None:
    """``None`` if the request is signed with ``secret``, fresh and new; else why not.

    ``now`` is Unix time (the window is ``nonces.window_s``). A secret shorter than
    ``MIN_SECRET_BYTES`` is a configuration error: ``ValueError``.
    """
    _check_secret(secret)
    if not (_TIMESTAMP.fullmatch(timestamp) and _NONCE.fullmatch(nonce)):
        return Reason.MALFORMED_SIGNATURE
    if not _SIGNATURE.fullmatch(signature):
        return Reason.MALFORMED_SIGNATURE
    sent_at = int(timestamp)
    if not nonces.fresh(sent_at, now):
        return Reason.STALE_TIMESTAMP
    try:
        message = canonical_string(method, path, timestamp, nonce, body)
    except ValueError:
        return Reason.MALFORMED_SIGNATURE
    expected = hmac.digest(secret, message, "sha256").hex()
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        return Reason.BAD_SIGNATURE
    if not nonces.add(nonce, sent_at, now):
        return Reason.REPLAYED_NONCE
    return None


def verify_request(
    secret: bytes,
    *,
    method: str,
    path: str,
    headers: Mapping[bytes, bytes],
    body: bytes,
    now: float,
    nonces: NonceCache,
) -> Reason | None:
    """``verify_signature`` with the three values read from lower-case header names."""
    timestamp, nonce, signature = (headers.get(name) for name in _HEADERS)
    if timestamp is None or nonce is None or signature is None:
        return Reason.MISSING_SIGNATURE
    try:
        fields = {
            "timestamp": timestamp.decode("ascii"),
            "nonce": nonce.decode("ascii"),
            "signature": signature.decode("ascii"),
        }
    except UnicodeDecodeError:
        return Reason.MALFORMED_SIGNATURE
    return verify_signature(
        secret, method=method, path=path, body=body, now=now, nonces=nonces, **fields
    )
