"""The conformance suite every kvstore backend runs, importable by third-party backends.

Use it by subclassing :class:`StoreConformance` in a test module and providing a ``store``
fixture that yields a connected, empty store::

    from kvstore.testing import StoreConformance

    class TestMyStore(StoreConformance):
        @pytest.fixture
        def store(self, tmp_path):
            with MyStore(...) as s:
                yield s

Class attributes tell the suite what the backend promises: ``supports_rollback`` (writes
inside a failed transaction are undone) and ``has_journal`` (events carry an int
``sequence``). Requires pytest.
"""

from __future__ import annotations

import io
import json
import math
import threading
import time
from typing import Any, Callable, Dict, List, Tuple

import pytest

from . import signals
from .base import Value
from .errors import InvalidKeyError, NotConnectedError

__all__ = ["StoreConformance", "EventRecorder", "ODD_KEYS", "BAD_KEYS", "wait_for"]

#: Keys every backend must store and give back exactly.
ODD_KEYS = [
    "plain",
    "UPPER",
    "upper",
    "with space",
    " lead and trail ",
    "a/b/c",
    "/leading",
    "trailing/",
    "double//slash",
    ".",
    "..",
    "../escape",
    "a/../../escape",
    "./dot",
    ".hidden",
    ".FSStore",
    ".kvstore/index.sqlite",
    "x.data",
    "x.metadata",
    "x.data/y",
    "%*?[]",
    "%41",
    "~tilde",
    "new\nline",
    "tab\there",
    "caf\u00e9",
    "cafe\u0301",
    "\u65e5\u672c\u8a9e/\u30ad\u30fc",
    "\U0001F600 emoji",
    "\u20ac" * 255,
    "a" * 255,
    "/".join(["d"] * 127),
    "back\\slash",
    "colon:key",
    "CON",
]

#: Values that are not keys: (value, description).
BAD_KEYS = [
    (None, "None"),
    (b"bytes", "bytes"),
    (42, "int"),
    ("", "empty"),
    ("nul\x00key", "NUL"),
    ("lone\udcffsurrogate", "lone surrogate"),
    ("k" * 256, "too long"),
]

BAD_METADATA = [
    ([("a", 1)], TypeError),
    ("text", TypeError),
    ({1: "int name"}, TypeError),
    ({"nested": {2: "x"}}, TypeError),
    ({"in_list": [{3: "x"}]}, TypeError),
    ({"nan": math.nan}, ValueError),
    ({"inf": math.inf}, ValueError),
    ({"obj": object()}, TypeError),
    ({"bytes": b"x"}, TypeError),
    ({"set": {1, 2}}, TypeError),
]

ALL_SIGNALS = signals.SIGNALS


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "a condition",
             interval: float = 0.005) -> Any:
    """Poll ``predicate`` until it returns something true and return that; fail with an
    AssertionError naming ``what`` after ``timeout`` seconds. Tests wait with this, never
    with a bare sleep."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class EventRecorder:
    """Records every signal sent for ``store`` as ``(signal name, event)``."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.events: List[Tuple[str, Any]] = []
        self._lock = threading.Lock()
        self._receivers: List[Tuple[Any, Callable[..., None]]] = []
        for name, sig in ALL_SIGNALS.items():
            def receiver(sender: Any, event: Any = None, _name: str = name, **_: Any) -> None:
                with self._lock:
                    self.events.append((_name, event))
            sig.connect(receiver, sender=store, weak=False)
            self._receivers.append((sig, receiver))

    def close(self) -> None:
        for sig, receiver in self._receivers:
            sig.disconnect(receiver)
        self._receivers = []

    def names(self) -> List[str]:
        return [n for n, _ in self.events]

    def of(self, *names: str) -> List[Any]:
        return [e for n, e in self.events if n in names]

    def modifications(self) -> List[Tuple[str, str, Dict[str, Any]]]:
        return [(n, e.key, e.metadata) for n, e in self.events if n.startswith("store_")]

    def clear(self) -> None:
        with self._lock:
            self.events.clear()


class _Boom(Exception):
    pass


class FailingStream(io.RawIOBase):
    """A stream that yields ``good`` bytes and then raises."""

    def __init__(self, good: bytes) -> None:
        super().__init__()
        self._data = io.BytesIO(good)

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        chunk = self._data.read(n if n and n > 0 else 1 << 20)
        if not chunk:
            raise _Boom("stream failed")
        return chunk


def _pair(data: bytes, metadata: Dict[str, Any]) -> Tuple[io.BytesIO, Dict[str, Any]]:
    return io.BytesIO(data), metadata


def _snapshot(store: Any) -> Dict[str, Tuple[bytes, Dict[str, Any]]]:
    return {k: (store.get(k).data.read(), store.get_metadata(k)) for k in store.glob("*")}


class StoreConformance:
    """Behaviour every backend shares. Subclasses provide a ``store`` fixture."""

    supports_rollback = True
    has_journal = False

    @pytest.fixture
    def events(self, store: Any) -> Any:
        recorder = EventRecorder(store)
        yield recorder
        recorder.close()

    # ------------------------------------------------------------ basics

    def test_set_get_roundtrip(self, store: Any) -> None:
        store.set("k", _pair(b"hello world", {"a": 1, "b": [1, "two", None], "c": {"d": True}}))
        value = store.get("k")
        assert isinstance(value, Value)
        with value.data as f:
            assert f.read() == b"hello world"
        assert value.metadata == {"a": 1, "b": [1, "two", None], "c": {"d": True}}
        assert value.size == 11
        assert isinstance(value.created, float) and isinstance(value.modified, float)
        assert value.created <= value.modified + 1e-6

    def test_set_accepts_value_and_bytes(self, store: Any) -> None:
        store.set("a", Value.from_bytes(b"from value", {"v": 1}))
        assert store.get_data("a").read() == b"from value"
        assert store.get_metadata("a") == {"v": 1}
        store.set("b", (b"raw bytes", {}))
        assert store.to_bytes("b") == b"raw bytes"

    def test_value_range_and_get_data_range(self, store: Any) -> None:
        data = bytes(range(256)) * 4
        store.set("r", _pair(data, {}))
        value = store.get("r")
        for start, end in [(None, None), (0, 10), (10, None), (None, 10), (-10, None),
                           (5, -5), (1000, 2000), (20, 10), (0, 0), (-5000, 5)]:
            assert value.range(start, end).read() == data[start:end], (start, end)
            with store.get_data_range("r", start, end) as stream:  # a stream, like encore's
                assert stream.read() == data[start:end], (start, end)
            assert stream.closed

    def test_value_unpacks_as_a_pair(self, store: Any) -> None:
        # encore's Value unpacks as (data stream, metadata); encore's own code relies on it
        store.set("p", _pair(b"pair data", {"v": [1]}))
        data, metadata = store.get("p")
        with data:
            assert data.read() == b"pair data"
        assert metadata == {"v": [1]}
        metadata["v"].append(2)
        assert list(store.get("p"))[1] == {"v": [1]}

    def test_value_is_a_snapshot(self, store: Any) -> None:
        store.set("s", _pair(b"old data", {"v": "old"}))
        value = store.get("s")
        store.set("s", _pair(b"new data!", {"v": "new"}))
        assert value.data.read() == b"old data"
        assert value.metadata == {"v": "old"}
        assert value.size == 8

    def test_returned_metadata_is_a_copy(self, store: Any) -> None:
        original: Dict[str, Any] = {"list": [1, 2], "d": {"x": 1}}
        store.set("m", _pair(b"", original))
        original["list"].append(3)
        got = store.get_metadata("m")
        got["list"].append(99)
        got["d"]["x"] = 2
        value = store.get("m")
        value.metadata["list"].append(100)
        assert store.get_metadata("m") == {"list": [1, 2], "d": {"x": 1}}
        assert store.get("m").metadata == {"list": [1, 2], "d": {"x": 1}}

    def test_metadata_json_normalised(self, store: Any) -> None:
        store.set("t", _pair(b"", {"tuple": (1, 2), "nested": {"t": (3,)}, "f": 1.5, "u": "\u20ac"}))
        assert store.get_metadata("t") == {"tuple": [1, 2], "nested": {"t": [3]}, "f": 1.5, "u": "\u20ac"}

    def test_get_metadata_select(self, store: Any) -> None:
        store.set("k", _pair(b"x", {"a": 1, "b": 2, "c": 3}))
        assert store.get_metadata("k", select=["a", "c", "missing"]) == {"a": 1, "c": 3}
        assert store.get_metadata("k", select=[]) == {}
        assert store.get_metadata("k") == {"a": 1, "b": 2, "c": 3}

    def test_exists(self, store: Any) -> None:
        assert not store.exists("k")
        store.set("k", _pair(b"", {}))
        assert store.exists("k")
        store.delete("k")
        assert not store.exists("k")

    def test_set_replaces_data_and_metadata(self, store: Any) -> None:
        store.set("k", _pair(b"one", {"a": 1, "b": 2}))
        store.set("k", _pair(b"two!", {"c": 3}))
        assert store.get_data("k").read() == b"two!"
        assert store.get_metadata("k") == {"c": 3}

    def test_set_data(self, store: Any) -> None:
        store.set_data("new", io.BytesIO(b"abc"))
        assert store.get_metadata("new") == {}
        store.set("k", _pair(b"one", {"a": 1}))
        store.set_data("k", io.BytesIO(b"changed"))
        assert store.get_data("k").read() == b"changed"
        assert store.get_metadata("k") == {"a": 1}

    def test_set_metadata(self, store: Any) -> None:
        store.set_metadata("new", {"x": 1})
        assert store.get_data("new").read() == b""
        assert store.get("new").size == 0
        store.set("k", _pair(b"data", {"a": 1, "b": 2}))
        store.set_metadata("k", {"c": 3})
        assert store.get_metadata("k") == {"c": 3}
        assert store.get_data("k").read() == b"data"

    def test_update_metadata_merges(self, store: Any) -> None:
        store.set("k", _pair(b"data", {"a": 1, "b": 2}))
        store.update_metadata("k", {"b": 20, "c": 30})
        assert store.get_metadata("k") == {"a": 1, "b": 20, "c": 30}
        assert store.get_data("k").read() == b"data"

    def test_update_metadata_missing_key(self, store: Any, events: EventRecorder) -> None:
        with pytest.raises(KeyError):
            store.update_metadata("missing", {"a": 1})
        assert not store.exists("missing")
        assert events.modifications() == []

    def test_delete(self, store: Any) -> None:
        store.set("k", _pair(b"data", {"a": 1}))
        store.delete("k")
        assert not store.exists("k")
        assert list(store.glob("*")) == []
        with pytest.raises(KeyError):
            store.delete("k")

    @pytest.mark.parametrize("method", ["get", "get_data", "get_metadata", "get_data_range",
                                        "to_bytes", "delete"])
    def test_missing_key_raises_keyerror(self, store: Any, method: str) -> None:
        with pytest.raises(KeyError):
            getattr(store, method)("missing")

    def test_multi_methods(self, store: Any) -> None:
        keys = ["m1", "m2", "m3"]
        store.multiset(keys, [_pair(b"1", {"n": 1}), _pair(b"2", {"n": 2}), _pair(b"3", {"n": 3})])
        assert [v.data.read() for v in store.multiget(keys)] == [b"1", b"2", b"3"]
        assert [s.read() for s in store.multiget_data(keys)] == [b"1", b"2", b"3"]
        assert store.multiget_metadata(keys, select=["n"]) == [{"n": 1}, {"n": 2}, {"n": 3}]
        store.multiset_data(keys, [io.BytesIO(b"a"), io.BytesIO(b"b")])  # zip: m3 untouched
        assert [store.get_data(k).read() for k in keys] == [b"a", b"b", b"3"]
        store.multiset_metadata(keys[:2], [{"x": 1}, {"x": 2}, {"x": 3}])
        assert store.multiget_metadata(keys) == [{"x": 1}, {"x": 2}, {"n": 3}]
        store.multiupdate_metadata(keys, [{"y": 1}, {"y": 2}, {"y": 3}])
        assert store.multiget_metadata(keys) == [{"x": 1, "y": 1}, {"x": 2, "y": 2}, {"n": 3, "y": 3}]

    def test_file_and_bytes_helpers(self, store: Any, tmp_path: Any) -> None:
        tmp_path = tmp_path / "files"
        tmp_path.mkdir()
        src = tmp_path / "src.bin"
        src.write_bytes(b"file contents" * 1000)
        store.set_metadata("f", {"keep": True})
        store.from_file("f", str(src), buffer_size=1000)
        assert store.get_metadata("f") == {"keep": True}
        dst = tmp_path / "out.bin"
        store.to_file("f", str(dst), buffer_size=1000)
        assert dst.read_bytes() == src.read_bytes()
        assert store.to_bytes("f") == src.read_bytes()
        store.from_bytes("g", b"bytes!")
        assert store.to_bytes("g") == b"bytes!"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin", "src.bin"]

    def test_partly_read_file_as_source(self, store: Any, tmp_path: Any) -> None:
        src = tmp_path / "partly.bin"
        src.write_bytes(bytes(range(256)) * 400)
        with open(src, "rb") as f:
            f.read(1000)  # buffered: the OS position is further on than the stream's
            store.set_data("rest", f, buffer_size=4096)
            assert f.read() == b""
        assert store.to_bytes("rest") == src.read_bytes()[1000:]
        with open(src, "rb", buffering=0) as f:
            f.seek(5)
            store.set("raw", (f, {}))
        assert store.to_bytes("raw") == src.read_bytes()[5:]

    def test_context_manager_and_info(self, store: Any) -> None:
        info = store.info()
        assert isinstance(info, dict) and info["type"] == type(store).__name__
        json.dumps(info)
        assert store.is_connected()

    def test_not_connected(self, store: Any) -> None:
        store.set("k", _pair(b"x", {}))
        store.disconnect()
        assert not store.is_connected()
        for call in (lambda: store.get("k"), lambda: store.set("k", _pair(b"y", {})),
                     lambda: store.get_metadata("k"), lambda: store.exists("k"),
                     lambda: store.delete("k"), lambda: store.query(), lambda: store.glob("*"),
                     lambda: store.update_metadata("k", {}), lambda: store.to_bytes("k"),
                     lambda: store.transaction("t").__enter__()):
            with pytest.raises(NotConnectedError):
                call()
        with store:
            assert store.is_connected()
            assert store.get_data("k").read() == b"x"
        assert not store.is_connected()
        store.connect()

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
        from .query import between, contains, exists, ge, gt, le, lt, not_, one_of, prefix

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
        from .query import Criterion, contains, exists, gt, not_, one_of, prefix

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

    # ------------------------------------------------------------ failures

    def test_failing_stream_leaves_old_value(self, store: Any, events: EventRecorder) -> None:
        store.set("k", _pair(b"old data", {"v": "old"}))
        events.clear()
        with pytest.raises(_Boom):
            store.set("k", (FailingStream(b"partial new data" * 100), {"v": "new"}), buffer_size=64)
        with pytest.raises(_Boom):
            store.set_data("k", FailingStream(b"partial"), buffer_size=4)
        with pytest.raises(_Boom):
            store.set("fresh", (FailingStream(b"partial"), {}), buffer_size=4)
        assert store.get_data("k").read() == b"old data"
        assert store.get_metadata("k") == {"v": "old"}
        assert not store.exists("fresh")
        assert sorted(store.glob("*")) == ["k"]
        assert events.modifications() == []
        ends = events.of("progress_end")
        assert len(ends) == 3 and all(e.exit_state == "exception" for e in ends)

    # ------------------------------------------------------------ events

    def _check_event(self, store: Any, event: Any) -> None:
        assert event.store is store
        assert event.source is store  # encore's name for it
        assert event.origin == store.origin
        assert event.remote is False
        assert isinstance(event.timestamp, float)
        if self.has_journal:
            assert isinstance(event.sequence, int)
        else:
            assert event.sequence is None

    def test_modification_events(self, store: Any, events: EventRecorder) -> None:
        store.set("k", _pair(b"1", {"a": 1}))
        store.set("k", _pair(b"2", {"a": 2}))
        store.set_data("k", io.BytesIO(b"3"))
        store.set_metadata("k", {"b": 1})
        store.update_metadata("k", {"c": 2})
        store.set_data("d", io.BytesIO(b"x"))
        store.set_metadata("m", {"z": 0})
        store.from_bytes("fb", b"x")
        store.delete("k")
        assert events.modifications() == [
            ("store_set", "k", {"a": 1}),
            ("store_update", "k", {"a": 2}),
            ("store_update", "k", {"a": 2}),
            ("store_update", "k", {"b": 1}),
            ("store_update", "k", {"b": 1, "c": 2}),
            ("store_set", "d", {}),
            ("store_set", "m", {"z": 0}),
            ("store_set", "fb", {}),
            ("store_delete", "k", {"b": 1, "c": 2}),
        ]
        mods = [e for n, e in events.events if n.startswith("store_")]
        for event in mods:
            self._check_event(store, event)
        if self.has_journal:
            seqs = [e.sequence for e in mods]
            assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        # the JSON form round-trips
        from .events import StoreEvent
        for event in mods:
            again = StoreEvent.from_dict(json.loads(json.dumps(event.to_dict())))
            assert again == event and type(again) is type(event)

    def test_events_fire_after_change_is_visible(self, store: Any) -> None:
        seen: List[Any] = []

        def receiver(sender: Any, event: Any = None, **_: Any) -> None:
            if event.action == "delete":
                seen.append(("delete", store.exists(event.key)))
            else:
                seen.append((event.action, store.get_data(event.key).read(), store.get_metadata(event.key)))

        for sig in (signals.store_set, signals.store_update, signals.store_delete):
            sig.connect(receiver, sender=store, weak=False)
        try:
            store.set("k", _pair(b"v1", {"n": 1}))
            store.update_metadata("k", {"m": 2})
            store.delete("k")
        finally:
            for sig in (signals.store_set, signals.store_update, signals.store_delete):
                sig.disconnect(receiver)
        assert seen == [("set", b"v1", {"n": 1}), ("update", b"v1", {"n": 1, "m": 2}), ("delete", False)]

    def test_event_metadata_is_a_copy(self, store: Any, events: EventRecorder) -> None:
        store.set("k", _pair(b"", {"l": [1]}))
        events.of("store_set")[0].metadata["l"].append(2)
        assert store.get_metadata("k") == {"l": [1]}

    def test_receiver_error_does_not_break_write(self, store: Any) -> None:
        def bad(sender: Any, **_: Any) -> None:
            raise RuntimeError("receiver bug")

        signals.store_set.connect(bad, sender=store, weak=False)
        try:
            store.set("k", _pair(b"x", {}))
        finally:
            signals.store_set.disconnect(bad)
        assert store.get_data("k").read() == b"x"

    def test_progress_events(self, store: Any, events: EventRecorder, tmp_path: Any) -> None:
        data = b"x" * 1000
        store.set("p", _pair(data, {}), buffer_size=100)
        names = events.names()
        assert names[0] == "progress_start" and names[-1] == "store_set"
        start = events.of("progress_start")[0]
        steps = events.of("progress_step")
        end = events.of("progress_end")[0]
        assert start.steps == 1000 and start.key == "p"
        assert len(steps) >= 10
        assert [s.step for s in steps] == sorted(s.step for s in steps)
        assert steps[-1].step == 1000
        assert all(b.step - a.step <= 100 for a, b in zip(steps, steps[1:], strict=False))
        assert end.exit_state == "normal"
        assert len({e.operation_id for e in [start, *steps, end]}) == 1
        for event in [start, *steps, end]:
            assert event.store is store and event.origin == store.origin
            assert event.source is store

        for name, call in [("to_bytes", lambda: store.to_bytes("p", buffer_size=100)),
                           ("to_file", lambda: store.to_file("p", str(tmp_path / "o"), buffer_size=100)),
                           ("from_file", lambda: store.from_file("q", str(tmp_path / "o"), buffer_size=100)),
                           ("from_bytes", lambda: store.from_bytes("r", data, buffer_size=100)),
                           ("set_data", lambda: store.set_data("s", io.BytesIO(data), buffer_size=100)),
                           ("multiset", lambda: store.multiset(["t"], [_pair(data, {})], buffer_size=100))]:
            events.clear()
            call()
            steps = events.of("progress_step")
            assert events.of("progress_start")[0].steps == 1000, name
            assert len(steps) >= 10 and steps[-1].step == 1000, name
            assert events.of("progress_end")[0].exit_state == "normal", name

    def test_progress_unknown_size_and_empty(self, store: Any, events: EventRecorder) -> None:
        class Unsized(io.RawIOBase):
            def __init__(self) -> None:
                self.left = 250

            def readable(self) -> bool:
                return True

            def read(self, n: int = -1) -> bytes:
                n = min(self.left, 100 if n is None or n < 0 else n)
                self.left -= n
                return b"u" * n

        store.set("u", (Unsized(), {}), buffer_size=100)
        assert events.of("progress_start")[0].steps == -1
        assert events.of("progress_step")[-1].step == 250
        events.clear()
        store.set("e", _pair(b"", {}))
        assert events.of("progress_start")[0].steps == 0
        assert [s.step for s in events.of("progress_step")] == [0]

    def test_subscribe(self, store: Any) -> None:
        heard: List[Any] = []
        deletes: List[Any] = []
        sub = store.subscribe(heard.append, "images/*")
        with store.subscribe(deletes.append, kinds=("delete",)):
            store.set("images/a.png", _pair(b"", {"n": 1}))
            store.set("docs/b.txt", _pair(b"", {}))
            store.update_metadata("images/a.png", {"m": 2})
            store.delete("docs/b.txt")
            store.delete("images/a.png")
        store.set("images/after.png", _pair(b"", {}))
        store.delete("images/after.png")
        sub.cancel()
        sub.cancel()
        store.set("images/cancelled.png", _pair(b"", {}))
        assert [(e.action, e.key) for e in heard] == [
            ("set", "images/a.png"), ("update", "images/a.png"), ("delete", "images/a.png"),
            ("set", "images/after.png"), ("delete", "images/after.png")]
        assert heard[1].metadata == {"n": 1, "m": 2}
        assert [(e.action, e.key) for e in deletes] == [("delete", "docs/b.txt"), ("delete", "images/a.png")]
        with pytest.raises(ValueError):
            store.subscribe(heard.append, kinds=("bogus",))

    # ------------------------------------------------------------ transactions

    def test_transaction_commit(self, store: Any, events: EventRecorder) -> None:
        store.set("existing", _pair(b"e", {"e": 1}))
        events.clear()
        with store.transaction("batch") as _:
            store.set("a", _pair(b"A", {"n": 1}))
            store.update_metadata("existing", {"f": 2})
            store.set_metadata("b", {"n": 2})
            store.delete("existing")
            assert events.modifications() == []
            assert store.exists("a") and not store.exists("existing")
            assert store.get_data("a").read() == b"A"
            assert sorted(store.glob("*")) == ["a", "b"]
            assert sorted(store.query_keys(n=2)) == ["b"]
        assert events.names()[0] == "transaction_start"
        assert events.names()[-1] == "transaction_end"
        assert events.of("transaction_start")[0].notes == "batch"
        assert events.of("transaction_end")[0].state == "done"
        assert all(e.source is store for e in events.of("transaction_start", "transaction_end"))
        assert events.modifications() == [
            ("store_set", "a", {"n": 1}),
            ("store_update", "existing", {"e": 1, "f": 2}),
            ("store_set", "b", {"n": 2}),
            ("store_delete", "existing", {"e": 1, "f": 2}),
        ]
        assert store.get_data("a").read() == b"A"
        assert not store.exists("existing")

    def test_transaction_failure(self, store: Any, events: EventRecorder) -> None:
        store.set("keep", _pair(b"k", {"k": 1}))
        before = _snapshot(store)
        events.clear()
        with pytest.raises(_Boom):
            with store.transaction("fails"):
                store.set("new", _pair(b"N", {}))
                store.set("keep", _pair(b"changed", {"k": 2}))
                raise _Boom()
        assert events.of("transaction_end")[0].state == "failed"
        if self.supports_rollback:
            assert _snapshot(store) == before
            assert events.modifications() == []
        else:
            # Writes that remain are announced after the end of the transaction.
            names = events.names()
            assert names.index("transaction_end") < names.index("store_set")
            assert [m[:2] for m in events.modifications()] == [("store_set", "new"), ("store_update", "keep")]

    def test_nested_transaction_joins_outer(self, store: Any, events: EventRecorder) -> None:
        with store.transaction("outer"):
            store.set("a", _pair(b"", {}))
            with store.transaction("inner"):
                store.set("b", _pair(b"", {}))
            assert events.modifications() == []
        assert [m[1] for m in events.modifications()] == ["a", "b"]
        assert len(events.of("transaction_start")) == 1

    # ------------------------------------------------------------ threads

    def test_threads(self, store: Any) -> None:
        errors: List[BaseException] = []
        store.set("shared", _pair(b"", {}))

        def work(n: int) -> None:
            try:
                for i in range(20):
                    key = f"t{n}/{i}"
                    data = f"{n}-{i}".encode() * 10
                    store.set(key, _pair(data, {"n": n, "i": i}))
                    value = store.get(key)
                    assert value.data.read() == data and value.metadata == {"n": n, "i": i}
                    store.update_metadata("shared", {f"t{n}-{i}": i})
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert len(list(store.glob("t*/*"))) == 120
        assert len(store.get_metadata("shared")) == 120  # no update lost
