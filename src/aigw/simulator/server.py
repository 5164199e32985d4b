"""Wiring and command line of the upstream simulator.

``SimulatorServer`` puts a ``Simulator`` behind the project's own ``HttpServer``;
``main`` parses the flags, serves on uvloop, prints one JSON "listening" line (so a
caller of ``--port 0`` learns the port) and drains on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import ssl
import sys
from collections.abc import Callable

import orjson
import uvloop

from aigw.http.server import HttpServer, ServerLimits
from aigw.simulator.app import Simulator
from aigw.simulator.knobs import PARSERS, Knobs, update

GRACE_S = 2.0


class SimulatorServer:
    """A simulator listening on one socket. Create it inside a running event loop."""

    def __init__(self, knobs: Knobs, limits: ServerLimits | None = None) -> None:
        self.simulator = Simulator(knobs)
        self.http = HttpServer(self.simulator.handle, limits, on_error=_log_error)

    async def start(
        self, host: str = "127.0.0.1", port: int = 0, tls: ssl.SSLContext | None = None
    ) -> tuple[str, int]:
        return await self.http.start(host, port, tls=tls)

    async def shutdown(self, grace_s: float = GRACE_S) -> None:
        self.simulator.closing.set()  # requests hung by the ``timeout`` fault let go
        await self.http.shutdown(grace_s)


def _log(level: str, msg: str, **fields: object) -> None:
    line = orjson.dumps({"level": level, "msg": msg, **fields})
    stream = sys.stdout if level == "info" else sys.stderr
    stream.write(line.decode() + "\n")
    stream.flush()


def _log_error(exc: BaseException) -> None:
    _log("error", "handler failed", error=repr(exc))


def _flag(name: str) -> Callable[[str], object]:
    parser = PARSERS[name]

    def parse(text: str) -> object:
        try:
            return parser(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = name
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aigw simulator",
        description="Upstream simulator speaking the OpenAI and Anthropic wire formats, "
        "for tests and benchmarks. It is not a model: replies are canned text.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM)")
    parser.add_argument("--tls-key", help="the certificate's private key (PEM)")
    defaults = Knobs()
    helps = {
        "latency_ms": "delay before the response headers",
        "tokens_per_s": "streaming pace; 0 sends chunks back to back",
        "completion_tokens": "words in a reply (unless max_tokens is smaller)",
        "embedding_dims": "embedding size unless the request names dimensions",
        "fault": "none | status:CODE | timeout | reset | drop:N",
        "fault_rate": "probability 0..1 that the fault applies",
        "capacity": "model calls worked on at once, the rest queue (0: no limit)",
        "seed": "seed of the fault dice",
    }
    for name, text in helps.items():
        default = getattr(defaults, name)
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            type=_flag(name),
            default=default,
            help=f"{text} (default: {default})",
        )
    return parser


def knobs_from(args: argparse.Namespace) -> Knobs:
    return update(Knobs(), {name: str(getattr(args, name)) for name in PARSERS})


async def serve(host: str, port: int, knobs: Knobs, tls: ssl.SSLContext | None = None) -> None:
    server = SimulatorServer(knobs)
    bound_host, bound_port = await server.start(host, port, tls)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    _log("info", "listening", host=bound_host, port=bound_port)
    try:
        await stop.wait()
    finally:
        await server.shutdown()
    _log("info", "stopped")


def main(argv: list[str] | None = None) -> int:
    """Run the simulator until SIGTERM or SIGINT; the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    tls = None
    if args.tls_cert:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            tls.load_cert_chain(args.tls_cert, args.tls_key)
        except (OSError, ssl.SSLError) as exc:
            parser.error(f"cannot load the TLS certificate: {exc}")
    uvloop.run(serve(args.host, args.port, knobs_from(args), tls))
    return 0
