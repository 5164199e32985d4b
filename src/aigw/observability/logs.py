"""JSON-lines logging: one object per line, buffered and flushed off the hot path.

The access log writes one line per request; lines are collected and written at most
every ``flush_interval_s`` (and at shutdown), so a request never waits on a write.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import IO, Any

import orjson

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


class JsonLog:
    def __init__(
        self, stream: IO[bytes] | None = None, level: str = "info", flush_interval_s: float = 0.1
    ) -> None:
        self.stream = stream if stream is not None else sys.stdout.buffer
        self.threshold = LEVELS[level]
        self.flush_interval_s = flush_interval_s
        self._pending: list[bytes] = []
        self._timer: asyncio.TimerHandle | None = None

    def log(self, level: str, msg: str, **fields: Any) -> None:
        if LEVELS[level] < self.threshold:
            return
        record = {"ts": round(time.time(), 3), "level": level, "msg": msg, **fields}
        self._emit(orjson.dumps(record, default=str) + b"\n", urgent=level != "info")

    def info(self, msg: str, **fields: Any) -> None:
        self.log("info", msg, **fields)

    def warning(self, msg: str, **fields: Any) -> None:
        self.log("warning", msg, **fields)

    def error(self, msg: str, **fields: Any) -> None:
        self.log("error", msg, **fields)

    def access(self, record: dict[str, Any]) -> None:
        record["ts"] = round(time.time(), 3)
        self._emit(orjson.dumps(record) + b"\n", urgent=False)

    def _emit(self, line: bytes, urgent: bool) -> None:
        self._pending.append(line)
        if urgent or len(self._pending) >= 512:
            self.flush()
            return
        if self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._timer = loop.call_later(self.flush_interval_s, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        try:
            self.stream.write(data)
            self.stream.flush()
        except (BrokenPipeError, ValueError):
            pass  # nobody reads our output any more; logging must not kill the server
