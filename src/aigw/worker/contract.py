"""The contract between the worker's parts: runners (models), the batcher, the server.

A *runner* wraps one loaded model and runs one batch at a time, synchronously, in a
worker thread (never on the event loop). The *batcher* (batcher.py) queues requests per
model and hands batches to the runner. The *server* (server.py) turns HTTP requests
into batcher submissions. Everything heavy (torch, transformers) is imported only by
runners.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

Kind = Literal["embedding", "classification", "generation"]


@dataclass(slots=True)
class Classified:
    label: str
    confidence: float


@dataclass(slots=True)
class GenerationRequest:
    prompt: str  # already rendered (chat template applied by the runner's ``render``)
    max_new_tokens: int
    temperature: float = 0.0  # 0 = greedy
    stop: Sequence[str] = ()
    # Called from the inference thread for each new piece of text; the server bridges it
    # to the event loop (loop.call_soon_threadsafe). None = not streamed.
    on_text: Callable[[str], None] | None = None
    # Polled from the inference thread before each new token: True once the client has
    # gone, and the row leaves the batch instead of decoding to its budget.
    cancelled: Callable[[], bool] | None = None


@dataclass(slots=True)
class Generated:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: Literal["stop", "length"]


@dataclass(slots=True)
class BatchStats:
    forward_passes: int = 0  # model calls (a generation batch counts its prefill once)
    batches: int = 0
    items: int = 0
    sizes: list[int] = field(default_factory=list)  # recent batch sizes, bounded


class Runner(Protocol):
    name: str
    kind: Kind
    device: str  # "cpu" or "cuda:N", as resolved from auto|cpu|cuda
    stats: BatchStats

    def warmup(self) -> None:
        """Run one tiny batch so the first real request is not slow."""

    def token_count(self, text: str) -> int:
        """Tokens in ``text`` (the batcher groups similar lengths to waste less padding)."""


class EmbeddingRunner(Runner, Protocol):
    dims: int

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One batch: unit-normalised vectors, in order."""


class ClassificationRunner(Runner, Protocol):
    def classify(self, texts: Sequence[str]) -> list[Classified]: ...


class GenerationRunner(Runner, Protocol):
    def render(self, messages: Sequence[dict[str, object]]) -> str:
        """Chat messages → prompt (the tokenizer's chat template, or a plain fallback)."""

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generated]:
        """One batch: prefill together, decode together, stream each via on_text."""
