"""store.copy / store.move / store.stat on every backend: results, events, errors, and
the atomicity of move under a concurrent reader."""

from __future__ import annotations

import threading
import uuid
import zlib
from typing import Any, Iterator

import pytest

import kvstore
from kvstore.errors import InvalidKeyError, NotConnectedError
from kvstore.testing import EventRecorder


# moto's S3 server and clients (fixtures shared with other modules)


@pytest.fixture(params=["memory", "filesystem", "s3"])
def store(request: Any, tmp_path: Any, s3_endpoint: Any) -> Iterator[kvstore.AbstractStore]:
    if request.param == "memory":
        s: kvstore.AbstractStore = kvstore.MemoryStore()
    elif request.param == "filesystem":
        s = kvstore.FileSystemStore(tmp_path / "fs", create=True)
    else:
        client = request.getfixturevalue("s3_client")
        bucket = request.getfixturevalue("s3_bucket")
        s = kvstore.S3Store(bucket, f"t-{uuid.uuid4().hex[:8]}", client=client)
    with s:
        yield s


@pytest.fixture
def events(store: Any) -> Iterator[EventRecorder]:
    recorder = EventRecorder(store)
    yield recorder
    recorder.close()


def test_copy_new_key(store: Any, events: EventRecorder) -> None:
    store.set("a/src", (b"hello" * 100, {"n": 1, "tags": ["x"]}))
    events.clear()
    store.copy("a/src", "b/dst")
    assert store.to_bytes("b/dst") == b"hello" * 100
    assert store.get_metadata("b/dst") == {"n": 1, "tags": ["x"]}
    assert store.to_bytes("a/src") == b"hello" * 100 and store.get_metadata("a/src") == {"n": 1, "tags": ["x"]}
    assert events.modifications() == [("store_set", "b/dst", {"n": 1, "tags": ["x"]})]
    event = events.of("store_set")[0]
    assert event.store is store and event.origin == store.origin and not event.remote


def test_copy_over_existing_key(store: Any, events: EventRecorder) -> None:
    store.set("src", (b"new", {"v": 2}))
    store.set("dst", (b"old data", {"v": 1, "gone": True}))
    events.clear()
    store.copy("src", "dst")
    assert (store.to_bytes("dst"), store.get_metadata("dst")) == (b"new", {"v": 2})
    assert events.modifications() == [("store_update", "dst", {"v": 2})]


def test_move(store: Any, events: EventRecorder) -> None:
    store.set("inbox/r.csv", (b"1,2\n", {"kind": "report"}))
    events.clear()
    store.move("inbox/r.csv", "done/r.csv")
    assert not store.exists("inbox/r.csv")
    assert (store.to_bytes("done/r.csv"), store.get_metadata("done/r.csv")) == (b"1,2\n", {"kind": "report"})
    assert events.modifications() == [("store_set", "done/r.csv", {"kind": "report"}),
                                      ("store_delete", "inbox/r.csv", {"kind": "report"})]


def test_move_over_existing_key(store: Any, events: EventRecorder) -> None:
    store.set("a", (b"A", {"k": "a"}))
    store.set("b", (b"B", {"k": "b"}))
    events.clear()
    store.move("a", "b")
    assert sorted(store.glob("*")) == ["b"] and store.to_bytes("b") == b"A"
    assert events.modifications() == [("store_update", "b", {"k": "a"}), ("store_delete", "a", {"k": "a"})]


def test_empty_value_and_odd_keys(store: Any) -> None:
    odd = "dir/../ € %*?[]\nx"
    store.set(odd, (b"", {}))
    store.copy(odd, odd + " copy")
    store.move(odd, "€" * 255)
    assert sorted(store.glob("*")) == sorted([odd + " copy", "€" * 255])
    assert store.to_bytes("€" * 255) == b"" and store.get_metadata("€" * 255) == {}


@pytest.mark.parametrize("method", ["copy", "move"])
def test_missing_source_is_keyerror(store: Any, events: EventRecorder, method: str) -> None:
    with pytest.raises(KeyError):
        getattr(store, method)("missing", "dst")
    assert not store.exists("dst") and events.modifications() == []


@pytest.mark.parametrize("method", ["copy", "move"])
def test_same_key_is_valueerror(store: Any, events: EventRecorder, method: str) -> None:
    store.set("k", (b"x", {"a": 1}))
    events.clear()
    with pytest.raises(ValueError, match="same key"):
        getattr(store, method)("k", "k")
    assert store.to_bytes("k") == b"x" and events.modifications() == []


@pytest.mark.parametrize("method", ["copy", "move"])
@pytest.mark.parametrize("bad", ["", "a\x00b", "x" * 256, "\ud800", 3, None])
def test_bad_keys(store: Any, events: EventRecorder, method: str, bad: Any) -> None:
    store.set("k", (b"x", {}))
    events.clear()
    with pytest.raises(InvalidKeyError):
        getattr(store, method)(bad, "dst")
    with pytest.raises(InvalidKeyError):
        getattr(store, method)("k", bad)
    assert sorted(store.glob("*")) == ["k"] and events.modifications() == []


@pytest.mark.parametrize("method", ["copy", "move", "stat", "checksum"])
def test_not_connected(store: Any, method: str) -> None:
    store.set("k", (b"x", {}))
    store.disconnect()
    args = ("k", "dst") if method in ("copy", "move") else ("k",)
    with pytest.raises(NotConnectedError):
        getattr(store, method)(*args)
    store.connect()


def test_stat_and_checksum(store: Any) -> None:
    store.set("k", (b"some bytes", {"m": [1, 2]}))
    stat = store.stat("k")
    assert stat.size == 10 and stat.metadata == {"m": [1, 2]} and stat.modified > 0
    # A store that keeps a checksum gives the CRC-32 of the data; others say None
    # (FileSystemStore and S3Store's own hooks are still to come).
    assert stat.checksum in (None, f"crc32:{zlib.crc32(b'some bytes'):08x}")
    assert store.checksum("k") == stat.checksum
    with pytest.raises(KeyError):
        store.stat("missing")


def test_memory_store_keeps_a_checksum() -> None:
    with kvstore.MemoryStore() as store:
        store.set("k", (b"abc", {}))
        assert store.checksum("k") == f"crc32:{zlib.crc32(b'abc'):08x}"
        store.update_metadata("k", {"x": 1})  # data kept: so is its checksum
        assert store.checksum("k") == f"crc32:{zlib.crc32(b'abc'):08x}"
        store.set_metadata("new", {})
        assert store.checksum("new") == f"crc32:{zlib.crc32(b''):08x}"
        store.copy("k", "k2")
        assert store.checksum("k2") == store.checksum("k")


@pytest.mark.parametrize("method", ["copy", "move"])
def test_inside_a_transaction(store: Any, events: EventRecorder, method: str, request: Any) -> None:
    store.set("src", (b"data", {"a": 1}))
    events.clear()
    with store.transaction("t"):
        getattr(store, method)("src", "dst")
        assert store.exists("dst")
        assert events.modifications() == []  # held until the commit
    expected = [("store_set", "dst", {"a": 1})]
    if method == "move":
        expected.append(("store_delete", "src", {"a": 1}))
    assert events.modifications() == expected
    assert store.to_bytes("dst") == b"data" and store.exists("src") == (method == "copy")


@pytest.mark.parametrize("method", ["copy", "move"])
def test_rolled_back_with_its_transaction(store: Any, events: EventRecorder, method: str) -> None:
    if isinstance(store, kvstore.S3Store):
        pytest.skip("S3 cannot roll back")
    store.set("src", (b"data", {"a": 1}))
    events.clear()
    with pytest.raises(RuntimeError):
        with store.transaction():
            getattr(store, method)("src", "dst")
            raise RuntimeError("undo")
    assert sorted(store.glob("*")) == ["src"] and events.modifications() == []


def test_copy_streams_with_progress_by_default(tmp_path: Any) -> None:
    # The base class's copy (used where a backend has no fast path) reports progress.
    with kvstore.FileSystemStore(tmp_path / "fs", create=True) as store:
        store.set("big", (b"x" * 300_000, {}))
        events = EventRecorder(store)
        try:
            store.copy("big", "big2", buffer_size=100_000)
        finally:
            events.close()
        start, = events.of("progress_start")
        assert (start.key, start.message, start.steps) == ("big2", "copy", 300_000)
        assert [e.step for e in events.of("progress_step")][-1] == 300_000
        assert events.of("progress_end")[0].exit_state == "normal"
        assert store.to_bytes("big2") == b"x" * 300_000


@pytest.mark.parametrize("kind", ["memory", "filesystem"])
def test_move_is_atomic_for_a_concurrent_reader(kind: str, tmp_path: Any) -> None:
    store: kvstore.AbstractStore = (kvstore.MemoryStore() if kind == "memory"
                                    else kvstore.FileSystemStore(tmp_path / "fs", create=True))
    moves = 300 if kind == "memory" else 60
    with store:
        store.set("left", (b"payload", {"n": 0}))
        stop = threading.Event()
        seen: list = []
        bad: list = []

        def reader() -> None:
            while not stop.is_set():
                keys = set(store.glob("*"))  # one snapshot of the key set
                seen.append(keys)
                if len(keys) != 1:
                    bad.append(keys)

        thread = threading.Thread(target=reader)
        thread.start()
        try:
            for i in range(moves):
                src, dst = ("left", "right") if i % 2 == 0 else ("right", "left")
                store.move(src, dst)
        finally:
            stop.set()
            thread.join()
        assert not bad, f"a reader saw {bad[:3]}"
        assert len(seen) > 10  # the reader really ran alongside the moves
        assert set(store.glob("*")) == {"left"} and store.to_bytes("left") == b"payload"
