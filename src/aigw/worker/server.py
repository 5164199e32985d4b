"""The model side of the worker: requests in, batcher submissions out.

A ``ModelSlot`` owns one model: its inference thread (a ``ThreadPoolExecutor`` with one
worker, so the model only ever runs on that thread), its runner once loaded, and its
``DynamicBatcher``. The routes (app.py) call ``embed``, ``classify``, ``generate`` or
``stream``; a ``Generation`` carries a streamed generation's text from the inference
thread to the event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

from aigw.errors import InvalidRequest
from aigw.worker.batcher import DynamicBatcher
from aigw.worker.contract import (
    ClassificationRunner,
    Classified,
    EmbeddingRunner,
    Generated,
    GenerationRequest,
    GenerationRunner,
    Runner,
)
from aigw.worker.metrics import WorkerMetrics
from aigw.worker.settings import WorkerModelSettings

Loader = Callable[[WorkerModelSettings], Runner]
Embedded = tuple[list[float], int]  # a vector and its text's token count


def load_model(settings: WorkerModelSettings) -> Runner:
    """The real loader (the seam tests replace): local files only, onto the device."""
    from aigw.worker.runners import load_runner, resolve_device, resolve_path

    path, device = resolve_path(settings.path), resolve_device(settings.device)
    return load_runner(settings.name, settings.kind, path, device, settings.threads)


class ModelSlot:
    """One model: loading and warming it, then queueing work for it."""

    def __init__(self, settings: WorkerModelSettings, metrics: WorkerMetrics) -> None:
        self.settings = settings
        self.name = settings.name
        self.kind = settings.kind
        self.metrics = metrics
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"aigw-{self.name}")
        self.runner: Runner | None = None
        self.batcher: DynamicBatcher[Any, Any] | None = None
        metrics.watch_queue(self.name, lambda: self.depth)

    @property
    def ready(self) -> bool:
        return self.batcher is not None

    @property
    def depth(self) -> int:
        """Items waiting or running."""
        return self.batcher.depth if self.batcher is not None else 0

    @property
    def load(self) -> float:
        """``depth / max_queue``, at most 1."""
        return min(1.0, self.depth / self.settings.max_queue)

    async def start(self, loader: Loader) -> Runner:
        """Load and warm the model on its own thread, then accept work."""
        loop = asyncio.get_running_loop()
        runner = await loop.run_in_executor(self.executor, loader, self.settings)
        await loop.run_in_executor(self.executor, runner.warmup)
        self.runner = runner
        s = self.settings
        self.batcher = DynamicBatcher(
            self._timed(runner, self._batch_function(runner)),
            max_batch_size=s.max_batch_size,
            max_queue_delay_s=s.max_queue_delay_ms / 1000.0,
            max_queue=s.max_queue,
            # Characters stand in for tokens: the tokenizer belongs to the inference
            # thread (a Rust tokenizer used from two threads fails "Already borrowed").
            length=_length,
            executor=self.executor,
        )
        self.metrics.model_ready.labels(self.name).set(1)
        return runner

    async def close(self) -> None:
        """Fail what waits, let the running batch finish, stop the thread."""
        if self.batcher is not None:
            await self.batcher.close()
        await asyncio.to_thread(self.executor.shutdown, wait=True, cancel_futures=True)

    # -- work

    async def embed(self, texts: Sequence[str]) -> list[Embedded]:
        return cast(list[Embedded], await self._submit_all(texts))

    async def classify(self, texts: Sequence[str]) -> list[Classified]:
        return cast(list[Classified], await self._submit_all(texts))

    async def generate(self, request: GenerationRequest) -> Generated:
        return cast(Generated, await self._batcher().submit(request))

    def stream(self, request: GenerationRequest) -> Generation:
        return Generation(self, request)

    def render(self, messages: Sequence[dict[str, object]]) -> str:
        """Chat messages → prompt, on the event loop: a chat template renders text without
        tokenizing, so it does not touch the tokenizer the inference thread is using."""
        try:
            return cast(GenerationRunner, self.runner).render(messages)
        except Exception as exc:
            # Templates refuse conversations with jinja2's own error types (e.g. roles
            # that do not alternate): the client's mistake. Anything else is ours.
            if type(exc).__module__.startswith("jinja2"):
                message = f"the model's chat template refused the messages: {exc}"
                raise InvalidRequest(message, param="messages") from None
            raise

    def _batcher(self) -> DynamicBatcher[Any, Any]:
        if self.batcher is None:
            raise RuntimeError(f"model {self.name} is not loaded")
        return self.batcher

    async def _submit_all(self, items: Sequence[object]) -> list[object]:
        batcher = self._batcher()
        if len(items) == 1:
            return [await batcher.submit(items[0])]
        tasks = [asyncio.ensure_future(batcher.submit(item)) for item in items]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            # One item refused (QueueFull) or the caller gone: the others go too.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    def _batch_function(self, runner: Runner) -> Callable[[list[Any]], list[Any]]:
        if self.kind == "embedding":
            embedder = cast(EmbeddingRunner, runner)

            def embed(texts: list[str]) -> list[Embedded]:
                vectors = embedder.embed(texts)
                return list(zip(vectors, map(embedder.token_count, texts), strict=True))

            return embed
        if self.kind == "classification":
            return cast(ClassificationRunner, runner).classify
        return cast(GenerationRunner, runner).generate

    def _timed(
        self, runner: Runner, run: Callable[[list[Any]], list[Any]]
    ) -> Callable[[list[Any]], list[Any]]:
        def timed(items: list[Any]) -> list[Any]:
            passes, started = runner.stats.forward_passes, time.perf_counter()
            results = run(items)
            seconds = time.perf_counter() - started
            done = runner.stats.forward_passes - passes
            self.metrics.batch_done(self.name, len(items), seconds, done)
            return results

        return timed


def _length(item: object) -> int:
    return len(item.prompt) if isinstance(item, GenerationRequest) else len(cast(str, item))


class Generation:
    """A streamed generation: its text pieces as the model makes them, then its result.

    The runner calls ``on_text`` on the inference thread; each piece crosses to the event
    loop with ``call_soon_threadsafe``. The end of the pieces is queued by the task's
    completion, which the loop runs after every piece the thread queued before it.
    """

    def __init__(self, slot: ModelSlot, request: GenerationRequest) -> None:
        self._loop = asyncio.get_running_loop()
        self._pieces: asyncio.Queue[str | None] = asyncio.Queue()
        self._abandoned = False  # read on the inference thread; a bool needs no lock
        self._ended = False
        request.on_text = self._push
        request.cancelled = lambda: self._abandoned
        self._task = self._loop.create_task(slot.generate(request))
        self._task.add_done_callback(self._finished)

    def _push(self, text: str) -> None:
        if self._abandoned or not text:
            return
        try:
            self._loop.call_soon_threadsafe(self._pieces.put_nowait, text)
        except RuntimeError:
            self._abandoned = True  # the event loop is closed: nobody listens any more

    def _finished(self, task: asyncio.Task[Generated]) -> None:
        if not task.cancelled():
            task.exception()  # retrieved here too, for a stream dropped before it was read
        self._pieces.put_nowait(None)

    async def next_piece(self) -> str | None:
        """The next piece of text; None once the generation has ended (or failed)."""
        if self._ended:
            return None
        piece = await self._pieces.get()
        self._ended = piece is None
        return piece

    def ready_piece(self) -> str | None:
        """The next piece if one is already here, else None (without waiting)."""
        if self._ended or self._pieces.empty():
            return None
        piece = self._pieces.get_nowait()
        self._ended = piece is None
        return piece

    async def result(self) -> Generated:
        """The outcome; raises what the generation raised (``QueueFull`` among others)."""
        return await self._task

    @property
    def done(self) -> bool:
        return self._task.done()

    async def abandon(self) -> None:
        """The client went away: drop its place in the queue, or ignore its output."""
        self._abandoned = True
        if not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
