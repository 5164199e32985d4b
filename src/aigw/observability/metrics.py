"""Prometheus metrics, ``aigw_`` prefixed, owned by one object per process.

Label values are bounded: models and deployments come from settings (an unknown model
a client sends is counted as ``unknown``), routes from the route table. Children are
cached so that recording a request is a few dict look-ups, not label resolution.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.metrics import MetricWrapperBase

from aigw import __version__
from aigw.types import Usage

LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0, 300.0,
)  # fmt: skip

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self) -> None:
        # The _created series only double the scrape size; the library leaves this untyped.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "aigw_requests", "Requests answered, by route, model and HTTP status.",
            ["route", "model", "status"], registry=r,
        )  # fmt: skip
        self.request_seconds = Histogram(
            "aigw_request_duration_seconds", "Time from request received to answer complete.",
            ["route", "model"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.upstream_seconds = Histogram(
            "aigw_upstream_duration_seconds", "Upstream call time, send to last byte.",
            ["deployment"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.upstream_requests = Counter(
            "aigw_upstream_requests", "Upstream calls by deployment and outcome.",
            ["deployment", "outcome"], registry=r,
        )  # fmt: skip
        self.in_flight = Gauge("aigw_in_flight_requests", "Requests being handled now.", registry=r)
        self.tokens = Counter(
            "aigw_tokens", "Tokens reported by upstreams, by model and kind.",
            ["model", "kind"], registry=r,
        )  # fmt: skip
        self.reloads = Counter(
            "aigw_config_reloads", "Configuration reloads by result.", ["result"], registry=r
        )
        self.state_errors = Counter(
            "aigw_state_errors", "State backend calls that failed or timed out, by feature.",
            ["feature"], registry=r,
        )  # fmt: skip
        self.idempotent_replays = Counter(
            "aigw_idempotent_replays", "Answers replayed for a repeated idempotency key.",
            registry=r,
        )  # fmt: skip
        self.retries = Counter(
            "aigw_retries", "Retry decisions by model group: retried, budget_exhausted, "
            "no_time_left.", ["model", "decision"], registry=r,
        )  # fmt: skip
        self.hedges = Counter(
            "aigw_hedges", "Hedged second attempts sent, by model group.", ["model"], registry=r
        )
        self.fallbacks = Counter(
            "aigw_fallbacks", "Requests moved to a fallback model group.",
            ["model", "to", "reason"], registry=r,
        )  # fmt: skip
        self.ejections = Counter(
            "aigw_outlier_ejections", "Deployments ejected by outlier detection.",
            ["deployment"], registry=r,
        )  # fmt: skip
        self.breaker_transitions = Counter(
            "aigw_breaker_transitions", "Circuit breaker state changes.",
            ["deployment", "to"], registry=r,
        )  # fmt: skip
        self.breaker_open = Gauge(
            "aigw_breaker_open", "1 while a deployment's breaker is open (0.5 half-open).",
            ["deployment"], registry=r,
        )  # fmt: skip
        self.health_checks = Counter(
            "aigw_health_checks", "Active health check results.",
            ["deployment", "result"], registry=r,
        )  # fmt: skip
        self.degraded = Counter(
            "aigw_degraded_responses", "Degraded placeholder answers served.", ["model"],
            registry=r,
        )  # fmt: skip
        self.cache_requests = Counter(
            "aigw_cache_requests", "Cache lookups: hits by level (l1, l2), misses (all).",
            ["level", "result"], registry=r,
        )  # fmt: skip
        self.cache_joins = Counter(
            "aigw_cache_single_flight_joins", "Requests that joined an identical one in flight.",
            registry=r,
        )  # fmt: skip
        self.cache_evictions = Counter(
            "aigw_cache_evictions", "L1 entries evicted to stay within its byte bound.", registry=r
        )
        self.cache_similarity = Histogram(
            "aigw_cache_semantic_similarity", "Cosine similarity of the best semantic match.",
            buckets=(0.5, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.99, 1.0), registry=r,
        )  # fmt: skip
        self.cache_semantic_errors = Counter(
            "aigw_cache_semantic_errors", "Semantic lookups skipped: the embedding failed.",
            registry=r,
        )  # fmt: skip
        self.cache_entries = Gauge("aigw_cache_entries", "Entries in the L1 cache.", registry=r)
        self.cache_bytes = Gauge("aigw_cache_bytes", "Bytes held by the L1 cache.", registry=r)
        self.limit_checks = Counter(
            "aigw_limit_checks", "Limit checks by limit, dimension and result (admitted, "
            "limited).", ["limit", "dimension", "result"], registry=r,
        )  # fmt: skip
        self.limit_remaining = Gauge(
            "aigw_limit_remaining", "What a limit had left at its last check; only limits by "
            "model or global (per-key values would be unbounded).", ["limit"], registry=r,
        )  # fmt: skip
        self.limit_backend_seconds = Histogram(
            "aigw_limit_backend_duration_seconds", "Time of one shared (Redis) limit check.",
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1),
            registry=r,
        )  # fmt: skip
        self.limit_backend_errors = Counter(
            "aigw_limit_backend_errors", "Limit checks whose backend failed, by limit and the "
            "policy applied (open, closed).", ["limit", "policy"], registry=r,
        )  # fmt: skip
        self.limit_stale_answers = Counter(
            "aigw_limit_cached_answers", "Limited requests answered from the cache instead.",
            ["model"], registry=r,
        )  # fmt: skip
        self.shed = Counter(
            "aigw_shed_requests", "Requests turned away by load shedding, by priority class and "
            "reason (queue_full, timeout, displaced).", ["priority", "reason"], registry=r,
        )  # fmt: skip
        self.shed_queue = Gauge(
            "aigw_shed_queue_depth", "Requests waiting for an in-flight slot.", registry=r
        )
        self.capacity_skips = Counter(
            "aigw_deployment_capacity_skips", "Deployments passed over because they were at "
            "their own rpm or tpm.", ["deployment", "limit"], registry=r,
        )  # fmt: skip
        info = Gauge("aigw_build_info", "aigw version.", ["version"], registry=r)
        info.labels(__version__).set(1)
        self.known_models: frozenset[str] = frozenset()
        self._children: dict[tuple[object, ...], MetricWrapperBase] = {}

    def _child(self, metric: MetricWrapperBase, *labels: str) -> MetricWrapperBase:
        key = (metric, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def model_label(self, model: str) -> str:
        return model if model in self.known_models else "unknown"

    def request_done(
        self, route: str, model: str, status: int, seconds: float, usage: Usage | None
    ) -> None:
        model = self.model_label(model)
        self._child(self.requests, route, model, str(status)).inc()  # type: ignore[attr-defined]
        self._child(self.request_seconds, route, model).observe(seconds)  # type: ignore[attr-defined]
        if usage is not None:
            self._child(self.tokens, model, "prompt").inc(usage.prompt_tokens)  # type: ignore[attr-defined]
            self._child(self.tokens, model, "completion").inc(usage.completion_tokens)  # type: ignore[attr-defined]

    def upstream_done(self, deployment: str, outcome: str, seconds: float | None) -> None:
        self._child(self.upstream_requests, deployment, outcome).inc()  # type: ignore[attr-defined]
        if seconds is not None:
            self._child(self.upstream_seconds, deployment).observe(seconds)  # type: ignore[attr-defined]

    def limit_checked(self, limit: str, dimension: str, allowed: bool, remaining: float) -> None:
        result = "admitted" if allowed else "limited"
        self._child(self.limit_checks, limit, dimension, result).inc()  # type: ignore[attr-defined]
        if dimension in ("global", "model"):
            self._child(self.limit_remaining, limit).set(remaining)  # type: ignore[attr-defined]

    def breaker_changed(self, deployment: str, old: str, new: str) -> None:
        self.breaker_transitions.labels(deployment, new).inc()
        value = {"closed": 0.0, "half-open": 0.5, "open": 1.0}.get(new, 0.0)
        self.breaker_open.labels(deployment).set(value)

    def render(self) -> bytes:
        return generate_latest(self.registry)
