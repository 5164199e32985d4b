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

ProviderKind = Literal["openai", "azure", "anthropic"]

DEFAULT_BASE_URLS: dict[str, str] = {
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


class ModelSettings(_Strict):
    name: Annotated[str, Field(min_length=1)]
    strategy: Literal["weighted", "round-robin"] = "weighted"
    deployments: Annotated[list[DeploymentSettings], Field(min_length=1)]


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


class Settings(_Strict):
    server: ServerSettings = ServerSettings()
    models: Annotated[list[ModelSettings], Field(min_length=1)]


def load_settings(path: str | Path, environ: Mapping[str, str] | None = None) -> Settings:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{path}: invalid YAML at {where}: {problem}"]) from None
    return parse_settings(data, os.environ if environ is None else environ)


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
            deployments.append(d.model_copy(update=updates) if updates else d)
        models.append(m.model_copy(update={"deployments": deployments}))
    return settings.model_copy(update={"models": models})


def _cross_check(settings: Settings) -> list[str]:
    problems = []
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
