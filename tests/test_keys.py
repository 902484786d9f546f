"""Keys and metadata helpers: canonical JSON for queries, the key <-> path mapping."""

from __future__ import annotations

import json
import random

import pytest

from kvstore._keys import _canon, canonical, key_to_relpath, relpath_to_key
from kvstore.testing import ODD_KEYS

VALUES = ["a", "é\"\\\n\x00\u2028", "", 1, -5, 10**30, True, False, None, 1.0, 1.5, -0.0, 2.0**70,
          [1, {"b": 2, "a": 1.0}], {}, [], {"z": [True, None]}]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_canonical_fast_path_matches_full_encoding(value):
    full = json.dumps(_canon(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert canonical(value) == full


def test_canonical_equality_is_json_equality():
    assert canonical(1) == canonical(1.0) == canonical(1.0 + 0)
    assert canonical(True) != canonical(1) and canonical(False) != canonical(0)
    assert canonical({"a": 1, "b": 2}) == canonical({"b": 2.0, "a": 1})
    assert canonical([1, 2]) != canonical([2, 1])
    assert canonical("1") != canonical(1)


def _random_key(rng):
    alphabet = "ab/.%~ _-\n€😀é\\:*?[]AZ09"
    n = rng.randint(1, 40)
    return "".join(rng.choice(alphabet) for _ in range(n))


@pytest.mark.parametrize("key", ODD_KEYS, ids=lambda k: repr(k)[:30])
def test_key_paths_round_trip(key):
    rel = key_to_relpath(key)
    assert relpath_to_key(rel) == key
    segments = rel.split("/")
    assert all(s and s not in (".", "..") and not s.startswith(".") for s in segments)
    assert all(len(s.encode()) <= 201 for s in segments)


def test_random_keys_round_trip_and_never_collide():
    rng = random.Random(7)
    seen = {}
    for _ in range(5000):
        key = _random_key(rng)
        rel = key_to_relpath(key)
        assert relpath_to_key(rel) == key
        assert seen.setdefault(rel, key) == key
        # no file of one key is a directory of another
        for other in (rel + ".data", rel + ".metadata"):
            assert not any(s.startswith(other + "/") for s in seen)
