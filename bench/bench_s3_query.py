"""S3Store.query and glob over many keys against moto's S3 server, by metadata fetch
concurrency (``max_workers``), next to boto3 GETs of the same objects from a thread pool of
the same size (the floor this server allows), rounds interleaved.

Starts moto's S3 server in a child process on 127.0.0.1 (bench_s3.py's), or uses
``--endpoint``; seeds ``-n`` keys with small JSON metadata, then per round and per
``max_workers`` times ``query_keys(kind="b")`` (every metadata object read, a tenth match),
``glob("k/*")`` (every key matches: every metadata object read since glob skips unreadable
ones), each on a store that has read nothing yet, and the raw GETs; then the same query again
on that store, and again after a tenth of the keys' metadata changed (the store keeps what it
read, by ETag, and reads only what the listing shows changed). S3Store's client has ``max_pool_connections`` =
``max(10, upload_workers, max_workers) + 2``, so the pool never caps the workers.

    python bench/bench_s3_query.py [-n 2500] [--workers 8,16,32,64] [--rounds 3] [--endpoint URL]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import functools
import json
import os
import statistics
import sys
import time
import uuid
from typing import Any, Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402

from bench_s3 import moto_server  # noqa: E402
from kvstore.stores.s3 import S3Store  # noqa: E402

CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing",
               "region_name": "us-east-1"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=2500)
    parser.add_argument("--workers", default="8,16,32,64")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--endpoint")
    args = parser.parse_args()
    workers = [int(w) for w in args.workers.split(",")]
    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    with (contextlib.nullcontext(args.endpoint) if args.endpoint else moto_server()) as endpoint:
        session = boto3.session.Session(**CREDENTIALS)
        seeder = session.client("s3", endpoint_url=endpoint,
                                config=Config(max_pool_connections=max(workers) + 2))
        seeder.create_bucket(Bucket=bucket)
        with S3Store(bucket, "q", client=seeder) as store:
            names = [store._naming.names(f"k/{i:05d}") for i in range(args.n)]

        def seed(i: int) -> None:
            seeder.put_object(Bucket=bucket, Key=names[i].data, Body=b"x")
            seeder.put_object(Bucket=bucket, Key=names[i].metadata,
                              Body=json.dumps({"kind": "ab"[i % 10 == 0], "i": i}).encode())

        t = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(seed, range(args.n)))
        print(f"moto at {endpoint}; {args.n} keys seeded in {time.perf_counter() - t:.1f}s; "
              f"workers {workers}, {args.rounds} rounds interleaved")
        def fresh(w: int) -> S3Store:
            """A store of its own: nothing read yet (its MetadataCache empty)."""
            s = S3Store(bucket, "q", endpoint_url=endpoint, max_workers=w,
                        aws_access_key_id="testing", aws_secret_access_key="testing",
                        region_name="us-east-1")
            s.connect()
            return s

        stores = {w: fresh(w) for w in workers}
        raw = {w: session.client("s3", endpoint_url=endpoint,
                                 config=Config(max_pool_connections=w + 2)) for w in workers}
        times: Dict[str, List[float]] = {}
        cpu: Dict[str, List[float]] = {}

        def timed(label: str, fn: Any) -> None:
            t, c = time.perf_counter(), time.process_time()
            fn()
            times.setdefault(label, []).append(time.perf_counter() - t)
            cpu.setdefault(label, []).append(time.process_time() - c)

        expected = args.n // 10
        def query(s: S3Store) -> None:
            _check(len(list(s.query_keys(kind="b"))), expected)

        def glob(s: S3Store) -> None:
            _check(len(list(s.glob("k/*"))), args.n)

        def gets(c: Any, w: int) -> None:
            with concurrent.futures.ThreadPoolExecutor(max_workers=w) as pool:
                list(pool.map(lambda n: c.get_object(Bucket=bucket, Key=n.metadata)["Body"].read(),
                              names))

        changed = names[::10]  # a tenth of the keys, rewritten between the warm queries

        def change(round_: int) -> None:
            with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
                list(pool.map(lambda i: stores[workers[0]].update_metadata(f"k/{i:05d}", {"round": round_}),
                              range(0, args.n, 10)))

        for r in range(args.rounds):
            for w in workers:
                stores[w].disconnect()
                stores[w] = fresh(w)
                timed(f"query_keys   x{w}", functools.partial(query, stores[w]))
                timed(f"  again      x{w}", functools.partial(query, stores[w]))
                change(r)
                timed(f"  a tenth new x{w}", functools.partial(query, stores[w]))
                stores[w].disconnect()
                stores[w] = fresh(w)
                timed(f"glob         x{w}", functools.partial(glob, stores[w]))
                timed(f"boto3 GETs   x{w}", functools.partial(gets, raw[w], w))
        for s in stores.values():
            s.disconnect()
        print(f"{args.n} metadata objects, median of {args.rounds} (min..max) seconds:")
        for label, ts in times.items():
            med = statistics.median(ts)
            floor = statistics.median(times["boto3 GETs   x" + label.split("x")[-1]])
            print(f"  {label:18}{med:7.2f}s  ({min(ts):.2f}..{max(ts):.2f})  "
                  f"{args.n / med:6.0f} keys/s  x{med / floor:.2f} of the GETs alone;  "
                  f"this process's CPU {statistics.median(cpu[label]) / args.n * 1e3:.2f} ms/key")
        print("(the rest of the time is moto's: a GET takes it several ms of CPU, so it serves the "
              "same number a second whatever the concurrency)")
        print("query_keys and glob run on a store of their own (nothing read yet); 'again' is the "
              "same query repeated on that store, nothing changed; 'a tenth new' after "
              f"{len(changed)} keys' metadata were rewritten: the store reads only those again")


def _check(got: int, want: int) -> None:
    if got != want:
        raise SystemExit(f"expected {want} keys, got {got}")


if __name__ == "__main__":
    main()
