from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

import pytest

from aigw.auth import signing
from aigw.auth.identity import Reason
from aigw.auth.signing import (
    NONCE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    NonceCache,
    canonical_string,
    sign,
    verify_request,
    verify_signature,
)

SECRET = b"k" * 32
NOW = 1_767_225_600
BODY = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'
PATH = "/v1/chat/completions?api-version=2"


def signed(
    *,
    method: str = "POST",
    path: str = PATH,
    timestamp: int = NOW,
    nonce: str | None = None,
    body: bytes = BODY,
) -> dict[str, str]:
    nonce = nonce or secrets.token_hex(16)
    return {
        "timestamp": str(timestamp),
        "nonce": nonce,
        "signature": sign(SECRET, method, path, timestamp, nonce, body),
    }


def check(
    sent: dict[str, str],
    nonces: NonceCache,
    *,
    method: str = "POST",
    path: str = PATH,
    body: bytes = BODY,
    now: float = NOW,
    secret: bytes = SECRET,
) -> Reason | None:
    return verify_signature(
        secret, method=method, path=path, body=body, now=now, nonces=nonces, **sent
    )


def test_the_canonical_string_is_the_documented_one() -> None:
    nonce = "0f8b6c1e4a2d4e5f9a7b3c2d1e0f9a8b"
    expected = (
        "AIGW1-HMAC-SHA256\nPOST\n/v1/chat/completions?api-version=2\n1767225600\n"
        + nonce
        + "\n"
        + hashlib.sha256(BODY).hexdigest()
    ).encode()
    assert canonical_string("post", PATH, "1767225600", nonce, BODY) == expected
    signature = sign(SECRET, "POST", PATH, NOW, nonce, BODY)
    assert signature == hmac.new(SECRET, expected, "sha256").hexdigest()


def test_an_empty_body_signs_the_hash_of_nothing() -> None:
    text = canonical_string("GET", "/v1/models", "1", "a" * 16, b"")
    assert text.endswith(b"\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")


def test_a_signed_request_verifies() -> None:
    assert check(signed(), NonceCache()) is None


def test_the_window_holds_either_way_up_to_its_edge() -> None:
    nonces = NonceCache(window_s=300)
    assert check(signed(timestamp=NOW - 300), nonces) is None
    assert check(signed(timestamp=NOW + 300), nonces) is None
    assert check(signed(timestamp=NOW - 301), nonces) is Reason.STALE_TIMESTAMP
    assert check(signed(timestamp=NOW + 301), nonces) is Reason.STALE_TIMESTAMP


def test_a_replay_is_refused() -> None:
    nonces = NonceCache()
    sent = signed()
    assert check(sent, nonces) is None
    assert check(sent, nonces, now=NOW + 10) is Reason.REPLAYED_NONCE


def test_a_replay_after_the_window_is_stale_even_once_the_nonce_is_forgotten() -> None:
    nonces = NonceCache(window_s=300)
    sent = signed()
    assert check(sent, nonces) is None
    check(signed(timestamp=NOW + 400), nonces, now=NOW + 400)  # forgets the first
    assert len(nonces) == 1
    assert check(sent, nonces, now=NOW + 400) is Reason.STALE_TIMESTAMP


@pytest.mark.parametrize(
    "changed",
    [
        {"body": BODY.replace(b"hi", b"ho")},
        {"body": b""},
        {"path": "/v1/chat/completions?api-version=3"},
        {"path": "/v1/chat/completions"},
        {"path": "/v1/embeddings?api-version=2"},
        {"method": "PUT"},
        {"secret": b"x" * 32},
    ],
)
def test_tampering_breaks_the_signature(changed: dict[str, Any]) -> None:
    assert check(signed(), NonceCache(), **changed) is Reason.BAD_SIGNATURE


def test_changing_the_signed_headers_breaks_the_signature() -> None:
    sent = signed()
    assert check({**sent, "timestamp": str(NOW + 1)}, NonceCache()) is Reason.BAD_SIGNATURE
    assert check({**sent, "nonce": "b" * 32}, NonceCache()) is Reason.BAD_SIGNATURE


def test_a_forged_request_does_not_burn_the_nonce() -> None:
    nonces = NonceCache()
    nonce = secrets.token_hex(16)
    forged = {**signed(nonce=nonce), "signature": "0" * 64}
    assert check(forged, nonces) is Reason.BAD_SIGNATURE
    assert len(nonces) == 0
    assert check(signed(nonce=nonce), nonces) is None


@pytest.mark.parametrize(
    "bad",
    [
        {"timestamp": "1.7e9"},
        {"timestamp": "-1767225600"},
        {"timestamp": " 1767225600"},
        {"nonce": "short"},
        {"nonce": "has\nnewline-and-more-chars"},
        {"signature": "ABCDEF" + "0" * 58},
        {"signature": "0" * 63},
    ],
)
def test_malformed_headers_are_refused_before_any_hashing(bad: dict[str, str]) -> None:
    assert check({**signed(), **bad}, NonceCache()) is Reason.MALFORMED_SIGNATURE


def test_a_path_with_a_newline_cannot_be_signed_or_verified() -> None:
    with pytest.raises(ValueError):
        sign(SECRET, "POST", "/v1\nx", NOW, "a" * 16, b"")
    assert check(signed(), NonceCache(), path="/v1\nx") is Reason.MALFORMED_SIGNATURE


def test_short_secrets_are_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        sign(b"short", "POST", "/", NOW, "a" * 16, b"")
    with pytest.raises(ValueError, match="32 bytes"):
        check(signed(), NonceCache(), secret=b"short")


def test_the_signature_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bytes] = []
    compare_digest = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append(a)
        return compare_digest(a, b)

    monkeypatch.setattr(signing.hmac, "compare_digest", spy)
    assert check(signed(), NonceCache()) is None
    assert len(calls) == 1


def test_verify_request_reads_the_three_headers() -> None:
    sent = signed()
    headers = {
        TIMESTAMP_HEADER.encode(): sent["timestamp"].encode(),
        NONCE_HEADER.encode(): sent["nonce"].encode(),
        SIGNATURE_HEADER.encode(): sent["signature"].encode(),
    }
    nonces = NonceCache()

    def verify(headers: dict[bytes, bytes]) -> Reason | None:
        return verify_request(
            SECRET, method="POST", path=PATH, headers=headers, body=BODY, now=NOW, nonces=nonces
        )

    missing = dict(headers)
    del missing[b"x-aigw-nonce"]
    assert verify(missing) is Reason.MISSING_SIGNATURE
    assert verify({**headers, b"x-aigw-nonce": b"\xff" * 20}) is Reason.MALFORMED_SIGNATURE
    assert verify(headers) is None
    assert verify(headers) is Reason.REPLAYED_NONCE


def test_the_nonce_cache_forgets_nonces_whose_window_has_passed() -> None:
    nonces = NonceCache(window_s=10)
    for i in range(100):
        assert nonces.add(f"n{i}", NOW, NOW)
    assert len(nonces) == 100
    assert nonces.add("n0", NOW, NOW + 10) is False  # still inside the window
    assert nonces.add("late", NOW + 11, NOW + 11)
    assert len(nonces) == 1


def test_a_full_nonce_cache_shrinks_the_window_instead_of_allowing_replays() -> None:
    nonces = NonceCache(window_s=300, max_entries=3)
    for i, at in enumerate((NOW - 100, NOW - 50, NOW)):
        assert nonces.add(f"n{i}", at, NOW)
    assert nonces.add("n3", NOW, NOW)
    assert len(nonces) == 3
    # n0 (the oldest timestamp) was forgotten: its timestamp is no longer fresh,
    # so replaying it fails on the window even though the nonce is unknown.
    assert not nonces.fresh(NOW - 100, NOW)
    assert nonces.fresh(NOW - 99, NOW)
    assert not nonces.add("n1", NOW - 50, NOW)


def test_the_nonce_cache_repr_lists_no_nonces() -> None:
    nonces = NonceCache()
    nonces.add("a-nonce-of-sixteen", NOW, NOW)
    assert repr(nonces) == "NonceCache(window_s=300.0, entries=1)"
