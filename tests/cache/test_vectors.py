from __future__ import annotations

import numpy as np
import pytest

from aigw.cache.key import context_of, split_last_user
from aigw.cache.vectors import VectorIndex


def unit(seed: int, dims: int = 32) -> list[float]:
    vector = np.random.default_rng(seed).standard_normal(dims)
    return list(vector / np.linalg.norm(vector))


def test_search_finds_the_nearest_above_the_threshold_only() -> None:
    index = VectorIndex()
    for i in range(20):
        index.add("ctx", f"e{i}", unit(i))
    near = np.array(unit(7)) + 0.05 * np.array(unit(99))
    found = index.search("ctx", list(near), 0.95)
    assert found is not None and found[0] == "e7" and found[1] > 0.95
    assert index.search("ctx", unit(1000), 0.95) is None  # unrelated: far below
    assert index.search("other-context", unit(7), 0.5) is None  # contexts never mix


def test_bounded_oldest_first_and_rows_stay_consistent() -> None:
    index = VectorIndex(max_entries=5)
    for i in range(12):
        index.add(f"ctx{i % 2}", f"e{i}", unit(i))
    assert len(index) == 5 and index.evictions == 7
    for i in range(7, 12):  # the five newest are all still found exactly
        found = index.search(f"ctx{i % 2}", unit(i), 0.999)
        assert found is not None and found[0] == f"e{i}"
    assert index.search("ctx0", unit(0), 0.999) is None


def test_re_adding_an_id_replaces_its_vector_and_bad_vectors_are_refused() -> None:
    index = VectorIndex()
    index.add("c", "x", unit(1))
    index.add("c", "x", unit(2))
    assert len(index) == 1
    assert index.search("c", unit(2), 0.999) == ("x", pytest.approx(1.0, abs=1e-5))
    with pytest.raises(ValueError):
        index.add("c", "y", [0.0] * 32)
    with pytest.raises(ValueError):
        index.add("c", "z", unit(3, dims=8))


def test_split_last_user_and_context() -> None:
    body = {
        "model": "m", "temperature": 0,
        "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": " Hi "}],
    }  # fmt: skip
    text, rest = split_last_user(body)  # type: ignore[misc]
    assert text == "Hi" and rest["messages"] == [{"role": "system", "content": "S"}]
    other_system = {**body, "messages": [{"role": "system", "content": "T"}, body["messages"][1]]}
    _, rest2 = split_last_user(other_system)  # type: ignore[misc]
    assert context_of("chat", "m", "ns", rest) != context_of("chat", "m", "ns", rest2)
    parts = {
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {}}],
            }
        ]
    }
    assert split_last_user(parts) is None  # an image is not a paraphrase of anything
    assert split_last_user({"messages": [{"role": "assistant", "content": "x"}]}) is None
