"""FileSystemStore: the shared conformance suite plus what only a directory store does."""

from __future__ import annotations

import io
import json
import os
import threading

import pytest

import kvstore
from kvstore.errors import StoreError
from kvstore.testing import ODD_KEYS, StoreConformance, wait_for


class TestFileSystemStore(StoreConformance):
    has_journal = True

    @pytest.fixture
    def store(self, tmp_path):
        with kvstore.FileSystemStore(tmp_path / "store", create=True, name="test") as store:
            yield store


class TestDurableFileSystemStore(TestFileSystemStore):
    @pytest.fixture
    def store(self, tmp_path):
        with kvstore.FileSystemStore(tmp_path / "store", create=True, durable=True) as store:
            yield store


@pytest.fixture
def fs(tmp_path):
    with kvstore.FileSystemStore(tmp_path / "store", create=True) as store:
        yield store


def _files_under(root):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs_ in os.walk(root) for f in fs_)


def test_open_requires_a_store(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        kvstore.FileSystemStore(tmp_path / "missing")
    (tmp_path / "plain").mkdir()
    with pytest.raises(StoreError, match="FSStore"):
        kvstore.FileSystemStore(tmp_path / "plain")
    kvstore.init_shared_store(str(tmp_path / "plain"))
    with kvstore.FileSystemStore(tmp_path / "plain") as store:
        assert list(store.glob("*")) == []


def test_open_store_file_urls(tmp_path, monkeypatch):
    store = kvstore.open_store(f"file://{tmp_path}/abs")
    assert isinstance(store, kvstore.FileSystemStore) and store.is_connected()
    assert store.path == str(tmp_path / "abs")
    store.disconnect()
    monkeypatch.chdir(tmp_path)
    store = kvstore.open_store("file:rel/path")
    assert store.path == str(tmp_path / "rel" / "path")
    store.disconnect()
    with pytest.raises(ValueError, match="scheme"):
        kvstore.open_store("bogus://x")


def test_layout_is_encores(fs):
    fs.set("plain", (io.BytesIO(b"data"), {"a": 1}))
    fs.set("dir/sub/key.txt", (io.BytesIO(b"nested"), {}))
    assert (open(os.path.join(fs.path, "plain.data"), "rb").read()) == b"data"
    assert open(os.path.join(fs.path, "plain.metadata"), "rb").read() == b'{"a": 1}'
    assert os.path.exists(os.path.join(fs.path, "dir", "sub", "key.txt.data"))
    assert os.path.exists(os.path.join(fs.path, ".FSStore"))


def test_odd_keys_stay_inside_the_root(tmp_path):
    root = tmp_path / "inner" / "store"
    with kvstore.FileSystemStore(root, create=True) as store:
        for key in kvstore.testing.ODD_KEYS:
            store.set(key, (io.BytesIO(b"x"), {}))
        files = _files_under(tmp_path)
        assert all(f.startswith(os.path.join("inner", "store") + os.sep) for f in files), files
        user_files = [f for f in _files_under(root) if not f.startswith(".kvstore") and f != ".FSStore"]
        # one .data and one .metadata per key, nothing else, and no name too long
        assert len(user_files) == 2 * len(ODD_KEYS)
        assert all(len(part.encode()) <= 255 for f in user_files for part in f.split(os.sep))
        for key in ODD_KEYS:
            store.delete(key)
        assert [f for f in _files_under(root) if not f.startswith(".kvstore")] == [".FSStore"]
        # directories made for nested keys are removed with them
        assert sorted(os.listdir(root)) == [".FSStore", ".kvstore"]


def test_reads_an_encore_directory(tmp_path):
    from encore.storage.filesystem_store import FileSystemStore as EncoreStore
    from encore.storage.filesystem_store import init_shared_store

    root = tmp_path / "encore"
    root.mkdir()
    init_shared_store(str(root))
    old = EncoreStore(str(root))
    old.connect()
    for i in range(20):
        old.set(f"item{i}", (io.BytesIO(f"payload {i}".encode()), {"i": i, "kind": "odd" if i % 2 else "even"}))
    legacy = ["caf\u00e9 menu", "my notes", ".hidden", "%41", "tab\there"]
    for key in legacy:
        old.set(key, (io.BytesIO(key.encode()), {"legacy": key}))

    with kvstore.FileSystemStore(root) as store:  # indexed on first connect
        assert store.get_data("item3").read() == b"payload 3"
        assert store.get_metadata("item3") == {"i": 3, "kind": "odd"}
        assert sorted(store.query_keys(kind="even")) == sorted(f"item{i}" for i in range(0, 20, 2))
        assert len(list(store.glob("item*"))) == 20
        assert store.info()["keys"] >= 20
        # keys whose encore file names are not kvstore's canonical ones read and write
        # where they are
        for key in legacy:
            assert store.get_data(key).read() == key.encode(), key
            assert list(store.query_keys(legacy=key)) == [key]
        assert sorted(store.glob("*")) == sorted([f"item{i}" for i in range(20)] + legacy)
        store.update_metadata("my notes", {"seen": True})
        store.set("caf\u00e9 menu", (io.BytesIO(b"rewritten"), {"lang": "fr"}))
        store.delete(".hidden")
        # what kvstore writes, encore reads
        store.set("from_kvstore", (io.BytesIO(b"new"), {"by": "kvstore"}))
    assert old.get_data("from_kvstore").read() == b"new"
    assert old.get_metadata("from_kvstore") == {"by": "kvstore"}
    assert old.get_metadata("my notes") == {"legacy": "my notes", "seen": True}
    assert old.get_data("caf\u00e9 menu").read() == b"rewritten"
    assert not old.exists(".hidden")
    with kvstore.FileSystemStore(root) as store:
        store.reindex()
        assert store.get_metadata("my notes") == {"legacy": "my notes", "seen": True}
        assert not store.exists(".hidden")


def test_index_of_another_schema_is_rebuilt(fs, caplog):
    fs.set("k", (io.BytesIO(b"x"), {"n": 1}))
    conn = fs._index.conn()
    conn.execute("UPDATE settings SET value='0' WHERE name='schema'")
    fs.disconnect()
    with caplog.at_level("WARNING", logger="kvstore.filesystem"):
        with kvstore.FileSystemStore(fs.path) as again:
            assert again.get_metadata("k") == {"n": 1}
            assert list(again.query_keys(n=1)) == ["k"]
    assert "rebuilding an index of schema 0" in caplog.text
    fs.connect()


def test_journal_of_an_older_schema_is_kept(tmp_path):
    import sqlite3

    root = tmp_path / "old"
    root.mkdir()
    kvstore.init_shared_store(str(root))
    (root / "k.data").write_bytes(b"x")
    (root / "k.metadata").write_text('{"n": 1}')
    (root / ".kvstore").mkdir()
    db = sqlite3.connect(root / ".kvstore" / "index.sqlite")
    db.executescript("""
        CREATE TABLE settings(name TEXT PRIMARY KEY, value TEXT);
        INSERT INTO settings VALUES ('schema', '2'), ('indexed', '2');
        CREATE TABLE keys(key TEXT PRIMARY KEY, metadata TEXT NOT NULL, created REAL, modified REAL, path TEXT);
        CREATE TABLE journal(seq INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, kind TEXT NOT NULL,
                             metadata TEXT NOT NULL, origin TEXT NOT NULL, timestamp REAL NOT NULL);
        CREATE TABLE pending(id INTEGER PRIMARY KEY, ops TEXT NOT NULL, commit_id TEXT NOT NULL);
        INSERT INTO journal(seq, key, kind, metadata, origin, timestamp) VALUES (41, 'k', 'set', '{"n": 1}', 'o', 1.0);
    """)
    db.close()
    with kvstore.FileSystemStore(root) as store:
        assert store.get_metadata("k") == {"n": 1}
        assert [e.sequence for e in store.changes_since(0)] == [41]
        store.update_metadata("k", {"m": 2})
        assert store.last_sequence() == 42


def test_open_store_will_not_adopt_a_busy_directory(tmp_path):
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="not a store"):
        kvstore.open_store(str(tmp_path / "home"))
    assert not (tmp_path / "home" / ".FSStore").exists()
    (tmp_path / "empty").mkdir()
    kvstore.open_store(str(tmp_path / "empty")).disconnect()
    assert (tmp_path / "empty" / ".FSStore").exists()


def test_reindex_rebuilds_from_files(fs):
    for i in range(10):
        fs.set(f"k{i}", (io.BytesIO(b"x"), {"i": i}))
    # change a metadata file behind the store's back: the files are the truth
    with open(os.path.join(fs.path, "k3.metadata"), "w") as f:
        f.write('{"i": 300}')
    assert list(fs.query_keys(i=300)) == []
    assert fs.reindex() == 10
    assert list(fs.query_keys(i=300)) == ["k3"]
    # a lost index is rebuilt on the next connect
    fs.disconnect()
    for name in os.listdir(os.path.join(fs.path, ".kvstore")):
        if name.startswith("index.sqlite"):
            os.unlink(os.path.join(fs.path, ".kvstore", name))
    fs.connect()
    assert sorted(fs.query_keys(i=5)) == ["k5"]
    assert len(list(fs.glob("k*"))) == 10


def test_journal_sequences(fs, tmp_path):
    fs.set("a", (io.BytesIO(b""), {"n": 1}))
    fs.update_metadata("a", {"n": 2})
    fs.delete("a")
    entries = fs.changes_since(0)
    assert [(e.kind, e.key, e.metadata) for e in entries] == [
        ("set", "a", {"n": 1}), ("update", "a", {"n": 2}), ("delete", "a", {"n": 2})]
    assert [e.sequence for e in entries] == [1, 2, 3]
    assert all(e.origin == fs.origin for e in entries)
    assert fs.last_sequence() == 3
    assert [e.sequence for e in fs.changes_since(2)] == [3]
    # a second instance continues the same sequence
    with kvstore.FileSystemStore(fs.path) as other:
        other.set("b", (io.BytesIO(b""), {}))
        assert other.changes_since(3)[0].origin == other.origin
    assert fs.last_sequence() == 4


def _checkpointers():
    return [t for t in threading.enumerate() if t.name.startswith("kvstore-checkpoint[")]


def test_checkpoints_run_in_the_background(tmp_path, monkeypatch):
    monkeypatch.setattr(kvstore.FileSystemStore, "wal_safety_pages", 1_000_000)  # writers never do it
    monkeypatch.setattr(kvstore.FileSystemStore, "checkpoint_every", 50)
    index = tmp_path / "s" / ".kvstore" / "index.sqlite"
    with kvstore.FileSystemStore(tmp_path / "s", create=True) as store:
        assert len(_checkpointers()) == 1
        before = index.stat().st_size
        for i in range(300):
            store.set(f"k{i}", (b"x" * 2000, {"i": i}))  # kept in the index: 600 kB
        # Commits go to the WAL; only a checkpoint copies them into the index file.
        wait_for(lambda: index.stat().st_size > before + 300 * 2000, timeout=20,
                 what="the background checkpoint")
        assert store.get("k299").metadata == {"i": 299}
    assert _checkpointers() == []


def test_journal_trimming_sets_a_floor(fs, monkeypatch):
    monkeypatch.setattr(fs, "journal_keep", 10)
    monkeypatch.setattr(fs, "journal_trim_every", 5)
    for i in range(40):
        fs.set_metadata("k", {"i": i})
    floor = fs.journal_floor()
    assert floor > 0
    entries = fs.changes_since(0)
    assert entries[0].sequence == floor + 1
    assert entries[-1].sequence == fs.last_sequence() == 40


def test_stale_temporary_files_are_removed_on_connect(fs):
    tmpdir = os.path.join(fs.path, ".kvstore", "tmp")
    dead = os.path.join(tmpdir, "999999999-1-deadbeef.part")
    mine = os.path.join(tmpdir, f"{os.getpid()}-1-cafe.part")
    open(dead, "wb").close()
    open(mine, "wb").close()
    with kvstore.FileSystemStore(fs.path):
        pass
    assert not os.path.exists(dead)
    assert os.path.exists(mine)


def test_failed_write_leaves_no_temporary_file(fs):
    from kvstore.testing import FailingStream, _Boom

    with pytest.raises(_Boom):
        fs.set("k", (FailingStream(b"x" * 1000), {}), buffer_size=10)
    assert os.listdir(os.path.join(fs.path, ".kvstore", "tmp")) == []
    with pytest.raises(RuntimeError):
        with fs.transaction("t"):
            fs.set("a", (io.BytesIO(b"abc"), {}))
            fs.set_metadata("b", {})
            raise RuntimeError
    assert os.listdir(os.path.join(fs.path, ".kvstore", "tmp")) == []
    assert list(fs.glob("*")) == []


def test_custom_magic_file_and_name(tmp_path):
    root = tmp_path / "custom"
    root.mkdir()
    kvstore.init_shared_store(str(root), magic_fname=".MyStore")
    with pytest.raises(StoreError, match=r"\.FSStore"):
        kvstore.FileSystemStore(root)
    with kvstore.FileSystemStore(root, magic_fname=".MyStore", name="mine") as store:
        store.set("k", (io.BytesIO(b"x"), {}))
        info = store.info()
        assert info["name"] == "mine" and info["path"] == str(root) and info["keys"] == 1
    assert (root / ".MyStore").exists() and not (root / ".FSStore").exists()


def test_small_values_are_served_from_the_index_and_reindex_refreshes_them(fs):
    fs.set("k", (b"old", {"a": 1}))
    assert open(os.path.join(fs.path, "k.data"), "rb").read() == b"old"  # the file holds it too
    with open(os.path.join(fs.path, "k.data"), "wb") as f:  # changed behind the store's back
        f.write(b"edited")
    assert fs.get_data("k").read() == b"old"
    fs.reindex()
    assert fs.get_data("k").read() == b"edited"


@pytest.mark.parametrize("sizes", [(100_000, 10), (10, 100_000), (10, 20), (100_000, 200_000)])
def test_an_open_value_keeps_its_snapshot_when_the_key_is_overwritten(fs, sizes):
    first, second = (bytes([65 + i]) * n for i, n in enumerate(sizes))
    fs.set("k", (first, {"n": 1}))
    value = fs.get("k")
    stream = value.data
    fs.set("k", (second, {"n": 2}))
    assert stream.read() == first and value.metadata == {"n": 1}
    assert fs.get_data("k").read() == second
    assert open(os.path.join(fs.path, "k.data"), "rb").read() == second
    assert json.loads(open(os.path.join(fs.path, "k.metadata"), "rb").read()) == {"n": 2}


def test_a_file_write_failing_after_the_commit_is_finished_by_the_next_commit(fs, monkeypatch, caplog):
    import errno

    from kvstore import signals
    from kvstore.stores.filesystem import files

    real_put = files.put_file
    calls = []

    def put(path, payload, durable):
        calls.append(path)
        if len(calls) == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_put(path, payload, durable)

    monkeypatch.setattr(files, "put_file", put)
    heard = []
    with signals.store_set.connected_to(lambda sender, event: heard.append(event.key), sender=fs):
        fs.set("k", (b"value", {"a": 1}))  # committed: the write happened, so no error
    assert heard == ["k"]
    assert fs.get_data("k").read() == b"value" and fs.get_metadata("k") == {"a": 1}
    assert "not all written yet" in caplog.text
    assert not os.path.exists(os.path.join(fs.path, "k.data"))
    fs.set("other", (b"x", {}))  # the next commit finishes the files first
    assert open(os.path.join(fs.path, "k.data"), "rb").read() == b"value"
    assert json.loads(open(os.path.join(fs.path, "k.metadata"), "rb").read()) == {"a": 1}


def test_sqlite_errors_leave_the_index_as_store_errors_with_their_cause(fs):
    import sqlite3

    fs.set("k", (b"v", {"a": 1}))
    db = sqlite3.connect(fs.journal_path)
    db.execute("DROP TABLE meta")  # damaged behind the store's back
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="no such table: meta") as caught:
        fs.query_keys(a=1)
    assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
    with pytest.raises(StoreError, match="no such table: meta"):
        fs.set("k", (b"w", {"a": 2}))  # the commit is rolled back
    assert fs.get_data("k").read() == b"v" and fs.get_metadata("k") == {"a": 1}


def test_a_shorter_value_or_metadata_leaves_no_tail_of_the_longer_one(tmp_path):
    # files are written in place: a longer old content is cut to the new length
    with kvstore.FileSystemStore(str(tmp_path / "s"), create=True) as store:
        store.set("k", (b"a long first value", {"name": "a long first name"}))
        store.set("k", (b"short", {"n": 1}))
        assert (tmp_path / "s" / "k.data").read_bytes() == b"short"
        assert json.loads((tmp_path / "s" / "k.metadata").read_bytes()) == {"n": 1}
        store.set("k", (b"longer again", {"name": "x" * 40}))
        assert (tmp_path / "s" / "k.data").read_bytes() == b"longer again"
        assert json.loads((tmp_path / "s" / "k.metadata").read_bytes()) == {"name": "x" * 40}


def test_a_write_of_the_same_content_leaves_the_files_alone(tmp_path):
    # the journal still records the write (an event, a new revision), the files keep
    # their inode and modification time: nothing in them would change
    with kvstore.FileSystemStore(str(tmp_path / "s"), create=True) as store:
        store.set("k", (b"value", {"n": 1}))
        data, meta = tmp_path / "s" / "k.data", tmp_path / "s" / "k.metadata"
        before = [(p.stat().st_ino, p.stat().st_mtime_ns) for p in (data, meta)]
        first = store.get("k").revision
        store.set("k", (b"value", {"n": 1}))
        assert store.get("k").revision > first
        assert [(p.stat().st_ino, p.stat().st_mtime_ns) for p in (data, meta)] == before
        store.set("k", (b"value", {"n": 2}))
        assert data.stat().st_mtime_ns == before[0][1] and json.loads(meta.read_bytes()) == {"n": 2}
        store.set("k", (b"other", {"n": 2}))
        assert data.read_bytes() == b"other"
