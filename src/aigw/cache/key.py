"""Canonical cache keys, the cacheability rule, and the client's cache directives.

Pure: no I/O, no clock. A key is a hash of what decides the answer, so two requests
that only differ in key order or in fields that cannot change the answer share it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from hashlib import blake2b
from typing import Any

import orjson

# Request fields that cannot change the answer's content, left out of the key:
# * model: the caller passes the group name separately (aliases of a group share it).
# * stream, stream_options: the answer is stored as JSON and served in either shape;
#   stream_options.include_usage only decides whether the usage chunk is sent.
# * user, safety_identifier: end-user ids for the provider's abuse monitoring; tenant
#   isolation is the namespace's job, not the key's.
# * metadata, store: tags for the provider's stored completions / dashboards.
# * service_tier: latency and price class, not content (a hit costs no tier at all).
# * prompt_cache_key, prompt_cache_retention: routing hints for the provider's
#   prefix cache, not inputs to the model.
# Everything else is kept, including fields whose effect is unknown to us.
IGNORED_FIELDS = frozenset(
    {
        "model",
        "stream",
        "stream_options",
        "user",
        "safety_identifier",
        "metadata",
        "store",
        "service_tier",
        "prompt_cache_key",
        "prompt_cache_retention",
    }
)

MODES = frozenset({"off", "deterministic", "all"})


def cache_key(endpoint: str, model: str, namespace: str, body: dict[str, Any]) -> str:
    """The 32-hex-digit key of a request.

    ``TypeError`` (``orjson.JSONEncodeError``) for a body that is not plain JSON data.
    """
    kept = {name: value for name, value in body.items() if name not in IGNORED_FIELDS}
    canonical = orjson.dumps(
        {"e": str(endpoint), "m": model, "ns": namespace, "b": kept},
        option=orjson.OPT_SORT_KEYS,
    )
    return blake2b(canonical, digest_size=16).hexdigest()


def cacheable(body: dict[str, Any], mode: str, endpoint: str = "") -> bool:
    """Whether the answer to this request may be stored and served again.

    ``deterministic`` admits embeddings, ``temperature == 0`` and requests with an
    integer ``seed``; an absent temperature is not 0 (providers default to 1). ``n``
    does not matter: the set of ``n`` choices is as reproducible as one choice, and ``n``
    is part of the key, so ``n=1`` and ``n=3`` never share an entry.
    """
    if mode not in MODES:
        raise ValueError(f"unknown cache mode {mode!r}")
    if mode == "off":
        return False
    if mode == "all" or endpoint == "embedding":
        return True
    temperature = body.get("temperature")
    seed = body.get("seed")
    return (_is_number(temperature) and temperature == 0) or (
        isinstance(seed, int) and not isinstance(seed, bool)
    )


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class CacheControl:
    """The client's cache directives.

    ``no_cache``: do not answer from the cache (the fresh answer may still be stored).
    ``no_store``: do not store this answer. ``max_age``: accept an entry at most this
    many seconds old. ``ttl``: store with this TTL instead of the configured one.
    """

    no_cache: bool = False
    no_store: bool = False
    max_age: float | None = None
    ttl: float | None = None

    def accepts(self, age: float) -> bool:
        """Whether an entry ``age`` seconds old may answer this request."""
        if self.no_cache:
            return False
        return self.max_age is None or age <= self.max_age

    def store_ttl(self, default_ttl: float) -> float | None:
        """The TTL to store the answer with, or None not to store it."""
        if self.no_store:
            return None
        return default_ttl if self.ttl is None else self.ttl


def parse_cache_control(cache_control: bytes | None, ttl_header: bytes | None) -> CacheControl:
    """Read ``Cache-Control`` (``no-cache``, ``no-store``, ``max-age=N``) and ``X-Cache-TTL``.

    Directive names are case-insensitive and spaces around them are ignored; unknown
    directives and unusable numbers are ignored. Of several ``max-age`` the smallest wins.
    """
    no_cache = no_store = False
    max_age: float | None = None
    text = (cache_control or b"").decode("latin-1")
    for directive in text.split(","):
        name, _, value = directive.partition("=")
        name = name.strip().lower()
        if name == "no-cache":
            no_cache = True
        elif name == "no-store":
            no_store = True
        elif name == "max-age":
            seconds = _seconds(value.strip().strip('"'))
            if seconds is not None:
                max_age = seconds if max_age is None else min(max_age, seconds)
    ttl = None if ttl_header is None else _seconds(ttl_header.decode("latin-1").strip())
    return CacheControl(no_cache, no_store, max_age, ttl)


def _seconds(text: str) -> float | None:
    """A finite, non-negative number of seconds, or None."""
    try:
        seconds = float(text)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def split_last_user(body: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The last user message's text, and the body without it; None if there is none."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return None
    last = messages[-1]
    if not isinstance(last, dict) or last.get("role") != "user":
        return None
    text = _text(last.get("content"))
    if not text:
        return None
    return text, {**body, "messages": messages[:-1]}


def _text(content: object) -> str:
    if isinstance(content, str):
        return content.strip()
    if isinstance(content, list):  # only text parts: an image makes it not a paraphrase
        parts = [p.get("text") for p in content if isinstance(p, dict)]
        if all(p.get("type") == "text" for p in content if isinstance(p, dict)):
            return " ".join(p for p in parts if isinstance(p, str)).strip()
    return ""


def context_of(endpoint: str, model: str, namespace: str, rest: dict[str, Any]) -> str:
    return cache_key(endpoint, model, namespace, rest)
