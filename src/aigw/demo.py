"""``aigw serve --demo``: the gateway with the upstream simulator embedded.

For trying aigw on a fresh machine without API keys. The simulator is a test tool
that answers with canned text; the gateway in front of it is the real one. Two
models are served: ``demo-gpt`` (OpenAI dialect) and ``demo-claude`` (Anthropic
dialect, translated by aigw).
"""

from __future__ import annotations

import socket

from aigw.observability.logs import JsonLog
from aigw.serve import serve
from aigw.settings import Settings, parse_settings
from aigw.simulator.knobs import Knobs
from aigw.simulator.server import SimulatorServer


def demo_settings(sim_port: int = 1) -> Settings:
    sim = f"http://127.0.0.1:{sim_port}"
    return parse_settings(
        {
            "models": [
                {
                    "name": "demo-gpt",
                    "deployments": [{"provider": "openai", "base_url": f"{sim}/v1"}],
                },
                {
                    "name": "demo-claude",
                    "deployments": [{"provider": "anthropic", "base_url": sim}],
                },
            ]
        },
        {},
    )


async def run_with_simulator(settings: Settings, log: JsonLog, sock: socket.socket | None) -> None:
    simulator = SimulatorServer(Knobs(tokens_per_s=30.0))
    _, sim_port = await simulator.start("127.0.0.1", 0)
    log.info("demo: upstream simulator started", port=sim_port)
    models = demo_settings(sim_port).models
    try:
        await serve(settings.model_copy(update={"models": models}), None, log, sock)
    finally:
        await simulator.shutdown()
