"""Limits as configured: which counter a request is charged to, and on which backend.

A ``Rule`` is one entry of ``limits.rules`` made ready to use: how to read its key
from a request (api key, user, team, ip, model, global or a header), its shared
counter (memory or Redis), and a local twin of that counter, used when the shared one
cannot be reached and the rule fails open.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aigw.limits.backend import (
    LimitSpec,
    LocalConcurrency,
    LocalLimit,
    local_concurrency,
    local_limit,
    redis_concurrency,
    redis_limit,
)
from aigw.settings import PERIOD_SECONDS, LimitRule, LimitsSettings, rule_name

if TYPE_CHECKING:
    from redis import asyncio as aioredis

    from aigw.limits.redis_backend import RedisConcurrency, RedisLimit

from aigw.types import GatewayRequest, end_user

KeyReader = Callable[[GatewayRequest], str | None]


@dataclass(slots=True)
class Rule:
    name: str
    kind: str  # requests | tokens | concurrent
    dimension: str
    key_of: KeyReader
    models: frozenset[str]  # empty: every model group
    fail_open: bool
    # Counted here: the rule's counter with the memory backend; with Redis, the twin
    # used while Redis cannot be reached and the rule fails open.
    local: LocalLimit | None = None
    local_gate: LocalConcurrency | None = None
    shared: RedisLimit | None = None  # requests, tokens on Redis
    shared_gate: RedisConcurrency | None = None  # concurrent on Redis

    @property
    def is_shared(self) -> bool:
        return self.shared is not None or self.shared_gate is not None

    def applies(self, model: str) -> bool:
        return not self.models or model in self.models


def build_rules(settings: LimitsSettings, redis: aioredis.Redis | None) -> list[Rule]:
    timeout = settings.backend_timeout_s
    rules = []
    for config in settings.rules:
        rule = Rule(
            name=rule_name(config),
            kind=config.kind,
            dimension=config.by,
            key_of=key_reader(config.by, settings.team_header),
            models=frozenset(config.models),
            fail_open=config.on_backend_error == "open",
        )
        if config.concurrent is not None:
            rule.local_gate = local_concurrency(config.concurrent, time.time)
            if redis is not None:
                rule.shared_gate = redis_concurrency(config.concurrent, redis, timeout)
        else:
            spec = limit_spec(config)
            rule.local = local_limit(spec, time.time)
            if redis is not None:
                rule.shared = redis_limit(spec, redis, timeout)
        rules.append(rule)
    return rules


def limit_spec(config: LimitRule) -> LimitSpec:
    if config.per in ("day", "month"):
        return LimitSpec("calendar", config.amount, 0.0, config.per)
    window = PERIOD_SECONDS[config.per]
    if config.algorithm in ("token_bucket", "gcra") and config.burst is not None:
        # rate = amount per window, burst as configured: LimitSpec keeps rate = limit/window
        return LimitSpec(config.algorithm, config.burst, window * config.burst / config.amount)
    return LimitSpec(config.algorithm, config.amount, window)


def key_reader(by: str, team_header: str) -> KeyReader:
    if by == "global":
        return lambda req: "*"
    if by == "model":
        return lambda req: req.model
    if by == "ip":
        return lambda req: req.client_ip or None
    if by == "user":
        return lambda req: end_user(req.body)
    if by == "api_key":
        return api_key_id
    name = (team_header if by == "team" else by.removeprefix("header:")).lower().encode()
    return lambda req: _header(req, name)


def api_key_id(req: GatewayRequest) -> str | None:
    """A digest of the caller's key (``Authorization`` or ``x-api-key``): never the key."""
    value = req.headers.get(b"authorization") or req.headers.get(b"x-api-key")
    if not value:
        return None
    return hashlib.blake2b(value, digest_size=12).hexdigest()


def _header(req: GatewayRequest, name: bytes) -> str | None:
    value = req.headers.get(name)
    return value.decode("latin-1")[:256] if value else None
