"""Conformance checks (:class:`kvstore.testing.StoreConformance`): reads and writes of values and
metadata, and the store's lifecycle."""

from __future__ import annotations

import io
import json
from typing import Any, Dict

import pytest

from ..base import Value
from ..errors import NotConnectedError
from .support import EventRecorder, _pair


class ValueChecks:
    """Reads and writes of values and metadata, and the store's lifecycle."""

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
