"""What the simulator has seen, for ``GET /sim/stats``.

Tests assert on what the gateway sent upstream, so the last requests are kept whole
(method, path, headers, parsed body) in a bounded deque. They are stored raw and
decoded only when someone asks: recording sits on the hot path, reading does not.
"""

from __future__ import annotations

from collections import Counter, deque

import orjson

KEEP = 50

_Seen = tuple[bytes, bytes, dict[bytes, bytes], object]


class Stats:
    def __init__(self, keep: int = KEEP) -> None:
        self.total = 0
        self.by_path: Counter[bytes] = Counter()
        self.faults: Counter[str] = Counter()
        self.streams_cancelled = 0  # streams whose client left before the end
        self.in_flight = 0  # model calls being answered now (a stream until its end)
        self.peak_in_flight = 0
        self.recent: deque[_Seen] = deque(maxlen=keep)

    def count(self, path: bytes) -> None:
        self.total += 1
        self.by_path[path] += 1

    def record(self, method: bytes, path: bytes, headers: dict[bytes, bytes], body: object) -> None:
        """Count the request and keep it whole (headers and body are not copied)."""
        self.count(path)
        self.recent.append((method, path, headers, body))

    def enter(self) -> None:
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)

    def leave(self) -> None:
        self.in_flight -= 1

    def fault(self, name: str) -> None:
        self.faults[name] += 1

    def reset(self) -> None:
        self.total = 0
        self.by_path.clear()
        self.faults.clear()
        self.streams_cancelled = 0
        self.peak_in_flight = self.in_flight
        self.recent.clear()

    def to_json(self) -> bytes:
        recent = [_decoded(seen) for seen in self.recent]
        return orjson.dumps(
            {
                "requests_total": self.total,
                "by_path": {path.decode("latin-1"): n for path, n in self.by_path.items()},
                "faults": dict(self.faults),
                "streams_cancelled": self.streams_cancelled,
                "in_flight": self.in_flight,
                "peak_in_flight": self.peak_in_flight,
                "last": recent[-1] if recent else None,
                "requests": recent,
            }
        )


def _decoded(seen: _Seen) -> dict[str, object]:
    method, path, headers, body = seen
    return {
        "method": method.decode("latin-1"),
        "path": path.decode("latin-1"),
        "headers": {k.decode("latin-1"): v.decode("latin-1") for k, v in headers.items()},
        "body": body,
    }
