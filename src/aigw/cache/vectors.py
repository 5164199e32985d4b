"""The semantic cache's vector index: cosine similarity over unit vectors (numpy).

Entries are grouped by *context*: a hash of everything in the request except the last
user message (model group, system prompt, earlier turns, parameters). A search only
ever looks within one context, so a paraphrase can match but a different system
prompt or parameter never can. The index holds at most ``max_entries`` vectors in all;
the oldest go first. Search is one matrix-vector product per context: exact, and fast
enough for the sizes a gateway keeps (see bench/RESULTS.md).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float32]


@dataclass
class _Context:
    matrix: Vector  # rows = unit vectors; only the first len(ids) rows are live
    ids: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)


class VectorIndex:
    def __init__(self, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        self.dims: int | None = None
        self._contexts: dict[str, _Context] = {}
        self._order: deque[tuple[str, str]] = deque()  # (context, id), oldest first
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._order)

    def add(self, context: str, entry_id: str, vector: Vector | list[float]) -> None:
        unit = _unit(vector)
        if self.dims is None:
            self.dims = unit.shape[0]
        elif unit.shape[0] != self.dims:
            raise ValueError(f"vector has {unit.shape[0]} dimensions, the index {self.dims}")
        ctx = self._contexts.get(context)
        if ctx is None:
            ctx = self._contexts[context] = _Context(np.empty((8, self.dims), np.float32))
        row = ctx.rows.get(entry_id)
        if row is not None:
            ctx.matrix[row] = unit
            return
        if len(ctx.ids) == ctx.matrix.shape[0]:
            grown = np.empty((ctx.matrix.shape[0] * 2, self.dims), np.float32)
            grown[: len(ctx.ids)] = ctx.matrix
            ctx.matrix = grown
        ctx.matrix[len(ctx.ids)] = unit
        ctx.rows[entry_id] = len(ctx.ids)
        ctx.ids.append(entry_id)
        self._order.append((context, entry_id))
        while len(self._order) > self.max_entries:
            self._remove(*self._order.popleft())
            self.evictions += 1

    def search(
        self, context: str, vector: Vector | list[float], threshold: float
    ) -> tuple[str, float] | None:
        """The most similar entry of ``context`` with cosine ≥ ``threshold``, if any."""
        ctx = self._contexts.get(context)
        if ctx is None or not ctx.ids:
            return None
        unit = _unit(vector)
        if unit.shape[0] != self.dims:
            return None
        scores = ctx.matrix[: len(ctx.ids)] @ unit
        best = int(np.argmax(scores))
        score = float(scores[best])
        return (ctx.ids[best], score) if score >= threshold else None

    def _remove(self, context: str, entry_id: str) -> None:
        ctx = self._contexts.get(context)
        row = ctx.rows.pop(entry_id, None) if ctx is not None else None
        if ctx is None or row is None:
            return
        last = len(ctx.ids) - 1
        moved = ctx.ids.pop()
        if row != last:  # move the last row into the gap
            ctx.matrix[row] = ctx.matrix[last]
            ctx.ids[row] = moved
            ctx.rows[moved] = row
        if not ctx.ids:
            del self._contexts[context]


def _unit(vector: Vector | list[float]) -> Vector:
    array = np.asarray(vector, dtype=np.float32).reshape(-1)
    norm = float(np.linalg.norm(array))
    if norm == 0.0 or not np.isfinite(norm):
        raise ValueError("cannot index a zero or non-finite vector")
    return array / norm
