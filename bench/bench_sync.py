"""kvstore.sync from a FileSystemStore to S3 against ``aws s3 sync`` of the same directory.

Starts moto's S3 server in a child process on 127.0.0.1 (see bench_s3.py), fills a
FileSystemStore, then times, against the same server in the same run::

    kvstore.sync(fs, S3Store, state=FILE)   first run, then a no-change re-run with the
                                            same state file (and one without any)
    kvstore sync file://DIR s3://...?endpoint_url=URL --state FILE
                                            the command, a process of its own: the same two runs
    aws s3 sync DIR s3://... --endpoint-url URL   (the awscli package, extra "bench")
                                            the same two runs

for 1,000 small keys (``--keys``, ``--key-size``) and, with ``--big``, one value of
``--big-mib`` MiB (1024 by default: moto keeps objects in memory and spools them to
/dev/shm, so check ``free -m`` first).
Each round syncs to fresh prefixes. In a round each tool makes all its runs and its objects
are deleted before the next tool begins, and the order of the tools rotates between rounds,
so that each first run meets the same server: with nothing deleted, the small rounds grew
slower one after another (6.5 s to 9.3 s over six), and a big value of one tool in moto's
memory slowed the first run of the next. An untimed sync before the rounds warms the server
up (the first big upload of a fresh server cost it half as much CPU again). The medians of
the ratios are printed over the rounds. The aws runs skip the store's internal ``.kvstore``
directory. The S3 requests kvstore.sync made are counted per run.

    python bench/bench_sync.py [--keys 1000] [--key-size 1024] [--rounds 2] [--workers 10]
                               [--big] [--big-mib 1024] [--big-rounds 1] [--no-small]
"""

from __future__ import annotations

import argparse
import collections
import functools
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from typing import Any, Callable, Dict, List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_s3 import moto_server  # noqa: E402

import kvstore  # noqa: E402

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1"}
MiB = 1024 * 1024
WORKERS = [10]  # kvstore.sync's workers (--workers): aws s3 sync's default concurrency, 10 requests
STORE_OPTIONS: Dict[str, Any] = {}  # the S3Store's options (--upload-workers, --part-mib)
TOOLS = ("kv", "cli", "aws")  # kvstore.sync, the kvstore sync command, aws s3 sync: also their prefixes


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
    command = _aws() + ["s3", "sync", directory, url, "--endpoint-url", endpoint, "--only-show-errors",
                        "--exclude", ".kvstore/*"]

    def run() -> None:
        subprocess.run(command, check=True, env=env)

    return _timed(run, "children")


def _kvstore_cli_sync(directory: str, url: str, endpoint: str, state: str) -> Tuple[float, float, float]:
    """``kvstore sync`` as a user types it, a process of its own (startup included)."""
    env = {**os.environ, **CREDENTIALS}
    query = urllib.parse.urlencode({"endpoint_url": endpoint, "region": "us-east-1", **STORE_OPTIONS})
    command = [sys.executable, "-m", "kvstore", "sync", f"file://{directory}", f"{url}?{query}",
               "--workers", str(WORKERS[0]), "--state", state]

    def run() -> None:
        done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode:
            raise SystemExit(f"kvstore sync failed ({done.returncode}): {done.stderr}")

    return _timed(run, "children")


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


def _round(fs: kvstore.FileSystemStore, s3: kvstore.S3Store, url: Callable[[str], str], endpoint: str, tmp: str,
           turn: int, clean: Dict[str, Callable[[], None]]) -> Dict[str, Any]:
    """The runs of one round: each tool (kvstore.sync in this process, the ``kvstore sync``
    command, ``aws s3 sync``) makes its first run and its re-runs, then its objects are
    deleted (``clean[tool]``) before the next tool begins (``url(tool)``: its fresh prefix),
    so that every first run meets the same server: one that holds no other tool's objects
    (see the module's docstring).
    ``turn`` rotates the order of the tools between rounds."""
    counted = Counted(s3)
    row: Dict[str, Any] = {}

    def kv(label: str, with_state: bool = True) -> None:
        row[label] = _kvstore_sync(fs, s3, os.path.join(tmp, "state.json") if with_state else None)
        row[label + " requests"] = counted.take()

    def kv_all() -> None:
        kv("kv first")
        kv("kv again")
        kv("kv again, no state", with_state=False)
        clean["kv"]()

    def cli_all() -> None:
        state = os.path.join(tmp, "cli-state.json")
        row["cli first"] = _kvstore_cli_sync(fs.path, url("cli"), endpoint, state)
        row["cli again"] = _kvstore_cli_sync(fs.path, url("cli"), endpoint, state)
        clean["cli"]()

    def aws_all() -> None:
        row["aws first"] = _aws_sync(fs.path, url("aws"), endpoint)
        row["aws again"] = _aws_sync(fs.path, url("aws"), endpoint)
        clean["aws"]()

    tools = [kv_all, cli_all, aws_all]
    for tool in tools[turn % 3:] + tools[:turn % 3]:
        tool()
    return row


def scenario(name: str, fill: Dict[str, int], endpoint: str, bucket: str, rounds: int) -> List[Dict[str, Any]]:
    """One row per round: seconds of each run, and the requests kvstore made."""
    import boto3  # type: ignore[import-untyped]

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")

    def delete_prefix(prefix: str) -> None:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            names = [{"Key": obj["Key"]} for obj in page.get("Contents", ())]
            if names:
                client.delete_objects(Bucket=bucket, Delete={"Objects": names, "Quiet": True})

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-sync-") as tmp:
        fs = kvstore.FileSystemStore(os.path.join(tmp, "fs"), create=True)
        with fs:
            _fill(fs, fill, tmp)
            # untimed: moto's first upload of a kind (its code paths, its memory) costs more
            # than the next; without this the first tool of round 1 paid for it
            with kvstore.S3Store(bucket, f"warm-{name}", endpoint_url=endpoint, aws_access_key_id="testing",
                                 aws_secret_access_key="testing", region="us-east-1", **STORE_OPTIONS) as warm:
                kvstore.sync(fs, warm, workers=WORKERS[0])
            delete_prefix(f"warm-{name}/")
            for r in range(rounds):
                here = os.path.join(tmp, f"round-{r}")
                os.mkdir(here)
                s3 = kvstore.S3Store(bucket, f"kv-{name}-{r}", endpoint_url=endpoint, aws_access_key_id="testing",
                                     aws_secret_access_key="testing", region="us-east-1", max_attempts=3,
                                     **STORE_OPTIONS)
                with s3:
                    clean: Dict[str, Callable[[], None]] = {
                        tool: functools.partial(delete_prefix, f"{tool}-{name}-{r}/") for tool in TOOLS}
                    def url(tool: str, r: int = r) -> str:
                        return f"s3://{bucket}/{tool}-{name}-{r}"

                    rows.append(_round(fs, s3, url, endpoint, here, r, clean))
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
                          scenario("small", small, endpoint, "bench", args.rounds)))
        if args.big:
            cases.append((f"1 value x {args.big_mib} MiB",
                          scenario("big", {"big": args.big_mib * MiB}, endpoint, "bench", args.big_rounds)))
    columns = [("kv 1st", "kv first"), ("cli 1st", "cli first"), ("aws 1st", "aws first"), ("kv re", "kv again"),
               ("cli re", "cli again"), ("aws re", "aws again"), ("kv re*", "kv again, no state")]
    ratios = [("1st", "aws first", "kv first"), ("1st cli", "aws first", "cli first"), ("re", "aws again", "kv again"),
              ("re cli", "aws again", "cli again"), ("re*", "aws again", "kv again, no state")]
    print(f"{'case':<22}{'round':>6}" + "".join(f"{head:>9}" for head, _ in columns)
          + "".join(f"{head:>9}" for head, _, _ in ratios))
    for name, rows in cases:
        for r, row in enumerate(rows):
            print(f"{name:<22}{r + 1:>6}" + "".join(f"{row[label][0]:>8.2f}s" for _, label in columns)
                  + "".join(f"{row[aws][0] / row[ours][0]:>8.2f}x" for _, aws, ours in ratios))
        if len(rows) > 1:
            print(f"{name:<22}{'median':>6}" + " " * 9 * len(columns) + "".join(
                f"{statistics.median(row[aws][0] / row[ours][0] for row in rows):>8.2f}x" for _, aws, ours in ratios))
    print("kv = kvstore.sync() in this process; cli = the kvstore sync command, startup included; ratios are "
          "aws time / kvstore time (above 1: kvstore faster); re = the no-change re-run (kvstore with the state file "
          "of its first run); re* = kvstore.sync's re-run without a state file")
    print("CPU seconds (client + moto server) of each run, less sensitive than wall time to a loaded machine:")
    for name, rows in cases:
        for r, row in enumerate(rows):
            parts = [f"{label} {row[label][1]:.2f}+{row[label][2]:.2f}" for _, label in columns]
            print(f"  {name}, round {r + 1}: " + ", ".join(parts))
    print("S3 requests kvstore made:")
    for name, rows in cases:
        for r, row in enumerate(rows):
            for label in ("kv first", "kv again", "kv again, no state"):
                print(f"  {name}, round {r + 1}, {label}: {row[label + ' requests']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
