"""Process life: config reload on SIGHUP, drain on SIGTERM, workers, CLI commands."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from tests.conftest import Gateway, Proc, Simulator, sim_models

MESSAGES: Any = [{"role": "user", "content": "hi"}]


def sdk(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key="k", max_retries=0, timeout=15)


def model_ids(gw: Gateway) -> set[str]:
    with sdk(gw.v1) as c:
        return {m.id for m in c.models.list()}


def wait_until(check: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_sighup_reloads_and_keeps_old_config_on_error(sim: Simulator, start_gateway: Any) -> None:
    gw: Gateway = start_gateway({"models": sim_models(sim.url)[:1]})
    assert model_ids(gw) == {"gpt-test"}
    gw.config.write_text(yaml.safe_dump({"models": sim_models(sim.url)[:2]}))
    gw.signal(signal.SIGHUP)
    wait_until(lambda: model_ids(gw) == {"gpt-test", "aliased"})
    gw.config.write_text("models:\n  - name: broken\n    deployments: []\n")
    gw.signal(signal.SIGHUP)
    failed = gw.wait_for(lambda r: r.get("msg", "").startswith("config reload failed"))
    assert failed["problems"] == ["models[0].deployments: List should have at least 1 item after "
                                  "validation, not 0"]  # fmt: skip
    assert model_ids(gw) == {"gpt-test", "aliased"}
    with sdk(gw.v1) as c:
        assert c.chat.completions.create(model="aliased", messages=MESSAGES).choices


def test_sigterm_drains_in_flight_stream(sim: Simulator, start_gateway: Any) -> None:
    sim.configure(tokens_per_s=20, completion_tokens=20)  # a stream of about one second
    gw: Gateway = start_gateway({"models": sim_models(sim.url)})
    got: list[str] = []
    finish: list[str] = []
    errors: list[BaseException] = []

    def consume() -> None:
        try:
            with sdk(gw.v1) as c:
                for ch in c.chat.completions.create(
                    model="gpt-test", messages=MESSAGES, stream=True
                ):
                    if ch.choices:
                        got.append(ch.choices[0].delta.content or "")
                        finish.append(ch.choices[0].finish_reason or "")
        except BaseException as exc:
            errors.append(exc)

    reader = threading.Thread(target=consume)
    reader.start()
    wait_until(lambda: len(got) >= 2)
    gw.signal(signal.SIGTERM)
    gw.wait_for(lambda r: r.get("msg") == "draining")
    with pytest.raises(urllib.error.URLError):  # no longer accepting
        urllib.request.urlopen(f"{gw.url}/health", timeout=2)
    reader.join(15)
    assert not errors and "".join(finish) == "stop"
    assert len("".join(got).split()) == 20
    assert gw.popen.wait(10) == 0
    assert gw.wait_for(lambda r: r.get("msg") == "request")["status"] == 200


def test_workers_share_one_port(sim: Simulator, start_gateway: Any) -> None:
    gw: Gateway = start_gateway({"models": sim_models(sim.url)}, ["--workers", "2"])
    pids = set()
    wait_until(lambda: len([r for r in gw.records() if r.get("msg") == "listening"]) == 2)
    with sdk(gw.v1) as c:
        for _ in range(40):
            c.chat.completions.create(model="gpt-test", messages=MESSAGES)
    for record in gw.records():
        if record.get("msg") == "listening":
            pids.add(record["pid"])
    assert len(pids) == 2
    assert gw.stop() == 0
    assert gw.wait_for(lambda r: r.get("msg") == "supervisor stopped")


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aigw", *args], capture_output=True, text=True, timeout=30
    )


def test_check_config(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("models:\n  - name: m\n    deployments: [{provider: openai}]\n")
    out = run_cli("check-config", str(good))
    assert out.returncode == 0 and "ok (1 models, 1 deployments)" in out.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  - name: m\n    deployments: [{provider: nope, base_url: x}]\n")
    out = run_cli("check-config", str(bad))
    assert out.returncode == 1
    assert "models[0].deployments[0].provider: Input should be" in out.stderr
    assert "models[0].deployments[0].base_url: not an http(s) URL" in out.stderr
    assert "Traceback" not in out.stderr
    assert run_cli("version").stdout.startswith("aigw ")


def test_serve_refuses_bad_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: []\n")
    out = run_cli("serve", "--config", str(bad), "--port", "0")
    assert out.returncode == 1 and "models: List should have at least 1 item" in out.stdout
    assert "Traceback" not in out.stdout + out.stderr


def test_demo_mode_serves_both_dialects() -> None:
    demo = Proc([sys.executable, "-m", "aigw", "serve", "--demo", "--port", "0"])
    try:
        with sdk(f"{demo.url}/v1") as c:
            for model in ("demo-gpt", "demo-claude"):
                resp = c.chat.completions.create(model=model, messages=MESSAGES)
                assert resp.choices[0].message.content
    finally:
        assert demo.stop() == 0


def test_serve_refuses_bad_overrides(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("models:\n  - name: m\n    deployments: [{provider: openai}]\n")
    out = run_cli("serve", "--config", str(good), "--workers", "0", "--port", "0")
    assert (
        out.returncode == 1
        and "--workers: Input should be greater than or equal to 1" in out.stdout
    )
