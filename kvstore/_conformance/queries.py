"""Conformance checks (:class:`kvstore.testing.StoreConformance`): queries and glob; odd and bad
keys, bad metadata and values."""

from __future__ import annotations

import io
import math
from typing import Any, Dict, List, Tuple

import pytest

from ..errors import InvalidKeyError
from .support import BAD_KEYS, BAD_METADATA, ODD_KEYS, EventRecorder, _pair, _snapshot


class QueryAndKeyChecks:
    """Queries and glob; odd and bad keys, bad metadata and values."""

    # ------------------------------------------------------------ queries

    def test_query(self, store: Any) -> None:
        store.set("a", _pair(b"", {"type": "egg", "n": 1, "flag": True, "tags": ["x", "y"], "none": None}))
        store.set("b", _pair(b"", {"type": "egg", "n": 2.0, "flag": 1, "nested": {"k": [1, 2]}}))
        store.set("c", _pair(b"", {"type": "spam", "n": 1.0}))
        assert sorted(k for k, _ in store.query()) == ["a", "b", "c"]
        assert sorted(store.query_keys()) == ["a", "b", "c"]
        assert sorted(store.query_keys(type="egg")) == ["a", "b"]
        assert sorted(store.query_keys(n=1)) == ["a", "c"]            # 1 matches 1.0
        assert sorted(store.query_keys(n=2)) == ["b"]
        assert sorted(store.query_keys(flag=True)) == ["a"]           # True does not match 1
        assert sorted(store.query_keys(flag=1)) == ["b"]
        assert sorted(store.query_keys(type="egg", n=1)) == ["a"]
        assert sorted(store.query_keys(tags=["x", "y"])) == ["a"]
        assert sorted(store.query_keys(tags=["y", "x"])) == []
        assert sorted(store.query_keys(nested={"k": [1, 2.0]})) == ["b"]
        assert sorted(store.query_keys(none=None)) == ["a"]
        assert sorted(store.query_keys(type="nothing")) == []
        assert sorted(store.query_keys(missing=1)) == []
        result = dict(store.query(select=["n"], type="egg"))
        assert result == {"a": {"n": 1}, "b": {"n": 2.0}}
        full = dict(store.query(type="spam"))
        assert full == {"c": {"type": "spam", "n": 1.0}}

    def test_query_bad_values(self, store: Any) -> None:
        with pytest.raises((TypeError, ValueError)):
            store.query(x=math.nan)
        with pytest.raises(TypeError):
            store.query_keys(x=object())

    def test_query_operators(self, store: Any) -> None:
        from ..query import between, contains, exists, ge, gt, le, lt, not_, one_of, prefix

        store.set("a", _pair(b"", {"n": 1, "s": "Z", "tags": ["raw", 1], "owner": None, "flag": True}))
        store.set("b", _pair(b"", {"n": 1.0, "s": "a", "tags": [[1]], "owner": "bob", "flag": 1}))
        store.set("c", _pair(b"", {"n": 2.5, "s": "\uffff", "tags": "raw", "flag": False}))
        store.set("d", _pair(b"", {"n": "1", "s": "\U0001F600", "tags": [1.0]}))
        store.set("e", _pair(b"", {"n": True, "s": 3}))

        def keys(**criteria: Any) -> List[str]:
            found = sorted(store.query_keys(**criteria))
            assert sorted(k for k, _ in store.query(**criteria)) == found
            return found

        # numbers by value, booleans are not numbers, strings are not numbers
        assert keys(n=ge(1)) == ["a", "b", "c"]
        assert keys(n=gt(1)) == ["c"]
        assert keys(n=le(1.0)) == ["a", "b"]
        assert keys(n=lt(1)) == []
        assert keys(n=between(1, 1)) == ["a", "b"]             # inclusive at both ends
        assert keys(n=between(2.5, 1)) == []                   # an empty range is no error
        assert keys(n=one_of([1, "1"])) == ["a", "b", "d"]     # 1.0 is 1; True is not
        assert keys(n=one_of([True])) == ["e"]
        assert keys(n=one_of([])) == []
        # strings by code point: "Z" < "a" < U+FFFF < U+1F600 (UTF-16 would put U+FFFF last)
        assert keys(s=gt("a")) == ["c", "d"]
        assert keys(s=lt("\U0001F600")) == ["a", "b", "c"]
        assert keys(s=between("Z", "a")) == ["a", "b"]
        assert keys(s=prefix("")) == ["a", "b", "c", "d"]      # every string, not the number
        assert keys(s=prefix("\U0001F600x")) == []
        assert keys(s=prefix("\U0001F600")) == ["d"]
        # contains: lists only, elements by JSON equality
        assert keys(tags=contains("raw")) == ["a"]             # not the string "raw" of c
        assert keys(tags=contains(1)) == ["a", "d"]            # 1.0 is 1
        assert keys(tags=contains([1])) == ["b"]
        # exists: present whatever the value, null included
        assert keys(owner=exists()) == ["a", "b"]
        assert keys(owner=None) == ["a"]
        assert keys(owner=exists(False)) == ["c", "d", "e"]
        # not_: a missing name is "does not hold"
        assert keys(owner=not_("bob")) == ["a", "c", "d", "e"]
        assert keys(owner=not_(None)) == ["b", "c", "d", "e"]
        assert keys(flag=not_(True)) == ["b", "c", "d", "e"]   # 1 is not True
        assert keys(n=not_(gt(1))) == ["a", "b", "d", "e"]
        assert keys(owner=not_(exists())) == ["c", "d", "e"]
        assert keys(owner=not_(exists(False))) == ["a", "b"]
        assert keys(n=not_(not_(1))) == ["a", "b"]
        # mixed freely with plain values, all must hold
        assert keys(n=1, s=gt("Y"), tags=contains("raw"), owner=exists()) == ["a"]
        assert keys(n=ge(1), flag=not_(1)) == ["a", "c"]
        assert dict(store.query(select=["n"], n=gt(2))) == {"c": {"n": 2.5}}

    def test_query_operators_bad_input(self, store: Any) -> None:
        from ..query import Criterion, contains, exists, gt, not_, one_of, prefix

        store.set("k", _pair(b"", {"n": 1}))
        wrong: List[Tuple[Any, Any]] = [(gt, [1]), (gt, True), (gt, None), (prefix, 3), (one_of, 3),
                                        (exists, 1), (contains, object()), (not_, object()), (gt, math.inf)]
        for make, argument in wrong:
            with pytest.raises(TypeError):
                make(argument)

        class Unknown(Criterion):
            def holds(self, present: bool, value: Any = None) -> bool:
                return True

        with pytest.raises(TypeError):
            store.query_keys(n=Unknown())
        with pytest.raises(TypeError):
            store.query(n=not_(gt(0)), m=Unknown())
        with pytest.raises((TypeError, ValueError)):
            store.query_keys(n=[math.nan])
        assert _snapshot(store) == {"k": (b"", {"n": 1})}

    def test_glob(self, store: Any) -> None:
        for key in ["images/cat.png", "images/dog.jpg", "images/2024/owl.png", "docs/a.txt",
                    "imagesX", "[x]", "a?b"]:
            store.set(key, _pair(b"", {}))
        assert sorted(store.glob("images/*")) == ["images/2024/owl.png", "images/cat.png", "images/dog.jpg"]
        assert sorted(store.glob("*.png")) == ["images/2024/owl.png", "images/cat.png"]
        assert sorted(store.glob("images/???.*")) == ["images/cat.png", "images/dog.jpg"]
        assert sorted(store.glob("images*")) == ["images/2024/owl.png", "images/cat.png",
                                                 "images/dog.jpg", "imagesX"]
        assert sorted(store.glob("[[]x]")) == ["[x]"]
        assert sorted(store.glob("a[?]b")) == ["a?b"]
        assert sorted(store.glob("docs/a.txt")) == ["docs/a.txt"]
        assert sorted(store.glob("nothing*")) == []
        assert len(list(store.glob("*"))) == 7
        with pytest.raises(TypeError):
            store.glob(None)

    # ------------------------------------------------------------ keys

    @pytest.mark.parametrize("key", ODD_KEYS, ids=lambda k: repr(k)[:30])
    def test_odd_keys_roundtrip(self, store: Any, key: str) -> None:
        store.set(key, _pair(key.encode("utf-8"), {"key": key}))
        assert store.exists(key)
        assert store.get_data(key).read() == key.encode("utf-8")
        assert store.get_metadata(key) == {"key": key}
        assert list(store.glob("*")) == [key]
        assert list(store.query_keys(key=key)) == [key]
        store.update_metadata(key, {"more": 1})
        assert store.get_metadata(key) == {"key": key, "more": 1}
        store.delete(key)
        assert not store.exists(key)
        assert list(store.glob("*")) == []

    def test_all_odd_keys_together(self, store: Any) -> None:
        for key in ODD_KEYS:
            store.set(key, _pair(key.encode("utf-8"), {"key": key}))
        assert sorted(store.glob("*")) == sorted(ODD_KEYS)
        for key in ODD_KEYS:
            assert store.get_data(key).read() == key.encode("utf-8"), key
        assert sorted(k for k, md in store.query()) == sorted(ODD_KEYS)

    def test_case_only_differences(self, store: Any) -> None:
        for key in ["Key", "key", "KEY"]:
            store.set(key, _pair(key.encode(), {}))
        assert sorted(store.glob("*")) == ["KEY", "Key", "key"]
        assert store.get_data("Key").read() == b"Key"

    @pytest.mark.parametrize("bad,desc", BAD_KEYS, ids=[d for _, d in BAD_KEYS])
    def test_bad_keys_rejected_everywhere(self, store: Any, events: EventRecorder, bad: Any, desc: str) -> None:
        calls = [
            lambda: store.get(bad),
            lambda: store.get_data(bad),
            lambda: store.get_data_range(bad, 0, 1),
            lambda: store.get_metadata(bad),
            lambda: store.exists(bad),
            lambda: store.set(bad, _pair(b"x", {})),
            lambda: store.set_data(bad, io.BytesIO(b"x")),
            lambda: store.set_metadata(bad, {}),
            lambda: store.update_metadata(bad, {}),
            lambda: store.delete(bad),
            lambda: store.to_bytes(bad),
            lambda: store.from_bytes(bad, b"x"),
            lambda: store.multiget([bad]),
            lambda: store.multiset([bad], [_pair(b"x", {})]),
        ]
        for call in calls:
            with pytest.raises(InvalidKeyError):
                call()
        assert issubclass(InvalidKeyError, ValueError)
        assert list(store.glob("*")) == []
        assert events.events == []

    @pytest.mark.parametrize("bad,exc", BAD_METADATA, ids=lambda v: repr(v)[:25])
    def test_bad_metadata_rejected(self, store: Any, events: EventRecorder, bad: Any, exc: type) -> None:
        store.set("k", _pair(b"old", {"old": 1}))
        events.clear()
        for call in (lambda: store.set("k", _pair(b"new", bad)),
                     lambda: store.set("fresh", _pair(b"new", bad)),
                     lambda: store.set_metadata("k", bad),
                     lambda: store.update_metadata("k", bad)):
            with pytest.raises(exc):
                call()
        assert store.get_data("k").read() == b"old"
        assert store.get_metadata("k") == {"old": 1}
        assert not store.exists("fresh")
        assert events.events == []

    def test_metadata_nesting_limit(self, store: Any, events: EventRecorder) -> None:
        # The metadata dict is level 1; each dict or list inside adds one: 100 levels are
        # stored by every backend, 101 are refused before anything is written.
        def nested(levels: int) -> Dict[str, Any]:
            inner: Any = "leaf"
            for i in range(levels - 1):
                inner = {"d": inner} if i % 2 else [inner]
            return {"top": inner}

        deepest = nested(100)
        store.set("deep", _pair(b"x", deepest))
        assert store.get_metadata("deep") == deepest
        assert store.get("deep").metadata == deepest
        store.update_metadata("deep", {"more": nested(99)["top"]})
        assert store.get_metadata("deep")["more"] == nested(99)["top"]
        store.set("k", _pair(b"old", {"old": 1}))
        events.clear()
        for levels in (101, 600):
            too_deep = nested(levels)
            for call in (lambda md=too_deep: store.set("k", _pair(b"new", md)),
                         lambda md=too_deep: store.set("fresh", _pair(b"new", md)),
                         lambda md=too_deep: store.set_metadata("k", md),
                         lambda md=too_deep: store.update_metadata("k", md)):
                with pytest.raises(ValueError, match="deeper than 100"):
                    call()
        assert store.get_data("k").read() == b"old"
        assert store.get_metadata("k") == {"old": 1}
        assert not store.exists("fresh")
        assert events.events == []

    def test_bad_value_type(self, store: Any) -> None:
        with pytest.raises(TypeError):
            store.set("k", "not a pair")
        with pytest.raises(TypeError):
            store.set("k", (12345, {}))
        assert not store.exists("k")
