from __future__ import annotations

import gzip
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import tiktoken
import tiktoken.load
import tiktoken.registry
import tiktoken_ext.openai_public as openai_public

from aigw.limits import tokens
from aigw.limits.tokens import TokenCounter, estimate_text, load_encoding
from aigw.types import Endpoint

SAMPLES = [
    "hello world",
    "tiktoken is great!",
    "お誕生日おめでとう",
    "def f(x):\n    return x ** 2  # 12345678\r\n\n\t  ",
    "Ünïcödé, Кириллица, Ελληνικά, عربى, 🙂🚀 and <|endoftext|> as plain text",
    "I'M HERE. You'll see: they've 2024-01-01T00:00:00Z https://example.com/a/b?c=d",
]

# OpenAI cookbook "How to count tokens with tiktoken": the API counted 129 prompt tokens
# for gpt-3.5-turbo and gpt-4, 124 for gpt-4o and gpt-4o-mini.
COOKBOOK_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate "
        "jargon into plain English.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "New synergies will help drive top-line growth.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Things working well together will increase revenue.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch base on "
        "opportunities for increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client "
        "deliverable.",
    },
]
# Its tools example: 105 prompt tokens on gpt-3.5-turbo and gpt-4, 101 on gpt-4o(-mini).
COOKBOOK_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_current_weather",
            "description": "Get the current weather in a given location",
            "parameters": {
                "type": "object",
                "properties": {
                    "location": {
                        "type": "string",
                        "description": "The city and state, e.g. San Francisco, CA",
                    },
                    "unit": {
                        "type": "string",
                        "description": "The unit of temperature to return",
                        "enum": ["celsius", "fahrenheit"],
                    },
                },
                "required": ["location"],
            },
        },
    }
]
COOKBOOK_TOOL_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful assistant that can answer to questions about the weather.",
    },
    {"role": "user", "content": "What's the weather like in San Francisco?"},
]


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    counter = TokenCounter()
    counter.warm()
    return counter


def byte_encoding() -> tiktoken.Encoding:
    """A stand-in that loads instantly: one token per byte."""
    ranks = {bytes([i]): i for i in range(256)}
    return tiktoken.Encoding("bytes", pat_str=r"\S+|\s+", mergeable_ranks=ranks, special_tokens={})


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replace the vendored encodings by ``byte_encoding``; the list records each load."""
    loaded: list[str] = []

    def load(name: str, packed: bytes | None = None) -> tiktoken.Encoding:
        loaded.append(name)
        return byte_encoding()

    monkeypatch.setattr(tokens, "load_encoding", load)
    return loaded


@pytest.fixture
def no_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(name: str, packed: bytes | None = None) -> tiktoken.Encoding:
        raise AssertionError(f"loaded {name}")

    monkeypatch.setattr(tokens, "load_encoding", refuse)


def vendored(name: str) -> bytes:
    return resources.files("aigw.limits").joinpath("encodings", f"{name}.tiktoken.gz").read_bytes()


# --- the encodings ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("cl100k_base", "hello world", [15339, 1917]),
        ("o200k_base", "hello world", [24912, 2375]),
        ("cl100k_base", "tiktoken is great!", [83, 1609, 5963, 374, 2294, 0]),
        # from the cookbook's comparison of encodings
        (
            "cl100k_base",
            "お誕生日おめでとう",
            [33334, 45918, 243, 21990, 9080, 33334, 62004, 16556, 78699],
        ),
        ("o200k_base", "お誕生日おめでとう", [8930, 9697, 243, 128225, 8930, 17693, 4344, 48669]),
    ],
)
def test_known_tokens(counter: TokenCounter, name: str, text: str, expected: list[int]) -> None:
    assert counter._encoding(name).encode(text) == expected


@pytest.mark.parametrize("name", tokens.ENCODINGS)
def test_vendored_encoding_is_the_one_tiktoken_builds(
    name: str, counter: TokenCounter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # tiktoken's own definition, its own loader and its own hash check, fed the vendored
    # file from disk instead of the URL it names
    local = tmp_path / f"{name}.tiktoken"
    local.write_bytes(gzip.decompress(vendored(name)))
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")
    real_load = tiktoken.load.load_tiktoken_bpe
    hashes: list[str | None] = []

    def from_disk(url: str, expected_hash: str | None = None) -> dict[bytes, int]:
        assert url.endswith(f"/{name}.tiktoken")
        hashes.append(expected_hash)
        return real_load(str(local), expected_hash=expected_hash)

    monkeypatch.setattr(openai_public, "load_tiktoken_bpe", from_disk)
    theirs = tiktoken.Encoding(**openai_public.ENCODING_CONSTRUCTORS[name]())
    ours = counter._encoding(name)

    assert hashes and hashes[0] is not None
    assert ours.n_vocab == theirs.n_vocab
    assert ours.special_tokens_set == theirs.special_tokens_set
    for text in SAMPLES:
        assert ours.encode(text, allowed_special="all") == theirs.encode(
            text, allowed_special="all"
        )
        assert ours.encode_ordinary(text) == theirs.encode_ordinary(text)


def test_a_corrupt_rank_file_is_refused() -> None:
    raw = bytearray(gzip.decompress(vendored("cl100k_base")))
    raw[-3] = ord("9") if raw[-3] != ord("9") else ord("8")  # the last rank, one digit off
    with pytest.raises(RuntimeError, match="cl100k_base"):
        load_encoding("cl100k_base", gzip.compress(bytes(raw)))


def test_loading_touches_no_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("tried the network or tiktoken's downloader")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    for attr in ("read_file", "read_file_cached", "load_tiktoken_bpe"):
        monkeypatch.setattr(tiktoken.load, attr, refuse)
    monkeypatch.setattr(openai_public, "load_tiktoken_bpe", refuse)
    monkeypatch.setattr(tiktoken.registry, "get_encoding", refuse)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "empty"))

    counter = TokenCounter()
    counter.warm()

    assert counter.count_text("hello world", "gpt-4") == 2
    assert counter.count_text("hello world", "gpt-4o") == 2
    assert not (tmp_path / "empty").exists()


# --- models -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o", "o200k_base"),
        ("gpt-4o-mini", "o200k_base"),
        ("gpt-4o-2024-08-06", "o200k_base"),
        ("chatgpt-4o-latest", "o200k_base"),
        ("gpt-4.1", "o200k_base"),
        ("gpt-4.1-nano", "o200k_base"),
        ("gpt-4.5-preview", "o200k_base"),
        ("gpt-5", "o200k_base"),
        ("gpt-5-mini", "o200k_base"),
        ("o1", "o200k_base"),
        ("o1-preview", "o200k_base"),
        ("o3-mini", "o200k_base"),
        ("o4-mini", "o200k_base"),
        ("gpt-oss-120b", "o200k_base"),
        ("ft:gpt-4o-mini-2024-07-18:acme::abc123", "o200k_base"),
        ("ft:gpt-4.1-mini-2025-04-14:acme::abc123", "o200k_base"),
        ("openai/gpt-4o", "o200k_base"),
        ("GPT-4o", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-4-0613", "cl100k_base"),
        ("gpt-4-turbo", "cl100k_base"),
        ("gpt-4-32k", "cl100k_base"),
        ("gpt-3.5-turbo", "cl100k_base"),
        ("gpt-3.5-turbo-instruct", "cl100k_base"),
        ("gpt-35-turbo", "cl100k_base"),
        ("text-embedding-3-small", "cl100k_base"),
        ("text-embedding-3-large", "cl100k_base"),
        ("text-embedding-ada-002", "cl100k_base"),
        ("ft:gpt-3.5-turbo-0125:acme::abc123", "cl100k_base"),
        ("claude-sonnet-4-5", None),
        ("Qwen/Qwen2.5-7B-Instruct", None),
        ("meta-llama/Llama-3.1-8B-Instruct", None),
        ("o100", None),
        ("gpt-40", None),
        ("", None),
    ],
)
def test_encoding_name(model: str, encoding: str | None) -> None:
    assert TokenCounter().encoding_name(model) == encoding
    assert TokenCounter("estimate").encoding_name(model) == encoding


def test_exact_counts(counter: TokenCounter) -> None:
    assert counter.count_text("hello world", "gpt-4") == 2
    assert counter.count_text("お誕生日おめでとう", "gpt-4") == 9
    assert counter.count_text("お誕生日おめでとう", "gpt-4o") == 8
    assert counter.count_text("", "gpt-4o") == 0


def test_special_tokens_in_text_count_as_text(counter: TokenCounter) -> None:
    # a client may send them; they are text to the model, never a reason to fail
    assert counter.count_text("<|endoftext|>", "gpt-4o") > 1


def test_a_model_without_an_encoding_gets_the_estimate(no_loading: None) -> None:
    text = "Bonjour, le monde! " * 10
    assert TokenCounter().count_text(text, "claude-sonnet-4-5") == estimate_text(text)


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="mode"):
        TokenCounter("approximate")


# --- the estimate -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 0),
        ("a", 1),
        ("abcd", 1),
        ("abcde", 2),
        ("é", 1),  # 2 bytes
        ("日本語", 3),  # 9 bytes
        ("\ud800", 1),  # a lone surrogate, as json.loads can return
        ("x" * 4_000, 1_000),
    ],
)
def test_estimate_is_a_quarter_of_the_utf8_bytes(text: str, expected: int) -> None:
    assert estimate_text(text) == expected


def test_estimate_errs_high_on_english(counter: TokenCounter) -> None:
    text = (
        "The gateway counts prompt tokens before it sends a request upstream, so that a "
        "token-per-minute limit can reserve them; the count is corrected when the answer "
        "reports what was used. "
    ) * 5
    exact = counter.count_text(text, "gpt-4o")
    assert 1.0 <= estimate_text(text) / exact <= 1.3


def test_estimate_mode_never_loads_an_encoding(no_loading: None) -> None:
    counter = TokenCounter("estimate")
    counter.warm()
    body = {"messages": [{"role": "user", "content": "hello there, how are you?"}]}

    tokens_ = counter.prompt_tokens(Endpoint.CHAT, body, "gpt-4o")

    assert tokens_ == 3 + 1 + estimate_text("hello there, how are you?") + 3
    assert counter.count_text("hello world", "gpt-4") == estimate_text("hello world")


# --- loading ----------------------------------------------------------------------------


def test_encodings_load_on_first_use_once(loads: list[str]) -> None:
    counter = TokenCounter()
    assert loads == []

    counter.count_text("hello", "gpt-4o")
    counter.count_text("hello", "gpt-4o-mini")
    assert loads == ["o200k_base"]

    counter.warm()
    assert sorted(loads) == ["cl100k_base", "o200k_base"]


def test_concurrent_first_uses_load_once(monkeypatch: pytest.MonkeyPatch) -> None:
    loaded: list[str] = []

    def slow_load(name: str, packed: bytes | None = None) -> tiktoken.Encoding:
        loaded.append(name)
        time.sleep(0.05)
        return byte_encoding()

    monkeypatch.setattr(tokens, "load_encoding", slow_load)
    counter = TokenCounter()
    results: list[int] = []
    threads = [
        threading.Thread(target=lambda: results.append(counter.count_text("abc", "gpt-4o")))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert loaded == ["o200k_base"]
    assert results == [3] * 8


# --- the budget and the cache -----------------------------------------------------------

LONG = "lorem ipsum dolor sit amet " * 20  # 540 characters, 540 byte-tokens


def test_texts_within_the_budget_are_exact(loads: list[str]) -> None:
    counter = TokenCounter(exact_budget_chars=len(LONG))
    assert counter.count_text(LONG, "gpt-4o") == len(LONG)


def test_past_the_budget_a_text_is_estimated_then_exact_when_it_comes_back(
    loads: list[str],
) -> None:
    counter = TokenCounter(exact_budget_chars=100)

    first = counter.count_text(LONG, "gpt-4o")
    second = counter.count_text(LONG, "gpt-4o")
    third = counter.count_text("".join(LONG), "gpt-4o")  # an equal string, a new object

    assert first == estimate_text(LONG)
    assert second == third == len(LONG)


def test_the_budget_is_per_request(loads: list[str]) -> None:
    counter = TokenCounter(exact_budget_chars=len(LONG))
    other = LONG.upper()
    body = {"messages": [{"role": "user", "content": LONG}, {"role": "user", "content": other}]}

    first = counter.prompt_tokens(Endpoint.CHAT, body, "gpt-4o")
    next_request = counter.count_text(other.lower().upper(), "gpt-4o")

    # the first text spent the budget, the second was estimated; the next request has its own
    assert first == 3 + 1 + len(LONG) + 3 + 1 + estimate_text(other) + 3
    assert next_request == len(other)


def test_short_texts_past_the_budget_are_estimated(loads: list[str]) -> None:
    counter = TokenCounter(exact_budget_chars=0)
    assert counter.count_text("hello world", "gpt-4o") == estimate_text("hello world")
    assert counter.count_text("hello world", "gpt-4o") == estimate_text("hello world")


def test_huge_texts_stay_estimated(loads: list[str]) -> None:
    counter = TokenCounter(exact_budget_chars=0)
    huge = "a" * (tokens.PROMOTE_MAX_CHARS + 1)
    for _ in range(3):
        assert counter.count_text(huge, "gpt-4o") == estimate_text(huge)


def test_the_cache_forgets_the_least_recently_used(loads: list[str]) -> None:
    counter = TokenCounter(exact_budget_chars=0, cache_size=1)
    counter.count_text(LONG, "gpt-4o")
    counter.count_text(LONG.upper(), "gpt-4o")  # pushes LONG out

    assert counter.count_text(LONG, "gpt-4o") == estimate_text(LONG)


# --- request bodies ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "expected"),
    [("gpt-3.5-turbo", 129), ("gpt-4", 129), ("gpt-4-0613", 129), ("gpt-4o", 124)],
)
def test_chat_matches_the_cookbook(counter: TokenCounter, model: str, expected: int) -> None:
    body = {"model": model, "messages": COOKBOOK_MESSAGES}
    assert counter.prompt_tokens(Endpoint.CHAT, body, model) == expected


@pytest.mark.parametrize(
    ("model", "expected"), [("gpt-3.5-turbo", 105), ("gpt-4", 105), ("gpt-4o-mini", 101)]
)
def test_chat_tools_match_the_cookbook(counter: TokenCounter, model: str, expected: int) -> None:
    body = {"messages": COOKBOOK_TOOL_MESSAGES, "tools": COOKBOOK_TOOLS}
    assert counter.prompt_tokens(Endpoint.CHAT, body, model) == expected
    legacy = {"messages": COOKBOOK_TOOL_MESSAGES, "functions": [COOKBOOK_TOOLS[0]["function"]]}
    assert counter.prompt_tokens(Endpoint.CHAT, legacy, model) == expected


def test_nested_tool_schemas_count_more(counter: TokenCounter) -> None:
    nested = {
        "type": "function",
        "function": {
            "name": "f",
            "parameters": {
                "type": "object",
                "properties": {"a": {"type": "array", "items": {"type": "string"}}},
            },
        },
    }
    flat = {
        "type": "function",
        "function": {
            "name": "f",
            "parameters": {"type": "object", "properties": {"a": {"type": "array"}}},
        },
    }
    count = counter.prompt_tokens
    assert count(Endpoint.CHAT, {"tools": [nested]}, "gpt-4o") > count(
        Endpoint.CHAT, {"tools": [flat]}, "gpt-4o"
    )


def test_chat_text_parts_count_like_a_string(counter: TokenCounter) -> None:
    text = "What is in this picture?"
    as_string = {"messages": [{"role": "user", "content": text}]}
    as_parts = {"messages": [{"role": "user", "content": [{"type": "text", "text": text}]}]}
    low = {"type": "image_url", "image_url": {"url": "data:,", "detail": "low"}}
    high = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    with_images = {
        "messages": [{"role": "user", "content": [{"type": "text", "text": text}, low, high]}]
    }

    plain = counter.prompt_tokens(Endpoint.CHAT, as_string, "gpt-4o")

    assert counter.prompt_tokens(Endpoint.CHAT, as_parts, "gpt-4o") == plain
    assert counter.prompt_tokens(Endpoint.CHAT, with_images, "gpt-4o") == plain + 85 + 765


def test_chat_tool_calls_and_results_count(counter: TokenCounter) -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}
    body = {
        "messages": [
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "42"},
        ]
    }
    count = counter.count_text
    expected = (3 + 1 + count("f", "gpt-4o") + count('{"a":1}', "gpt-4o")) + (
        3 + 1 + count("call_1", "gpt-4o") + count("42", "gpt-4o")
    )
    assert counter.prompt_tokens(Endpoint.CHAT, body, "gpt-4o") == expected + 3


@pytest.mark.parametrize("endpoint", [Endpoint.COMPLETION, Endpoint.EMBEDDING])
def test_prompt_shapes(counter: TokenCounter, endpoint: Endpoint) -> None:
    key = "prompt" if endpoint is Endpoint.COMPLETION else "input"

    def count(value: Any) -> int:
        return counter.prompt_tokens(endpoint, {key: value}, "text-embedding-3-small")

    assert count("hello world") == 2
    assert count(["hello world", "hello"]) == 3
    assert count([15339, 1917]) == 2
    assert count([[15339, 1917], [15339]]) == 3
    assert count([]) == 0


def test_anthropic_messages(counter: TokenCounter) -> None:
    system = "You are terse."
    strings = {"system": system, "messages": [{"role": "user", "content": "Hi there"}]}
    blocks = {
        "system": [{"type": "text", "text": system}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi there"}]}],
    }
    count = counter.count_text

    for model in ("gpt-4o", "claude-sonnet-4-5"):
        expected = count(system, model) + 3 + 1 + count("Hi there", model) + 3
        assert counter.prompt_tokens(Endpoint.MESSAGES, strings, model) == expected
        assert counter.prompt_tokens(Endpoint.MESSAGES, blocks, model) == expected


def test_anthropic_blocks(counter: TokenCounter) -> None:
    model = "claude-sonnet-4-5"
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "x"}}
    body = {
        "messages": [
            {"role": "user", "content": [image]},
            {"role": "assistant", "content": [{"type": "tool_use", "name": "f", "input": {}}]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "content": [{"type": "text", "text": "42"}]}],
            },
        ],
        "tools": [{"name": "f", "description": "Adds.", "input_schema": {"type": "object"}}],
    }
    expected = (
        (3 + 1 + 1_600)
        + (3 + 1 + estimate_text("f") + estimate_text("{}"))
        + (3 + 1 + estimate_text("42"))
        + 3
        + estimate_text("f")
        + estimate_text("Adds.")
        + estimate_text('{"type":"object"}')
    )
    assert counter.prompt_tokens(Endpoint.MESSAGES, body, model) == expected


def deep(levels: int) -> Any:
    value: Any = "x"
    for _ in range(levels):
        value = [value]
    return value


ODD_BODIES: list[dict[str, Any]] = [
    {},
    {"messages": None},
    {"messages": "hello"},
    {"messages": {"role": "user"}},
    {"messages": [None, 1, "x", [], {"role": 5, "content": 7, "name": None}]},
    {"messages": [{"role": ["user"], "content": "x"}, {"role": {"a": 1}, "name": ["n"]}]},
    {"messages": [{"content": [None, 3, "x", {"type": "text", "text": 5}, {"type": "image_url"}]}]},
    {"messages": [{"content": [{"type": "image_url", "image_url": "not a dict"}]}]},
    {"messages": [{"tool_calls": [None, {"function": "f"}, {"function": {"name": 1}}]}]},
    {"messages": [{"function_call": "f"}], "functions": "f", "tools": {"a": 1}},
    {"tools": [None, 1, {"type": "web_search"}, {"function": {"name": "f", "parameters": 1}}]},
    {"tools": [{"function": {"name": "f", "parameters": {"properties": {"a": 1, "b": None}}}}]},
    {"tools": [{"function": {"name": "f", "parameters": {"properties": {"a": {"enum": 3}}}}}]},
    {"tools": [{"function": {"name": "f", "description": 3, "parameters": {"properties": []}}}]},
    {"tools": [{"type": "function", "function": {"name": "f", "x": deep(300)}}]},
    {"tools": [{"function": {"name": deep(300)}}]},
    {"tools": [{"function": {"name": "f", "parameters": {"properties": {"a": deep(300)}}}}]},
    {"functions": [{"name": "f", "parameters": {"properties": {"a": {"enum": [deep(300)]}}}}]},
    {"response_format": {"type": "json_schema", "json_schema": deep(300)}},
    {"response_format": "json"},
    {"prompt": None, "input": None},
    {"prompt": 5, "input": 5.5},
    {"prompt": [None, True, 1.5, {"a": 1}, "x", 3, [1, "a"]], "input": {"x": "y"}},
    {"prompt": "\ud800 lone surrogate", "input": ["\udfff"]},
    {"system": 5, "messages": [{"role": "user", "content": 5}]},
    {"system": [None, {"type": "text"}, {"type": "image"}], "messages": [{"content": {}}]},
    {"messages": [{"content": [{"type": "tool_use", "input": deep(300)}]}]},
    {"messages": [{"content": [{"type": "tool_result", "content": [{"type": "tool_result"}]}]}]},
    {"messages": [{"content": [{"type": "document", "source": "x"}, {"type": "thinking"}]}]},
    {"messages": [{"content": [{"type": "document", "source": {"type": "text", "data": 3}}]}]},
    {"tools": [None, {"name": 3, "input_schema": deep(300)}]},
]


@pytest.fixture(params=["gpt-4o", "gpt-4", "claude-sonnet-4-5"])
def model(request: pytest.FixtureRequest) -> Iterator[str]:
    yield request.param


@pytest.mark.parametrize("body", ODD_BODIES)
@pytest.mark.parametrize("endpoint", list(Endpoint))
def test_odd_bodies_never_raise(
    counter: TokenCounter, body: dict[str, Any], endpoint: Endpoint, model: str
) -> None:
    makers: list[Callable[[], TokenCounter]] = [lambda: counter, lambda: TokenCounter("estimate")]
    for make in makers:
        assert make().prompt_tokens(endpoint, body, model) >= 0


FUZZ_KEYS = ["messages", "role", "content", "name", "type", "text", "image_url", "detail"]
FUZZ_KEYS += ["tool_calls", "function", "arguments", "function_call", "tools", "functions"]
FUZZ_KEYS += ["parameters", "properties", "enum", "description", "response_format"]
FUZZ_KEYS += ["json_schema", "prompt", "input", "system", "source", "data", "input_schema"]
FUZZ_LEAVES = [None, True, 1, 2.5, "user", "text", "image_url", "image", "tool_use"]
FUZZ_LEAVES += ["tool_result", "document", "thinking", "low", "hello", "\ud800", ""]


def test_random_bodies_never_raise(counter: TokenCounter) -> None:
    rnd = random.Random(7)

    def value(depth: int) -> Any:
        roll = rnd.random()
        if depth > 4 or roll < 0.3:
            return rnd.choice(FUZZ_LEAVES)
        if roll < 0.6:
            return [value(depth + 1) for _ in range(rnd.randint(0, 4))]
        return {rnd.choice(FUZZ_KEYS): value(depth + 1) for _ in range(rnd.randint(0, 5))}

    estimator = TokenCounter("estimate")
    for _ in range(500):
        body = {rnd.choice(FUZZ_KEYS): value(0) for _ in range(rnd.randint(1, 4))}
        for endpoint in Endpoint:
            assert counter.prompt_tokens(endpoint, body, "gpt-4o") >= 0
            assert estimator.prompt_tokens(endpoint, body, "claude-sonnet-4-5") >= 0
