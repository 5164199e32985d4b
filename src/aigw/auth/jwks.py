"""Keys that verify JWTs: from config (a shared secret, a PEM public key) or from a JSON
Web Key Set, and the policy that keeps a JWKS fresh.

Each ``VerificationKey`` is bound to exactly one algorithm when it is made, from config
or from the key's own type, never from a token: a token whose header names another
algorithm is refused (no ``none``, no HS256 verified with an RSA public key).

``JwksCache`` is the pure part: keys by ``kid`` and when to fetch the document again
(periodically, and on an unknown ``kid`` at most once per ``min_refresh_interval_s``).
``JwksRefresher`` awaits an injected ``fetch`` when the cache says so, one fetch at a
time; the HTTP call itself lives with whoever builds it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ec import (
    SECP256R1,
    EllipticCurvePublicKey,
)
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey, RSAPublicNumbers
from cryptography.hazmat.primitives.serialization import load_pem_public_key

HMAC_ALGORITHM: Final = "HS256"
ASYMMETRIC_ALGORITHMS: Final = frozenset({"RS256", "ES256"})
MIN_HMAC_SECRET_BYTES: Final = 32
MIN_RSA_BITS: Final = 2048

PublicKey = RSAPublicKey | EllipticCurvePublicKey


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """One key and the one algorithm it verifies; the key material stays out of repr."""

    algorithm: str
    key: bytes | PublicKey = field(repr=False)
    kid: str | None = None


def hmac_key(secret: bytes, *, kid: str | None = None) -> VerificationKey:
    """An HS256 shared secret, at least 32 bytes."""
    if len(secret) < MIN_HMAC_SECRET_BYTES:
        raise ValueError(f"an HS256 secret must be at least {MIN_HMAC_SECRET_BYTES} bytes")
    if secret.lstrip().startswith(b"-----BEGIN"):
        raise ValueError("an HS256 secret must not be a PEM key")
    return VerificationKey(HMAC_ALGORITHM, bytes(secret), kid)


def pem_key(pem: str | bytes, algorithm: str, *, kid: str | None = None) -> VerificationKey:
    """An RS256 or ES256 public key in PEM; the key's type must fit the algorithm."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise ValueError("not a PEM public key") from None
    return VerificationKey(algorithm, _checked(key, algorithm), kid)


def _checked(key: object, algorithm: str) -> PublicKey:
    if algorithm == "RS256" and isinstance(key, RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise ValueError(f"an RS256 key must have at least {MIN_RSA_BITS} bits")
        return key
    if algorithm == "ES256" and isinstance(key, EllipticCurvePublicKey):
        if not isinstance(key.curve, SECP256R1):
            raise ValueError("an ES256 key must be on the P-256 curve")
        return key
    if algorithm not in ASYMMETRIC_ALGORITHMS:
        raise ValueError(f"a public key verifies RS256 or ES256, not {algorithm!r}")
    raise ValueError(f"the key does not fit {algorithm}")


def jwk_key(jwk: Mapping[str, Any]) -> VerificationKey:
    """An RSA or P-256 signing key from one JWK; ``ValueError`` says why one is not."""
    kid = jwk.get("kid")
    if not isinstance(kid, str) or not kid:
        raise ValueError("no kid")
    if jwk.get("use", "sig") != "sig":
        raise ValueError(f"kid {kid!r}: not a signing key")
    if "d" in jwk:
        raise ValueError(f"kid {kid!r}: holds a private key")
    kty = jwk.get("kty")
    algorithm = {"RSA": "RS256", "EC": "ES256"}.get(kty) if isinstance(kty, str) else None
    if algorithm is None:
        raise ValueError(f"kid {kid!r}: key type {kty!r} is not RSA or EC")
    if jwk.get("alg", algorithm) != algorithm:
        raise ValueError(f"kid {kid!r}: alg {jwk.get('alg')!r} is not {algorithm}")
    if algorithm == "RS256":
        key: PublicKey = RSAPublicNumbers(_b64int(jwk, "e"), _b64int(jwk, "n")).public_key()
    else:
        if jwk.get("crv") != "P-256":
            raise ValueError(f"kid {kid!r}: curve {jwk.get('crv')!r} is not P-256")
        point = b"\x04" + _b64(jwk, "x", 32) + _b64(jwk, "y", 32)
        key = EllipticCurvePublicKey.from_encoded_point(SECP256R1(), point)
    return VerificationKey(algorithm, _checked(key, algorithm), kid)


def _b64(jwk: Mapping[str, Any], name: str, size: int | None = None) -> bytes:
    value = jwk.get(name)
    if not isinstance(value, str):
        raise ValueError(f"{name} is missing")
    try:
        data = base64.b64decode(value + "=" * (-len(value) % 4), altchars=b"-_", validate=True)
    except binascii.Error:
        raise ValueError(f"{name} is not base64url") from None
    if size is not None and len(data) != size:
        raise ValueError(f"{name} is not {size} bytes")
    return data


def _b64int(jwk: Mapping[str, Any], name: str) -> int:
    return int.from_bytes(_b64(jwk, name), "big")


def parse_jwks(
    document: bytes | str, max_keys: int = 64
) -> tuple[dict[str, VerificationKey], list[str]]:
    """The usable keys of a JWKS document by kid, and why each other key was skipped.

    ``ValueError`` if the document is not a JWKS at all.
    """
    try:
        parsed = orjson.loads(document)
    except orjson.JSONDecodeError:
        raise ValueError("the JWKS document is not JSON") from None
    entries = parsed.get("keys") if isinstance(parsed, dict) else None
    if not isinstance(entries, list):
        raise ValueError('the JWKS document has no "keys" list')
    keys: dict[str, VerificationKey] = {}
    skipped: list[str] = []
    for entry in entries[:max_keys]:
        if not isinstance(entry, dict):
            skipped.append("an entry is not an object")
            continue
        try:
            key = jwk_key(entry)
        except ValueError as exc:
            skipped.append(str(exc))
            continue
        assert key.kid is not None
        keys[key.kid] = key
    return keys, skipped


class JwksCache:
    """The keys of one JWKS by kid, and when to fetch the document again.

    ``now`` is any monotonic clock in seconds, the same for every call.
    """

    def __init__(
        self,
        *,
        refresh_interval_s: float = 600.0,
        min_refresh_interval_s: float = 30.0,
        max_keys: int = 64,
    ) -> None:
        if not 0 < min_refresh_interval_s <= refresh_interval_s:
            raise ValueError("need 0 < min_refresh_interval_s <= refresh_interval_s")
        self.refresh_interval_s = refresh_interval_s
        self.min_refresh_interval_s = min_refresh_interval_s
        self.max_keys = max_keys
        self._keys: dict[str, VerificationKey] = {}
        self._attempted = -math.inf  # last fetch started
        self._loaded = -math.inf  # last document applied

    def get(self, kid: str) -> VerificationKey | None:
        return self._keys.get(kid)

    def refresh_needed(self, kid: str | None, now: float) -> bool:
        """Whether to fetch now: never more often than ``min_refresh_interval_s``; then
        when the keys are ``refresh_interval_s`` old (or were never loaded), or ``kid``
        is not among them."""
        if now - self._attempted < self.min_refresh_interval_s:
            return False
        if kid is not None and kid not in self._keys:
            return True
        return now - self._loaded >= self.refresh_interval_s

    def begin_refresh(self, now: float) -> None:
        """A fetch starts now: the next one waits ``min_refresh_interval_s``."""
        self._attempted = now

    def update(self, document: bytes | str, now: float) -> list[str]:
        """Replace the keys with the document's; returns why keys were skipped.

        A document without one usable key is refused (``ValueError``) and the old keys
        stay: an identity provider's bad minute must not log everyone out.
        """
        keys, skipped = parse_jwks(document, self.max_keys)
        if not keys:
            raise ValueError("the JWKS document has no usable key: " + "; ".join(skipped))
        self._keys = keys
        self._loaded = now
        return skipped

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return (
            f"JwksCache(kids={sorted(self._keys)!r}, refresh_interval_s={self.refresh_interval_s})"
        )


Fetch = Callable[[], Awaitable[bytes | None]]
"""Fetches the JWKS document: its bytes, or ``None`` when the fetch failed (the fetcher
logs why). It must have its own deadline."""


class JwksRefresher:
    """Keeps a ``JwksCache`` fresh with ``fetch``: at most one fetch in flight, and
    requests whose kid is unknown wait for the fetch in flight instead of failing."""

    def __init__(self, cache: JwksCache, fetch: Fetch) -> None:
        self.cache = cache
        self._fetch = fetch
        self._in_flight: asyncio.Future[None] | None = None

    async def ensure(self, kid: str | None, now: float) -> list[str] | None:
        """Fetch if the cache asks for it; returns the problems of a fetch made (the
        skipped keys, or why the document was refused), ``None`` when none was made."""
        cache = self.cache
        if self._in_flight is not None:
            if kid is not None and cache.get(kid) is None:
                await asyncio.shield(self._in_flight)
            return None
        if not cache.refresh_needed(kid, now):
            return None
        cache.begin_refresh(now)
        self._in_flight = in_flight = asyncio.get_running_loop().create_future()
        try:
            document = await self._fetch()
        finally:
            # Waiters wake at the loop's next turn, after the update below: it does
            # not await.
            self._in_flight = None
            in_flight.set_result(None)
        if document is None:
            return ["the JWKS fetch failed"]
        try:
            return cache.update(document, now)
        except ValueError as exc:
            return [str(exc)]
