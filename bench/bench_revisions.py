"""Revisions benchmark: what compare-and-set costs on a FileSystemStore, measured in one run.

Prints figures and ratios (quote the ratios: these machines are shared and noisy):

* ``set`` with ``if_revision=`` (the key's current revision) next to a plain ``set`` of the
  same keys, taking turns in blocks so that the disk's slow spells fall on both;
* a counter incremented by compare-and-set (read the revision, ``set_metadata`` with
  ``if_revision``, retry on ``ConflictError``) from 1 and from 4 processes, next to the same
  number of ``update_metadata`` calls (which merge atomically but cannot read-modify-write).

Usage::

    python bench/bench_revisions.py             # 2,000 sets per side, 400 increments per process
    python bench/bench_revisions.py --quick     # small sizes, for a smoke run
    python bench/bench_revisions.py --dir /work # where the stores are made (default: a temp dir)
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import List, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import kvstore  # noqa: E402
from kvstore.errors import ConflictError  # noqa: E402

VALUE = b"v" * 100


def _sets(store: kvstore.FileSystemStore, keys: List[str], conditional: bool) -> float:
    """Seconds for one ``set`` of each key (with its current revision as condition)."""
    revisions = {k: store.get(k).revision for k in keys} if conditional else {}
    start = time.perf_counter()
    for key in keys:
        if conditional:
            store.from_bytes(key, VALUE, if_revision=revisions[key])
        else:
            store.from_bytes(key, VALUE)
    return time.perf_counter() - start


def set_cost(root: str, n: int, rounds: int) -> Tuple[float, float]:
    """Median µs per plain and per conditional set over ``rounds`` interleaved blocks."""
    store = kvstore.FileSystemStore(os.path.join(root, "sets"), create=True)
    plain: List[float] = []
    cas: List[float] = []
    with store:
        keys = [f"k{i}" for i in range(n)]
        for key in keys:
            store.from_bytes(key, VALUE)
        for _ in range(rounds):
            plain.append(_sets(store, keys, False) / n * 1e6)
            cas.append(_sets(store, keys, True) / n * 1e6)
    return statistics.median(plain), statistics.median(cas)


def _cas_worker(path: str, increments: int, queue: multiprocessing.Queue[int]) -> None:
    conflicts = 0
    with kvstore.FileSystemStore(path) as store:
        done = 0
        while done < increments:
            value = store.get("counter")
            count = value.metadata["count"]
            try:
                store.set_metadata("counter", {"count": count + 1}, if_revision=value.revision)
            except ConflictError:
                conflicts += 1
                continue
            done += 1
    queue.put(conflicts)


def _update_worker(path: str, increments: int, queue: multiprocessing.Queue[int]) -> None:
    with kvstore.FileSystemStore(path) as store:
        for i in range(increments):
            store.update_metadata("counter", {f"w{os.getpid()}": i})
    queue.put(0)


def counter(root: str, processes: int, increments: int, worker: str) -> Tuple[float, int, int]:
    """(increments per second, conflicts, final count) of ``processes`` workers."""
    path = tempfile.mkdtemp(dir=root)
    with kvstore.FileSystemStore(path, create=True) as store:
        store.set_metadata("counter", {"count": 0})
    ctx = multiprocessing.get_context("fork")
    queue: multiprocessing.Queue[int] = ctx.Queue()
    target = _cas_worker if worker == "cas" else _update_worker
    procs = [ctx.Process(target=target, args=(path, increments, queue)) for _ in range(processes)]
    start = time.perf_counter()
    for p in procs:
        p.start()
    conflicts = sum(queue.get(timeout=600) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    elapsed = time.perf_counter() - start
    with kvstore.FileSystemStore(path) as store:
        final = store.get_metadata("counter").get("count", 0)
    shutil.rmtree(path)
    return processes * increments / elapsed, conflicts, final


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--dir", default=None, help="where to make the stores (default: a temp dir)")
    args = parser.parse_args()
    n, rounds, increments = (200, 3, 50) if args.quick else (2000, 5, 400)
    root = tempfile.mkdtemp(prefix="kvbench-rev-", dir=args.dir)
    try:
        plain, cas = set_cost(root, n, rounds)
        print(f"set (FileSystemStore, {n} keys, median of {rounds} interleaved rounds)")
        print(f"  plain set               {plain:8.1f} µs")
        print(f"  set with if_revision    {cas:8.1f} µs   x{cas / plain:.2f} of a plain set (goal: <= x1.10)")
        print(f"counter from processes ({increments} increments each)")
        for procs in (1, 4):
            rate, conflicts, final = counter(root, procs, increments, "cas")
            urate, _, _ = counter(root, procs, increments, "update")
            ok = "exact" if final == procs * increments else f"WRONG ({final})"
            print(f"  {procs} process(es): CAS {rate:8.0f} increments/s ({conflicts} conflicts retried, "
                  f"final count {ok}); update_metadata {urate:8.0f}/s; CAS/update x{rate / urate:.2f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
