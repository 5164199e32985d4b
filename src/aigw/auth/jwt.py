"""JWT bearer tokens: verify one and turn its claims into an ``Identity``.

Only HS256, RS256 and ES256 are accepted, and only with a key bound to that algorithm
(``aigw.auth.jwks``). A token names its key by ``kid``: a configured key first, then the
JWKS. A token without ``kid``, or with one found in neither, is tried against the
configured keys that have no kid (several during a secret's rotation). ``iss`` and
``aud`` must match the configuration; ``exp`` is required; ``exp``, ``nbf`` and ``iat``
are checked against the ``now`` passed in (Unix time) with ``leeway_s`` either way.

Claims map to identity fields by dotted paths (``org.team``). A claim name that itself
holds dots (Auth0's ``https://example.com/team``) is looked up whole first. Scopes and
models are a list of strings or one space-separated string; a missing ``models`` claim
means every model.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import jwt
import orjson
from jwt.types import Options

from aigw.auth.identity import Identity, Method, Reason, Unauthenticated
from aigw.auth.jwks import JwksCache, VerificationKey

ALGORITHMS: Final = frozenset({"HS256", "RS256", "ES256"})
DEFAULT_LEEWAY_S: Final = 30.0
MAX_TOKEN_CHARS: Final = 8192

_SEGMENT = re.compile(r"[A-Za-z0-9_-]{1,1024}")

# Signature, iss and aud by PyJWT; the times here, against the clock passed in.
_OPTIONS: Final[Options] = {
    "verify_signature": True,
    "verify_iss": True,
    "verify_aud": True,
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_sub": False,
    "verify_jti": False,
    "require": [],
    "enforce_minimum_key_length": True,
}


@dataclass(frozen=True, slots=True)
class ClaimMapping:
    """Which claim fills which ``Identity`` field; ``None`` leaves the field empty."""

    subject: str = "sub"
    user: str | None = None
    team: str | None = None
    scopes: str | None = "scope"
    models: str | None = None


class JwtVerifier:
    """Verifies tokens of one issuer (or a few) for one audience (or a few)."""

    def __init__(
        self,
        *,
        issuer: str | Collection[str],
        audience: str | Collection[str],
        keys: Iterable[VerificationKey] = (),
        jwks: JwksCache | None = None,
        claims: ClaimMapping = ClaimMapping(),
        leeway_s: float = DEFAULT_LEEWAY_S,
        max_token_chars: int = MAX_TOKEN_CHARS,
    ) -> None:
        self.issuer = _names("issuer", issuer)
        self.audience = _names("audience", audience)
        self._by_kid: dict[str, VerificationKey] = {}
        self._unnamed: list[VerificationKey] = []
        for key in keys:
            if key.algorithm not in ALGORITHMS:
                raise ValueError(f"algorithm {key.algorithm!r} is not one of {sorted(ALGORITHMS)}")
            if key.kid is None:
                self._unnamed.append(key)
            elif self._by_kid.setdefault(key.kid, key) is not key:
                raise ValueError(f"two keys with kid {key.kid!r}")
        if not (self._by_kid or self._unnamed or jwks is not None):
            raise ValueError("a JWT verifier needs keys, a JWKS, or both")
        if not 0 <= leeway_s <= 300:
            raise ValueError("leeway_s must be between 0 and 300")
        self.jwks = jwks
        self.claims = claims
        self.leeway_s = leeway_s
        self.max_token_chars = max_token_chars

    def jwks_kid(self, token: str) -> str | None:
        """The token's kid when the JWKS is where it would be found, else ``None``:
        what to pass to ``JwksRefresher.ensure`` before ``verify``."""
        if self.jwks is None or len(token) > self.max_token_chars:
            return None
        header = _header(token)
        kid = header.get("kid") if header is not None else None
        return kid if isinstance(kid, str) and kid not in self._by_kid else None

    def verify(self, token: str, now: float) -> Identity:
        """The token's identity; ``Unauthenticated`` with the reason if it proves none."""
        header = _header(token) if len(token) <= self.max_token_chars else None
        if header is None:
            raise Unauthenticated(Reason.MALFORMED_CREDENTIALS)
        algorithm = header.get("alg")
        if algorithm not in ALGORITHMS:
            raise Unauthenticated(Reason.UNSUPPORTED_ALGORITHM)
        kid = header.get("kid")
        if not (kid is None or isinstance(kid, str)):
            raise Unauthenticated(Reason.MALFORMED_CREDENTIALS)
        keys = self._keys_for(kid)
        if not keys:
            raise Unauthenticated(Reason.UNKNOWN_KEY_ID)
        candidates = [key for key in keys if key.algorithm == algorithm]
        if not candidates:
            raise Unauthenticated(Reason.ALGORITHM_MISMATCH)
        claims = self._decode(token, candidates)
        self._check_times(claims, now)
        return self._identity(claims)

    def _keys_for(self, kid: str | None) -> list[VerificationKey]:
        """The key named by ``kid``; else the configured keys that have no kid."""
        if kid is not None:
            key = self._by_kid.get(kid) or (self.jwks.get(kid) if self.jwks is not None else None)
            if key is not None:
                return [key]
        return self._unnamed

    def _decode(self, token: str, candidates: list[VerificationKey]) -> dict[str, Any]:
        for key in candidates:
            try:
                return jwt.decode(
                    token,
                    key.key,
                    algorithms=[key.algorithm],
                    audience=self.audience,
                    issuer=self.issuer,
                    options=_OPTIONS,
                )
            except jwt.InvalidSignatureError:
                continue
            except jwt.InvalidAudienceError:
                raise Unauthenticated(Reason.BAD_AUDIENCE) from None
            except jwt.InvalidIssuerError:
                raise Unauthenticated(Reason.BAD_ISSUER) from None
            except jwt.MissingRequiredClaimError:
                raise Unauthenticated(Reason.MISSING_CLAIM) from None
            except jwt.InvalidAlgorithmError:
                raise Unauthenticated(Reason.ALGORITHM_MISMATCH) from None
            except jwt.PyJWTError:
                raise Unauthenticated(Reason.MALFORMED_CREDENTIALS) from None
        raise Unauthenticated(Reason.BAD_SIGNATURE)

    def _check_times(self, claims: Mapping[str, Any], now: float) -> None:
        leeway = self.leeway_s
        exp = _time_claim(claims, "exp")
        if exp is None:
            raise Unauthenticated(Reason.MISSING_CLAIM)
        if now >= exp + leeway:
            raise Unauthenticated(Reason.EXPIRED)
        for name in ("nbf", "iat"):
            at = _time_claim(claims, name)
            if at is not None and at > now + leeway:
                raise Unauthenticated(Reason.NOT_YET_VALID)

    def _identity(self, claims: Mapping[str, Any]) -> Identity:
        mapping = self.claims
        subject = _text(claims, mapping.subject)
        if subject is None:
            raise Unauthenticated(Reason.MISSING_CLAIM)
        return Identity(
            subject=subject,
            method=Method.JWT,
            user=_text(claims, mapping.user),
            team=_text(claims, mapping.team),
            scopes=_words(claims, mapping.scopes) or frozenset(),
            models=_words(claims, mapping.models),
        )

    def __repr__(self) -> str:
        return (
            f"JwtVerifier(issuer={sorted(self.issuer)!r}, audience={sorted(self.audience)!r}, "
            f"kids={sorted(self._by_kid)!r}, unnamed_keys={len(self._unnamed)}, "
            f"jwks={self.jwks!r})"
        )


def _header(token: str) -> dict[str, Any] | None:
    """The token's JOSE header, unverified; ``None`` if it is not one.

    PyJWT parses the whole token again when it verifies it; its own header peek costs
    that twice over (it checks every character of every segment in Python).
    """
    segment, dot, _ = token.partition(".")
    if not dot or not _SEGMENT.fullmatch(segment):
        return None
    try:
        header = orjson.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (binascii.Error, orjson.JSONDecodeError):
        return None
    return header if isinstance(header, dict) else None


def _names(what: str, value: str | Collection[str]) -> frozenset[str]:
    names = frozenset([value] if isinstance(value, str) else value)
    if not names or not all(isinstance(name, str) and name for name in names):
        raise ValueError(f"{what} must be one or more non-empty strings")
    return names


def _time_claim(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise Unauthenticated(Reason.BAD_CLAIM)
    return float(value)


def claim(claims: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted ``path``, or ``None``; a whole name with dots wins."""
    if path in claims:
        return claims[path]
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _text(claims: Mapping[str, Any], path: str | None) -> str | None:
    if path is None:
        return None
    value = claim(claims, path)
    if value is None:
        return None
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # numeric ids
    raise Unauthenticated(Reason.BAD_CLAIM)


def _words(claims: Mapping[str, Any], path: str | None) -> frozenset[str] | None:
    if path is None:
        return None
    value = claim(claims, path)
    if value is None:
        return None
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return frozenset(value)
    raise Unauthenticated(Reason.BAD_CLAIM)
