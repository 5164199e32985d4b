"""Runners: one loaded model each, running one batch at a time in a worker thread.

``load_runner`` builds the runner for a model kind from a local directory (see
``resolve_path``); the classes implement the Protocols in ``contract.py``. Only this
module imports torch and transformers, and it switches their downloads off first:
models load from local files or not at all.
"""

from __future__ import annotations

import os

# The worker's own process: no library may reach the network for a model, ever.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no bars in the worker's logs

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, cast

import torch
from sentence_transformers import SentenceTransformer
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from aigw.worker.contract import (
    BatchStats,
    Classified,
    Generated,
    GenerationRequest,
    Kind,
    Runner,
)
from aigw.worker.models import ModelFilesNotFound, resolve_path

__all__ = [
    "CausalGenerationRunner",
    "ModelFilesNotFound",
    "SentenceEmbeddingRunner",
    "SequenceClassificationRunner",
    "TextStream",
    "load_runner",
    "resolve_device",
    "resolve_path",
]

SIZES_KEPT = 512  # recent batch sizes kept in ``stats.sizes``


def resolve_device(spec: str) -> str:
    """``auto`` → ``cuda:0`` when a GPU is visible, else ``cpu``; ``cuda`` needs one."""
    if spec == "cpu":
        return "cpu"
    if spec == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {spec!r} asked for, but torch sees no CUDA device")
        return "cuda:0" if spec == "cuda" else spec
    raise ValueError(f"device must be auto, cpu or cuda, not {spec!r}")


def load_runner(name: str, kind: Kind, path: Path, device: str, threads: int = 0) -> Runner:
    """Load the model in ``path`` (a local directory) onto ``device`` as a runner."""
    if device == "cpu":
        torch.set_num_threads(threads or _usable_cpus())
    if kind == "embedding":
        return SentenceEmbeddingRunner(name, path, device)
    if kind == "classification":
        return SequenceClassificationRunner(name, path, device)
    if kind == "generation":
        return CausalGenerationRunner(name, path, device)
    raise ValueError(f"unknown model kind {kind!r}")


def _usable_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):  # the CPUs this process may run on
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _dtype(device: str) -> torch.dtype:
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def _on_device(model: PreTrainedModel, device: str) -> PreTrainedModel:
    # PreTrainedModel wraps ``to`` and ``eval`` in ways mypy cannot call through; the
    # Module methods do the same, in place.
    torch.nn.Module.to(model, device)
    torch.nn.Module.eval(model)
    return model


def _max_length(tokenizer: PreTrainedTokenizerBase, config: PretrainedConfig) -> int | None:
    """The longest input the model takes (tokenizers often say 'unlimited' as 1e30)."""
    limits = [int(tokenizer.model_max_length)]
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int):
        limits.append(positions)
    limit = min(limits)
    return limit if limit < 1_000_000 else None


class _Counted:
    stats: BatchStats

    def _count(self, size: int, forward_passes: int) -> None:
        self.stats.forward_passes += forward_passes
        self.stats.batches += 1
        self.stats.items += size
        self.stats.sizes.append(size)
        del self.stats.sizes[:-SIZES_KEPT]


class SentenceEmbeddingRunner(_Counted):
    kind: Kind = "embedding"

    def __init__(self, name: str, path: Path, device: str) -> None:
        self.name = name
        self.device = device
        self.stats = BatchStats()
        self._model = SentenceTransformer(
            str(path), device=device, local_files_only=True, model_kwargs={"dtype": _dtype(device)}
        )
        self.dims = int(self._model.get_embedding_dimension() or 0)

    def warmup(self) -> None:
        self.embed(["warm up"])
        self.stats = BatchStats()

    def token_count(self, text: str) -> int:
        return len(self._model.tokenizer(text)["input_ids"])

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        with torch.inference_mode():
            vectors = self._model.encode(
                list(texts),
                batch_size=max(1, len(texts)),  # the batcher already made the batch
                normalize_embeddings=True,
                convert_to_tensor=True,
                show_progress_bar=False,
            )
        self._count(len(texts), 1)
        assert isinstance(vectors, torch.Tensor)
        rows: list[list[float]] = vectors.float().cpu().tolist()
        return rows


class SequenceClassificationRunner(_Counted):
    kind: Kind = "classification"

    def __init__(self, name: str, path: Path, device: str) -> None:
        self.name = name
        self.device = device
        self.stats = BatchStats()
        self._tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        model = AutoModelForSequenceClassification.from_pretrained(
            str(path), local_files_only=True, dtype=_dtype(device)
        )
        self._model = _on_device(model, device)
        id2label = self._model.config.id2label or {}
        self._labels = {int(i): str(label) for i, label in id2label.items()}
        self._max_length = _max_length(self._tokenizer, self._model.config)

    def warmup(self) -> None:
        self.classify(["warm up"])
        self.stats = BatchStats()

    def token_count(self, text: str) -> int:
        return len(self._tokenizer(text)["input_ids"])

    def classify(self, texts: Sequence[str]) -> list[Classified]:
        encoded = self._tokenizer(
            list(texts),
            padding=True,
            truncation=self._max_length is not None,
            max_length=self._max_length,
            return_tensors="pt",
        ).to(self.device)
        with torch.inference_mode():
            probs = self._model(**encoded).logits.float().softmax(dim=-1)
        self._count(len(texts), 1)
        confidence, index = probs.max(dim=-1)
        return [
            Classified(self._labels.get(i, str(i)), c)
            for i, c in zip(index.tolist(), confidence.tolist(), strict=True)
        ]


class TextStream:
    """Token ids in, text out: decodes incrementally and applies stop strings.

    Text is released only once it is final: a token that ends mid-character waits for
    the rest of the character, and text that may be the start of a stop string waits
    until it is known not to be. The pieces released join up to ``text``.
    """

    def __init__(self, decode: Callable[[list[int]], str], stop: Sequence[str] = ()) -> None:
        self._decode = decode
        self._stop = [s for s in stop if s]
        self._ids: list[int] = []
        self._prefix = 0  # ids[prefix:read] were decoded last time, as context
        self._read = 0
        self._sent = 0
        self.text = ""
        self.stopped = False  # a stop string was found; text ends before it

    def push(self, token_id: int) -> str:
        """Add one token; the text that became final (often '')."""
        self._ids.append(token_id)
        self._decode_new(final=False)
        return self._release(final=False)

    def finish(self) -> str:
        """No more tokens: the rest of the text."""
        self._decode_new(final=True)
        return self._release(final=True)

    def _decode_new(self, *, final: bool) -> None:
        if self.stopped or self._read == len(self._ids):
            return
        # Decoding the new ids together with the previous ones keeps word boundaries
        # (spaces, merged sub-words) as the whole text would have them.
        before = self._decode(self._ids[self._prefix : self._read])
        after = self._decode(self._ids[self._prefix :])
        if len(after) > len(before) and (final or not after.endswith("\ufffd")):
            self.text += after[len(before) :]
            self._prefix, self._read = self._read, len(self._ids)

    def _release(self, *, final: bool) -> str:
        if not self.stopped:
            self._cut_at_stop()
        end = len(self.text) if final or self.stopped else len(self.text) - self._held()
        piece = self.text[self._sent : end]
        self._sent = max(self._sent, end)
        return piece

    def _cut_at_stop(self) -> None:
        hits = [i for s in self._stop if (i := self.text.find(s, self._sent)) >= 0]
        if hits:
            self.text = self.text[: min(hits)]
            self.stopped = True

    def _held(self) -> int:
        """Length of the longest tail of the unsent text that begins a stop string."""
        unsent = len(self.text) - self._sent
        longest = max((len(s) - 1 for s in self._stop), default=0)
        for size in range(min(unsent, longest), 0, -1):
            tail = self.text[-size:]
            if any(s.startswith(tail) for s in self._stop):
                return size
        return 0


class CausalGenerationRunner(_Counted):
    kind: Kind = "generation"

    def __init__(self, name: str, path: Path, device: str) -> None:
        self.name = name
        self.device = device
        self.stats = BatchStats()
        self._tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(
            str(path), local_files_only=True, dtype=_dtype(device)
        )
        self._model = _on_device(model, device)
        self._context = _max_length(self._tokenizer, self._model.config)
        self._eos = self._eos_ids()
        pad = self._tokenizer.pad_token_id
        self._pad = pad if isinstance(pad, int) else min(self._eos, default=0)
        # A chat template writes the special tokens itself (BOS included).
        self._add_special = not self._tokenizer.chat_template

    def _eos_ids(self) -> set[int]:
        ids: set[int] = set()
        for source in (self._model.generation_config, self._tokenizer):
            eos = getattr(source, "eos_token_id", None)
            ids.update([eos] if isinstance(eos, int) else list(eos or []))
        return ids

    def warmup(self) -> None:
        self.generate([GenerationRequest(prompt="warm up", max_new_tokens=2)])
        self.stats = BatchStats()

    def token_count(self, text: str) -> int:
        return len(self._encode(text))

    def render(self, messages: Sequence[dict[str, object]]) -> str:
        if self._tokenizer.chat_template:
            rendered = self._tokenizer.apply_chat_template(
                # Templates take any JSON-like message; the stub only says str values.
                cast("list[dict[str, str]]", list(messages)),
                tokenize=False,
                add_generation_prompt=True,
            )
            if isinstance(rendered, str):
                return rendered
        lines = [f"{m.get('role', 'user')}: {m.get('content') or ''}" for m in messages]
        return "\n".join([*lines, "assistant:"])

    def _encode(self, text: str) -> list[int]:
        ids: list[int] = self._tokenizer(text, add_special_tokens=self._add_special)["input_ids"]
        return ids

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generated]:
        if any(r.max_new_tokens < 1 for r in requests):
            raise ValueError("max_new_tokens must be at least 1")
        if not requests:
            return []
        with torch.inference_mode():
            return _Decoding(self, requests).run()


class _Decoding:
    """One generation batch: prefill all prompts at once, then decode step by step.

    Rows of the batch that finish (EOS, stop string, token budget) leave it, and the KV
    cache drops them, so the rest decode without carrying them along.
    """

    def __init__(self, runner: CausalGenerationRunner, requests: Sequence[GenerationRequest]):
        self.runner = runner
        self.requests = list(requests)
        context = runner._context
        # A prompt longer than the context keeps its end (the latest messages).
        keep = slice(-(context - 1), None) if context is not None else slice(None)
        self.prompts = [runner._encode(r.prompt)[keep] for r in self.requests]
        self.budgets = [
            r.max_new_tokens if context is None else min(r.max_new_tokens, context - len(p))
            for r, p in zip(self.requests, self.prompts, strict=True)
        ]
        decode = runner._tokenizer.decode

        def text_of(ids: list[int]) -> str:
            return str(decode(ids, skip_special_tokens=True))

        self.streams = [TextStream(text_of, r.stop) for r in self.requests]
        self.generated = [0] * len(self.requests)
        self.finish: list[Literal["stop", "length"] | None] = [None] * len(self.requests)
        self.forward_passes = 0

    def run(self) -> list[Generated]:
        logits, cache, mask = self._prefill()
        active = list(range(len(self.requests)))  # row → request
        while True:
            tokens = self._sample(logits, active)
            chosen = tokens.tolist()  # one device sync per step, not one per row
            keep = [row for row, i in enumerate(active) if self._advance(i, chosen[row])]
            if not keep:
                break
            if len(keep) < len(active):
                rows = torch.tensor(keep, device=mask.device)
                cache.batch_select_indices(rows)
                mask, tokens = mask[rows], tokens[rows]
                active = [active[row] for row in keep]
            mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=1)
            logits = self._step(tokens[:, None], mask, mask.sum(dim=1, keepdim=True) - 1, cache)
        self.runner._count(len(self.requests), self.forward_passes)
        return [self._result(i) for i in range(len(self.requests))]

    def _prefill(self) -> tuple[torch.Tensor, Any, torch.Tensor]:
        width = max(len(p) for p in self.prompts)
        pad = self.runner._pad
        ids = [[pad] * (width - len(p)) + p for p in self.prompts]  # left padding
        masks = [[0] * (width - len(p)) + [1] * len(p) for p in self.prompts]
        device = self.runner.device
        input_ids = torch.tensor(ids, device=device)
        mask = torch.tensor(masks, device=device)
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        out = self.runner._model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
        )
        self.forward_passes += 1
        return out.logits[:, -1, :], out.past_key_values, mask

    def _step(
        self, tokens: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any
    ) -> torch.Tensor:
        out = self.runner._model(
            input_ids=tokens,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
        )
        self.forward_passes += 1
        logits: torch.Tensor = out.logits[:, -1, :]
        return logits

    def _sample(self, logits: torch.Tensor, active: list[int]) -> torch.Tensor:
        greedy = logits.argmax(dim=-1)
        temps = [self.requests[i].temperature for i in active]
        if all(t <= 0 for t in temps):
            return greedy
        temp = torch.tensor(temps, device=logits.device, dtype=torch.float32)[:, None]
        probs = (logits.float() / temp.clamp(min=1e-5)).softmax(dim=-1)
        sampled = torch.multinomial(probs, 1).squeeze(1)
        return torch.where(temp.squeeze(1) > 0, sampled, greedy)

    def _advance(self, i: int, token: int) -> bool:
        """Take request ``i``'s next token; whether it goes on decoding."""
        cancelled = self.requests[i].cancelled
        if cancelled is not None and cancelled():
            self.finish[i] = "stop"  # nobody reads it any more: free the row for the batch
            return False
        self.generated[i] += 1
        stream = self.streams[i]
        if token in self.runner._eos:
            self.finish[i] = "stop"
            self._emit(i, stream.finish())
            return False
        self._emit(i, stream.push(token))
        if stream.stopped:
            self.finish[i] = "stop"
            return False
        if self.generated[i] >= self.budgets[i]:
            self.finish[i] = "length"
            self._emit(i, stream.finish())
            return False
        return True

    def _emit(self, i: int, piece: str) -> None:
        on_text = self.requests[i].on_text
        if piece and on_text is not None:
            on_text(piece)

    def _result(self, i: int) -> Generated:
        return Generated(
            text=self.streams[i].text,
            prompt_tokens=len(self.prompts[i]),
            completion_tokens=self.generated[i],
            finish_reason=self.finish[i] or "length",
        )
