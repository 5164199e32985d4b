"""The processes under test: nginx (instant upstream and reference hop), simulators, aigw."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from procs import (
    Child,
    ProcessGroup,
    free_port,
    wait_http_ok,
    wait_listening_line,
    wait_tcp,
)

REPO = Path(__file__).resolve().parent.parent
NGINX_TEMPLATE = Path(__file__).with_name("nginx.conf.tmpl")
START_TIMEOUT_S = 20.0

# Model names clients send to aigw; each maps to one upstream below.
MODEL_NGINX = "bench-nginx"
MODEL_SLOW = "bench-slow"
MODEL_TTFB = "bench-ttfb"
MODEL_FANOUT = "bench-fanout"
UPSTREAM_MODEL = "bench-model"


def python_env() -> dict[str, str]:
    """The environment for `python -m aigw…`: this checkout's src/ first on the path."""
    env = dict(os.environ)
    src = str(REPO / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
    return env


# --- nginx ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Nginx:
    child: Child
    upstream_port: int
    proxy_port: int


def render_nginx_conf(prefix: Path, upstream_port: int, proxy_port: int) -> str:
    text = NGINX_TEMPLATE.read_text()
    for key, value in {
        "PREFIX": str(prefix),
        "UPSTREAM_PORT": str(upstream_port),
        "PROXY_PORT": str(proxy_port),
    }.items():
        text = text.replace("{{" + key + "}}", value)
    return text


def start_nginx(group: ProcessGroup) -> Nginx:
    prefix = group.workdir / "nginx"
    prefix.mkdir()
    upstream_port = free_port()
    proxy_port = free_port()
    while proxy_port == upstream_port:
        proxy_port = free_port()
    (prefix / "nginx.conf").write_text(render_nginx_conf(prefix, upstream_port, proxy_port))
    argv = ["nginx", "-p", f"{prefix}/", "-c", "nginx.conf", "-e", "stderr"]
    child = group.spawn("nginx", argv)
    wait_tcp(child, proxy_port, START_TIMEOUT_S)
    wait_tcp(child, upstream_port, START_TIMEOUT_S)
    return Nginx(child, upstream_port, proxy_port)


# --- upstream simulator ---------------------------------------------------------------


@dataclass(frozen=True)
class SimulatorSpec:
    name: str
    latency_ms: int
    tokens_per_s: float
    completion_tokens: int

    @property
    def interval_s(self) -> float:
        """Expected time between two streamed tokens."""
        return 1.0 / self.tokens_per_s if self.tokens_per_s else 0.0


def start_simulator(group: ProcessGroup, spec: SimulatorSpec) -> Child:
    argv = [
        sys.executable,
        "-m",
        "aigw.simulator",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--latency-ms",
        str(spec.latency_ms),
        "--tokens-per-s",
        f"{spec.tokens_per_s:g}",
        "--completion-tokens",
        str(spec.completion_tokens),
    ]
    child = group.spawn(f"sim-{spec.name}", argv, python_env())
    wait_listening_line(child, START_TIMEOUT_S)
    return child


# --- aigw -----------------------------------------------------------------------------


def gateway_config(
    upstream_ports: dict[str, int],
    access_log: bool,
    extra_models: Sequence[dict[str, Any]] = (),
    admin_key: str = "",
    sections: Mapping[str, object] | None = None,
) -> dict[str, object]:
    """One model per upstream; all speak OpenAI, so aigw takes its fast path. Then any
    `extra_models` as given; `admin_key` turns the admin API on; `sections` adds
    top-level settings (`state`, `cache`)."""
    config: dict[str, object] = {
        "server": {"access_log": access_log},
        **(sections or {}),
        "models": [
            {
                "name": name,
                "deployments": [
                    {
                        "provider": "openai",
                        "base_url": f"http://127.0.0.1:{port}/v1",
                        "model": UPSTREAM_MODEL,
                    }
                ],
            }
            for name, port in upstream_ports.items()
        ]
        + list(extra_models),
    }
    if admin_key:
        config["admin"] = {"key": admin_key}
    return config


def write_gateway_config(
    path: Path,
    upstream_ports: dict[str, int],
    access_log: bool,
    extra_models: Sequence[dict[str, Any]] = (),
    admin_key: str = "",
    sections: Mapping[str, object] | None = None,
) -> Path:
    # JSON is valid YAML, and needs nothing outside the stdlib.
    config = gateway_config(upstream_ports, access_log, extra_models, admin_key, sections)
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path


def gateway_argv(config: Path, port: int, workers: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "aigw",
        "serve",
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]


def start_gateway(group: ProcessGroup, config: Path, workers: int, name: str = "aigw") -> Child:
    """Start aigw on a kernel-chosen port; return once /health answers 200."""
    child = group.spawn(name, gateway_argv(config, 0, workers), python_env())
    port = wait_listening_line(child, START_TIMEOUT_S)
    wait_http_ok(child, port, "/health", START_TIMEOUT_S)
    return child


def gateway_log_problems(child: Child, limit: int = 10) -> tuple[int, list[str]]:
    """Count the gateway's log lines at warning level or worse; return a few samples.

    Lines that are not JSON (a traceback on stderr) count as problems too.
    """
    count, samples = 0, list[str]()
    for path in (child.stdout_path, child.stderr_path):
        with path.open("rb") as stream:
            for raw in stream:
                if _is_problem(raw):
                    count += 1
                    if len(samples) < limit:
                        samples.append(raw.decode(errors="replace").rstrip()[:300])
    return count, samples


def _is_problem(raw: bytes) -> bool:
    if not raw.strip():
        return False
    try:
        line = json.loads(raw)
    except ValueError:
        return True
    if not isinstance(line, dict):
        return True
    return str(line.get("level", "info")).lower() not in ("debug", "info")


def keep_gateway_logs(child: Child, out: Path, name: str = "aigw") -> None:
    """Copy a stopped gateway's stderr, and the last 500 lines of its stdout, to `out`."""
    shutil.copyfile(child.stderr_path, out / f"{name}.stderr")
    lines = child.stdout_path.read_bytes().splitlines(keepends=True)
    (out / f"{name}.stdout.tail").write_bytes(b"".join(lines[-500:]))
