"""FileSystemStore's query index (issue 17): the plan follows selectivity, not keyword order;
every operator but ``not_`` drives from a range of the index's one B-tree; huge numbers compare
exactly; keys.crc32 and ``stat()`` without reading data."""

from __future__ import annotations

import io
import os
import sqlite3
import zlib
from typing import Any

import pytest

import kvstore
from kvstore._checksum import crc32_text
from kvstore.query import between, contains, eq, exists, ge, gt, le, lt, not_, one_of, prefix
from kvstore.stores.filesystem import query as planner


@pytest.fixture
def store(tmp_path):
    s = kvstore.FileSystemStore(str(tmp_path / "s"), create=True)
    s.connect()
    with s.transaction("fill"):
        for i in range(300):
            s.set_metadata(f"k{i:03d}", {"type": "egg", "i": i, "even": i % 2 == 0, "name": f"n{i:03d}",
                                         "tags": ["t", f"t{i % 10}"]})
    yield s
    s.disconnect()


def _conn(store: Any) -> sqlite3.Connection:
    return store._index.conn()


def _plan(store: Any, **criteria: Any) -> planner.Plan:
    return planner.plan(_conn(store), {n: kvstore.query.criterion(c) for n, c in criteria.items()}, False)


def test_the_most_selective_criterion_drives_whatever_the_order(store):
    a = _plan(store, type="egg", i=150)
    b = _plan(store, i=150, type="egg")
    assert a.sql == b.sql and sorted(map(str, a.params)) == sorted(map(str, b.params))
    assert a.sql.startswith("SELECT d.key FROM (SELECT key FROM meta WHERE name=? AND elem=0 AND v=?)")
    assert a.params[:2] == ["i", 150] and not a.recheck
    for p in (a, b):
        steps = [r[3] for r in _conn(store).execute("EXPLAIN QUERY PLAN " + p.sql, p.params)]
        # the driver is a range of the primary key; the other criterion a seek on all of it
        assert steps[0] == "SEARCH meta USING PRIMARY KEY (name=? AND elem=? AND v=?)", steps
        assert "SEARCH x USING PRIMARY KEY (name=? AND elem=? AND v=? AND key=?)" in steps, steps
    assert list(store.query_keys(type="egg", i=150)) == ["k150"] == list(store.query_keys(i=150, type="egg"))


@pytest.mark.parametrize("name, crit, driver", [
    ("i", gt(290), "v>? AND v<?"), ("i", between(3, 5), "v>? AND v<?"), ("name", ge("n29"), "v>? AND v<?"),
    ("name", prefix("n29"), "v>? AND v<?"), ("tags", contains("t3"), "v=?"), ("even", eq(True), "v=?"),
    ("i", one_of([1, 2, "x"]), "v=?"), ("name", exists(), "elem=?"), ("name", lt("n001"), "v>? AND v<?"),
    ("i", le(1.5), "v<?"),
])
def test_each_operator_is_answered_from_an_index(store, name, crit, driver):
    p = planner.plan(_conn(store), {name: crit, "type": eq("egg")}, False)
    steps = [r[3] for r in _conn(store).execute("EXPLAIN QUERY PLAN " + p.sql, p.params)]
    assert steps[0].startswith("SEARCH meta USING PRIMARY KEY (name=? AND elem=?"), steps
    assert steps[0].endswith(driver + ")") and not any(s.startswith("SCAN") for s in steps), steps
    assert not p.recheck
    want = sorted(k for k, md in store.query() if crit.holds(name in md, md.get(name)))
    assert list(store.query_keys(**{name: crit, "type": "egg"})) == want and want


def test_a_range_stays_among_values_of_its_kind(tmp_path):
    # numbers sort before strings, strings before the other kinds: a range with one bound
    # must not run into another kind's rows
    with kvstore.FileSystemStore(str(tmp_path / "s"), create=True) as s:
        for k, v in {"n": 5, "s": "5", "t": True, "l": [5], "z": None, "o": {"a": 5}, "e": ""}.items():
            s.set_metadata(k, {"x": v})
        assert list(s.query_keys(x=gt(0))) == ["n"] and list(s.query_keys(x=lt(10))) == ["n"]
        assert list(s.query_keys(x=gt(""))) == ["s"] and list(s.query_keys(x=ge(""))) == ["e", "s"]
        assert list(s.query_keys(x=lt("6"))) == ["e", "s"] and list(s.query_keys(x=prefix(""))) == ["e", "s"]
        assert list(s.query_keys(x=True)) == ["t"] and list(s.query_keys(x=contains(5))) == ["l"]
        assert list(s.query_keys(x=None)) == ["z"] and list(s.query_keys(x={"a": 5})) == ["o"]
        assert list(s.query_keys(x=5)) == ["n"] and list(s.query_keys(x="5")) == ["s"]
        assert list(s.query_keys(x=exists())) == ["e", "l", "n", "o", "s", "t", "z"]


def test_not_and_absent_never_drive(store):
    p = _plan(store, i=not_(between(0, 297)), tags=not_(contains("t9")))
    # not_(contains) by a seek; not_(between) in Python, on the rows the seek lets through
    assert p.sql.startswith("SELECT k.key, k.metadata FROM (SELECT key FROM keys) d CROSS JOIN keys k "
                            "ON k.key=d.key WHERE NOT EXISTS") and p.recheck
    assert list(store.query_keys(i=not_(between(0, 297)), tags=not_(contains("t9")))) == ["k298"]
    assert list(store.query_keys(missing=exists(False), i=lt(2))) == ["k000", "k001"]
    assert list(store.query_keys(missing=not_(exists(False)))) == []


def test_huge_numbers_compare_exactly(tmp_path):
    big = 2 ** 70
    with kvstore.FileSystemStore(str(tmp_path / "s"), create=True) as s:
        for k, v in {"a": big, "b": big + 1, "c": big - 1, "d": 10 ** 400, "e": 1.5, "f": -big}.items():
            s.set_metadata(k, {"n": v})
        assert list(s.query_keys(n=gt(big))) == ["b", "d"]
        assert list(s.query_keys(n=ge(big))) == ["a", "b", "d"]
        assert list(s.query_keys(n=between(big - 1, big))) == ["a", "c"]
        assert list(s.query_keys(n=big + 1)) == ["b"] and list(s.query_keys(n=10 ** 400)) == ["d"]
        assert list(s.query_keys(n=not_(ge(big)))) == ["c", "e", "f"]
        assert list(s.query_keys(n=lt(2))) == ["e", "f"]


def test_crc32_of_every_kind_of_write_and_stat_reads_no_data(tmp_path, monkeypatch):
    big = os.urandom(300_000)
    src = tmp_path / "src.bin"
    src.write_bytes(big)
    with kvstore.FileSystemStore(str(tmp_path / "s"), create=True) as s:
        s.set("small", (io.BytesIO(b"tiny"), {"a": 1}))
        s.set("streamed", (io.BufferedReader(io.BytesIO(big)), {}))  # read in chunks
        s.from_file("copied", str(src))  # copied by the kernel
        s.set_metadata("empty", {"b": 2})
        s.update_metadata("small", {"a": 2})  # the data kept: its CRC kept
        with s.transaction("t"):
            s.set_data("in_tx", b"staged")
            assert s.stat("in_tx").size == 6
        want = {"small": (4, zlib.crc32(b"tiny")), "streamed": (len(big), zlib.crc32(big)),
                "copied": (len(big), zlib.crc32(big)), "empty": (0, 0), "in_tx": (6, zlib.crc32(b"staged"))}

        def no_reads(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("stat() read the data")

        monkeypatch.setattr(os, "pread", no_reads)
        monkeypatch.setattr(os, "read", no_reads)
        monkeypatch.setattr(type(s), "_get", no_reads)
        for key, (size, crc) in want.items():
            st = s.stat(key)
            assert (st.size, st.checksum) == (size, crc32_text(crc)), key
        assert s.stat("small").metadata == {"a": 2}
        with pytest.raises(KeyError):
            s.stat("nope")
        monkeypatch.undo()
        s.reindex()  # the files alone: small values hashed again, big ones unknown
        assert s.checksum("small") == crc32_text(zlib.crc32(b"tiny")) and s.checksum("copied") is None
        assert s.stat("copied").size == len(big)
