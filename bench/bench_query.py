"""Query benchmark (issue 17): FileSystemStore's indexed queries next to encore's scan and to
SQL written by hand on the same index (the floor), in one run; and the cost of the index on set.

At N keys {"type": "egg", "i": i, "even": i % 2 == 0, "name": "n%06d" % i, "tags": [...]}:

* query_keys(i=N//2), query_keys(type="egg", i=N//2) in both keyword orders, query() of it;
* between over i with 100 matches, prefix over name with 100 matches, contains;
* the same through a hand-written SQLite query on the index (the floor), and the INTERSECT
  plan (SQLite intersects every criterion's set) that the planner was measured against;
* encore 0.8.0's query_keys (a scan of every metadata file) at --encore-n keys;
* --set: set of 100-byte values at 10,000 keys against encore and diskcache (bench_store's
  figures); run it with KVSTORE_SRC=<a checkout of the release before> for the "before".

Usage::

    python bench/bench_query.py                # N=100,000
    python bench/bench_query.py --quick        # N=5,000
    python bench/bench_query.py --set          # set cost only
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.environ.get("KVSTORE_SRC") or os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(1, os.path.dirname(os.path.abspath(__file__)))

import kvstore  # noqa: E402


EGG_I = "query_keys(type='egg', i=N//2)"


def _md(i):
    return {"type": "egg", "i": i, "even": i % 2 == 0, "name": f"n{i:06d}", "tags": ["t", f"t{i % 1000}"]}


def ms(fn, repeats=7):
    """Median milliseconds of ``fn()`` and its last result."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times), out


def bench_queries(root, n, encore_n):
    from kvstore.query import between, contains, prefix

    print(f"\n== queries at N={n:,} (median ms; kvstore, hand SQL floor, INTERSECT plan) ==")
    store = kvstore.FileSystemStore(os.path.join(root, "kv"), create=True)
    store.connect()
    t = time.perf_counter()
    with store.transaction("fill"):
        for i in range(n):
            store.set_metadata(f"k{i}", _md(i))
    print(f"filled in {time.perf_counter() - t:.1f} s")
    db = sqlite3.connect(store.journal_path)
    half, low = n // 2, n // 3
    start = f"n{low:06d}"[:-2]  # 100 names share it
    p_end = start[:-1] + chr(ord(start[-1]) + 1)
    egg = "SELECT key FROM meta WHERE name='type' AND elem=0 AND v='egg'"
    cases = [
        ("query_keys(i=N//2)", lambda: list(store.query_keys(i=half)),
         lambda: db.execute("SELECT key FROM meta WHERE name='i' AND elem=0 AND v=?", (half,)).fetchall(),
         None, 1),
        ("query_keys(type='egg', i=N//2)", lambda: list(store.query_keys(type="egg", i=half)),
         lambda: db.execute("SELECT m.key FROM meta m WHERE m.name='i' AND m.elem=0 AND m.v=? AND EXISTS (SELECT 1 "
                            "FROM meta x WHERE x.name='type' AND x.elem=0 AND x.v='egg' AND x.key=m.key)",
                            (half,)).fetchall(),
         lambda: db.execute(f"{egg} INTERSECT SELECT key FROM meta WHERE name='i' AND elem=0 AND v=?",
                            (half,)).fetchall(), 1),
        ("query_keys(i=N//2, type='egg')", lambda: list(store.query_keys(i=half, type="egg")), None, None, 1),
        ("query(type='egg', i=N//2)", lambda: list(store.query(type="egg", i=half)),
         lambda: db.execute("SELECT k.key, k.metadata FROM meta m JOIN keys k ON k.key=m.key WHERE m.name='i' "
                            "AND m.elem=0 AND m.v=?", (half,)).fetchall(), None, 1),
        ("query_keys(i=between(...)) 100", lambda: list(store.query_keys(i=between(low, low + 99))),
         lambda: db.execute("SELECT key FROM meta WHERE name='i' AND elem=0 AND v>=? AND v<=? ORDER BY key",
                            (low, low + 99)).fetchall(), None, 100),
        ("query_keys(type, even, i=between) 100", lambda: list(store.query_keys(type="egg", even=True,
                                                                                  i=between(low, low + 199))),
         None,
         lambda: db.execute(f"{egg} INTERSECT SELECT key FROM meta WHERE name='even' AND elem=0 AND v=x'74727565' "
                            "INTERSECT SELECT key FROM meta WHERE name='i' AND elem=0 AND v>=? AND v<=?",
                            (low, low + 199)).fetchall(), 100),
        ("query_keys(name=prefix(...)) 100", lambda: list(store.query_keys(name=prefix(start))),
         lambda: db.execute("SELECT key FROM meta WHERE name='name' AND elem=0 AND v>=? AND v<? ORDER BY key",
                            (start, p_end)).fetchall(), None, 100),
        ("query_keys(tags=contains(...))", lambda: list(store.query_keys(tags=contains("t7"))),
         lambda: db.execute("SELECT key FROM meta WHERE name='tags' AND elem=1 AND v=CAST('\"t7\"' AS BLOB) "
                            "ORDER BY key").fetchall(), None, n // 1000),
    ]
    figures = {}
    for label, kv, hand, inter, count in cases:
        kv_ms, got = ms(kv)
        assert len(got) == count, (label, len(got))
        line = f"{label:40s} kvstore {kv_ms:8.3f}"
        if hand is not None:
            hand_ms, rows = ms(hand)
            assert len(rows) == count, (label, len(rows))
            line += f"   hand SQL {hand_ms:8.3f} (x{kv_ms / hand_ms:.1f})"
        if inter is not None:
            inter_ms, rows = ms(inter, 3)
            assert len(rows) == count, (label, len(rows))
            line += f"   INTERSECT {inter_ms:8.3f}"
        figures[label] = kv_ms
        print(line)
    one, two = figures["query_keys(i=N//2)"], figures[EGG_I]
    rev = figures["query_keys(i=N//2, type='egg')"]
    print(f"ratio: {EGG_I} / query_keys(i=N//2) = x{two / one:.2f} (reversed order x{rev / one:.2f})")
    db.close()
    store.disconnect()
    if encore_n:
        bench_encore(root, encore_n, figures)
    return figures


def bench_encore(root, n, figures):
    from encore.storage.filesystem_store import FileSystemStore, init_shared_store

    path = os.path.join(root, "encore")
    os.makedirs(path)
    init_shared_store(path)
    enc = FileSystemStore(path)
    enc.connect()
    import io
    for i in range(n):
        enc.set(f"k{i}", (io.BytesIO(b"v"), _md(i)))
    enc_ms, got = ms(lambda: list(enc.query_keys(type="egg", i=n // 2)), 2)
    assert got == [f"k{n // 2}"], got
    print(f"encore query_keys(type='egg', i=N//2) at N={n:,}: {enc_ms:.1f} ms (a scan: grows with N); "
          f"kvstore at its N is x{enc_ms / figures[EGG_I]:,.0f} faster")


def bench_set(root, n, repeats):
    import bench_store

    results = bench_store.bench_small(root, n, repeats)
    kv = results["kvstore"]
    for name in ("encore", "diskcache"):
        other = results[name]
        print(f"set new / {name}: x{kv[0] / other[0]:.3f}   set over / {name}: x{kv[1] / other[1]:.3f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--set", action="store_true", help="the set figures only")
    ap.add_argument("-n", type=int, default=None)
    ap.add_argument("--encore-n", type=int, default=None)
    args = ap.parse_args()
    n = args.n or (5_000 if args.quick else 100_000)
    root = tempfile.mkdtemp(prefix="kvbench-q-")
    try:
        print(f"kvstore from {os.path.dirname(kvstore.__file__)}")
        if args.set:
            bench_set(root, 1_000 if args.quick else 10_000, 3)
        else:
            bench_queries(root, n, args.encore_n if args.encore_n is not None else min(n, 10_000))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
