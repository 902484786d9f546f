"""kvstore.sync from a FileSystemStore to S3 against ``aws s3 sync`` of the same directory.

Starts moto's S3 server in a child process on 127.0.0.1 (see bench_s3.py), fills a
FileSystemStore, then times, against the same server in the same run, interleaved::

    kvstore.sync(fs, S3Store, state=FILE)   first run, then a no-change re-run with the
                                            same state file (and one without any)
    aws s3 sync DIR s3://... --endpoint-url URL   (the awscli package, extra "bench")
                                            the same two runs

for 1,000 small keys (``--keys``, ``--key-size``) and, with ``--big``, one value of
``--big-mib`` MiB (1024 by default: moto keeps objects in memory and spools them to
/dev/shm, so check ``free -m`` first; each tool's objects of a big round are deleted after its runs).
Each round syncs to fresh prefixes; the order of kvstore and aws alternates between rounds.
In a big round each tool makes all its runs and its objects are deleted before the other
begins (else the second first run meets the first's value in moto's memory).
The aws runs skip the store's internal ``.kvstore`` directory. The S3 requests kvstore
made are counted per run.

    python bench/bench_sync.py [--keys 1000] [--key-size 1024] [--rounds 2] [--workers 8]
                               [--big] [--big-mib 1024] [--big-rounds 1] [--no-small]
"""

from __future__ import annotations

import argparse
import collections
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_s3 import moto_server  # noqa: E402

import kvstore  # noqa: E402

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1"}
MiB = 1024 * 1024
WORKERS = [8]  # kvstore.sync's workers (--workers)
STORE_OPTIONS: Dict[str, Any] = {}  # the S3Store's options (--upload-workers, --part-mib)


def _aws() -> List[str]:
    found = shutil.which("aws") or os.path.join(os.path.dirname(sys.executable), "aws")
    if not os.path.exists(found):
        raise SystemExit("the aws CLI is missing: pip install awscli (the bench extra)")
    return [found]


def _server_cpu() -> float:
    """CPU seconds the moto server (a child of this process) has used so far."""
    total = 0.0
    for pid in open(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read().split():
        try:
            if b"moto.server" not in open(f"/proc/{pid}/cmdline", "rb").read():
                continue
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _timed(run: Callable[[], None], who: str) -> Tuple[float, float, float]:
    """(wall seconds, CPU seconds of the client, of the server) of ``run``; the client is
    this process (``who="self"``) or the children it waits for (``"children"``)."""
    which = resource.RUSAGE_SELF if who == "self" else resource.RUSAGE_CHILDREN
    before, server = resource.getrusage(which), _server_cpu()
    start = time.perf_counter()
    run()
    wall = time.perf_counter() - start
    after = resource.getrusage(which)
    return (wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, _server_cpu() - server)


def _aws_sync(directory: str, url: str, endpoint: str) -> Tuple[float, float, float]:
    env = {**os.environ, **CREDENTIALS}
    return _timed(lambda: subprocess.run(
        _aws() + ["s3", "sync", directory, url, "--endpoint-url", endpoint, "--only-show-errors",
                  "--exclude", ".kvstore/*"], check=True, env=env), "children")


class Counted:
    """The S3 requests a store's client makes, by operation."""

    def __init__(self, store: kvstore.S3Store) -> None:
        self.counts: collections.Counter = collections.Counter()
        store._client.meta.events.register("before-parameter-build.s3.*", self._seen)

    def _seen(self, model: Any, **_: Any) -> None:
        self.counts[model.name] += 1

    def take(self) -> str:
        text = " ".join(f"{op}={n}" for op, n in sorted(self.counts.items()))
        self.counts.clear()
        return text


def _kvstore_sync(fs: kvstore.FileSystemStore, s3: kvstore.S3Store, state: Optional[str]) -> Tuple[float, float, float]:
    def run() -> None:
        report = kvstore.sync(fs, s3, workers=WORKERS[0], state=state)
        if not report.ok:
            raise SystemExit(f"sync failed: {report.errors}")

    return _timed(run, "self")


def _fill(fs: kvstore.FileSystemStore, fill: Dict[str, int], tmp: str) -> None:
    with fs.transaction("fill"):
        for key, size in fill.items():
            if size <= 64 * MiB:
                fs.set(key, (os.urandom(size), {"size": size}))
                continue
            path = os.path.join(tmp, "big.bin")  # streamed in: never whole in memory
            with open(path, "wb") as f:
                for _ in range(size // MiB):
                    f.write(os.urandom(MiB))
                f.write(os.urandom(size % MiB))
            with open(path, "rb") as f:
                fs.set(key, (f, {"size": size}))
            os.unlink(path)


def _round(fs: kvstore.FileSystemStore, s3: kvstore.S3Store, url: str, endpoint: str, state: str,
           aws_first: bool, clean: Optional[Tuple[Callable[[], None], Callable[[], None]]] = None) -> Dict[str, Any]:
    """The runs of one round, kvstore and aws in turn (``aws_first``: aws begins).

    ``clean``: (delete kvstore's objects, delete aws's objects). Given, each tool makes all
    its runs and its objects are deleted before the other's begin, so that neither first
    run meets the other's value in moto's memory (a big value: the second first run of a
    round was the slower whichever tool it was)."""
    counted = Counted(s3)
    row: Dict[str, Any] = {}

    def kv(label: str, with_state: bool = True) -> None:
        row[label] = _kvstore_sync(fs, s3, state if with_state else None)
        row[label + " requests"] = counted.take()

    def aws(label: str) -> None:
        row[label] = _aws_sync(fs.path, url, endpoint)

    if clean is not None:
        def kv_all() -> None:
            kv("kv first")
            kv("kv again")
            kv("kv again, no state", with_state=False)
            clean[0]()

        def aws_all() -> None:
            aws("aws first")
            aws("aws again")
            clean[1]()

        for tool in ((aws_all, kv_all) if aws_first else (kv_all, aws_all)):
            tool()
        return row
    steps: List[List[Callable[[], None]]] = [[lambda: kv("kv first"), lambda: aws("aws first")],
                                             [lambda: kv("kv again"), lambda: aws("aws again")]]
    for pair in steps:
        for step in (pair[::-1] if aws_first else pair):
            step()
    kv("kv again, no state", with_state=False)
    return row


def scenario(name: str, fill: Dict[str, int], endpoint: str, bucket: str, rounds: int,
             cleanup: bool) -> List[Dict[str, Any]]:
    """One row per round: seconds of each run, and the requests kvstore made."""
    import boto3  # type: ignore[import-untyped]

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-sync-") as tmp:
        fs = kvstore.FileSystemStore(os.path.join(tmp, "fs"), create=True)
        with fs:
            _fill(fs, fill, tmp)
            for r in range(rounds):
                s3 = kvstore.S3Store(bucket, f"kv-{name}-{r}", endpoint_url=endpoint, aws_access_key_id="testing",
                                     aws_secret_access_key="testing", region="us-east-1", max_attempts=3,
                                     **STORE_OPTIONS)
                with s3:
                    def clean_kv(s3: kvstore.S3Store = s3) -> None:
                        for key in list(s3.glob("*")):
                            s3.delete(key)

                    def clean_aws(prefix: str = f"aws-{name}-{r}/") -> None:
                        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                            for obj in page.get("Contents", ()):
                                client.delete_object(Bucket=bucket, Key=obj["Key"])

                    rows.append(_round(fs, s3, f"s3://{bucket}/aws-{name}-{r}", endpoint,
                                       os.path.join(tmp, f"state-{r}.json"), aws_first=r % 2 == 1,
                                       clean=(clean_kv, clean_aws) if cleanup else None))
    client.close()
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--key-size", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the small case")
    parser.add_argument("--big", action="store_true", help="also sync one big value (--big-mib)")
    parser.add_argument("--big-mib", type=int, default=1024)
    parser.add_argument("--big-rounds", type=int, default=1)
    parser.add_argument("--no-small", action="store_true", help="only the big case")
    parser.add_argument("--workers", type=int, default=WORKERS[0], help="kvstore.sync's workers")
    parser.add_argument("--upload-workers", type=int, help="the S3Store's upload_workers (default: its own)")
    parser.add_argument("--part-mib", type=int, help="the S3Store's part_size in MiB (default: its own)")
    args = parser.parse_args(argv)
    WORKERS[0] = args.workers
    if args.upload_workers:
        STORE_OPTIONS["upload_workers"] = args.upload_workers
    if args.part_mib:
        STORE_OPTIONS["part_size"] = args.part_mib * MiB
    import boto3

    cases = []
    with moto_server() as endpoint:
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing")
        client.create_bucket(Bucket="bench")
        if not args.no_small:
            small = {f"d{i % 10}/k{i:05d}": args.key_size for i in range(args.keys)}
            cases.append((f"{args.keys} keys x {args.key_size} B",
                          scenario("small", small, endpoint, "bench", args.rounds, False)))
        if args.big:
            cases.append((f"1 value x {args.big_mib} MiB",
                          scenario("big", {"big": args.big_mib * MiB}, endpoint, "bench", args.big_rounds, True)))
    print(f"{'case':<22}{'round':>6}{'kv 1st':>9}{'aws 1st':>9}{'ratio':>7}{'kv re':>9}{'aws re':>9}{'ratio':>7}"
          f"{'kv re*':>9}{'ratio*':>7}")
    for name, rows in cases:
        for r, row in enumerate(rows):
            kf, af, ka, aa, kn = (row[k][0] for k in ("kv first", "aws first", "kv again", "aws again",
                                                       "kv again, no state"))
            print(f"{name:<22}{r + 1:>6}{kf:>8.2f}s{af:>8.2f}s{af / kf:>6.1f}x{ka:>8.2f}s{aa:>8.2f}s{aa / ka:>6.1f}x"
                  f"{kn:>8.2f}s{aa / kn:>6.1f}x")
    print("ratio = aws time / kvstore time (above 1: kvstore faster); re = the no-change re-run "
          "(kvstore with the state file of its first run); re* = kvstore's re-run without a state file")
    print("CPU seconds (client + moto server) of each run, less sensitive than wall time to a loaded machine:")
    for name, rows in cases:
        for r, row in enumerate(rows):
            parts = [f"{label} {row[label][1]:.2f}+{row[label][2]:.2f}" for label in
                     ("kv first", "aws first", "kv again", "aws again", "kv again, no state")]
            print(f"  {name}, round {r + 1}: " + ", ".join(parts))
    print("S3 requests kvstore made:")
    for name, rows in cases:
        for r, row in enumerate(rows):
            for label in ("kv first", "kv again", "kv again, no state"):
                print(f"  {name}, round {r + 1}, {label}: {row[label + ' requests']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
