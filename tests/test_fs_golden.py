"""Golden tests of FileSystemStore's on-disk format, pinned as the store wrote it before its
split into a package: the file operations each commit lists in its journal row, the index
schema, and an index made by that schema (built here from the schema's SQL, copied as a
literal) that must still open and read.
"""

from __future__ import annotations

import io
import json
import os
import re
import sqlite3
import zlib

import pytest

import kvstore
from kvstore.query import exists, ge, prefix


def _index(root) -> sqlite3.Connection:
    return sqlite3.connect(os.path.join(str(root), ".kvstore", "index.sqlite"))


def _last_row(root):
    """(seq, key, kind, metadata text) and the file operations of the newest journal row, with
    the store's path written ``<root>`` and temporary file names ``<tmp>``."""
    db = _index(root)
    try:
        seq, key, kind, metadata, files = db.execute(
            "SELECT seq, key, kind, metadata, files FROM journal ORDER BY seq DESC LIMIT 1").fetchone()
    finally:
        db.close()
    assert files is not None, "the newest journal row lists its commit's file operations"
    text = files.replace(str(root), "<root>")
    text = re.sub(r"/\.kvstore/tmp/\d+-[0-9a-f]{12}-\d+\.part", "/.kvstore/tmp/<tmp>", text)
    return (seq, key, kind, metadata), json.loads(text)


@pytest.fixture
def root(tmp_path):
    return tmp_path / "store"


def test_journal_file_operations_of_each_kind_of_write(root):
    with kvstore.FileSystemStore(root, create=True) as store:
        # a new small key: its data and metadata files are written in place from the index row
        store.set("d/a", (b"small", {"v": 1}))
        assert _last_row(root) == ((1, "d/a", "set", '{"v": 1}'), [
            ["data", "<root>/d/a.data", "d/a"],
            ["meta", "<root>/d/a.metadata", "d/a"],
        ])
        # an overwrite with a big value: the staged temporary file is renamed over the data file
        store.set("d/a", (io.BytesIO(b"B" * 100_000), {"v": 2}))
        assert _last_row(root) == ((2, "d/a", "update", '{"v": 2}'), [
            ["rename", "<root>/.kvstore/tmp/<tmp>", "<root>/d/a.data"],
            ["meta", "<root>/d/a.metadata", "d/a"],
        ])
        # a metadata update: only the metadata file
        store.update_metadata("d/a", {"w": 3})
        assert _last_row(root) == ((3, "d/a", "update", '{"v": 2, "w": 3}'), [
            ["meta", "<root>/d/a.metadata", "d/a"],
        ])
        # a big value replaced by a small one: the big file is unlinked first (a reader may
        # hold it open), then written anew
        store.set("d/a", (b"tiny", {"v": 4}))
        assert _last_row(root) == ((4, "d/a", "update", '{"v": 4}'), [
            ["unlink", "<root>/d/a.data", None],
            ["data", "<root>/d/a.data", "d/a"],
            ["meta", "<root>/d/a.metadata", "d/a"],
        ])
        # new data only: the metadata file is left alone
        store.set_data("d/a", b"again")
        assert _last_row(root) == ((5, "d/a", "update", '{"v": 4}'), [
            ["data", "<root>/d/a.data", "d/a"],
        ])
        # a delete: both files unlinked
        store.delete("d/a")
        assert _last_row(root) == ((6, "d/a", "delete", '{"v": 4}'), [
            ["unlink", "<root>/d/a.data", None],
            ["unlink", "<root>/d/a.metadata", None],
        ])
    assert not os.path.exists(root / "d")  # the emptied directory was removed


def test_journal_file_operations_of_a_transaction(root):
    with kvstore.FileSystemStore(root, create=True) as store:
        with store.transaction("t"):
            store.set("x", (b"1", {"s": 1}))
            store.update_metadata("x", {"s": 2})
            store.set("y", (io.BytesIO(b"Y" * 10_000), {}))
            store.delete("x")
        # one journal row per write; only the last lists the commit's file operations, all of them
        db = _index(root)
        rows = db.execute("SELECT seq, key, kind, metadata, files IS NULL FROM journal ORDER BY seq").fetchall()
        db.close()
        assert rows == [(1, "x", "set", '{"s": 1}', 1), (2, "x", "update", '{"s": 2}', 1),
                        (3, "y", "set", "{}", 1), (4, "x", "delete", '{"s": 2}', 0)]
        assert _last_row(root) == ((4, "x", "delete", '{"s": 2}'), [
            ["data", "<root>/x.data", "x"],
            ["meta", "<root>/x.metadata", "x"],
            ["meta", "<root>/x.metadata", "x"],
            ["rename", "<root>/.kvstore/tmp/<tmp>", "<root>/y.data"],
            ["meta", "<root>/y.metadata", "y"],
            ["unlink", "<root>/x.data", None],
            ["unlink", "<root>/x.metadata", None],
        ])
        # the next commit clears the list
        store.set("z", (b"", {}))
        db = _index(root)
        assert db.execute("SELECT files IS NULL FROM journal WHERE seq=4").fetchone() == (1,)
        db.close()
    assert sorted(os.listdir(root)) == [".FSStore", ".kvstore", "y.data", "y.metadata", "z.data", "z.metadata"]


def test_a_commit_of_many_file_operations_records_them_done(root, monkeypatch):
    """A commit listing 32 file operations or more clears its list once they are done, so
    that the next instance's connect and commit do not redo them all."""
    from kvstore.stores.filesystem import files
    with kvstore.FileSystemStore(root, create=True) as store:
        with store.transaction("t"):
            for i in range(16):
                store.set(f"k{i}", (b"v", {"i": i}))  # 32 in-place writes
        db = _index(root)
        assert db.execute("SELECT count(*) FROM journal WHERE files IS NOT NULL").fetchone() == (0,)
        db.close()
        with store.transaction("t"):
            for i in range(15):
                store.set(f"k{i}", (b"w", {"w": i}))  # 30: still listed
        assert len(_last_row(root)[1]) == 30

    def no_writes(*args, **kwargs):
        raise AssertionError("file operations done again")

    store = kvstore.FileSystemStore(root)
    store.connect()  # redoes the 30 of the last commit (its writer may have died)
    store.set("k0", (b"x", {}))
    with store.transaction("t"):
        for i in range(16):
            store.set(f"k{i}", (b"y", {"j": i}))
    store.disconnect()
    monkeypatch.setattr(files, "put_file", no_writes)
    with kvstore.FileSystemStore(root) as again:
        assert again.get_data("k15").read() == b"y" and again.get_metadata("k3") == {"j": 3}


# The index schema (version 6: keys.revision, issue 18; typed query rows in meta and keys.crc32,
# issue 17) as SQLite records it for
# a store made by the current code, and for a store of schema 4 after its migration.
# The index of schema version 6 (typed meta rows under three partial indexes).
SCHEMA_V6_MASTER = [
    ("table", "journal", "journal",
     "CREATE TABLE journal(\n    seq INTEGER PRIMARY KEY, key TEXT NOT NULL, kind TEXT NOT NULL,\n"
     "    metadata TEXT NOT NULL, origin TEXT NOT NULL, timestamp REAL NOT NULL, files TEXT)"),
    ("table", "keys", "keys",
     "CREATE TABLE keys(\n    key TEXT PRIMARY KEY, metadata TEXT NOT NULL, created REAL, modified REAL,\n"
     "    path TEXT, data BLOB, revision INTEGER, crc32 INTEGER) WITHOUT ROWID"),
    ("table", "meta", "meta",
     "CREATE TABLE meta(\n    key TEXT NOT NULL, name TEXT NOT NULL, elem INTEGER NOT NULL, value TEXT NOT NULL, "
     "num, txt TEXT,\n    PRIMARY KEY(key, name, elem, value)) WITHOUT ROWID"),
    ("index", "meta_num", "meta", "CREATE INDEX meta_num ON meta(name, num) WHERE num IS NOT NULL"),
    ("index", "meta_txt", "meta", "CREATE INDEX meta_txt ON meta(name, txt) WHERE txt IS NOT NULL"),
    ("index", "meta_val", "meta",
     "CREATE INDEX meta_val ON meta(name, elem, value) WHERE num IS NULL AND txt IS NULL"),
    ("table", "settings", "settings", "CREATE TABLE settings(name TEXT PRIMARY KEY, value TEXT)"),
    ("index", "sqlite_autoindex_settings_1", "settings", None),
]

# Schema 7: the same tables, but meta one B-tree (its partial indexes gone).
SCHEMA_V7_MASTER = sorted([row for row in SCHEMA_V6_MASTER if row[2] != "meta"] + [
    ("table", "meta", "meta",
     "CREATE TABLE meta(\n    name TEXT NOT NULL, elem INTEGER NOT NULL, v NOT NULL, key TEXT NOT NULL,\n"
     "    PRIMARY KEY(name, elem, v, key)) WITHOUT ROWID")], key=lambda row: row[1])

# The index schema (version 4) as SQLite recorded it for a store made by the release before.
SCHEMA_V4_MASTER = [
    ("table", "journal", "journal",
     "CREATE TABLE journal(\n    seq INTEGER PRIMARY KEY, key TEXT NOT NULL, kind TEXT NOT NULL,\n"
     "    metadata TEXT NOT NULL, origin TEXT NOT NULL, timestamp REAL NOT NULL, files TEXT)"),
    ("table", "keys", "keys",
     "CREATE TABLE keys(\n    key TEXT PRIMARY KEY, metadata TEXT NOT NULL, created REAL, modified REAL,\n"
     "    path TEXT, data BLOB) WITHOUT ROWID"),
    ("table", "meta", "meta",
     "CREATE TABLE meta(\n    name TEXT NOT NULL, value TEXT NOT NULL, key TEXT NOT NULL,\n"
     "    PRIMARY KEY(name, value, key)) WITHOUT ROWID"),
    ("table", "settings", "settings", "CREATE TABLE settings(name TEXT PRIMARY KEY, value TEXT)"),
    ("index", "sqlite_autoindex_settings_1", "settings", None),
]

# The schema's SQL as the store of schema version 4 runs it.
SCHEMA_V4_SQL = """
CREATE TABLE IF NOT EXISTS settings(name TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS keys(
    key TEXT PRIMARY KEY, metadata TEXT NOT NULL, created REAL, modified REAL,
    path TEXT, data BLOB) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta(
    name TEXT NOT NULL, value TEXT NOT NULL, key TEXT NOT NULL,
    PRIMARY KEY(name, value, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS journal(
    seq INTEGER PRIMARY KEY, key TEXT NOT NULL, kind TEXT NOT NULL,
    metadata TEXT NOT NULL, origin TEXT NOT NULL, timestamp REAL NOT NULL, files TEXT);
"""


def test_schema_of_a_fresh_store_is_pinned(root):
    with kvstore.FileSystemStore(root, create=True):
        pass
    db = _index(root)
    try:
        master = db.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name").fetchall()
        settings = db.execute("SELECT name, value FROM settings ORDER BY name").fetchall()
        journal_mode = db.execute("PRAGMA journal_mode").fetchone()
        page_size = db.execute("PRAGMA page_size").fetchone()
    finally:
        db.close()
    assert master == SCHEMA_V7_MASTER
    assert settings == [("indexed", "7"), ("schema", "7")]
    assert journal_mode == ("wal",) and page_size == (1024,)


def _write(path, payload: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(payload)


def _old_index(root, files: dict[str, bytes], schema_sql: str) -> sqlite3.Connection:
    """A store directory holding ``files``, with an index made by ``schema_sql`` (empty)."""
    os.makedirs(root / ".kvstore" / "tmp")
    kvstore.init_shared_store(str(root))
    for name, payload in files.items():
        _write(str(root / name), payload)
    db = _index(root)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(schema_sql)
    return db


def test_an_index_of_schema_4_opens_and_reads(root):
    """A store as schema version 4 leaves it: upgraded on open (not rebuilt from the files)
    by its steps, 4 -> 5 (keys.revision from the journal), 5 -> 6 (no CRC known) and 6 -> 7 (its
    meta rows made again from the metadata)."""
    big = b"B" * 70_000
    db = _old_index(root, {
        "small.data": b"tiny", "small.metadata": b'{"colour": "red", "n": 1}',
        "dir/big.data": big, "dir/big.metadata": b'{"colour": "blue"}',
        "Legacy Name.data": b"encore's", "Legacy Name.metadata": b"{}",  # named by encore after the raw key
    }, SCHEMA_V4_SQL)
    db.executemany("INSERT INTO settings(name, value) VALUES (?, ?)",
                   [("schema", "4"), ("indexed", "4"), ("journal_floor", "2")])
    db.executemany("INSERT INTO keys(key, metadata, created, modified, path, data) VALUES (?,?,?,?,?,?)", [
        ("small", '{"colour": "red", "n": 1}', 100.0, 101.0, None, b"tiny"),
        ("dir/big", '{"colour": "blue"}', 200.0, 202.0, None, None),
        ("Legacy Name", "{}", 300.0, 303.0, "Legacy Name", b"encore's"),
    ])
    db.executemany("INSERT INTO meta(name, value, key) VALUES (?,?,?)",
                   [("colour", '"red"', "small"), ("n", "1", "small"), ("colour", '"blue"', "dir/big")])
    db.executemany("INSERT INTO journal(seq, key, kind, metadata, origin, timestamp, files) "
                   "VALUES (?,?,?,?,?,?,?)", [
                       (3, "small", "set", '{"colour": "red", "n": 1}', "elsewhere", 101.0, None),
                       (4, "dir/big", "set", '{"colour": "blue"}', "elsewhere", 202.0, None),
                       (5, "Legacy Name", "set", "{}", "elsewhere", 303.0, "[]"),
                   ])
    db.commit()
    assert db.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name").fetchall() \
        == SCHEMA_V4_MASTER
    db.close()

    with kvstore.FileSystemStore(root) as store:
        small = store.get("small")
        assert small.data.read() == b"tiny" and small.metadata == {"colour": "red", "n": 1}
        assert (small.created, small.modified) == (100.0, 101.0)  # from the index: it was not rebuilt
        value = store.get("dir/big")
        assert value.data.read() == big and (value.created, value.modified) == (200.0, 202.0)
        assert store.get_data("Legacy Name").read() == b"encore's"
        assert sorted(store.query_keys(colour="blue")) == ["dir/big"]
        assert list(store.query_keys(n=ge(1))) == ["small"] and list(store.query_keys(colour=prefix("r"))) == ["small"]
        assert list(store.query_keys(colour=exists(), n=exists(False))) == ["dir/big"]
        assert [store.checksum(k) for k in ("small", "dir/big", "Legacy Name")] == [None, None, None]
        assert store.stat("dir/big").size == 70_000 and store.stat("small").size == 4
        assert sorted(store.glob("*")) == ["Legacy Name", "dir/big", "small"]
        assert (store.journal_floor(), store.last_sequence()) == (2, 5)
        # schema 5's step: each key's revision is the sequence of its last journal row
        assert [store.get(k).revision for k in ("small", "dir/big", "Legacy Name")] == [3, 4, 5]
        assert [(e.sequence, e.key, e.kind, e.origin) for e in store.changes_since(0)] == [
            (3, "small", "set", "elsewhere"), (4, "dir/big", "set", "elsewhere"),
            (5, "Legacy Name", "set", "elsewhere")]
        # and it is written as before: the legacy key where encore put it
        store.set("Legacy Name", (b"new", {"k": 1}))
        store.update_metadata("small", {"n": 2})
        assert store.get("small").revision == 7
    assert open(root / "Legacy Name.data", "rb").read() == b"new"
    assert json.loads(open(root / "small.metadata", "rb").read()) == {"colour": "red", "n": 2}
    db = _index(root)
    assert db.execute("SELECT value FROM settings WHERE name='schema'").fetchone() == ("7",)
    assert db.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name").fetchall() \
        == SCHEMA_V7_MASTER
    assert db.execute("SELECT key, crc32 FROM keys ORDER BY key").fetchall() == [
        ("Legacy Name", zlib.crc32(b"new")), ("dir/big", None), ("small", None)]  # written again: known
    assert db.execute("SELECT key, name, elem, v FROM meta ORDER BY key, name").fetchall() == [
        ("Legacy Name", "k", 0, 1), ("dir/big", "colour", 0, "blue"),
        ("small", "colour", 0, "red"), ("small", "n", 0, 2)]
    db.close()


def test_schema_4_keys_the_journal_no_longer_knows_get_a_reserved_revision(root):
    """The step gives a key without a journal row the store's last sequence (at least 1),
    which no later change is given again."""
    db = _old_index(root, {"old.data": b"old", "old.metadata": b"{}"}, SCHEMA_V4_SQL)
    db.executemany("INSERT INTO settings(name, value) VALUES (?, ?)", [("schema", "4"), ("indexed", "4")])
    db.execute("INSERT INTO keys(key, metadata, created, modified, path, data) VALUES (?,?,?,?,?,?)",
               ("old", "{}", 1.0, 1.0, None, b"old"))
    db.commit()
    db.close()
    with kvstore.FileSystemStore(root) as store:
        assert store.get("old").revision == 1
        store.set("other", (b"", {}))
        store.set("old", (b"new", {}))
        assert store.get("other").revision == 2 and store.get("old").revision == 3
        assert [e.revision for e in store.history("old")] == [3]


def test_an_index_of_schema_6_opens_with_its_meta_rows_made_again(root):
    """Schema 6's typed meta rows (three partial indexes) become schema 7's one B-tree on
    open, from the keys' metadata; the journal and the keys' rows are kept."""
    metadata = b'{"n": 1, "s": "x", "l": [1, "y"], "b": true}'
    db = _old_index(root, {"a.data": b"A", "a.metadata": metadata},
                    "".join(sql + ";\n" for _, _, _, sql in SCHEMA_V6_MASTER if sql is not None))
    db.executemany("INSERT INTO settings(name, value) VALUES (?, ?)", [("schema", "6"), ("indexed", "6")])
    db.execute("INSERT INTO keys(key, metadata, created, modified, path, data, revision, crc32) "
               "VALUES (?,?,?,?,?,?,?,?)",
               ("a", '{"n": 1, "s": "x", "l": [1, "y"], "b": true}', 1.0, 1.0, None, b"A", 9, zlib.crc32(b"A")))
    db.execute("INSERT INTO journal(seq, key, kind, metadata, origin, timestamp, files) VALUES (?,?,?,?,?,?,?)",
               (9, "a", "set", '{"n": 1, "s": "x", "l": [1, "y"], "b": true}', "elsewhere", 1.0, None))
    db.commit()
    db.close()
    with kvstore.FileSystemStore(root) as store:
        assert list(store.query_keys(n=ge(1), s="x", l=kvstore.query.contains("y"), b=True)) == ["a"]
        assert store.get("a").revision == 9 and store.checksum("a") is not None
        store.set_metadata("a", {"n": 2})
        assert list(store.query_keys(n=2)) == ["a"] and list(store.query_keys(s=exists())) == []
    db = _index(root)
    assert db.execute("SELECT value FROM settings WHERE name='schema'").fetchone() == ("7",)
    assert db.execute("SELECT name, elem, v, key FROM meta").fetchall() == [("n", 0, 2, "a")]
    db.close()
