"""Command line: ``aigw serve | check-config | version | simulator``."""

from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path

from pydantic import ValidationError

from aigw import __version__
from aigw.errors import ConfigError
from aigw.observability.logs import JsonLog
from aigw.settings import ServerSettings, Settings, load_settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aigw", description="A gateway for AI model APIs.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway")
    source = serve.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", type=Path, help="YAML settings file")
    source.add_argument(
        "--demo",
        action="store_true",
        help="try aigw without API keys: serve models backed by the embedded upstream simulator",
    )
    serve.add_argument("--host", help="listen address (overrides server.host)")
    serve.add_argument("--port", type=int, help="listen port, 0 for any (overrides server.port)")
    serve.add_argument("--workers", type=int, help="processes, one per core (server.workers)")

    check = sub.add_parser("check-config", help="validate a settings file and exit")
    check.add_argument("config", type=Path)

    sub.add_parser("version", help="print the version")
    sub.add_parser("simulator", help="run the upstream simulator (a test and bench tool)")
    sub.add_parser("worker", help="serve local models with dynamic batching (aigw[worker])")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["simulator"]:
        from aigw.simulator.server import main as simulator_main

        return simulator_main(argv[1:])
    if argv[:1] == ["worker"]:
        from aigw.worker.main import main as worker_main

        return worker_main(argv[1:])
    args = _parser().parse_args(argv)
    if args.command == "version":
        print(f"aigw {__version__}")
        return 0
    if args.command == "check-config":
        return _check_config(args.config)
    return _serve(args)


def _check_config(path: Path) -> int:
    try:
        settings = load_settings(path)
    except ConfigError as exc:
        print(f"{path}: invalid", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    deployments = sum(len(m.deployments) for m in settings.models)
    print(f"{path}: ok ({len(settings.models)} models, {deployments} deployments)")
    return 0


def _serve(args: argparse.Namespace) -> int:
    log = JsonLog()
    if args.demo:
        from aigw.demo import demo_settings

        settings, config_path = demo_settings(), None
    else:
        try:
            settings, config_path = load_settings(args.config), args.config
        except ConfigError as exc:
            log.error("invalid configuration", file=str(args.config), problems=exc.problems)
            log.flush()
            return 1
    try:
        settings = _override(settings, args)
    except ConfigError as exc:
        log.error("invalid command line", problems=exc.problems)
        log.flush()
        return 1
    server = settings.server
    if server.workers == 1:
        _run_worker(settings, config_path, log, None, args.demo)
        return 0
    from aigw.supervisor import Supervisor

    def run_worker(sock: socket.socket) -> None:
        _run_worker(settings, config_path, log, sock, args.demo)

    supervisor = Supervisor(
        server.workers, server.host, server.port, run_worker, log, server.drain_timeout_s
    )
    return supervisor.run()


def _override(settings: Settings, args: argparse.Namespace) -> Settings:
    updates = {
        key: value
        for key, value in (("host", args.host), ("port", args.port), ("workers", args.workers))
        if value is not None
    }
    if not updates:
        return settings
    try:
        server = ServerSettings.model_validate({**settings.server.model_dump(), **updates})
    except ValidationError as exc:
        raise ConfigError([f"--{e['loc'][0]}: {e['msg']}" for e in exc.errors()]) from None
    return settings.model_copy(update={"server": server})


def _run_worker(
    settings: Settings,
    config_path: Path | None,
    log: JsonLog,
    sock: socket.socket | None,
    demo: bool,
) -> None:
    import uvloop

    from aigw.serve import serve

    async def main() -> None:
        if demo:
            from aigw.demo import run_with_simulator

            await run_with_simulator(settings, log, sock)
        else:
            await serve(settings, config_path, log, sock)

    uvloop.run(main())


if __name__ == "__main__":
    raise SystemExit(main())
