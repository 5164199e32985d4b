"""Who is calling, and why they were turned away.

Every authenticator answers an ``Identity`` or raises an ``AuthFailure``:

    AuthFailure              (base; never raised itself)
    ├── Unauthenticated      401: no credentials, or credentials that do not prove anything
    └── Forbidden            403: a known caller that may not do this (address, model)

``reason`` is a ``Reason``: a stable, low-cardinality code for logs and metrics. It must
not reach the client: a client sees one fixed message per class (``public_message``), so
that an unknown key, a revoked key and a bad signature look the same from outside and
nothing tells whether a key exists. Neither carries any part of a credential.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from aigw.auth.network import AllowList


class Method(StrEnum):
    """How the caller proved who it is."""

    API_KEY = "api_key"
    JWT = "jwt"


class Reason(StrEnum):
    # Credentials absent or unusable.
    MISSING_CREDENTIALS = "missing_credentials"
    MALFORMED_CREDENTIALS = "malformed_credentials"
    # API keys: unknown, revoked and expired keys share one reason on purpose.
    INVALID_KEY = "invalid_key"
    # JWT.
    UNSUPPORTED_ALGORITHM = "unsupported_algorithm"
    UNKNOWN_KEY_ID = "unknown_key_id"
    ALGORITHM_MISMATCH = "algorithm_mismatch"
    BAD_SIGNATURE = "bad_signature"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    BAD_ISSUER = "bad_issuer"
    BAD_AUDIENCE = "bad_audience"
    MISSING_CLAIM = "missing_claim"
    BAD_CLAIM = "bad_claim"
    # Request signing (BAD_SIGNATURE above too).
    MISSING_SIGNATURE = "missing_signature"
    MALFORMED_SIGNATURE = "malformed_signature"
    STALE_TIMESTAMP = "stale_timestamp"
    REPLAYED_NONCE = "replayed_nonce"
    # Forbidden.
    ADDRESS_NOT_ALLOWED = "address_not_allowed"
    MODEL_NOT_ALLOWED = "model_not_allowed"
    SCOPE_MISSING = "scope_missing"


class AuthFailure(Exception):
    """Base of the auth failures; ``reason`` is for the operator, never for the client."""

    public_message = "Authentication failed"

    def __init__(self, reason: Reason) -> None:
        super().__init__(reason.value)
        self.reason = reason


class Unauthenticated(AuthFailure):
    """401: the request does not prove who sent it."""

    public_message = "Invalid or missing credentials"


class Forbidden(AuthFailure):
    """403: the caller is known but may not make this request."""

    public_message = "Not allowed"


@dataclass(frozen=True, slots=True)
class Identity:
    """The authenticated caller, as later stages (limits, routing, spend) see it.

    ``subject`` names the credential: an API key's public prefix or a token's subject.
    ``models`` is ``None`` when every model is allowed; ``networks`` is ``None`` when
    any client address is.
    """

    subject: str
    method: Method
    user: str | None = None
    team: str | None = None
    scopes: frozenset[str] = frozenset()
    models: frozenset[str] | None = None
    networks: AllowList | None = None

    def allows_model(self, model: str) -> bool:
        return self.models is None or model in self.models

    def allows_address(self, ip: str) -> bool:
        return self.networks is None or self.networks.allows(ip)

    def check(self, *, model: str, ip: str, scope: str | None = None) -> None:
        """Raise ``Forbidden`` unless this caller may use ``model`` from ``ip``."""
        if not self.allows_address(ip):
            raise Forbidden(Reason.ADDRESS_NOT_ALLOWED)
        if scope is not None and scope not in self.scopes:
            raise Forbidden(Reason.SCOPE_MISSING)
        if not self.allows_model(model):
            raise Forbidden(Reason.MODEL_NOT_ALLOWED)
