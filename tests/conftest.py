"""Fixtures that start real processes on 127.0.0.1: the upstream simulator and aigw.

Each process is started with ``--port 0`` and reports its port in its first
``listening`` log line; every wait is bounded and every process is killed at teardown.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

START_TIMEOUT_S = 15.0


class Proc:
    """A child process whose stdout JSON lines are collected in the background."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.args = args
        self.popen = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.port = self._wait_listening()
        self.url = f"http://127.0.0.1:{self.port}"

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for raw in self.popen.stdout:
            with self._lock:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def records(self) -> list[dict[str, Any]]:
        with self._lock:
            lines = list(self.lines)
        out = []
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                out.append(record)
        return out

    def output(self) -> str:
        with self._lock:
            return "\n".join(self.lines)

    def wait_for(self, predicate: Any, timeout_s: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for record in self.records():
                if predicate(record):
                    return record
            time.sleep(0.02)
        raise AssertionError(f"no matching log line in {timeout_s}s; output:\n{self.output()}")

    def _wait_listening(self) -> int:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            for record in self.records():
                if record.get("msg") == "listening":
                    return int(record["port"])
            if self.popen.poll() is not None:
                time.sleep(0.1)
                raise AssertionError(f"{self.args} exited early:\n{self.output()}")
            time.sleep(0.02)
        self.kill()
        raise AssertionError(f"{self.args} did not start in time:\n{self.output()}")

    def signal(self, signum: int) -> None:
        self.popen.send_signal(signum)

    def stop(self, timeout_s: float = 10.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close_pipe()
        return self.popen.returncode

    def _close_pipe(self) -> None:
        self._reader.join(2)
        if self.popen.stdout is not None:
            self.popen.stdout.close()

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(5)
        self._close_pipe()


def http_json(url: str, body: Any = None, timeout_s: float = 10.0) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:
        return json.loads(resp.read())


class Simulator(Proc):
    def configure(self, **knobs: Any) -> None:
        http_json(f"{self.url}/sim/config", knobs)

    def reset(self) -> None:
        http_json(f"{self.url}/sim/reset", {})

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = http_json(f"{self.url}/sim/stats")
        return result

    def wait_cancelled_stream(self, timeout_s: float = 5.0) -> None:
        """Wait until the simulator saw a client abandon a stream (upstream cancelled)."""
        deadline = time.monotonic() + timeout_s
        while self.stats()["streams_cancelled"] == 0:
            assert time.monotonic() < deadline, "the upstream stream was not cancelled"
            time.sleep(0.05)


@pytest.fixture(scope="session")
def simulator() -> Iterator[Simulator]:
    sim = Simulator([sys.executable, "-m", "aigw.simulator", "--host", "127.0.0.1", "--port", "0"])
    yield sim
    sim.stop()


@pytest.fixture
def sim(simulator: Simulator) -> Simulator:
    """The shared simulator, reset to its defaults for this test."""
    simulator.reset()
    return simulator


class Gateway(Proc):
    def __init__(self, config: Path, extra: list[str] | None = None) -> None:
        self.config = config
        args = [sys.executable, "-m", "aigw", "serve", "--config", str(config), "--port", "0"]
        super().__init__(args + (extra or []))
        self.v1 = f"{self.url}/v1"

    def access_logs(self) -> list[dict[str, Any]]:
        return [r for r in self.records() if r.get("msg") == "request"]


def sim_models(sim_url: str, **deployment: Any) -> list[dict[str, Any]]:
    """The standard test model table, all backed by the simulator."""
    return [
        {"name": "gpt-test", "deployments": [
            {"provider": "openai", "base_url": f"{sim_url}/v1", "api_key": "sk-upstream-secret",
             **deployment}]},
        {"name": "aliased", "deployments": [
            {"provider": "openai", "base_url": f"{sim_url}/v1", "model": "upstream-name"}]},
        {"name": "claude-test", "deployments": [
            {"provider": "anthropic", "base_url": sim_url, "api_key": "sk-ant-secret",
             "model": "claude-upstream"}]},
        {"name": "azure-test", "deployments": [
            {"provider": "azure", "base_url": sim_url, "api_key": "azure-secret",
             "model": "my-deployment", "api_version": "2024-10-21"}]},
    ]  # fmt: skip


@pytest.fixture
def write_config(tmp_path: Path) -> Any:
    def write(config: dict[str, Any], name: str = "aigw.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(config))
        return path

    return write


@pytest.fixture
def start_gateway(write_config: Any) -> Iterator[Any]:
    started: list[Gateway] = []

    def start(config: dict[str, Any], extra: list[str] | None = None) -> Gateway:
        gw = Gateway(write_config(config), extra)
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.stop()


@pytest.fixture
def gateway(sim: Simulator, start_gateway: Any) -> Gateway:
    gw: Gateway = start_gateway({"models": sim_models(sim.url)})
    return gw


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    return "asyncio", {"use_uvloop": True}  # what aigw runs on


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (certificate, key), made with openssl."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Redis:
    """A real redis-server on a free loopback port (CI installs the Debian package)."""

    def __init__(self, folder: Path) -> None:
        server = shutil.which("redis-server")
        if server is None:
            pytest.fail("redis-server is not installed: apt-get install redis-server")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = subprocess.Popen(
            [server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(folder)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._pong():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                pytest.fail("redis-server did not start")
            time.sleep(0.05)

    def _pong(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    redis = Redis(tmp_path_factory.mktemp("redis"))
    yield redis.url
    redis.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[Redis]:
    """A redis-server of this test's own, to stop mid-test."""
    redis = Redis(tmp_path)
    yield redis
    redis.stop()
