"""Commit-protocol candidates for a small FileSystemStore set, in plain Python.

Each candidate writes N keys (100-byte value, small JSON metadata) as a new key and then
overwrites them, with just the syscalls and SQLite statements its protocol needs and no
kvstore code; encore's two plain file writes are measured in the same run. Rounds are
interleaved so that the disk's slow spells hit every candidate alike. This is how the
FileSystemStore commit protocol was chosen (see the README's "Benchmarks").

Usage::

    python bench/bench_commit.py --dir /path/on/the/disk/to/measure [--n 5000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time

VALUE = b"v" * 100


def _md(i):
    return json.dumps({"i": i, "kind": "even" if i % 2 == 0 else "odd", "tag": f"t{i % 100}"})


def _index(root, sync):
    conn = sqlite3.connect(os.path.join(root, "index.sqlite"), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={sync}")
    conn.executescript("""
        CREATE TABLE keys(key TEXT PRIMARY KEY, metadata TEXT, data BLOB, modified REAL) WITHOUT ROWID;
        CREATE TABLE meta(name TEXT, value TEXT, key TEXT, PRIMARY KEY(name, value, key)) WITHOUT ROWID;
        CREATE TABLE journal(seq INTEGER PRIMARY KEY, key TEXT, kind TEXT, metadata TEXT, files TEXT);
    """)
    return conn


def _commit(conn, key, md, data, files):
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO journal(key, kind, metadata, files) VALUES (?,?,?,?)", (key, "set", md, files))
    conn.execute("INSERT INTO keys(key, metadata, data, modified) VALUES (?,?,?,?) ON CONFLICT(key) DO UPDATE "
                 "SET metadata=excluded.metadata, data=excluded.data, modified=excluded.modified",
                 (key, md, data, time.time()))
    # the old row's meta entries go by primary key, as the store does
    conn.executemany("DELETE FROM meta WHERE name=? AND value=? AND key=?",
                     [("i", key, key), ("kind", '"even"', key), ("tag", '"t1"', key)])
    conn.executemany("INSERT OR REPLACE INTO meta(name, value, key) VALUES (?,?,?)",
                     [("i", key, key), ("kind", '"even"', key), ("tag", '"t1"', key)])
    conn.execute("COMMIT")


class Encore:
    """encore 0.8.0's set: metadata then data written in place, no index, not atomic."""

    name = "encore-like 2 plain writes"

    def __init__(self, root):
        self.root = root

    def set(self, i):
        base = f"{self.root}/k{i}"
        with open(base + ".metadata", "w", encoding="utf-8") as f:
            f.write(_md(i))
        with open(base + ".data", "wb") as f:
            f.write(VALUE)


class TmpRename:
    """Both files to temporary names, index commit, then two renames (the commit lists them)."""

    def __init__(self, root, sync):
        self.root, self.n = root, 0
        self.name = f"2 tmp+rename, SQLite {sync}"
        os.makedirs(f"{root}/tmp")
        self.conn = _index(root, sync)

    def _tmp(self, payload):
        self.n += 1
        path = f"{self.root}/tmp/{self.n}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, payload)
        os.close(fd)
        return path

    def set(self, i):
        md = _md(i)
        a, b = self._tmp(VALUE), self._tmp(md.encode())
        base = f"{self.root}/k{i}"
        _commit(self.conn, f"k{i}", md, None, json.dumps([a, b]))
        os.replace(a, base + ".data")
        os.replace(b, base + ".metadata")


class InPlace:
    """Value and metadata in the index row (the redo record), files written in place after."""

    def __init__(self, root, sync):
        self.root = root
        self.name = f"inline + in-place, SQLite {sync}"
        self.conn = _index(root, sync)

    @staticmethod
    def _put(path, payload):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, payload)
        os.ftruncate(fd, len(payload))
        os.close(fd)

    def set(self, i):
        md = _md(i)
        base = f"{self.root}/k{i}"
        _commit(self.conn, f"k{i}", md, VALUE, "put")
        self._put(base + ".data", VALUE)
        self._put(base + ".metadata", md.encode())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", default=None)
    args = ap.parse_args(argv)
    makers = [Encore] + [lambda r, s=s, c=c: c(r, s) for c in (TmpRename, InPlace) for s in ("NORMAL", "OFF")]
    times = {}
    root = tempfile.mkdtemp(prefix="kvcommit-", dir=args.dir)
    try:
        for rnd in range(args.rounds):
            for j, make in enumerate(makers):
                sub = os.path.join(root, f"{rnd}-{j}")
                os.makedirs(sub)
                cand = make(sub)
                for phase in ("new", "overwrite"):
                    t = time.perf_counter()
                    for i in range(args.n):
                        cand.set(i)
                    times.setdefault((cand.name, phase), []).append((time.perf_counter() - t) / args.n * 1e6)
        print(f"N={args.n:,} keys, {args.rounds} interleaved rounds, median µs per set (lower is better)")
        base = {ph: statistics.median(times[(Encore.name, ph)]) for ph in ("new", "overwrite")}
        for name in dict.fromkeys(k[0] for k in times):
            cells = []
            for ph in ("new", "overwrite"):
                m = statistics.median(times[(name, ph)])
                cells.append(f"{ph} {m:7.1f} (x{base[ph] / m:4.2f} encore)")
            print(f"{name:32s} " + "   ".join(cells))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
