"""Prompt token counts, taken before a request goes upstream, for token-per-minute limits.

``TokenCounter("exact")`` counts OpenAI-family models exactly with tiktoken's
``o200k_base`` (gpt-4o, gpt-4.1, gpt-4.5, gpt-5, o1/o3/o4) and ``cl100k_base`` (gpt-4,
gpt-3.5, text-embedding-3, text-embedding-ada-002). The BPE ranks ship with the package
in ``encodings/`` (provenance and license in its README) and are checked against the
SHA-256 that tiktoken expects, so nothing is downloaded at run time. Every other model,
and every model in ``"estimate"`` mode, gets the estimate.

The estimate is ``ceil(utf-8 bytes / 4)``, at least 1 for non-empty text: OpenAI's rule
of thumb (a token is about 4 characters of English) and, like OpenAI's own rate
limiter, a function of the text's length alone. Measured against both exact encodings
(license texts, docstrings, source code, JSON, the vim tutor in 8 languages), it is
high by 18-30% on English prose and by 2-23% on source code (these encodings pack 4.1-5
bytes a token), the safe side for a limit; it is low by 1-18% on Markdown, indented
JSON and Latin-script European languages, by 27-47% on Chinese, Japanese, Korean and
Greek with cl100k (0-18% with o200k) and by 52% on JSON full of numbers (2 bytes a
token); Cyrillic with o200k is 34% high.

Chat bodies follow OpenAI's documented formula: 3 tokens a message, plus every string
field of it (role, content, name, ...), plus 1 for a ``name``, plus 3 to prime the
reply. It reproduces the API-verified example of OpenAI's "How to count tokens" cookbook
(129 tokens on gpt-3.5/gpt-4, 124 on gpt-4o). ``tools``/``functions`` follow the
cookbook's formula (105/101 on its example); what it does not cover is counted as JSON.
Images cost a flat 85 tokens at ``detail: low`` and 765 otherwise (OpenAI's price of a
1024x1024 image at high detail); Anthropic images a flat 1,600 (Anthropic's figure for
a maximum-size image). Anthropic Messages bodies use the same per-message constants.

Exact counting costs 0.2-0.4 µs a token, too much for a ~150 µs request path on long
prompts, so each request encodes at most ``exact_budget_chars`` characters (2,048 by
default: about 500 tokens, 0.1-0.25 ms); texts past the budget get the estimate. Counts
of texts of 64 characters or more are kept in an LRU keyed by the text's hash and
length (no text is held): a system prompt or chat history sent again costs a hash,
whatever the budget. A long text estimated once is counted exactly when it comes back
(up to 64 Ki characters, a few ms once), so repeated long system prompts are exact
from their second request on.

Encodings load lazily (about 0.2 s and 40 MiB for cl100k, 0.3 s and 75 MiB for o200k);
call ``warm()`` at start-up to keep that off the request path.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import resources
from typing import Any

import orjson
import tiktoken

from aigw.types import Endpoint

# OpenAI's cookbook: <|start|>{role/name}\n{content}<|end|>\n, and the reply is primed
# with <|start|>assistant<|message|>.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3
IMAGE_LOW_TOKENS = 85
IMAGE_TOKENS = 765
ANTHROPIC_IMAGE_TOKENS = 1_600

DEFAULT_EXACT_BUDGET_CHARS = 2_048
DEFAULT_CACHE_SIZE = 16_384  # about 4 MiB per encoding
# Shorter texts encode about as fast as a cache look-up.
CACHE_MIN_CHARS = 64
# The most a text seen twice may cost to count exactly (a few milliseconds, once).
PROMOTE_MAX_CHARS = 65_536
_SEEN = -1  # in the cache: estimated once; counted exactly when seen again
# One token in both encodings (and, near enough, in every tokenizer); spares an encode.
_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})

Count = Callable[[str], int]

# As tiktoken's model.py maps them. gpt-oss uses o200k_harmony, whose ranks and pattern
# are o200k_base's, so its ordinary text counts alike.
_O200K_PREFIXES = ("gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "chatgpt-4o", "gpt-oss-")
_O200K_FAMILIES = frozenset({"o1", "o3", "o4"})  # alone, or followed by "-"
_CL100K_PREFIXES = ("gpt-4-", "gpt-3.5", "gpt-35-turbo", "text-embedding-3-")
_CL100K_MODELS = frozenset({"gpt-4", "text-embedding-ada-002", "davinci-002", "babbage-002"})


@dataclass(frozen=True, slots=True)
class _Spec:
    """What tiktoken_ext/openai_public.py builds an encoding from, minus the download."""

    pat_str: str
    special_tokens: dict[str, int]
    sha256: str  # of the uncompressed .tiktoken file, as tiktoken expects


_SPECS: dict[str, _Spec] = {
    "cl100k_base": _Spec(
        pat_str=(
            r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+|"""
            r""" ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
        ),
        special_tokens={
            "<|endoftext|>": 100257,
            "<|fim_prefix|>": 100258,
            "<|fim_middle|>": 100259,
            "<|fim_suffix|>": 100260,
            "<|endofprompt|>": 100276,
        },
        sha256="223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    ),
    "o200k_base": _Spec(
        pat_str="|".join(
            [
                r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
                r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
                r"""\p{N}{1,3}""",
                r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
                r"""\s*[\r\n]+""",
                r"""\s+(?!\S)""",
                r"""\s+""",
            ]
        ),
        special_tokens={"<|endoftext|>": 199999, "<|endofprompt|>": 200018},
        sha256="446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    ),
}
ENCODINGS = tuple(_SPECS)


def estimate_text(text: str) -> int:
    """``ceil(utf-8 bytes / 4)``, at least 1 for non-empty text (see the module doc)."""
    # isascii() is O(1) in CPython, and an ASCII character is one byte.
    size = len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
    return -(-size // 4)


def load_encoding(name: str, packed: bytes | None = None) -> tiktoken.Encoding:
    """Build encoding ``name`` from its vendored rank file (or ``packed``, such a file).

    Raises ``RuntimeError`` if the ranks are not the ones tiktoken expects.
    """
    spec = _SPECS[name]
    if packed is None:
        vendored = resources.files("aigw.limits").joinpath("encodings", f"{name}.tiktoken.gz")
        packed = vendored.read_bytes()
    raw = gzip.decompress(packed)
    if hashlib.sha256(raw).hexdigest() != spec.sha256:
        raise RuntimeError(f"{name}.tiktoken.gz does not hold the {name} ranks tiktoken expects")
    ranks = {
        base64.b64decode(token): int(rank)
        for token, rank in (line.split() for line in raw.splitlines() if line)
    }
    return tiktoken.Encoding(
        name, pat_str=spec.pat_str, mergeable_ranks=ranks, special_tokens=spec.special_tokens
    )


class _CountCache:
    """Token counts by (hash, length) of the text, least recently used dropped first."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._counts: OrderedDict[tuple[int, int], int] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[int, int]) -> int | None:
        with self._lock:
            count = self._counts.get(key)
            if count is not None:
                self._counts.move_to_end(key)
            return count

    def put(self, key: tuple[int, int], count: int) -> None:
        with self._lock:
            self._counts[key] = count
            self._counts.move_to_end(key)
            if len(self._counts) > self._size:
                self._counts.popitem(last=False)


class TokenCounter:
    """Counts a request's prompt tokens for the upstream ``model`` (see the module doc).

    ``mode="exact"`` counts OpenAI-family models exactly within the per-request budget;
    ``mode="estimate"`` never loads an encoding. Counting never raises on a body of an
    unexpected shape: what is not where it should be, or not a string, counts 0.
    """

    def __init__(
        self,
        mode: str = "exact",
        *,
        exact_budget_chars: int = DEFAULT_EXACT_BUDGET_CHARS,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        if mode not in ("exact", "estimate"):
            raise ValueError(f"mode must be 'exact' or 'estimate', got {mode!r}")
        self.mode = mode
        self._budget_chars = exact_budget_chars
        self._encodings: dict[str, tiktoken.Encoding] = {}
        self._caches = {name: _CountCache(cache_size) for name in ENCODINGS}
        self._load_lock = threading.Lock()

    def encoding_name(self, model: str) -> str | None:
        """The model family's encoding, whatever the mode; ``None``: not OpenAI's."""
        model = model.lower().removeprefix("openai/")
        if model.startswith("ft:"):  # ft:gpt-4o-mini-2024-07-18:org::id
            model = model[3:].split(":", 1)[0]
        if model.startswith(_O200K_PREFIXES):
            return "o200k_base"
        if model.split("-", 1)[0] in _O200K_FAMILIES:
            return "o200k_base"
        if model in _CL100K_MODELS or model.startswith(_CL100K_PREFIXES):
            return "cl100k_base"
        return None

    def warm(self, models: Iterable[str] | None = None) -> None:
        """Load now, off the request path, the encodings ``models`` need (every one if
        None); exact mode only. Each costs 40 to 70 MiB, so load only what is used."""
        if self.mode != "exact":
            return
        names = ENCODINGS if models is None else {self.encoding_name(m) for m in models}
        for name in names:
            if name is not None:
                self._encoding(name)

    def count_text(self, text: str, model: str) -> int:
        """One text, under the same budget and cache as one request."""
        return self._counter(self.encoding_name(model))(text)

    def prompt_tokens(self, endpoint: Endpoint, body: dict[str, Any], model: str) -> int:
        """The prompt tokens of a request ``body`` for ``endpoint`` and upstream ``model``."""
        name = self.encoding_name(model)
        count = self._counter(name)
        if endpoint is Endpoint.CHAT:
            return _chat_tokens(body, count, func_init=7 if name == "o200k_base" else 10)
        if endpoint is Endpoint.COMPLETION:
            return _prompt_tokens(body.get("prompt"), count)
        if endpoint is Endpoint.EMBEDDING:
            return _prompt_tokens(body.get("input"), count)
        if endpoint is Endpoint.MESSAGES:
            return _anthropic_tokens(body, count)
        return 0

    def _encoding(self, name: str) -> tiktoken.Encoding:
        encoding = self._encodings.get(name)
        if encoding is None:
            with self._load_lock:
                encoding = self._encodings.get(name)
                if encoding is None:
                    encoding = self._encodings[name] = load_encoding(name)
        return encoding

    def _counter(self, name: str | None) -> Count:
        """A counter for one request: exact within the budget, else the estimate."""
        if name is None or self.mode != "exact":
            return estimate_text
        encode = self._encoding(name).encode_ordinary
        cache = self._caches[name]
        budget = self._budget_chars

        def count(text: str) -> int:
            nonlocal budget
            size = len(text)
            if size < CACHE_MIN_CHARS:
                if size <= budget:
                    budget -= size
                    return len(encode(text))
                return estimate_text(text)
            key = (hash(text), size)
            known = cache.get(key)
            if known is not None and known != _SEEN:
                return known
            if size <= budget or (known == _SEEN and size <= PROMOTE_MAX_CHARS):
                budget -= size
                tokens = len(encode(text))
                cache.put(key, tokens)
                return tokens
            cache.put(key, _SEEN)
            return estimate_text(text)

        return count


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _json(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:  # nested past orjson's depth limit: not worth counting
        return ""


def _json_tokens(value: Any, count: Count) -> int:
    return count(_json(value))


def _text_tokens(value: Any, count: Count) -> int:
    return count(value) if isinstance(value, str) else 0


def _chat_tokens(body: dict[str, Any], count: Count, func_init: int) -> int:
    tokens = 0
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, dict):
                tokens += TOKENS_PER_MESSAGE + _chat_message_tokens(message, count)
        tokens += REPLY_PRIMING
    for key in ("tools", "functions"):
        tokens += _tools_tokens(body.get(key), count, func_init)
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and "json_schema" in response_format:
        tokens += _json_tokens(response_format["json_schema"], count)
    return tokens


def _chat_message_tokens(message: dict[str, Any], count: Count) -> int:
    tokens = 0
    for key, value in message.items():
        if key == "role" and isinstance(value, str) and value in _ROLES:
            tokens += 1
        elif isinstance(value, str):
            tokens += count(value) + (TOKENS_PER_NAME if key == "name" else 0)
        elif key == "content" and isinstance(value, list):
            tokens += sum(_chat_part_tokens(part, count) for part in value)
        elif key == "tool_calls" and isinstance(value, list):
            tokens += sum(
                _call_tokens(call.get("function"), count)
                for call in value
                if isinstance(call, dict)
            )
        elif key == "function_call":
            tokens += _call_tokens(value, count)
    return tokens


def _chat_part_tokens(part: Any, count: Count) -> int:
    if not isinstance(part, dict):
        return 0
    kind = part.get("type")
    if kind == "image_url":
        image = part.get("image_url")
        low = isinstance(image, dict) and image.get("detail") == "low"
        return IMAGE_LOW_TOKENS if low else IMAGE_TOKENS
    if kind == "refusal":
        return _text_tokens(part.get("refusal"), count)
    return _text_tokens(part.get("text"), count)


def _call_tokens(function: Any, count: Count) -> int:
    if not isinstance(function, dict):
        return 0
    return _text_tokens(function.get("name"), count) + _text_tokens(
        function.get("arguments"), count
    )


def _tools_tokens(tools: Any, count: Count, func_init: int) -> int:
    """OpenAI's cookbook formula for function tools; other tools are counted as JSON."""
    if not isinstance(tools, list) or not tools:
        return 0
    tokens = 12  # func_end
    for tool in tools:
        if not isinstance(tool, dict):
            continue
        function = tool.get("function", tool)  # a tool wraps it; legacy `functions` do not
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str):  # not a function tool
            tokens += _json_tokens(tool, count)
            continue
        description = _str(function.get("description")).removesuffix(".")
        tokens += func_init + count(f"{name}:{description}")
        parameters = function.get("parameters")
        if isinstance(parameters, dict):
            tokens += _properties_tokens(parameters.get("properties"), count)
    return tokens


def _properties_tokens(properties: Any, count: Count) -> int:
    if not isinstance(properties, dict) or not properties:
        return 0
    tokens = 3  # prop_init
    for name, schema in properties.items():
        tokens += 3  # prop_key
        if not isinstance(schema, dict):
            continue
        enum = schema.get("enum")
        if isinstance(enum, list):
            # enum_init, then enum_item for each
            tokens += -3 + sum(
                3 + count(item if isinstance(item, str) else _json(item)) for item in enum
            )
        description = _str(schema.get("description")).removesuffix(".")
        kind = schema.get("type", "")
        tokens += count(f"{name}:{kind if isinstance(kind, str) else _json(kind)}:{description}")
        rest = {k: v for k, v in schema.items() if k not in ("type", "description", "enum")}
        if rest:  # nested schemas, which the cookbook's formula leaves out
            tokens += _json_tokens(rest, count)
    return tokens


def _prompt_tokens(prompt: Any, count: Count) -> int:
    """A completion's ``prompt`` or an embedding's ``input``: text, texts or token arrays."""
    if isinstance(prompt, str):
        return count(prompt)
    if not isinstance(prompt, list):
        return 0
    tokens = 0
    for item in prompt:
        if isinstance(item, str):
            tokens += count(item)
        elif isinstance(item, list):
            tokens += len(item)  # a token array
        elif isinstance(item, int) and not isinstance(item, bool):
            tokens += 1  # one token of a single token array
    return tokens


def _anthropic_tokens(body: dict[str, Any], count: Count) -> int:
    tokens = _blocks_tokens(body.get("system"), count)
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, dict):
                role = message.get("role")
                known = isinstance(role, str) and role in _ROLES
                tokens += TOKENS_PER_MESSAGE + (1 if known else _text_tokens(role, count))
                tokens += _blocks_tokens(message.get("content"), count)
        tokens += REPLY_PRIMING
    tools = body.get("tools")
    if isinstance(tools, list):
        for tool in tools:
            if isinstance(tool, dict):
                tokens += _text_tokens(tool.get("name"), count)
                tokens += _text_tokens(tool.get("description"), count)
                if "input_schema" in tool:
                    tokens += _json_tokens(tool["input_schema"], count)
    return tokens


def _blocks_tokens(content: Any, count: Count, nested: bool = False) -> int:
    """Anthropic content: a string or a list of blocks; a tool result nests one level."""
    if isinstance(content, str):
        return count(content)
    if not isinstance(content, list):
        return 0
    tokens = 0
    for block in content:
        if isinstance(block, dict):
            tokens += _block_tokens(block, count, nested)
    return tokens


def _block_tokens(block: dict[str, Any], count: Count, nested: bool) -> int:
    kind = block.get("type")
    if kind == "image":
        return ANTHROPIC_IMAGE_TOKENS
    if kind == "tool_use":
        return _text_tokens(block.get("name"), count) + _json_tokens(block.get("input"), count)
    if kind == "tool_result" and not nested:
        return _blocks_tokens(block.get("content"), count, nested=True)
    if kind == "thinking":
        return _text_tokens(block.get("thinking"), count)
    if kind == "document":  # plain-text documents only; a PDF's base64 is no measure
        source = block.get("source")
        if isinstance(source, dict) and source.get("type") == "text":
            return _text_tokens(source.get("data"), count)
        return 0
    return _text_tokens(block.get("text"), count)
