"""kvstore.sync from a FileSystemStore to S3 against ``aws s3 sync`` of the same directory.

Starts moto's S3 server in a child process on 127.0.0.1 (see bench_s3.py), fills a
FileSystemStore, then times, against the same server in the same run::

    kvstore.sync(fs, S3Store)          first run, then a no-change re-run
    aws s3 sync DIR s3://... --endpoint-url URL   (the awscli package, extra "bench") the same two runs

for 1,000 small keys (``--keys``, ``--key-size``) and, with ``--big``, one value of
``--big-mib`` MiB (1024 by default: slow on a loaded machine). The aws runs skip the
store's internal ``.kvstore`` directory.

    python bench/bench_sync.py [--keys 1000] [--key-size 1024] [--big] [--big-mib 1024]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_s3 import moto_server  # noqa: E402

import kvstore  # noqa: E402

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1"}
MiB = 1024 * 1024


def _aws() -> List[str]:
    found = shutil.which("aws") or os.path.join(os.path.dirname(sys.executable), "aws")
    if not os.path.exists(found):
        raise SystemExit("the aws CLI is missing: pip install awscli (the bench extra)")
    return [found]


def _aws_sync(directory: str, url: str, endpoint: str) -> float:
    env = {**os.environ, **CREDENTIALS}
    start = time.perf_counter()
    subprocess.run(_aws() + ["s3", "sync", directory, url, "--endpoint-url", endpoint, "--only-show-errors",
                             "--exclude", ".kvstore/*"], check=True, env=env)
    return time.perf_counter() - start


def _kvstore_sync(fs: kvstore.FileSystemStore, s3: kvstore.S3Store) -> float:
    start = time.perf_counter()
    report = kvstore.sync(fs, s3, workers=8)
    elapsed = time.perf_counter() - start
    if not report.ok:
        raise SystemExit(f"sync failed: {report.errors}")
    return elapsed


def scenario(name: str, fill: Dict[str, int], endpoint: str, bucket: str) -> Tuple[float, float, float, float]:
    """(kvstore first, kvstore re-run, aws first, aws re-run) seconds."""
    with tempfile.TemporaryDirectory(prefix="bench-sync-") as tmp:
        fs = kvstore.FileSystemStore(os.path.join(tmp, "fs"), create=True)
        with fs:
            with fs.transaction("fill"):
                for key, size in fill.items():
                    fs.set(key, (os.urandom(size), {"size": size}))
            s3 = kvstore.S3Store(bucket, f"kv-{name}", endpoint_url=endpoint, aws_access_key_id="testing",
                                 aws_secret_access_key="testing", region="us-east-1", max_attempts=3)
            with s3:
                kv_first = _kvstore_sync(fs, s3)
                kv_again = _kvstore_sync(fs, s3)
        url = f"s3://{bucket}/aws-{name}"
        aws_first = _aws_sync(fs.path, url, endpoint)
        aws_again = _aws_sync(fs.path, url, endpoint)
    return kv_first, kv_again, aws_first, aws_again


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--key-size", type=int, default=1024)
    parser.add_argument("--big", action="store_true", help="also sync one big value (--big-mib)")
    parser.add_argument("--big-mib", type=int, default=1024)
    args = parser.parse_args(argv)
    import boto3  # type: ignore[import-untyped]

    rows = []
    with moto_server() as endpoint:
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing")
        client.create_bucket(Bucket="bench")
        small = {f"d{i % 10}/k{i:05d}": args.key_size for i in range(args.keys)}
        rows.append((f"{args.keys} keys x {args.key_size} B", scenario("small", small, endpoint, "bench")))
        if args.big:
            rows.append((f"1 value x {args.big_mib} MiB", scenario("big", {"big": args.big_mib * MiB},
                                                                   endpoint, "bench")))
    print(f"{'case':<24}{'kvstore 1st':>12}{'aws 1st':>10}{'ratio':>7}{'kvstore re':>12}{'aws re':>9}{'ratio':>7}")
    for name, (kf, ka, af, aa) in rows:
        print(f"{name:<24}{kf:>11.2f}s{af:>9.2f}s{af / kf:>6.1f}x{ka:>11.2f}s{aa:>8.2f}s{aa / ka:>6.1f}x")
    print("ratio = aws time / kvstore time (above 1: kvstore faster)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
