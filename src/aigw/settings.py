"""The one typed settings tree, loaded once from a YAML file.

String values may use ``${VAR}`` or ``${VAR:-default}``; this is the only module that
reads the environment. Every problem in a file is reported at once, each named by its
path (``models[1].deployments[0].base_url: ...``), as a ``ConfigError``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from aigw.errors import ConfigError

ProviderKind = Literal["openai", "azure", "anthropic", "aigw-worker"]

WORKER_LOAD_HEADER = "x-aigw-load"  # what `aigw worker` reports its load in
DEFAULT_BASE_URLS: dict[str, str] = {
    "aigw-worker": "http://127.0.0.1:9000/v1",
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


PositiveSeconds = Annotated[float, Field(gt=0)]


class TimeoutSettings(_Strict):
    connect_s: PositiveSeconds = 5.0
    first_byte_s: PositiveSeconds = 60.0
    total_s: PositiveSeconds = 600.0


class DeploymentSettings(_Strict):
    id: str = ""
    provider: ProviderKind = "openai"
    base_url: str = ""
    api_key: SecretStr | None = None
    model: str = ""
    weight: Annotated[float, Field(gt=0)] = 1.0
    region: str = ""
    timeouts: TimeoutSettings = TimeoutSettings()
    headers: dict[str, str] = {}
    api_version: str = "2024-10-21"
    ca_file: str = ""
    max_tokens: Annotated[int, Field(gt=0)] = 4096
    priority: Annotated[int, Field(ge=0)] = 0  # tier: 0 first; later tiers only when it is out
    max_concurrency: Annotated[int, Field(ge=0)] = 0  # in-flight cap, 0 = none
    rpm: Annotated[int, Field(ge=0)] = 0  # capacity hints, 0 = unknown
    tpm: Annotated[int, Field(ge=0)] = 0
    load_header: str = ""  # response header where the backend reports its load, 0..1

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if value:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"not an http(s) URL: {value!r}")
            parts.port  # noqa: B018 - raises ValueError on a bad port
        return value

    @field_validator("ca_file")
    @classmethod
    def _ca_file(cls, value: str) -> str:
        if value and not Path(value).is_file():
            raise ValueError(f"no such file: {value!r}")
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, val in value.items():
            if not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", name):
                raise ValueError(f"invalid header name {name!r}")
            if "\r" in val or "\n" in val:
                raise ValueError(f"header {name!r} has a line break in its value")
        return value


Strategy = Literal[
    "weighted", "round-robin", "random", "least-inflight", "p2c-ewma", "consistent-hash", "dynamic"
]
FallbackTrigger = Literal["exhausted", "context_window", "content_policy"]
Fraction = Annotated[float, Field(ge=0, le=1)]


class RetrySettings(_Strict):
    attempts: Annotated[int, Field(ge=1, le=10)] = 3  # the first try included
    backoff_base_s: Annotated[float, Field(ge=0)] = 0.025
    backoff_max_s: Annotated[float, Field(ge=0)] = 1.0
    budget_ratio: Fraction = 0.2  # retries stay under this share of recent requests …
    budget_min_per_s: Annotated[float, Field(ge=0)] = 5.0  # … plus this many per second


class HedgeSettings(_Strict):
    enabled: bool = False
    quantile: Annotated[float, Field(gt=0, lt=1)] = 0.95  # hedge after this latency quantile
    delay_s: Annotated[float, Field(ge=0)] = 0.0  # a fixed delay instead, if > 0
    min_delay_s: Annotated[float, Field(ge=0)] = 0.005


class BreakerSettings(_Strict):
    enabled: bool = True
    failure_threshold: Annotated[int, Field(ge=1)] = 5
    open_s: PositiveSeconds = 5.0
    max_open_s: PositiveSeconds = 60.0
    half_open_requests: Annotated[int, Field(ge=1)] = 1


class OutlierSettings(_Strict):
    enabled: bool = True
    window_s: PositiveSeconds = 10.0
    min_requests: Annotated[int, Field(ge=1)] = 10
    max_error_ratio: Fraction = 0.5
    eject_s: PositiveSeconds = 30.0
    max_eject_s: PositiveSeconds = 300.0


class HealthCheckSettings(_Strict):
    enabled: bool = False
    path: str = "/models"  # appended to each deployment's base_url
    interval_s: PositiveSeconds = 10.0
    timeout_s: PositiveSeconds = 2.0
    unhealthy_after: Annotated[int, Field(ge=1)] = 3
    healthy_after: Annotated[int, Field(ge=1)] = 2


class DegradedSettings(_Strict):
    mode: Literal["error", "response"] = "error"
    retry_after_s: PositiveSeconds = 5.0
    message: str = "The service is degraded; this is a placeholder answer."


class SemanticCacheSettings(_Strict):
    embedding_model: Annotated[str, Field(min_length=1)]  # a model name this gateway serves
    threshold: Annotated[float, Field(gt=0, le=1)] = 0.95


class ModelSettings(_Strict):
    name: Annotated[str, Field(min_length=1)]
    cache: Literal["off", "deterministic", "all"] = "off"
    semantic_cache: SemanticCacheSettings | None = None
    strategy: Strategy = "weighted"
    hash_key: str = "user"  # consistent-hash: "user", "api-key" or "header:NAME"
    deployments: Annotated[list[DeploymentSettings], Field(min_length=1)]
    fallbacks: list[str] = []
    fallback_on: list[FallbackTrigger] = ["exhausted", "context_window", "content_policy"]
    retry: RetrySettings = RetrySettings()
    hedge: HedgeSettings = HedgeSettings()
    breaker: BreakerSettings = BreakerSettings()
    outlier: OutlierSettings = OutlierSettings()
    health_check: HealthCheckSettings = HealthCheckSettings()
    degraded: DegradedSettings = DegradedSettings()
    on_limited: Literal["reject", "cache"] = "reject"  # cache: serve a cached answer if any

    @field_validator("hash_key")
    @classmethod
    def _hash_key(cls, value: str) -> str:
        if value not in ("user", "api-key") and not (
            value.startswith("header:") and len(value) > len("header:")
        ):
            raise ValueError("expected 'user', 'api-key' or 'header:NAME'")
        return value


class ServerSettings(_Strict):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    workers: Annotated[int, Field(ge=1, le=256)] = 1
    max_body_bytes: Annotated[int, Field(gt=0)] = 10 * 1024 * 1024
    max_header_bytes: Annotated[int, Field(ge=1024)] = 64 * 1024
    keepalive_timeout_s: PositiveSeconds = 75.0
    header_timeout_s: PositiveSeconds = 30.0
    request_timeout_s: PositiveSeconds = 600.0
    drain_timeout_s: Annotated[float, Field(ge=0)] = 30.0
    access_log: bool = True


class StateSettings(_Strict):
    backend: Literal["memory", "redis"] = "memory"
    url: str = "redis://127.0.0.1:6379/0"
    timeout_s: PositiveSeconds = 0.25  # per Redis call; a request never waits longer on it


class IdempotencySettings(_Strict):
    enabled: bool = True
    ttl_s: PositiveSeconds = 300.0
    use_request_id: bool = True  # X-Request-ID counts as a key when Idempotency-Key is absent
    max_response_bytes: Annotated[int, Field(gt=0)] = 4 * 1024 * 1024


class CacheSettings(_Strict):
    ttl_s: PositiveSeconds = 3600.0
    l1_max_bytes: Annotated[int, Field(ge=0)] = 64 * 1024 * 1024  # 0 turns L1 off
    l2: bool = True  # use the state backend (Redis) as L2 when it is redis
    max_entry_bytes: Annotated[int, Field(gt=0)] = 4 * 1024 * 1024
    namespace: str = "api-key"  # "api-key", "shared" or "header:NAME"
    semantic_max_entries: Annotated[int, Field(gt=0)] = 10_000
    embedding_timeout_s: PositiveSeconds = 5.0

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        if value not in ("api-key", "shared") and not (
            value.startswith("header:") and len(value) > len("header:")
        ):
            raise ValueError("expected 'api-key', 'shared' or 'header:NAME'")
        return value


Algorithm = Literal["sliding_window_counter", "sliding_window_log", "token_bucket", "gcra"]
Period = Literal["second", "minute", "hour", "day", "month"]
PERIOD_SECONDS = {"second": 1.0, "minute": 60.0, "hour": 3600.0}
DIMENSIONS = ("api_key", "user", "team", "ip", "model", "global")


class LimitRule(_Strict):
    """One limit: ``requests``, ``tokens`` or ``concurrent`` per value of ``by``."""

    name: str = ""  # in metrics and messages; derived from the rest when empty
    by: str = "api_key"  # api_key | user | team | ip | model | global | header:NAME
    requests: Annotated[float, Field(gt=0)] | None = None
    tokens: Annotated[float, Field(gt=0)] | None = None
    concurrent: Annotated[int, Field(gt=0)] | None = None
    per: Period = "minute"  # day and month are calendar (UTC) quotas
    algorithm: Algorithm = "sliding_window_counter"
    burst: Annotated[float, Field(gt=0)] | None = None  # token_bucket, gcra: default = the limit
    models: list[str] = []  # only these model groups; empty = all
    on_backend_error: Literal["open", "closed"] = "open"

    @field_validator("by")
    @classmethod
    def _by(cls, value: str) -> str:
        if value not in DIMENSIONS and not (
            value.startswith("header:") and len(value) > len("header:")
        ):
            raise ValueError(f"expected one of {', '.join(DIMENSIONS)} or 'header:NAME'")
        return value

    @property
    def kind(self) -> str:
        if self.concurrent is not None:
            return "concurrent"
        return "tokens" if self.tokens is not None else "requests"

    @property
    def amount(self) -> float:
        return self.concurrent or self.tokens or self.requests or 0.0


class LimitsSettings(_Strict):
    rules: list[LimitRule] = []
    backend: Literal["auto", "memory", "redis"] = "auto"  # auto: redis when state is redis
    backend_timeout_s: PositiveSeconds = 0.005  # per limit check; then on_backend_error
    token_counting: Literal["exact", "estimate"] = "exact"
    completion_tokens: Annotated[int, Field(ge=0)] = 256  # reserved without max_tokens
    team_header: str = "x-aigw-team"  # where `by: team` reads the caller's team


class SheddingSettings(_Strict):
    max_in_flight: Annotated[int, Field(ge=0)] = 0  # 0 = no load shedding
    queue: Annotated[int, Field(ge=0)] = 64  # waiting beyond the cap, at most
    queue_timeout_s: PositiveSeconds = 0.1
    retry_after_s: PositiveSeconds = 1.0
    priority_header: str = "x-aigw-priority"
    priorities: Annotated[list[str], Field(min_length=1)] = ["interactive", "batch"]
    default_priority: str = "interactive"


class AdminSettings(_Strict):
    key: SecretStr | None = None  # Bearer key for /admin/*; unset = the admin API is off


class Settings(_Strict):
    server: ServerSettings = ServerSettings()
    state: StateSettings = StateSettings()
    idempotency: IdempotencySettings = IdempotencySettings()
    cache: CacheSettings = CacheSettings()
    admin: AdminSettings = AdminSettings()
    limits: LimitsSettings = LimitsSettings()
    shedding: SheddingSettings = SheddingSettings()
    models: Annotated[list[ModelSettings], Field(min_length=1)]


def load_settings(path: str | Path, environ: Mapping[str, str] | None = None) -> Settings:
    return parse_settings(read_yaml(path), os.environ if environ is None else environ)


def read_yaml(path: str | Path) -> object:
    """A settings file's YAML; a ``ConfigError`` naming the line if it cannot be read."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{path}: invalid YAML at {where}: {problem}"]) from None


def parse_settings(data: object, environ: Mapping[str, str]) -> Settings:
    if not isinstance(data, dict):
        raise ConfigError(["(top level): expected a mapping with at least `models:`"])
    problems: list[str] = []
    data = _interpolate(data, environ, "", problems)
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(problems + [_describe(err) for err in exc.errors()]) from None
    settings = _fill_defaults(settings)
    problems += _cross_check(settings)
    if problems:
        raise ConfigError(problems)
    return settings


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _interpolate(node: Any, environ: Mapping[str, str], path: str, problems: list[str]) -> Any:
    if isinstance(node, dict):
        return {k: _interpolate(v, environ, _join(path, str(k)), problems) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate(v, environ, f"{path}[{i}]", problems) for i, v in enumerate(node)]
    if isinstance(node, str) and "${" in node:

        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in environ:
                return environ[name]
            if default is not None:
                return default
            problems.append(f"{path}: environment variable {name} is not set")
            return ""

        return _VAR.sub(substitute, node)
    return node


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _describe(err: Any) -> str:
    path = ""
    for part in err["loc"]:
        path = f"{path}[{part}]" if isinstance(part, int) else _join(path, str(part))
    message = str(err["msg"]).removeprefix("Value error, ")
    return f"{path or '(top level)'}: {message}"


def _fill_defaults(settings: Settings) -> Settings:
    """Derive what a deployment leaves out: its id, upstream model name and base URL."""
    models = []
    for m in settings.models:
        deployments = []
        for i, d in enumerate(m.deployments):
            updates: dict[str, Any] = {}
            if not d.id:
                updates["id"] = m.name if len(m.deployments) == 1 else f"{m.name}-{i}"
            if not d.model:
                updates["model"] = m.name
            if not d.base_url and d.provider in DEFAULT_BASE_URLS:
                updates["base_url"] = DEFAULT_BASE_URLS[d.provider]
            if d.provider == "aigw-worker" and not d.load_header:
                updates["load_header"] = WORKER_LOAD_HEADER
            deployments.append(d.model_copy(update=updates) if updates else d)
        models.append(m.model_copy(update={"deployments": deployments}))
    return settings.model_copy(update={"models": models})


def _cross_check(settings: Settings) -> list[str]:
    problems = []
    names = {m.name for m in settings.models}
    for mi, m in enumerate(settings.models):
        semantic = m.semantic_cache
        if semantic is not None:
            if semantic.embedding_model not in names:
                problems.append(
                    f"models[{mi}].semantic_cache.embedding_model: no model named "
                    f"{semantic.embedding_model!r}"
                )
            if m.cache == "off":
                problems.append(f"models[{mi}].semantic_cache: needs `cache` other than off")
        for fi, fallback in enumerate(m.fallbacks):
            if fallback not in names or fallback == m.name:
                problems.append(f"models[{mi}].fallbacks[{fi}]: no other model named {fallback!r}")
    problems += _check_limits(settings, names)
    seen_models: set[str] = set()
    seen_ids: set[str] = set()
    for mi, m in enumerate(settings.models):
        if m.name in seen_models:
            problems.append(f"models[{mi}].name: duplicate model name {m.name!r}")
        seen_models.add(m.name)
        for di, d in enumerate(m.deployments):
            where = f"models[{mi}].deployments[{di}]"
            if d.id in seen_ids:
                problems.append(f"{where}.id: duplicate deployment id {d.id!r}")
            seen_ids.add(d.id)
            if not d.base_url:
                problems.append(f"{where}.base_url: required for provider {d.provider!r}")
    return problems


def _check_limits(settings: Settings, models: set[str]) -> list[str]:
    problems = []
    seen: set[str] = set()
    for ri, rule in enumerate(settings.limits.rules):
        where = f"limits.rules[{ri}]"
        given = [k for k in ("requests", "tokens", "concurrent") if getattr(rule, k) is not None]
        if len(given) != 1:
            problems.append(f"{where}: set exactly one of requests, tokens, concurrent")
            continue
        if rule.per in ("day", "month") and rule.algorithm != "sliding_window_counter":
            problems.append(f"{where}.algorithm: a per-{rule.per} quota is a calendar counter")
        if rule.burst is not None and rule.algorithm not in ("token_bucket", "gcra"):
            problems.append(f"{where}.burst: only for token_bucket and gcra")
        for mi, model in enumerate(rule.models):
            if model not in models:
                problems.append(f"{where}.models[{mi}]: no model named {model!r}")
        name = rule_name(rule)
        if name in seen:
            problems.append(f"{where}.name: duplicate limit name {name!r}")
        seen.add(name)
    shedding = settings.shedding
    if shedding.default_priority not in shedding.priorities:
        problems.append("shedding.default_priority: not one of shedding.priorities")
    return problems


def rule_name(rule: LimitRule) -> str:
    """A limit's name: as given, or ``<by>-<kind>[-per-<period>]``, e.g.
    ``api_key-requests-per-minute``."""
    if rule.name:
        return rule.name
    base = f"{rule.by}-{rule.kind}"
    return base if rule.concurrent is not None else f"{base}-per-{rule.per}"
