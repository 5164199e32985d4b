"""One gateway process: start, reload on SIGHUP, drain on SIGTERM.

``aigw serve`` runs this once per worker process (see ``supervisor``).
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import socket
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path

from aigw.app import Services, build_runtime
from aigw.errors import ConfigError
from aigw.http.routes import HttpIngress
from aigw.http.server import HttpServer, ServerLimits
from aigw.observability.logs import JsonLog
from aigw.settings import ServerSettings, Settings, load_settings
from aigw.upstream.client import UpstreamClient

# Runs before listening and after draining: e.g. the demo's embedded simulator.
Sidecar = Callable[[], Awaitable[Callable[[], Awaitable[None]]]]


def limits_from(server: ServerSettings) -> ServerLimits:
    return ServerLimits(
        max_body_bytes=server.max_body_bytes,
        max_header_bytes=server.max_header_bytes,
        keepalive_timeout_s=server.keepalive_timeout_s,
        header_timeout_s=server.header_timeout_s,
    )


async def serve(
    settings: Settings,
    config_path: Path | None,
    log: JsonLog,
    sock: socket.socket | None = None,
) -> None:
    loop = asyncio.get_running_loop()
    services = Services.create(settings, UpstreamClient(), log)
    metrics = services.metrics
    current = build_runtime(settings, services)
    current.start()
    ingress = HttpIngress(current, metrics, log)
    retired: set[asyncio.Task[None]] = set()

    def on_error(exc: BaseException) -> None:
        log.error(
            "unhandled error", error=repr(exc), traceback="".join(traceback.format_exception(exc))
        )

    server = HttpServer(ingress, limits_from(settings.server), on_error)
    # Everything built so far lives as long as the process: keep the collector off it.
    gc.collect()
    gc.freeze()
    host, port = await server.start(settings.server.host, settings.server.port, sock=sock)

    def reload() -> None:
        if config_path is None:
            log.warning("SIGHUP ignored: no config file to reload")
            return
        try:
            new = load_settings(config_path)
        except ConfigError as exc:
            metrics.reloads.labels("error").inc()
            log.error("config reload failed; keeping the running config", problems=exc.problems)
            return
        if new.state != settings.state:
            log.warning("state settings change only on restart; keeping the running backend")
        nonlocal current
        old, current = current, build_runtime(new, services, previous=current)
        current.start()
        ingress.runtime = current
        task = loop.create_task(old.close())  # in-flight requests keep the old objects
        retired.add(task)
        task.add_done_callback(retired.discard)
        server.limits = limits_from(new.server)
        metrics.reloads.labels("ok").inc()
        log.info("config reloaded", models=ingress.runtime.model_names)

    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload)
    log.info("listening", host=host, port=port, pid=os.getpid(), models=ingress.runtime.model_names)
    log.flush()
    try:
        await stop.wait()
        ingress.ready = False
        log.info("draining", in_flight=server.in_flight, grace_s=settings.server.drain_timeout_s)
        log.flush()
        await server.shutdown(settings.server.drain_timeout_s)
    finally:
        await current.close()
        await asyncio.gather(*retired, return_exceptions=True)
        await services.close()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        log.info("stopped", pid=os.getpid())
        log.flush()
