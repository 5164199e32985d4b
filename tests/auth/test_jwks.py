from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from aigw.auth.identity import Reason, Unauthenticated
from aigw.auth.jwks import JwksCache, JwksRefresher, hmac_key, jwk_key, parse_jwks
from aigw.auth.jwt import JwtVerifier
from tests.auth.conftest import AUDIENCE, HS_SECRET, ISSUER, NOW, claims, jwk, token


def document(*keys: dict[str, Any]) -> bytes:
    return json.dumps({"keys": list(keys)}).encode()


def test_rsa_and_p256_keys_are_parsed_with_their_algorithm(
    rsa_private: rsa.RSAPrivateKey, ec_private: ec.EllipticCurvePrivateKey
) -> None:
    keys, skipped = parse_jwks(document(jwk(rsa_private, "r1"), jwk(ec_private, "e1")))
    assert skipped == []
    assert {kid: key.algorithm for kid, key in keys.items()} == {"r1": "RS256", "e1": "ES256"}


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"kid": None}, "no kid"),
        ({"use": "enc"}, "not a signing key"),
        ({"d": "AQAB"}, "private key"),
        ({"alg": "HS256"}, "is not RS256"),
        ({"kty": "oct", "k": "c2VjcmV0"}, "not RSA or EC"),
        ({"n": "not base64!"}, "not base64url"),
        ({"e": None}, "e is missing"),
    ],
)
def test_unusable_rsa_keys_are_skipped_with_a_reason(
    rsa_private: rsa.RSAPrivateKey, change: dict[str, Any], why: str
) -> None:
    entry = {k: v for k, v in {**jwk(rsa_private, "r1"), **change}.items() if v is not None}
    keys, skipped = parse_jwks(document(entry))
    assert keys == {}
    assert len(skipped) == 1 and why in skipped[0]


def test_ec_keys_must_be_p256_points() -> None:
    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(ValueError, match="not P-256"):
        jwk_key({**jwk(p384, "p"), "crv": "P-384"})
    good = jwk(ec.generate_private_key(ec.SECP256R1()), "e")
    with pytest.raises(ValueError, match="32 bytes"):
        jwk_key({**good, "x": good["x"][:-4]})
    with pytest.raises(ValueError):  # a point off the curve
        jwk_key({**good, "y": good["x"]})


def test_a_short_rsa_key_is_skipped() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(ValueError, match="2048"):
        jwk_key(jwk(small, "s"))


@pytest.mark.parametrize("doc", [b"not json", b"[]", b'{"keys": {}}', b"{}"])
def test_a_document_that_is_not_a_jwks_is_refused(doc: bytes) -> None:
    with pytest.raises(ValueError):
        parse_jwks(doc)


def test_refresh_policy_first_load_periodic_and_rate_limited_unknown_kid(
    rsa_private: rsa.RSAPrivateKey,
) -> None:
    cache = JwksCache(refresh_interval_s=600, min_refresh_interval_s=30)
    assert cache.refresh_needed(None, 0)  # never loaded
    cache.begin_refresh(0)
    cache.update(document(jwk(rsa_private, "r1")), 0)
    assert not cache.refresh_needed("r1", 10)
    assert not cache.refresh_needed("unknown", 29.9)  # rate-limited
    assert cache.refresh_needed("unknown", 30)
    cache.begin_refresh(30)
    assert not cache.refresh_needed("unknown", 59)
    assert not cache.refresh_needed("r1", 599)
    assert cache.refresh_needed("r1", 600)  # periodic
    assert cache.refresh_needed(None, 600)


def test_a_failed_fetch_is_retried_after_the_minimum_interval() -> None:
    cache = JwksCache(refresh_interval_s=600, min_refresh_interval_s=30)
    cache.begin_refresh(0)  # and nothing came back
    assert not cache.refresh_needed(None, 29)
    assert cache.refresh_needed(None, 30)


def test_a_document_without_usable_keys_keeps_the_old_keys(
    rsa_private: rsa.RSAPrivateKey,
) -> None:
    cache = JwksCache()
    cache.update(document(jwk(rsa_private, "r1")), 0)
    with pytest.raises(ValueError, match="no usable key"):
        cache.update(document({"kty": "oct", "kid": "x", "k": "c2VjcmV0"}), 1)
    assert cache.get("r1") is not None
    with pytest.raises(ValueError):
        cache.update(b"<html>", 2)
    assert len(cache) == 1
    assert repr(cache) == "JwksCache(kids=['r1'], refresh_interval_s=600.0)"


class Fetcher:
    """A JWKS endpoint: counts fetches, answers ``doc`` after ``delay`` seconds."""

    def __init__(self, doc: bytes | None, delay: float = 0.0) -> None:
        self.doc = doc
        self.delay = delay
        self.calls = 0

    async def __call__(self) -> bytes | None:
        self.calls += 1
        await asyncio.sleep(self.delay)
        return self.doc


def jwks_verifier(cache: JwksCache) -> JwtVerifier:
    return JwtVerifier(issuer=ISSUER, audience=AUDIENCE, jwks=cache)


@pytest.mark.anyio
async def test_an_unknown_kid_triggers_one_fetch_for_many_waiting_requests(
    rsa_private: rsa.RSAPrivateKey, ec_private: ec.EllipticCurvePrivateKey
) -> None:
    cache = JwksCache(refresh_interval_s=600, min_refresh_interval_s=30)
    cache.update(document(jwk(rsa_private, "old")), 0)
    fetch = Fetcher(document(jwk(rsa_private, "old"), jwk(ec_private, "new")), delay=0.01)
    refresher = JwksRefresher(cache, fetch)
    verifier = jwks_verifier(cache)
    tok = token(claims(), ec_private, "ES256", kid="new")

    async def request(now: float) -> str:
        await refresher.ensure(verifier.jwks_kid(tok), now)
        return verifier.verify(tok, NOW).subject

    results = await asyncio.gather(*(request(100) for _ in range(20)))
    assert results == ["user-1"] * 20
    assert fetch.calls == 1


@pytest.mark.anyio
async def test_unknown_kids_cannot_make_the_gateway_hammer_the_idp(
    rsa_private: rsa.RSAPrivateKey,
) -> None:
    cache = JwksCache(refresh_interval_s=600, min_refresh_interval_s=30)
    fetch = Fetcher(document(jwk(rsa_private, "k1")))
    refresher = JwksRefresher(cache, fetch)
    verifier = jwks_verifier(cache)
    forged = token(claims(), rsa_private, "RS256", kid="made-up")
    for i in range(100):
        await refresher.ensure(verifier.jwks_kid(forged), 100 + i * 0.1)
        with pytest.raises(Unauthenticated) as caught:
            verifier.verify(forged, NOW)
        assert caught.value.reason is Reason.UNKNOWN_KEY_ID
    assert fetch.calls == 1
    await refresher.ensure(verifier.jwks_kid(forged), 130)
    assert fetch.calls == 2


@pytest.mark.anyio
async def test_a_failed_fetch_keeps_the_keys_and_says_why(rsa_private: rsa.RSAPrivateKey) -> None:
    cache = JwksCache(refresh_interval_s=600, min_refresh_interval_s=30)
    cache.update(document(jwk(rsa_private, "k1")), 0)
    refresher = JwksRefresher(cache, Fetcher(None))
    assert await refresher.ensure(None, 600) == ["the JWKS fetch failed"]
    assert cache.get("k1") is not None
    refresher = JwksRefresher(cache, Fetcher(b"oops"))
    problems = await refresher.ensure(None, 700)
    assert problems is not None and "not JSON" in problems[0]
    assert await refresher.ensure(None, 710) is None  # rate-limited: no fetch
    jwks_verifier(cache).verify(token(claims(), rsa_private, "RS256", kid="k1"), NOW)


@pytest.mark.anyio
async def test_a_cancelled_fetch_releases_the_requests_waiting_on_it(
    rsa_private: rsa.RSAPrivateKey,
) -> None:
    cache = JwksCache(refresh_interval_s=600, min_refresh_interval_s=30)
    refresher = JwksRefresher(cache, Fetcher(document(jwk(rsa_private, "k1")), delay=10))
    first = asyncio.ensure_future(refresher.ensure("k1", 0))
    await asyncio.sleep(0)
    waiter = asyncio.ensure_future(refresher.ensure("k1", 0))
    await asyncio.sleep(0)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await asyncio.wait_for(waiter, 1) is None
    assert cache.get("k1") is None


def test_static_keys_come_before_the_jwks(rsa_private: rsa.RSAPrivateKey) -> None:
    cache = JwksCache()
    verifier = JwtVerifier(
        issuer=ISSUER, audience=AUDIENCE, keys=[hmac_key(HS_SECRET, kid="hs")], jwks=cache
    )
    assert verifier.jwks_kid(token(claims(), HS_SECRET, "HS256", kid="hs")) is None
    assert verifier.jwks_kid(token(claims(), rsa_private, "RS256", kid="r")) == "r"
    assert verifier.jwks_kid("garbage") is None
    verifier.verify(token(claims(), HS_SECRET, "HS256", kid="hs"), NOW)
