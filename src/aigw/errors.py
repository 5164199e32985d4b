"""The gateway's error tree.

Every failure a client can see is one of these; each carries an HTTP status, an
OpenAI error ``type`` and a stable ``code``. The HTTP ingress renders them as
``{"error": {"message", "type", "code", "param"}}``.

    GatewayError                      500 internal_error
    ├── InvalidRequest                400 invalid_request
    │   ├── MalformedJSON             400 invalid_json
    │   └── UnsupportedByProvider     400 unsupported_by_provider
    ├── AdminUnauthorized             401 invalid_admin_key
    ├── AdminDisabled                 403 admin_disabled
    ├── RouteNotFound                 404 not_found
    ├── ModelNotFound                 404 model_not_found
    ├── MethodNotAllowed              405 method_not_allowed
    ├── PayloadTooLarge               413 request_too_large
    ├── HeadersTooLarge               431 headers_too_large
    ├── IdempotencyConflict           422 idempotency_key_reused
    ├── RateLimited                   429 rate_limit_exceeded (type requests|tokens|…)
    │   └── CapacityExhausted         429 capacity_exhausted (every deployment at its rpm/tpm)
    ├── UpstreamRejected              4xx passed through from the upstream
    ├── UpstreamError                 502 upstream_error
    │   ├── UpstreamConnectError      502 upstream_connect_error
    │   └── UpstreamProtocolError     502 upstream_protocol_error
    ├── ServiceUnavailable            503 unavailable
    │   ├── NoDeploymentAvailable     503 no_deployment_available
    │   ├── Overloaded                503 overloaded (load shedding)
    │   └── LimitsUnavailable         503 rate_limiter_unavailable (fail-closed limit)
    └── DeadlineExceeded              504 deadline_exceeded

``ConfigError`` is not a request error: it lists every problem found in a
settings file, each named by its path.
"""

from __future__ import annotations

import orjson


class GatewayError(Exception):
    status = 500
    type = "api_error"
    code = "internal_error"

    retry_after: float | None = None  # seconds; sent as Retry-After when set

    def __init__(
        self, message: str, *, param: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.retry_after = retry_after

    def to_dict(self) -> dict[str, object]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class MalformedJSON(InvalidRequest):
    code = "invalid_json"


class UnsupportedByProvider(InvalidRequest):
    code = "unsupported_by_provider"


class AdminUnauthorized(GatewayError):
    status = 401
    type = "authentication_error"
    code = "invalid_admin_key"


class AdminDisabled(GatewayError):
    status = 403
    type = "permission_error"
    code = "admin_disabled"


class RouteNotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class ModelNotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class MethodNotAllowed(GatewayError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class PayloadTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class HeadersTooLarge(GatewayError):
    status = 431
    type = "invalid_request_error"
    code = "headers_too_large"


class IdempotencyConflict(GatewayError):
    status = 422
    type = "invalid_request_error"
    code = "idempotency_key_reused"


class RateLimited(GatewayError):
    """A limit said no. ``type`` names what ran out, as OpenAI does: requests, tokens…"""

    status = 429
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, kind: str, retry_after: float | None = None) -> None:
        super().__init__(message, retry_after=retry_after)
        self.type = kind


class CapacityExhausted(RateLimited):
    """Every deployment of a model group is at its own rpm/tpm: a fallback may help."""

    code = "capacity_exhausted"


class UpstreamRejected(GatewayError):
    """The upstream refused the request (4xx); its status and message pass through."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message, param=param)
        self.status = status
        self.type = type
        self.code = code or f"upstream_{status}"


class UpstreamError(GatewayError):
    """The upstream failed (5xx, bad response, dropped connection)."""

    status = 502
    code = "upstream_error"

    def __init__(
        self, message: str, *, upstream_status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, retry_after=retry_after)
        self.upstream_status = upstream_status


class UpstreamConnectError(UpstreamError):
    code = "upstream_connect_error"


class UpstreamProtocolError(UpstreamError):
    code = "upstream_protocol_error"


class ServiceUnavailable(GatewayError):
    status = 503
    code = "unavailable"


class NoDeploymentAvailable(ServiceUnavailable):
    """Every deployment of the group is open-circuited, ejected or at capacity."""

    code = "no_deployment_available"


class Overloaded(ServiceUnavailable):
    """Load shedding: the gateway is at its in-flight cap and its queue is full."""

    code = "overloaded"


class LimitsUnavailable(ServiceUnavailable):
    """A fail-closed limit could not reach its backend."""

    code = "rate_limiter_unavailable"


class DeadlineExceeded(GatewayError):
    status = 504
    type = "timeout_error"
    code = "deadline_exceeded"


class ConfigError(Exception):
    """A settings file is invalid; ``problems`` holds one ``path: message`` per error."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems
