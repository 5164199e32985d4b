"""Deterministic embeddings for the simulator: a unit vector from a hash of the input.

Equal inputs get equal vectors, so cache and dedup tests can compare them; the
values mean nothing. Vectors are float32, and ``encoding_format: "base64"`` sends
their little-endian bytes, as OpenAI does. Pure.
"""

from __future__ import annotations

import base64
import hashlib
import math
import struct
from functools import lru_cache

import orjson

from aigw.simulator.openai_dialect import prompt_list

MAX_DIMS = 65_536


@lru_cache(maxsize=8192)
def packed_vector(key: bytes, dims: int) -> bytes:
    """``dims`` little-endian float32 values of unit norm, derived from ``key``."""
    raw = struct.unpack(f"<{dims}I", hashlib.shake_128(key).digest(4 * dims))
    values = [r / 2_147_483_648.0 - 1.0 for r in raw]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return struct.pack(f"<{dims}f", *(v / norm for v in values))


def _key(item: str | list[object]) -> bytes:
    if isinstance(item, str):
        return item.encode()
    return b"ids:" + b",".join(str(i).encode() for i in item)


def _tokens(item: str | list[object]) -> int:
    return len(item.split()) if isinstance(item, str) else len(item)


def dimensions(body: dict[str, object], default: int) -> int:
    dims = body.get("dimensions", default)
    if isinstance(dims, bool) or not isinstance(dims, int) or not 1 <= dims <= MAX_DIMS:
        raise ValueError(f"dimensions must be an integer between 1 and {MAX_DIMS}")
    return dims


def embeddings_body(body: dict[str, object], model: str, default_dims: int) -> bytes:
    """The answer to an embeddings request; ``ValueError`` for an unusable request."""
    items = prompt_list(body.get("input"))
    if not items:
        raise ValueError("input must be a string, a list of strings, or token ids")
    dims = dimensions(body, default_dims)
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    for index, item in enumerate(items):
        packed = packed_vector(_key(item), dims)
        vector: object = (
            base64.b64encode(packed).decode()
            if as_base64
            else list(struct.unpack(f"<{dims}f", packed))
        )
        data.append({"object": "embedding", "index": index, "embedding": vector})
    tokens = max(1, sum(_tokens(item) for item in items))
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return orjson.dumps({"object": "list", "data": data, "model": model, "usage": usage})
