"""The worker's Prometheus metrics (``aigw_worker_`` prefix) and its GPU probe.

Label values are bounded: models come from settings (a name a client invents counts as
``unknown``, a route that names none as ``none``), routes from the route table. Batch
metrics are recorded from the inference threads; prometheus_client's are thread-safe.

``GpuProbe`` reads torch's CUDA statistics. torch is imported only when some model runs
on CUDA, by which time the runners have imported it; utilisation needs NVML
(``nvidia-ml-py``) and is left out where that is missing.
"""

from __future__ import annotations

import importlib
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from types import ModuleType

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from aigw import __version__

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0,
)  # fmt: skip


class WorkerMetrics:
    def __init__(self, models: Iterable[str]) -> None:
        # The _created series only double the scrape size; the library leaves this untyped.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.models = frozenset(models)
        self.registry = r = CollectorRegistry()
        self.requests = Counter(
            "aigw_worker_requests", "Requests answered, by model, route and HTTP status.",
            ["model", "route", "status"], registry=r,
        )  # fmt: skip
        self.batch_size = Histogram(
            "aigw_worker_batch_size", "Items (texts, prompts) per batch run by the model.",
            ["model"], buckets=BATCH_BUCKETS, registry=r,
        )  # fmt: skip
        self.inference_seconds = Histogram(
            "aigw_worker_inference_duration_seconds", "Time the model took to run one batch.",
            ["model"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.forward_passes = Counter(
            "aigw_worker_forward_passes", "Model forward passes (a generation step is one).",
            ["model"], registry=r,
        )  # fmt: skip
        self.tokens = Counter(
            "aigw_worker_tokens", "Tokens processed, by model and kind (prompt, completion).",
            ["model", "kind"], registry=r,
        )  # fmt: skip
        self.queue_depth = Gauge(
            "aigw_worker_queue_depth", "Items waiting or running, per model.", ["model"],
            registry=r,
        )  # fmt: skip
        self.model_ready = Gauge(
            "aigw_worker_model_ready", "1 once the model is loaded and warmed.", ["model"],
            registry=r,
        )  # fmt: skip
        for name in self.models:
            self.model_ready.labels(name).set(0)
        self.gpu_memory = Gauge(
            "aigw_worker_gpu_memory_allocated_bytes", "Bytes torch has allocated on the GPU.",
            ["device"], registry=r,
        )  # fmt: skip
        self.gpu_utilization = Gauge(
            "aigw_worker_gpu_utilization_ratio", "Share of time a kernel ran (NVML), 0..1.",
            ["device"], registry=r,
        )  # fmt: skip
        info = Gauge("aigw_worker_build_info", "aigw version.", ["version"], registry=r)
        info.labels(__version__).set(1)

    def model_label(self, model: str) -> str:
        """A configured model's name; "none" for routes without one; else "unknown"."""
        return model if model in self.models or model == "none" else "unknown"

    def request_done(self, model: str, route: str, status: int) -> None:
        self.requests.labels(self.model_label(model), route, str(status)).inc()

    def batch_done(self, model: str, size: int, seconds: float, forward_passes: int) -> None:
        """Called from the model's inference thread after each batch."""
        self.batch_size.labels(model).observe(size)
        self.inference_seconds.labels(model).observe(seconds)
        if forward_passes > 0:
            self.forward_passes.labels(model).inc(forward_passes)

    def tokens_done(self, model: str, prompt: int, completion: int = 0) -> None:
        self.tokens.labels(model, "prompt").inc(prompt)
        if completion:
            self.tokens.labels(model, "completion").inc(completion)

    def watch_queue(self, model: str, depth: Callable[[], float]) -> None:
        self.queue_depth.labels(model).set_function(depth)

    def watch_gpu(self, probe: GpuProbe) -> None:
        for device in probe.devices:
            self.gpu_memory.labels(device).set_function(partial(probe.allocated, device))
            if probe.has_utilization:
                self.gpu_utilization.labels(device).set_function(partial(probe.utilization, device))

    def render(self) -> bytes:
        return generate_latest(self.registry)


@dataclass(frozen=True, slots=True)
class GpuSample:
    utilization: float | None  # 0..1, the busiest device; None without NVML
    memory: float  # 0..1, the fullest device: bytes torch's allocator holds / device total


class GpuProbe:
    """CUDA statistics of the devices the models run on, sampled at most once a second."""

    def __init__(
        self,
        devices: Iterable[str],
        clock: Callable[[], float] = time.monotonic,
        interval_s: float = 1.0,
    ) -> None:
        self.devices = sorted({d if ":" in d else f"{d}:0" for d in devices})
        self._clock = clock
        self._interval_s = interval_s
        self._torch: ModuleType = importlib.import_module("torch")
        self._totals = {
            d: int(self._torch.cuda.get_device_properties(d).total_memory) for d in self.devices
        }
        self.has_utilization = self._utilization_works()
        self._sample: GpuSample | None = None
        self._sampled_at = 0.0

    @classmethod
    def for_devices(cls, devices: Iterable[str]) -> GpuProbe | None:
        """A probe of the CUDA devices among ``devices``; None when there are none."""
        cuda = [d for d in devices if d.startswith("cuda")]
        return cls(cuda) if cuda else None

    def _utilization_works(self) -> bool:
        self.has_utilization = True
        return not math.isnan(self.utilization(self.devices[0]))

    def allocated(self, device: str) -> float:
        return float(self._torch.cuda.memory_allocated(device))

    def utilization(self, device: str) -> float:
        """0..1, or NaN once NVML has failed (it is not asked again)."""
        if not self.has_utilization:
            return math.nan
        try:
            return float(self._torch.cuda.utilization(device)) / 100.0
        # NVML raises its own error types, or ModuleNotFoundError without nvidia-ml-py;
        # whatever the reason, utilisation is then left out rather than retried.
        except Exception:
            self.has_utilization = False
            return math.nan

    def sample(self) -> GpuSample:
        now = self._clock()
        if self._sample is None or now - self._sampled_at >= self._interval_s:
            cuda = self._torch.cuda
            memory = max(cuda.memory_reserved(d) / self._totals[d] for d in self.devices)
            busy = [u for u in map(self.utilization, self.devices) if not math.isnan(u)]
            util = max(busy) if busy else None
            self._sample, self._sampled_at = GpuSample(util, memory), now
        return self._sample
