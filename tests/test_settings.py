from __future__ import annotations

from pathlib import Path

import pytest

from aigw.errors import ConfigError
from aigw.settings import load_settings, parse_settings


def problems(data: object, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_settings(data, env or {})
    return info.value.problems


def test_minimal_file_fills_defaults() -> None:
    s = parse_settings({"models": [{"name": "gpt", "deployments": [{"provider": "openai"}]}]}, {})
    d = s.models[0].deployments[0]
    assert (d.id, d.model, d.base_url) == ("gpt", "gpt", "https://api.openai.com/v1")
    assert s.server.port == 8080 and s.server.workers == 1


def test_every_error_is_named_by_path() -> None:
    found = problems(
        {
            "models": [
                {"name": "a", "deployments": [
                    {"provider": "nope", "base_url": "ftp://x", "weight": 0,
                     "api_key": "${MISSING}"}
                ]},
                {"name": "a", "deployments": [{"provider": "azure"}]},
            ],
            "server": {"port": 70000, "typo": 1},
        }
    )  # fmt: skip
    text = "\n".join(found)
    assert "models[0].deployments[0].api_key: environment variable MISSING is not set" in text
    assert "models[0].deployments[0].provider: Input should be" in text
    assert "models[0].deployments[0].base_url: not an http(s) URL" in text
    assert "models[0].deployments[0].weight:" in text
    assert "server.port:" in text and "server.typo: Extra inputs are not permitted" in text


def test_cross_checks() -> None:
    found = problems(
        {"models": [
            {"name": "a", "deployments": [{"provider": "azure"}]},
            {"name": "a", "deployments": [{"id": "x", "base_url": "http://h/v1"}]},
        ]}
    )  # fmt: skip
    assert "models[0].deployments[0].base_url: required for provider 'azure'" in found
    assert "models[1].name: duplicate model name 'a'" in found


def test_env_interpolation_and_defaults() -> None:
    s = parse_settings(
        {"models": [{"name": "m", "deployments": [
            {"base_url": "${BASE:-http://127.0.0.1:9/v1}", "api_key": "${KEY}"}]}]},
        {"KEY": "sk-123"},
    )  # fmt: skip
    d = s.models[0].deployments[0]
    assert d.base_url == "http://127.0.0.1:9/v1"
    assert d.api_key is not None and d.api_key.get_secret_value() == "sk-123"
    assert "sk-123" not in repr(s)


def test_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [\n  - name: x\n")
    with pytest.raises(ConfigError, match="invalid YAML at line"):
        load_settings(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "absent.yaml")
    assert problems([1, 2]) == ["(top level): expected a mapping with at least `models:`"]


def test_limit_rules_checked_and_named() -> None:
    models = [{"name": "gpt", "deployments": [{"provider": "openai"}]}]
    assert problems({"models": models, "limits": {"rules": [{"by": "nobody", "requests": 1}]}}) == [
        "limits.rules[0].by: expected one of api_key, user, team, ip, model, global or "
        "'header:NAME'"
    ]
    cross = problems({"models": models, "limits": {"rules": [
        {"by": "api_key"},
        {"requests": 1, "tokens": 5},
        {"tokens": 5, "per": "day", "algorithm": "gcra"},
        {"tokens": 5, "burst": 3},
        {"name": "scoped", "requests": 5, "models": ["nope"]},
        {"concurrent": 2}, {"concurrent": 3},
    ]}, "shedding": {"default_priority": "vip"}})  # fmt: skip
    assert cross == [
        "limits.rules[0]: set exactly one of requests, tokens, concurrent",
        "limits.rules[1]: set exactly one of requests, tokens, concurrent",
        "limits.rules[2].algorithm: a per-day quota is a calendar counter",
        "limits.rules[3].burst: only for token_bucket and gcra",
        "limits.rules[4].models[0]: no model named 'nope'",
        "limits.rules[6].name: duplicate limit name 'api_key-concurrent'",
        "shedding.default_priority: not one of shedding.priorities",
    ]
