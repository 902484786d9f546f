"""What the journal's sequence high-water mark costs a FileSystemStore ``set``.

The mark (``.kvstore/sequence``) is raised in blocks: a commit whose sequences pass it first
writes the newest sequence plus ``HighWater.block`` (a temporary file renamed over the mark);
every other commit pays an integer comparison. This prints the cost per set with the usual
block (1,000) next to a block so large the mark is written once (no mark cost), taking turns
in rounds so that the disk's slow spells fall on both, and the share of a set it is.

Usage::

    python bench/bench_sequence.py              # 5 rounds of 3,000 sets per side
    python bench/bench_sequence.py --quick      # small sizes, for a smoke run
    python bench/bench_sequence.py --dir /work  # where the stores are made (default: a temp dir)
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import List

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import kvstore  # noqa: E402
from kvstore.stores.filesystem.sequence import HighWater  # noqa: E402

VALUE = b"v" * 100


def per_set(root: str, n: int, block: int) -> float:
    """µs per set of ``n`` keys into a fresh store whose mark is raised ``block`` at a time."""
    saved = HighWater.block
    HighWater.block = block
    try:
        path = tempfile.mkdtemp(dir=root)
        with kvstore.FileSystemStore(path, create=True) as store:
            start = time.perf_counter()
            for i in range(n):
                store.from_bytes(f"k{i % 500}", VALUE)  # mostly overwrites: no file creation noise
            elapsed = time.perf_counter() - start
        shutil.rmtree(path)
        return elapsed / n * 1e6
    finally:
        HighWater.block = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--dir", default=None, help="where to make the stores (default: a temp dir)")
    args = parser.parse_args()
    n, rounds = (500, 3) if args.quick else (3000, 5)
    root = tempfile.mkdtemp(prefix="kvbench-seq-", dir=args.dir)
    usual: List[float] = []
    once: List[float] = []
    try:
        for _ in range(rounds):
            usual.append(per_set(root, n, HighWater.block))
            once.append(per_set(root, n, 10 ** 12))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    a, b = statistics.median(usual), statistics.median(once)
    print(f"set (FileSystemStore, {n} sets, median of {rounds} interleaved rounds)")
    print(f"  mark raised every {HighWater.block} sequences  {a:8.1f} µs")
    print(f"  mark written once                     {b:8.1f} µs")
    print(f"  the mark's cost: x{a / b:.3f} of a set ({a - b:+.1f} µs)")


if __name__ == "__main__":
    main()
