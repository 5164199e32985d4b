"""The worker's typed settings, from a YAML file or from command-line flags.

The same style as the gateway's ``aigw.settings``: strict pydantic models, ``${VAR}``
interpolation, every problem reported at once and named by its path
(``models[0].kind: ...``) or, for flags, by the flag (``--max-batch-size: ...``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from aigw.errors import ConfigError
from aigw.settings import _describe, _interpolate, read_yaml
from aigw.worker.contract import Kind

_DEVICE = re.compile(r"auto|cpu|cuda(:[0-9]+)?")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WorkerServerSettings(_Strict):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 9000
    max_body_bytes: Annotated[int, Field(gt=0)] = 10 * 1024 * 1024
    drain_timeout_s: Annotated[float, Field(ge=0)] = 30.0


class WorkerModelSettings(_Strict):
    name: Annotated[str, Field(min_length=1)]
    kind: Kind
    path: Annotated[str, Field(min_length=1)]  # a directory, or an installed package's name
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    max_batch_size: Annotated[int, Field(ge=1)] = 32
    max_queue_delay_ms: Annotated[float, Field(ge=0)] = 5.0
    max_queue: Annotated[int, Field(ge=1)] = 256  # items (texts, prompts) waiting or running
    # torch's intra-op threads on CPU, process-wide; 0 = every usable CPU. Fewer is better
    # when the worker shares its cores: spinning threads collapse under contention.
    threads: Annotated[int, Field(ge=0)] = 0
    max_new_tokens: Annotated[int, Field(ge=1)] = 256  # generation: the cap on max_tokens
    max_texts: Annotated[int, Field(ge=1)] = 100  # classification: texts per request

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if any(c.isspace() for c in value):
            raise ValueError(f"a model name has no spaces: {value!r}")
        return value

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not _DEVICE.fullmatch(value):
            raise ValueError(f"expected auto, cpu, cuda or cuda:N, not {value!r}")
        return value


class WorkerSettings(_Strict):
    server: WorkerServerSettings = WorkerServerSettings()
    models: Annotated[list[WorkerModelSettings], Field(min_length=1)]


@dataclass(frozen=True, slots=True)
class Overrides:
    """Flags that override the file (or the defaults); None = not given."""

    host: str | None = None
    port: int | None = None
    device: str | None = None
    max_batch_size: int | None = None
    max_queue_delay_ms: float | None = None
    max_queue: int | None = None
    threads: int | None = None


SERVER_FLAGS = ("host", "port")
MODEL_FLAGS = ("device", "max_batch_size", "max_queue_delay_ms", "max_queue", "threads")


def load_worker_settings(
    path: str | Path, overrides: Overrides = Overrides(), environ: Mapping[str, str] | None = None
) -> WorkerSettings:
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(["(top level): expected a mapping with at least `models:`"])
    problems: list[str] = []
    data = _interpolate(data, os.environ if environ is None else environ, "", problems)
    return _validate(_apply(data, overrides), problems, flag_names=overrides)


def settings_from_flags(
    models: Sequence[str], overrides: Overrides = Overrides()
) -> WorkerSettings:
    """Settings from ``--model NAME=KIND:PATH`` flags (at least one) and the overrides."""
    problems: list[str] = []
    entries = []
    for spec in models:
        entry = parse_model_flag(spec)
        if entry is None:
            problems.append(f"--model {spec}: expected NAME=KIND:PATH, e.g. minilm=embedding:DIR")
        else:
            entries.append(entry)
    if not models:
        problems.append("--model: give at least one --model NAME=KIND:PATH, or --config FILE")
    if problems:
        raise ConfigError(problems)
    return _validate(_apply({"models": entries}, overrides), [], overrides, list(models))


def parse_model_flag(spec: str) -> dict[str, str] | None:
    """``name=kind:path`` → its mapping; None when it has not that shape."""
    name, eq, rest = spec.partition("=")
    kind, colon, path = rest.partition(":")
    if not (eq and colon and name and kind and path):
        return None
    return {"name": name, "kind": kind, "path": path}


def _apply(data: dict[str, Any], overrides: Overrides) -> dict[str, Any]:
    given = {k: v for k, v in asdict(overrides).items() if v is not None}
    server = {k: v for k, v in given.items() if k in SERVER_FLAGS}
    per_model = {k: v for k, v in given.items() if k in MODEL_FLAGS}
    data = dict(data)
    if server:
        old = data.get("server")
        data["server"] = {**(old if isinstance(old, dict) else {}), **server}
    models = data.get("models")
    if per_model and isinstance(models, list):
        data["models"] = [{**m, **per_model} if isinstance(m, dict) else m for m in models]
    return data


def _validate(
    data: dict[str, Any],
    problems: list[str],
    flag_names: Overrides,
    model_flags: list[str] | None = None,
) -> WorkerSettings:
    try:
        settings = WorkerSettings.model_validate(data)
    except ValidationError as exc:
        found = [_name(err, flag_names, model_flags) for err in exc.errors()]
        raise ConfigError(problems + list(dict.fromkeys(found))) from None
    problems += _cross_check(settings)
    if problems:
        raise ConfigError(problems)
    return settings


def _name(err: Any, overrides: Overrides, model_flags: list[str] | None) -> str:
    """A problem named by the flag it came from, else by its path in the file."""
    loc = err["loc"]
    field = str(loc[-1]) if loc else ""
    message = str(err["msg"]).removeprefix("Value error, ")
    if field in (*SERVER_FLAGS, *MODEL_FLAGS) and getattr(overrides, field) is not None:
        return f"--{field.replace('_', '-')}: {message}"
    if model_flags is not None and len(loc) >= 2 and loc[0] == "models":
        return f"--model {model_flags[int(loc[1])]}: {field}: {message}"
    return _describe(err)


def _cross_check(settings: WorkerSettings) -> list[str]:
    problems = []
    seen: set[str] = set()
    for i, model in enumerate(settings.models):
        if model.name in seen:
            problems.append(f"models[{i}].name: duplicate model name {model.name!r}")
        seen.add(model.name)
    return problems
