from __future__ import annotations

import base64
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from aigw.auth.identity import Method, Reason, Unauthenticated
from aigw.auth.jwks import hmac_key, pem_key
from aigw.auth.jwt import ClaimMapping, JwtVerifier, claim
from tests.auth.conftest import (
    AUDIENCE,
    HS_SECRET,
    ISSUER,
    NOW,
    claims,
    public_pem,
    raw_token,
    token,
)


@pytest.fixture
def verifier(rsa_private: rsa.RSAPrivateKey, ec_private: ec.EllipticCurvePrivateKey) -> JwtVerifier:
    return JwtVerifier(
        issuer=ISSUER,
        audience=AUDIENCE,
        keys=[
            hmac_key(HS_SECRET, kid="hs"),
            pem_key(public_pem(rsa_private), "RS256", kid="rs"),
            pem_key(public_pem(ec_private), "ES256", kid="es"),
        ],
    )


def refused(verifier: JwtVerifier, tok: str, now: float = NOW) -> Reason:
    with pytest.raises(Unauthenticated) as caught:
        verifier.verify(tok, now)
    assert str(caught.value) == caught.value.reason.value  # nothing of the token in it
    return caught.value.reason


@pytest.mark.parametrize(("algorithm", "kid"), [("HS256", "hs"), ("RS256", "rs"), ("ES256", "es")])
def test_each_algorithm_verifies(
    verifier: JwtVerifier,
    rsa_private: rsa.RSAPrivateKey,
    ec_private: ec.EllipticCurvePrivateKey,
    algorithm: str,
    kid: str,
) -> None:
    key: Any = {"HS256": HS_SECRET, "RS256": rsa_private, "ES256": ec_private}[algorithm]
    identity = verifier.verify(token(claims(), key, algorithm, kid), NOW)
    assert identity.subject == "user-1"
    assert identity.method is Method.JWT
    assert identity.models is None and identity.scopes == frozenset()


def test_a_token_signed_with_another_key_is_refused(verifier: JwtVerifier) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert refused(verifier, token(claims(), other, "RS256", "rs")) is Reason.BAD_SIGNATURE
    assert refused(verifier, token(claims(), b"x" * 32, "HS256", "hs")) is Reason.BAD_SIGNATURE


def test_a_tampered_payload_is_refused(verifier: JwtVerifier) -> None:
    head, _, sig = token(claims(), HS_SECRET, "HS256", "hs").split(".")
    forged = token(claims(sub="admin"), HS_SECRET, "HS256", "hs").split(".")[1]
    assert refused(verifier, f"{head}.{forged}.{sig}") is Reason.BAD_SIGNATURE


def test_expiry_honours_the_leeway(verifier: JwtVerifier) -> None:
    tok = token(claims(exp=int(NOW)), HS_SECRET, "HS256", "hs")
    verifier.verify(tok, NOW + 29)
    assert refused(verifier, tok, NOW + 30) is Reason.EXPIRED


def test_not_before_and_issued_at_in_the_future_are_refused(verifier: JwtVerifier) -> None:
    nbf = token(claims(nbf=int(NOW) + 60), HS_SECRET, "HS256", "hs")
    assert refused(verifier, nbf) is Reason.NOT_YET_VALID
    verifier.verify(nbf, NOW + 31)
    iat = token(claims(iat=int(NOW) + 60), HS_SECRET, "HS256", "hs")
    assert refused(verifier, iat) is Reason.NOT_YET_VALID


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"exp": None}, Reason.MISSING_CLAIM),
        ({"exp": "tomorrow"}, Reason.BAD_CLAIM),
        ({"exp": True}, Reason.BAD_CLAIM),
        ({"nbf": [1]}, Reason.BAD_CLAIM),
        ({"iss": "https://evil.example.com/"}, Reason.BAD_ISSUER),
        ({"iss": None}, Reason.MISSING_CLAIM),
        ({"aud": "someone-else"}, Reason.BAD_AUDIENCE),
        ({"aud": None}, Reason.MISSING_CLAIM),
        ({"sub": None}, Reason.MISSING_CLAIM),
        ({"sub": {"id": 1}}, Reason.BAD_CLAIM),
    ],
)
def test_claim_failures(verifier: JwtVerifier, overrides: dict[str, Any], reason: Reason) -> None:
    assert refused(verifier, token(claims(**overrides), HS_SECRET, "HS256", "hs")) is reason


def test_an_audience_list_that_names_us_is_accepted(verifier: JwtVerifier) -> None:
    verifier.verify(token(claims(aud=["other", AUDIENCE]), HS_SECRET, "HS256", "hs"), NOW)


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "HS512", "PS256", "EdDSA", ""])
def test_other_algorithms_are_refused_before_any_key_is_touched(
    verifier: JwtVerifier, alg: str
) -> None:
    tok = raw_token({"alg": alg, "typ": "JWT", "kid": "hs"}, claims(), hmac_key=None)
    assert refused(verifier, tok) is Reason.UNSUPPORTED_ALGORITHM


def test_hs256_signed_with_the_rsa_public_key_is_refused(
    verifier: JwtVerifier, rsa_private: rsa.RSAPrivateKey
) -> None:
    # The classic confusion: the public key is public, so an attacker can HMAC with it.
    forged = raw_token({"alg": "HS256", "kid": "rs"}, claims(sub="admin"), public_pem(rsa_private))
    assert refused(verifier, forged) is Reason.ALGORITHM_MISMATCH
    without_kid = JwtVerifier(
        issuer=ISSUER, audience=AUDIENCE, keys=[pem_key(public_pem(rsa_private), "RS256")]
    )
    forged = raw_token({"alg": "HS256"}, claims(sub="admin"), public_pem(rsa_private))
    assert refused(without_kid, forged) is Reason.ALGORITHM_MISMATCH


def test_a_token_naming_a_key_of_another_algorithm_is_refused(
    verifier: JwtVerifier, ec_private: ec.EllipticCurvePrivateKey
) -> None:
    assert (
        refused(verifier, token(claims(), ec_private, "ES256", "rs")) is Reason.ALGORITHM_MISMATCH
    )


def test_an_unknown_kid_is_refused(verifier: JwtVerifier) -> None:
    assert refused(verifier, token(claims(), HS_SECRET, "HS256", "nope")) is Reason.UNKNOWN_KEY_ID


def test_unnamed_keys_serve_tokens_without_kid_during_a_rotation() -> None:
    old, new = b"o" * 32, b"n" * 32
    rotating = JwtVerifier(issuer=ISSUER, audience=AUDIENCE, keys=[hmac_key(old), hmac_key(new)])
    rotating.verify(token(claims(), old, "HS256"), NOW)
    rotating.verify(token(claims(), new, "HS256"), NOW)
    rotating.verify(token(claims(), new, "HS256", kid="set-by-the-idp"), NOW)
    assert refused(rotating, token(claims(), b"x" * 32, "HS256")) is Reason.BAD_SIGNATURE


def _segment(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


HS_HEADER = _segment(b'{"alg":"HS256","kid":"hs"}')


@pytest.mark.parametrize(
    "tok",
    [
        "",
        "abc",
        "a.b.c",
        "a.b",
        "x" * 9000,
        "é.b.c",
        _segment(b"[1]") + ".e30.",
        _segment(b'{"alg":"HS256","kid":7}') + ".e30.",
        HS_HEADER + ".@@.x",
        raw_token({"alg": "HS256", "kid": "hs"}, ["a signed list"], HS_SECRET),
        HS_HEADER + ".e30",
    ],
)
def test_garbage_is_malformed(verifier: JwtVerifier, tok: str) -> None:
    assert refused(verifier, tok) is Reason.MALFORMED_CREDENTIALS


def test_claims_map_to_the_identity_by_dotted_paths() -> None:
    mapping = ClaimMapping(
        subject="sub",
        user="email",
        team="org.team",
        scopes="scp",
        models="https://aigw.example.com/models",
    )
    verifier = JwtVerifier(
        issuer=ISSUER, audience=AUDIENCE, keys=[hmac_key(HS_SECRET)], claims=mapping
    )
    payload = claims(
        email="a@example.com",
        org={"team": "search"},
        scp=["chat", "embed"],
        **{"https://aigw.example.com/models": "gpt-4o-mini claude-sonnet"},
    )
    identity = verifier.verify(token(payload, HS_SECRET, "HS256"), NOW)
    assert identity.user == "a@example.com"
    assert identity.team == "search"
    assert identity.scopes == {"chat", "embed"}
    assert identity.models == {"gpt-4o-mini", "claude-sonnet"}


def test_claim_lookup_prefers_a_whole_name_then_walks_dots() -> None:
    claims_ = {"a.b": 1, "a": {"b": 2, "c": {"d": 3}}, "n": 5}
    assert claim(claims_, "a.b") == 1
    assert claim(claims_, "a.c.d") == 3
    assert claim(claims_, "a.x") is None
    assert claim(claims_, "n.x") is None


def test_badly_typed_mapped_claims_are_refused() -> None:
    verifier = JwtVerifier(
        issuer=ISSUER,
        audience=AUDIENCE,
        keys=[hmac_key(HS_SECRET)],
        claims=ClaimMapping(team="team", models="models"),
    )
    for payload in (claims(team=["a", "b"]), claims(models=[1, 2]), claims(models={"a": 1})):
        assert refused(verifier, token(payload, HS_SECRET, "HS256")) is Reason.BAD_CLAIM
    assert verifier.verify(token(claims(team=42), HS_SECRET, "HS256"), NOW).team == "42"


def test_keys_must_fit_their_algorithm(
    rsa_private: rsa.RSAPrivateKey, ec_private: ec.EllipticCurvePrivateKey
) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        hmac_key(b"short")
    with pytest.raises(ValueError, match="PEM"):
        hmac_key(public_pem(rsa_private))
    with pytest.raises(ValueError, match="does not fit"):
        pem_key(public_pem(rsa_private), "ES256")
    with pytest.raises(ValueError, match="does not fit"):
        pem_key(public_pem(ec_private), "RS256")
    with pytest.raises(ValueError, match="RS256 or ES256"):
        pem_key(public_pem(rsa_private), "HS256")
    with pytest.raises(ValueError, match="not a PEM"):
        pem_key("-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n", "RS256")
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(ValueError, match="2048"):
        pem_key(public_pem(small), "RS256")
    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(ValueError, match="P-256"):
        pem_key(public_pem(p384), "ES256")


def test_verifier_config_is_checked() -> None:
    with pytest.raises(ValueError, match="needs keys"):
        JwtVerifier(issuer=ISSUER, audience=AUDIENCE)
    with pytest.raises(ValueError, match="two keys"):
        JwtVerifier(
            issuer=ISSUER,
            audience=AUDIENCE,
            keys=[hmac_key(HS_SECRET, kid="a"), hmac_key(b"z" * 32, kid="a")],
        )
    with pytest.raises(ValueError, match="audience"):
        JwtVerifier(issuer=ISSUER, audience=[], keys=[hmac_key(HS_SECRET)])


def test_reprs_hide_the_shared_secret(verifier: JwtVerifier) -> None:
    key = hmac_key(HS_SECRET, kid="hs")
    assert repr(key) == "VerificationKey(algorithm='HS256', kid='hs')"
    text = repr(verifier)
    assert HS_SECRET.decode() not in text and "hs" in text
