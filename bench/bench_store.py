"""Store benchmark: kvstore's FileSystemStore next to its peers, measured in the same run.

Prints figures and ratios (ratios are what to quote: these machines are shared and noisy):

* set / get of 100-byte values with small metadata at N keys, into an empty store (new
  keys), over existing keys with the same values, and over them with changed values and
  metadata (every peer rewrites its files then; kvstore leaves alone a file whose content
  a write would not change): kvstore, encore 0.8.0's FileSystemStore
  (non-atomic), diskcache, the floor of plain Python writing two temp files + rename per
  set, and encore's file work alone (two plain writes per set), with what kvstore and
  encore each add to it for a new key;
* query_keys with a single match and glob with a literal prefix at N and at --query-n keys,
  against encore's scan of every metadata file;
* the cost of the signal bus with no listener, as a share of a set;
* streaming a large value in (from_file) and out (to_file) against ``cp`` of the same file.

Usage::

    python bench/bench_store.py                 # N=10,000, query at 100,000, 1 GiB stream
    python bench/bench_store.py --quick         # small sizes, for a smoke run

Needs the dev extra (encore==0.8.0, diskcache).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import kvstore  # noqa: E402
from kvstore._progress import _Progress  # noqa: E402
from kvstore._value import Change  # noqa: E402

VALUE = b"v" * 100
CHANGED = b"w" * 100  # a changed value: "set changed" writes it with the next key's metadata


def _md(i):
    return {"i": i, "kind": "even" if i % 2 == 0 else "odd", "tag": f"t{i % 100}"}


def timed(fn, n):
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) / n * 1e6  # µs per op


class Peer:
    name = ""

    def __init__(self, root):
        self.root = root


class EncoreAPI(Peer):
    """A store with encore.storage's API: kvstore's and encore's are driven the same way."""

    def set(self, n, shift=0):
        s = self.s
        value = CHANGED if shift else VALUE
        for i in range(n):
            s.set(f"k{i}", (io.BytesIO(value), _md(i + shift)))

    def query_one(self, i):
        return list(self.s.query_keys(i=i))

    def glob(self, prefix):
        return list(self.s.glob(prefix + "*"))


class KV(EncoreAPI):
    name = "kvstore"

    def __init__(self, root):
        super().__init__(root)
        self.s = kvstore.FileSystemStore(os.path.join(root, "kv"), create=True)
        self.s.connect()

    def get(self, n):
        s = self.s
        for i in range(n):
            v = s.get(f"k{i}")
            with v.data as f:
                f.read()
            _ = v.metadata


class Encore(EncoreAPI):
    name = "encore"

    def __init__(self, root):
        super().__init__(root)
        from encore.storage.filesystem_store import FileSystemStore, init_shared_store

        path = os.path.join(root, "encore")
        os.makedirs(path)
        init_shared_store(path)
        self.s = FileSystemStore(path)
        self.s.connect()

    def get(self, n):
        s = self.s
        for i in range(n):
            data, md = s.get(f"k{i}")
            with data as f:
                f.read()


class DiskCache(Peer):
    name = "diskcache"

    def __init__(self, root):
        super().__init__(root)
        import diskcache

        self.s = diskcache.Cache(os.path.join(root, "dc"))

    def set(self, n, shift=0):
        s = self.s
        value = CHANGED if shift else VALUE
        for i in range(n):
            s.set(f"k{i}", (value, _md(i + shift)))

    def get(self, n):
        s = self.s
        for i in range(n):
            s.get(f"k{i}")


class Raw(Peer):
    """The floor: two temp files written with os.open and renamed into place, no index."""

    name = "raw 2x(tmp+rename)"

    def __init__(self, root):
        super().__init__(root)
        self.dir = os.path.join(root, "raw")
        os.makedirs(os.path.join(self.dir, "tmp"))

    def set(self, n, shift=0):
        d = self.dir
        value = CHANGED if shift else VALUE
        for i in range(n):
            md = json.dumps(_md(i + shift)).encode()
            for suffix, payload in ((".data", value), (".metadata", md)):
                tmp = f"{d}/tmp/{i}{suffix}"
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                os.write(fd, payload)
                os.close(fd)
                os.replace(tmp, f"{d}/k{i}{suffix}")

    def get(self, n):
        d = self.dir
        for i in range(n):
            with open(f"{d}/k{i}.data", "rb") as f:
                f.read()
            with open(f"{d}/k{i}.metadata", "rb") as f:
                json.loads(f.read())


class Creates(Raw):
    """encore's file work without its Python: two plain file writes per set (made when
    missing, truncated otherwise), nothing atomic, no index."""

    name = "raw 2x write"

    def __init__(self, root):
        Peer.__init__(self, root)
        self.dir = os.path.join(root, "plain")
        os.makedirs(self.dir)

    def set(self, n, shift=0):
        d = self.dir
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        value = CHANGED if shift else VALUE
        for i in range(n):
            md = json.dumps(_md(i + shift)).encode()
            for suffix, payload in ((".data", value), (".metadata", md)):
                fd = os.open(f"{d}/k{i}{suffix}", flags, 0o644)
                os.write(fd, payload)
                os.close(fd)


def _settle(seconds=3.0):
    """Let the disk finish what a big delete started (it slows file creation for a while)."""
    os.sync()
    time.sleep(seconds)


def bench_small(root, n, repeats):
    print(f"\n== set / get of 100-byte values with small metadata, N={n:,} (best of {repeats}) ==")
    print("set new: N keys written into an empty store; set over: the same N keys written again "
          "(the same values); set changed: then each with a new value and new metadata")
    peers = (KV, Encore, DiskCache, Raw, Creates)
    runs = {cls.name: ([], [], [], []) for cls in peers}
    # Rounds interleave the peers, so that the disk's slow spells (they last seconds
    # here, after a big delete) do not all fall on one of them.
    for _ in range(repeats):
        for cls in peers:
            sub = tempfile.mkdtemp(dir=root)
            peer = cls(sub)
            news, overs, changes, gets = runs[cls.name]
            news.append(timed(lambda p=peer: p.set(n), n))
            overs.append(timed(lambda p=peer: p.set(n), n))
            changes.append(timed(lambda p=peer: p.set(n, 1), n))
            gets.append(timed(lambda p=peer: p.get(n), n))
            shutil.rmtree(sub)
            _settle()
    results = {}
    for name, (news, overs, changes, gets) in runs.items():
        results[name] = (min(news), min(overs), min(gets), min(changes))
        print(f"{name:22s} set new {min(news):7.1f}   set over {min(overs):7.1f}   set changed "
              f"{min(changes):7.1f}   get {min(gets):6.1f} µs/op")
    kv_new, kv_over, kv_get, kv_changed = results["kvstore"]
    print("ratios (>1 means kvstore is faster):")
    for name, (s_new, s_over, g, s_changed) in results.items():
        if name != "kvstore":
            print(f"  vs {name:20s} set new x{s_new / kv_new:5.2f}   set over x{s_over / kv_over:5.2f}   "
                  f"set changed x{s_changed / kv_changed:5.2f}   get x{g / kv_get:5.2f}")
    # A new key costs every store here two new files; what each adds on top of them:
    floor = results[Creates.name][0]
    print(f"set new, above the two plain file writes ({floor:.1f} µs/op of it): "
          + ", ".join(f"{name} +{results[name][0] - floor:.1f} µs" for name in ("kvstore", "encore")))
    return results


def bench_query(root, n):
    print(f"\n== query_keys (one match) and glob (literal prefix) at N={n:,} ==")
    sub = tempfile.mkdtemp(dir=root)
    kv, enc = KV(sub), Encore(sub)
    # Fill both stores quickly: kvstore in one transaction, encore by its own set.
    with kv.s.transaction("fill"):
        for i in range(n):
            kv.s.set(f"k{i}", (VALUE, _md(i)))
    enc.set(n)
    out = {}
    for peer in (kv, enc):
        times = []
        for j in range(5 if peer is kv else 2):
            target = (j * 7919) % n
            t = time.perf_counter()
            keys = peer.query_one(target)
            times.append((time.perf_counter() - t) * 1e3)
            assert keys == [f"k{target}"], keys
        t = time.perf_counter()
        globbed = peer.glob("k9999")
        gtime = (time.perf_counter() - t) * 1e3
        out[peer.name] = (statistics.median(times), gtime, len(globbed))
        print(f"{peer.name:10s} query_keys {statistics.median(times):10.2f} ms   "
              f"glob 'k9999*' {gtime:10.2f} ms ({len(globbed)} keys)")
    q = out["encore"][0] / out["kvstore"][0]
    g = out["encore"][1] / out["kvstore"][1]
    print(f"ratio: kvstore query_keys x{q:,.0f} faster than encore's scan; glob x{g:,.0f}")
    shutil.rmtree(sub)
    return out


def bench_bus(root, n):
    print("\n== the signal bus with no listener, as a share of a set ==")
    sub = tempfile.mkdtemp(dir=root)
    kv = KV(sub)
    per_set = timed(lambda: kv.set(n), n)
    store = kv.s
    change = [Change("set", "k", {"i": 1}, 1)]

    def bus():
        for _ in range(n):
            p = _Progress(store, "k", "set", 100)
            p.advance(100)
            p.finish("normal")
            store._apply(change)

    per_bus = timed(bus, n)
    print(f"set {per_set:.1f} µs; bus work per set with no listener {per_bus:.2f} µs "
          f"= {100 * per_bus / per_set:.2f}% of a set")
    shutil.rmtree(sub)
    return per_bus / per_set


def bench_stream(root, size_mb):
    print(f"\n== streaming a {size_mb} MiB value in and out, against cp ==")
    sub = tempfile.mkdtemp(dir=root)
    src = os.path.join(sub, "src.bin")
    chunk = os.urandom(1 << 20)
    with open(src, "wb") as f:
        for _ in range(size_mb):
            f.write(chunk)
    size = size_mb << 20

    def cp():
        dst = os.path.join(sub, "cp.bin")
        t = time.perf_counter()
        subprocess.run(["cp", src, dst], check=True)
        dt = time.perf_counter() - t
        os.unlink(dst)
        return dt

    kv = KV(sub)
    cps, ins, outs = [], [], []
    for _ in range(2):
        cps.append(cp())
        t = time.perf_counter()
        kv.s.from_file("big", src)
        ins.append(time.perf_counter() - t)
        dst = os.path.join(sub, "out.bin")
        t = time.perf_counter()
        kv.s.to_file("big", dst)
        outs.append(time.perf_counter() - t)
        os.unlink(dst)
    mbps = lambda dt: size / dt / 2**20  # noqa: E731
    c, i, o = min(cps), min(ins), min(outs)
    print(f"cp {mbps(c):8.0f} MiB/s   from_file {mbps(i):8.0f} MiB/s ({c / i:.0%} of cp)   "
          f"to_file {mbps(o):8.0f} MiB/s ({c / o:.0%} of cp)")
    shutil.rmtree(sub)
    return c / i, c / o


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--query-n", type=int, default=100_000)
    ap.add_argument("--stream-mb", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--dir", default=None, help="where to put the stores (default: a temp dir)")
    ap.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.query_n, args.stream_mb, args.repeats = 500, 2000, 16, 1
    root = tempfile.mkdtemp(prefix="kvbench-", dir=args.dir)
    try:
        print(f"python {sys.version.split()[0]}, kvstore {kvstore.__version__}, dir {root}")
        bench_small(root, args.n, args.repeats)
        bench_query(root, args.n)
        if args.query_n != args.n:
            bench_query(root, args.query_n)
        bench_bus(root, min(args.n, 5000))
        bench_stream(root, args.stream_mb)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
