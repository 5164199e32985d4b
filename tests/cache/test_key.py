from __future__ import annotations

import re
from typing import Any

import pytest

from aigw.cache.key import CacheControl, cache_key, cacheable, parse_cache_control
from aigw.types import Endpoint

BODY: dict[str, Any] = {
    "model": "gpt-4o",
    "messages": [{"role": "user", "content": "Hello"}],
    "temperature": 0.7,
    "top_p": 0.9,
    "max_tokens": 64,
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
}


def key(body: dict[str, Any], endpoint: str = "chat", model: str = "m", ns: str = "t") -> str:
    return cache_key(endpoint, model, ns, body)


def test_key_is_32_hex_digits_and_stable() -> None:
    assert re.fullmatch(r"[0-9a-f]{32}", key(BODY))
    assert key(BODY) == key(dict(BODY))


def test_key_ignores_key_order_at_every_level() -> None:
    reordered = dict(reversed(list(BODY.items())))
    reordered["messages"] = [{"content": "Hello", "role": "user"}]
    assert key(reordered) == key(BODY)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("model", "gpt-4o-mini"),
        ("stream", True),
        ("stream_options", {"include_usage": True}),
        ("user", "alice"),
        ("safety_identifier", "alice-hash"),
        ("metadata", {"team": "a"}),
        ("store", True),
        ("service_tier", "flex"),
        ("prompt_cache_key", "k1"),
    ],
)
def test_key_ignores_fields_that_do_not_change_the_answer(name: str, value: Any) -> None:
    assert key({**BODY, name: value}) == key(BODY)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("messages", [{"role": "user", "content": "Hello!"}]),
        ("temperature", 0.70001),
        ("top_p", 1.0),
        ("seed", 1),
        ("max_tokens", 65),
        ("tools", []),
        ("tool_choice", "required"),
        ("response_format", {"type": "json_object"}),
        ("n", 2),
        ("stop", ["\n"]),
        ("logit_bias", {"50256": -100}),
        ("some_future_field", 1),
    ],
)
def test_key_changes_with_every_kept_field(name: str, value: Any) -> None:
    assert key({**BODY, name: value}) != key(BODY)


def test_key_changes_with_endpoint_model_group_and_namespace() -> None:
    keys = {key(BODY), key(BODY, endpoint="completion"), key(BODY, model="n"), key(BODY, ns="u")}
    assert len(keys) == 4


def test_key_accepts_the_endpoint_enum() -> None:
    assert key(BODY, endpoint=Endpoint.EMBEDDING) == key(BODY, endpoint="embedding")


def test_key_does_not_mix_fields_across_the_envelope() -> None:
    # The namespace and model travel beside the body, not inside it.
    assert cache_key("chat", "m", "t", {"ns": "u"}) != cache_key("chat", "m", "u", {})


@pytest.mark.parametrize(
    ("body", "mode", "endpoint", "expected"),
    [
        ({"temperature": 0}, "off", "chat", False),
        ({"temperature": 0}, "deterministic", "chat", True),
        ({"temperature": 0.0}, "deterministic", "chat", True),
        ({"temperature": 0.2}, "deterministic", "chat", False),
        ({}, "deterministic", "chat", False),  # providers default to temperature 1
        ({"temperature": None}, "deterministic", "chat", False),
        ({"temperature": False}, "deterministic", "chat", False),
        ({"temperature": "0"}, "deterministic", "chat", False),
        ({"temperature": 1.2, "seed": 42}, "deterministic", "chat", True),
        ({"seed": 0}, "deterministic", "completion", True),
        ({"seed": "42"}, "deterministic", "chat", False),
        ({"seed": True}, "deterministic", "chat", False),
        ({"seed": None}, "deterministic", "chat", False),
        ({"temperature": 0, "n": 3}, "deterministic", "chat", True),
        ({"temperature": 0.9, "n": 3}, "deterministic", "chat", False),
        ({"input": "hi"}, "deterministic", "embedding", True),
        ({"input": "hi"}, "deterministic", Endpoint.EMBEDDING, True),
        ({"input": "hi"}, "off", "embedding", False),
        ({"temperature": 1.5}, "all", "chat", True),
        ({}, "all", "messages", True),
    ],
)
def test_cacheable(body: dict[str, Any], mode: str, endpoint: str, expected: bool) -> None:
    assert cacheable(body, mode, endpoint) is expected


def test_cacheable_rejects_an_unknown_mode() -> None:
    with pytest.raises(ValueError, match="cache mode"):
        cacheable({"temperature": 0}, "sometimes")


def test_no_headers_means_no_directives() -> None:
    assert parse_cache_control(None, None) == CacheControl(False, False, None, None)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (b"no-cache", CacheControl(no_cache=True)),
        (b"no-store", CacheControl(no_store=True)),
        (b"max-age=60", CacheControl(max_age=60.0)),
        (b"No-Cache, NO-STORE", CacheControl(no_cache=True, no_store=True)),
        (b"  max-age = 30 ,no-cache ", CacheControl(no_cache=True, max_age=30.0)),
        (b'max-age="15"', CacheControl(max_age=15.0)),
        (b"max-age=0", CacheControl(max_age=0.0)),
        (b"max-age=2.5", CacheControl(max_age=2.5)),
        (b"max-age=60, max-age=10", CacheControl(max_age=10.0)),
        (b"max-age=abc", CacheControl()),
        (b"max-age=-5", CacheControl()),
        (b"max-age=inf, max-age=nan", CacheControl()),
        (b"max-age", CacheControl()),
        (b"private, must-revalidate, ,", CacheControl()),
        (b"no-cachex, xno-store", CacheControl()),
        (b"", CacheControl()),
    ],
)
def test_parse_cache_control(header: bytes, expected: CacheControl) -> None:
    assert parse_cache_control(header, None) == expected


@pytest.mark.parametrize(
    ("ttl", "expected"),
    [
        (b"300", 300.0),
        (b" 12.5 ", 12.5),
        (b"0", 0.0),
        (b"-1", None),
        (b"soon", None),
        (b"", None),
        (b"1e999", None),
        (b"\xff", None),
    ],
)
def test_ttl_header(ttl: bytes, expected: float | None) -> None:
    assert parse_cache_control(b"no-store", ttl) == CacheControl(no_store=True, ttl=expected)


def test_accepts_honours_no_cache_and_max_age() -> None:
    assert CacheControl().accepts(1e9)
    assert not CacheControl(no_cache=True).accepts(0.0)
    assert CacheControl(max_age=10.0).accepts(10.0)
    assert not CacheControl(max_age=10.0).accepts(10.5)


def test_store_ttl() -> None:
    assert CacheControl().store_ttl(60.0) == 60.0
    assert CacheControl(ttl=5.0).store_ttl(60.0) == 5.0
    assert CacheControl(no_store=True, ttl=5.0).store_ttl(60.0) is None
