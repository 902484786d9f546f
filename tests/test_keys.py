"""Keys and metadata helpers: canonical JSON for queries, the key <-> path mapping, the
validated copy of metadata every write makes."""

from __future__ import annotations

import collections
import enum
import json
import math
import random

import pytest

from kvstore._keys import _canon, canonical, dump_metadata, key_to_relpath, normalize_metadata, relpath_to_key
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


# ---------------------------------------------------------------------------
# normalize_metadata: the one-walk copy of every write is json.loads(dump_metadata(...)),
# value, types and errors alike.
# ---------------------------------------------------------------------------

class _Str(str):
    pass


class _Int(int):
    pass


class _Float(float):
    pass


class _Dict(dict):
    pass


class _List(list):
    pass


class _Color(enum.IntEnum):
    RED = 1


def _reference(metadata):
    """What every write did before the one-walk copy."""
    return json.loads(dump_metadata(metadata))


def _outcome(fn, metadata):
    try:
        return "ok", fn(metadata)
    except (TypeError, ValueError, RecursionError) as exc:
        return type(exc), str(exc)


def _same(a, b, path="$"):
    """Equal with the same types all the way down (bool is not int, -0.0 is not 0.0) and
    the same order of names."""
    assert type(a) is type(b), (path, a, b)
    if type(a) is dict:
        assert list(a) == list(b), path
        for name in a:
            _same(a[name], b[name], f"{path}.{name}")
    elif type(a) is list:
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{path}[{i}]")
    elif type(a) is float:
        assert repr(a) == repr(b), path
    else:
        assert a == b, path


def _containers(value, into):
    if isinstance(value, (dict, list, tuple)):
        into.add(id(value))
        for item in (value.values() if isinstance(value, dict) else value):
            _containers(item, into)
    return into


def _nested(depth, kind):
    value = {}
    for _ in range(depth - 1):
        value = {"d": value} if kind == "dict" else [value]
    return value if kind == "dict" else {"l": value}


def _cycle_dict():
    d = {"a": 1}
    d["self"] = d
    return d


def _cycle_list():
    items = [1]
    items.append(items)
    return {"l": items}


ODD_METADATA = [
    {}, {"a": 1}, {"": ""}, {"t": (1, (2, [3]))}, {"f": -0.0, "g": 5e-324, "h": 1.7976931348623157e308},
    {"big": 2**64 - 1, "neg": -(2**64) + 1}, {"big": 2**64}, {"neg": -(2**64)}, {"huge": 10**40},
    {"digits": 10**5000}, {"s\udcff": "lone\ud800surrogate"}, {"u": "€😀\x00\u2028"},
    {"b": True, "n": None, "i": 0, "o": False}, {"a": [{"b": [{"c": {}}]}]}, {"same": [1], "again": [1]},
    _nested(100, "dict"), _nested(101, "dict"), _nested(100, "list"), _nested(101, "list"),
    _cycle_dict(), _cycle_list(),
    {"nan": math.nan}, {"l": [1, math.inf]}, {"d": {"x": -math.inf}}, {1: "int"}, {True: "bool"},
    {None: "none"}, {1.5: "float"}, {("t",): "tuple"}, {"a": {"b": [{2: "x"}]}},
    {"nan": math.nan, 1: "both: the name is reported"}, {"obj": object()}, {"b": b"x"}, {"s": {1}},
    {"sub": _Str("x")}, {_Str("k"): 1}, {"sub": _Int(3)}, {"sub": _Float(1.5)}, {"sub": _Float("nan")},
    {"sub": _Dict(a=1)}, {"sub": _List([1])}, {"e": _Color.RED}, _Dict(a=1),
    collections.OrderedDict(a=[1]), [("a", 1)], "text", None, 3,
]


def _id(metadata):
    try:
        return repr(metadata)[:40]
    except ValueError:  # an int too long to print
        return "unprintable"


@pytest.mark.parametrize("metadata", ODD_METADATA, ids=_id)
def test_normalize_metadata_is_the_json_round_trip(metadata):
    expected = _outcome(_reference, metadata)
    got = _outcome(normalize_metadata, metadata)
    assert got[0] == expected[0]
    if got[0] == "ok":
        _same(got[1], expected[1])
        assert not _containers(got[1], set()) & _containers(metadata, set())  # nothing shared
    else:
        assert got[1] == expected[1]  # the same error, word for word


def _random_value(rng, depth=0):
    roll = rng.random()
    if depth < 4 and roll < 0.15:
        return {_random_name(rng): _random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))}
    if depth < 4 and roll < 0.3:
        items = [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
        return tuple(items) if rng.random() < 0.3 else items
    return rng.choice([
        "", "x", "€\n\"\\", "\udcff", 0, 1, -7, 2**63, 2**64, -(2**64), 10**30, True, False, None,
        1.5, -0.0, 1e-7, 1e300, math.nan, math.inf, object(), b"b", _Str("s"), _Int(1), _Color.RED,
        _Float(2.5), _List([1]), _Dict(z=1),
    ]) if rng.random() < 0.2 else rng.choice(["s", 3, 2.25, True, None, "é"])


def _random_name(rng):
    if rng.random() < 0.03:
        return rng.choice([1, True, None, 2.5, _Str("n")])
    return rng.choice(["a", "b", "c", "", "€", "x.y", "[0]"]) + str(rng.randint(0, 3))


def test_normalize_metadata_random():
    rng = random.Random(16)
    outcomes = collections.Counter()
    for _ in range(4000):
        metadata = {_random_name(rng): _random_value(rng) for _ in range(rng.randint(0, 6))}
        expected = _outcome(_reference, metadata)
        got = _outcome(normalize_metadata, metadata)
        assert got[0] == expected[0], metadata
        if got[0] == "ok":
            _same(got[1], expected[1])
        else:
            assert got[1] == expected[1], metadata
        outcomes[expected[0]] += 1
    assert outcomes["ok"] > 1000 and outcomes[TypeError] > 300 and outcomes[ValueError] > 100
