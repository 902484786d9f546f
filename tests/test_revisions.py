"""Revisions and compare-and-set (issue 18) on every backend: each write method's success and
conflict paths, bad conditions, transactions re-checked at the commit, CAS counters from
threads and processes, history, and S3 conditional commits racing from two clients."""

from __future__ import annotations

import io
import multiprocessing
import threading
import uuid
from typing import Any, Callable, Iterator

import pytest

import kvstore
from kvstore import signals
from kvstore.errors import ConflictError

import s3_moto



@pytest.fixture(params=["memory", "filesystem", "s3"])
def store(request: Any, tmp_path: Any, s3_endpoint: Any) -> Iterator[kvstore.AbstractStore]:
    if request.param == "memory":
        s: kvstore.AbstractStore = kvstore.MemoryStore()
    elif request.param == "filesystem":
        s = kvstore.FileSystemStore(tmp_path / "fs", create=True)
    else:
        s = kvstore.S3Store(request.getfixturevalue("s3_bucket"), f"t-{uuid.uuid4().hex[:8]}",
                            client=request.getfixturevalue("s3_client"))
    with s:
        yield s


class Heard:
    def __init__(self, store: Any) -> None:
        self.events: list[Any] = []
        self._subs = store.subscribe(self.events.append)

    def close(self) -> None:
        self._subs.cancel()


@pytest.fixture
def heard(store: Any) -> Iterator[Heard]:
    h = Heard(store)
    yield h
    h.close()


# every write method, as (name, call(store, key, if_revision))
WRITES: list[tuple[str, Callable[[Any, str, Any], None]]] = [
    ("set", lambda s, k, r: s.set(k, (b"new", {"w": 1}), if_revision=r)),
    ("set_data", lambda s, k, r: s.set_data(k, io.BytesIO(b"new"), if_revision=r)),
    ("set_metadata", lambda s, k, r: s.set_metadata(k, {"w": 1}, if_revision=r)),
    ("update_metadata", lambda s, k, r: s.update_metadata(k, {"w": 1}, if_revision=r)),
    ("from_bytes", lambda s, k, r: s.from_bytes(k, b"new", if_revision=r)),
    ("copy", lambda s, k, r: s.copy("src", k, if_revision=r)),
    ("move", lambda s, k, r: s.move("src", k, if_revision=r)),
    ("delete", lambda s, k, r: s.delete(k, if_revision=r)),
]


def _state(store: Any, key: str) -> Any:
    if not store.exists(key):
        return None
    v = store.get(key)
    return v.data.read(), v.metadata, v.revision


@pytest.mark.parametrize("name,write", WRITES, ids=[w[0] for w in WRITES])
def test_each_write_succeeds_at_the_right_revision(store: Any, heard: Heard, name: str, write: Any) -> None:
    store.set("src", (b"src", {"s": 1}))
    store.set("k", (b"old", {"o": 1}))
    rev = store.get("k").revision
    assert isinstance(rev, int) and rev > 0
    heard.events.clear()
    write(store, "k", rev)
    assert heard.events and heard.events[0].key == "k"
    after = heard.events[0].revision
    assert isinstance(after, int) and after > rev
    if name != "delete":
        assert store.get("k").revision == after


@pytest.mark.parametrize("name,write", WRITES, ids=[w[0] for w in WRITES])
def test_each_write_conflicts_and_changes_nothing(store: Any, heard: Heard, name: str, write: Any) -> None:
    store.set("src", (b"src", {"s": 1}))
    store.set("k", (b"old", {"o": 1}))
    rev = store.get("k").revision
    before, src_before = _state(store, "k"), _state(store, "src")
    heard.events.clear()
    for wrong in (rev + 1000, 0):
        with pytest.raises(ConflictError) as info:
            write(store, "k", wrong)
        assert (info.value.key, info.value.expected, info.value.actual) == ("k", wrong, rev)
    assert _state(store, "k") == before and _state(store, "src") == src_before
    assert heard.events == []


@pytest.mark.parametrize("name,write", WRITES, ids=[w[0] for w in WRITES])
def test_a_missing_key_with_a_condition_is_a_conflict(store: Any, heard: Heard, name: str, write: Any) -> None:
    store.set("src", (b"src", {}))
    heard.events.clear()
    with pytest.raises(ConflictError) as info:
        write(store, "nope", 5)
    assert (info.value.key, info.value.actual) == ("nope", None)
    assert not store.exists("nope") and heard.events == []
    if name in ("update_metadata", "delete"):
        with pytest.raises(ConflictError):
            write(store, "nope", 0)
    else:
        write(store, "nope", 0)  # 0: only if missing
        assert store.exists("nope")


def test_move_names_the_source_when_its_condition_fails(store: Any) -> None:
    store.set("src", (b"s", {}))
    rev = store.get("src").revision
    with pytest.raises(ConflictError) as info:
        store.move("src", "dst", if_source_revision=rev + 7)
    assert info.value.key == "src" and not store.exists("dst") and store.exists("src")
    store.move("src", "dst", if_source_revision=rev)
    assert not store.exists("src") and store.get_data("dst").read() == b"s"


@pytest.mark.parametrize("bad,error", [(True, TypeError), (False, TypeError), (-1, ValueError),
                                       ("1", TypeError), (1.0, TypeError)])
def test_a_bad_condition_writes_nothing(store: Any, heard: Heard, bad: Any, error: type) -> None:
    store.set("src", (b"s", {}))
    heard.events.clear()
    for _, write in WRITES:
        with pytest.raises(error):
            write(store, "k", bad)
    with pytest.raises(error):
        store.move("src", "k", if_source_revision=bad)
    assert not store.exists("k") and heard.events == []


def test_revisions_grow_and_never_come_back_after_a_delete(store: Any) -> None:
    store.set("k", (b"1", {}))
    first = store.get("k").revision
    store.set_metadata("k", {"a": 1})
    second = store.get("k").revision
    assert second > first
    store.delete("k")
    store.set("k", (b"2", {}))
    again = store.get("k").revision
    if isinstance(store, kvstore.S3Store):
        assert again == 1  # per-key counter: it starts again after a delete
    else:
        assert again > second


def test_filesystem_revision_is_the_sequence(tmp_path: Any) -> None:
    with kvstore.FileSystemStore(tmp_path / "s", create=True) as store:
        got: list[Any] = []
        with store.subscribe(got.append):
            store.set("k", (b"", {}))
            store.update_metadata("k", {"a": 1})
            store.delete("k")
        assert [(e.sequence, e.revision) for e in got] == [(1, 1), (2, 2), (3, 3)]


# ------------------------------------------------------------------ transactions

@pytest.mark.parametrize("kind", ["memory", "filesystem"])
def test_a_condition_that_fails_at_the_commit_rolls_back_everything(kind: str, tmp_path: Any) -> None:
    store: Any = kvstore.MemoryStore() if kind == "memory" else kvstore.FileSystemStore(tmp_path / "s", create=True)
    other: Any = store if kind == "memory" else kvstore.FileSystemStore(tmp_path / "s")
    with store, (other if other is not store else _nothing()):
        store.set("k", (b"v", {"n": 1}))
        rev = store.get("k").revision
        got: list[Any] = []
        ends: list[Any] = []
        with store.subscribe(got.append), signals.transaction_end.connected_to(
                lambda sender, event: ends.append(event.state), sender=store):
            done = threading.Event()
            with pytest.raises(ConflictError) as info:
                with store.transaction("cas"):
                    store.set("fresh", (b"x", {}))
                    store.update_metadata("k", {"n": 2}, if_revision=rev)  # holds now
                    # another writer moves k on before the commit (an open transaction blocks nobody)
                    t = threading.Thread(target=lambda: (other.update_metadata("k", {"n": 9}), done.set()))
                    t.start()
                    t.join(10)
                    assert done.is_set()
        assert info.value.key == "k"
        assert ends == ["failed"]
        assert [e.key for e in got] == ([] if other is not store else ["k"])
        assert not store.exists("fresh") and store.get_metadata("k") == {"n": 9}


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


# ------------------------------------------------------------------ counters

def _increment(store: Any, key: str) -> int:
    """One CAS increment; the number of conflicts it met."""
    conflicts = 0
    while True:
        value = store.get(key)
        try:
            store.update_metadata(key, {"n": value.metadata["n"] + 1}, if_revision=value.revision)
            return conflicts
        except ConflictError:
            conflicts += 1


def test_a_cas_counter_from_8_threads_is_exact(store: Any) -> None:
    store.set_metadata("counter", {"n": 0})
    per_thread = 10 if isinstance(store, kvstore.S3Store) else 40
    conflicts: list[int] = []
    threads = [threading.Thread(target=lambda: conflicts.extend(_increment(store, "counter")
                                                                for _ in range(per_thread)))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads)
    assert store.get_metadata("counter") == {"n": 8 * per_thread}


def _process_counter(path: str, count: int) -> None:
    with kvstore.FileSystemStore(path) as store:
        for _ in range(count):
            _increment(store, "counter")


def test_a_cas_counter_from_3_processes_is_exact(tmp_path: Any) -> None:
    path = str(tmp_path / "s")
    with kvstore.FileSystemStore(path, create=True) as store:
        store.set_metadata("counter", {"n": 0})
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_process_counter, args=(path, 50)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(180)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    with kvstore.FileSystemStore(path) as store:
        assert store.get_metadata("counter") == {"n": 150}
        assert len(store.history("counter")) == 151


# ------------------------------------------------------------------ history

@pytest.mark.parametrize("kind", ["memory", "filesystem"])
def test_history_order_kinds_and_fields(kind: str, tmp_path: Any) -> None:
    store: Any = kvstore.MemoryStore() if kind == "memory" else kvstore.FileSystemStore(tmp_path / "s", create=True)
    with store:
        assert store.history("k") == []
        store.set("k", (b"1", {"a": 1}))
        store.set("other", (b"", {}))
        store.update_metadata("k", {"b": 2})
        store.delete("k")
        store.set("k", (b"2", {}))
        h = store.history("k")
        assert [type(e).__name__ for e in h] == ["StoreSetEvent", "StoreUpdateEvent", "StoreDeleteEvent",
                                                 "StoreSetEvent"]
        assert [e.metadata for e in h] == [{"a": 1}, {"a": 1, "b": 2}, {"a": 1, "b": 2}, {}]
        revisions = [e.revision for e in h]
        assert revisions == sorted(revisions) and len(set(revisions)) == 4
        assert all(e.origin == store.origin and e.key == "k" and e.timestamp > 0 for e in h)
        if kind == "filesystem":
            assert [e.sequence for e in h] == revisions


def test_memory_history_keeps_the_last_64_changes_of_each_key() -> None:
    with kvstore.MemoryStore() as store:
        for i in range(100):
            store.set_metadata("k", {"i": i})
        store.set_metadata("j", {})
        h = store.history("k")
        assert len(h) == 64 and [e.metadata["i"] for e in h] == list(range(36, 100))
        assert len(store.history("j")) == 1


def test_filesystem_history_is_as_long_as_the_journal(tmp_path: Any) -> None:
    class Small(kvstore.FileSystemStore):
        journal_keep = 10
        journal_trim_every = 5

    with Small(tmp_path / "s", create=True) as store:
        for i in range(30):
            store.set_metadata("k", {"i": i})
        h = store.history("k")
        assert 10 <= len(h) < 30 and h[-1].metadata == {"i": 29}
        assert h[0].sequence > store.journal_floor()


def test_s3_history_needs_bucket_versioning(store: Any) -> None:
    if not isinstance(store, kvstore.S3Store):
        pytest.skip("S3 only")
    store.set("k", (b"", {}))
    with pytest.raises(NotImplementedError):
        store.history("k")


def test_s3_history_from_bucket_versioning(s3_client: Any, s3_bucket: str) -> None:
    s3_client.put_bucket_versioning(Bucket=s3_bucket, VersioningConfiguration={"Status": "Enabled"})
    with kvstore.S3Store(s3_bucket, f"h-{uuid.uuid4().hex[:8]}", client=s3_client) as store:
        assert store.history("k") == []
        store.set("k", (b"one", {"a": 1}))
        store.update_metadata("k", {"b": 2})
        store.set_data("k", b"two")
        store.delete("k")
        store.set_metadata("k", {"again": True})
        store.set_metadata("other", {})
        h = store.history("k")
        assert [type(e).__name__ for e in h] == ["StoreSetEvent", "StoreUpdateEvent", "StoreUpdateEvent",
                                                 "StoreDeleteEvent", "StoreSetEvent"]
        assert [e.metadata for e in h] == [{"a": 1}, {"a": 1, "b": 2}, {"a": 1, "b": 2}, {"a": 1, "b": 2},
                                           {"again": True}]
        # the per-key counter: it grows with every write, a delete is one more, and it
        # starts again after the delete (API.md)
        assert [e.revision for e in h] == [1, 2, 3, 4, 1]
        assert all(e.key == "k" and e.store is store and e.timestamp > 0 for e in h)
        assert [e.revision for e in store.history("other")] == [1]


# ------------------------------------------------------------------ S3 across clients

def test_s3_conditional_commits_racing_from_two_clients(s3_endpoint: Any, s3_bucket: Any) -> None:
    """Two clients (two S3Store instances, each with its own boto3 client: as two hosts)
    increment one counter by CAS: every increment lands exactly once."""
    prefix = f"race-{uuid.uuid4().hex[:8]}"
    stores = [kvstore.S3Store(s3_bucket, prefix, endpoint_url=s3_endpoint, region="us-east-1",
                              **s3_moto.CREDENTIALS) for _ in range(2)]
    for s in stores:
        s.connect()
    try:
        stores[0].set_metadata("counter", {"n": 0})

        def run(s: Any) -> None:
            for _ in range(15):
                _increment(s, "counter")

        s3_moto.run_threads(run, [(s,) for s in stores for _ in range(2)])
        assert stores[1].get_metadata("counter") == {"n": 60}
        assert stores[0].get("counter").revision == 61
    finally:
        for s in stores:
            s.disconnect()
