"""S3Store against boto3's own transfers: upload and download of one large value.

Starts moto's S3 server in a child process on 127.0.0.1 (or uses ``--endpoint``), then, on
the same server and with the same boto3 client, times::

    S3Store.from_file  vs  client.upload_fileobj      (upload)
    S3Store.to_file    vs  client.download_fileobj    (download)

and, in separate runs (the sampling thread would slow the timed ones), samples this
process's resident memory every millisecond during each upload to report its peak above
the baseline taken just before. The value comes from a file, so it is never in memory
whole unless the uploader puts it there.

    python bench/bench_s3.py [--size-mib 256] [--repeat 2] [--endpoint URL]

Needs the ``dev`` extra (moto, flask, flask-cors) for the local server.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import boto3
from botocore.config import Config

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kvstore.stores.s3 import S3Store  # noqa: E402

MiB = 1024 * 1024
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


class PeakRSS:
    """Samples RSS every millisecond in a thread; ``peak - baseline`` when stopped."""

    def __init__(self) -> None:
        self.baseline = _rss()
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, _rss())

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())

    @property
    def above(self) -> float:
        return (self.peak - self.baseline) / MiB


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    port = _free_port()
    env = dict(os.environ)
    if os.path.isdir("/dev/shm"):
        # moto spools object bodies to temporary files: keep them in RAM so that disk
        # latency does not decide who wins
        env["TMPDIR"] = "/dev/shm"
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("moto server did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def _timed(fn: Callable[[], Any], memory: bool = False) -> Tuple[float, Optional[float]]:
    """(seconds, peak RSS above baseline in MiB or None)."""
    if memory:
        with PeakRSS() as rss:
            start = time.perf_counter()
            fn()
            elapsed = time.perf_counter() - start
        return elapsed, rss.above
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start, None


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=2, help="runs of each, interleaved; best and median are reported")
    parser.add_argument("--endpoint", help="an S3 endpoint to use instead of a local moto server")
    parser.add_argument("--bucket", default=f"bench-{uuid.uuid4().hex[:8]}")
    parser.add_argument("--part-size-mib", type=int, default=None, help="S3Store part_size (default: its own)")
    parser.add_argument("--upload-workers", type=int, default=None, help="S3Store upload_workers")
    args = parser.parse_args(argv)
    size = args.size_mib * MiB

    with tempfile.TemporaryDirectory() as tmp, \
            (contextlib.nullcontext(args.endpoint) if args.endpoint else moto_server()) as endpoint:
        src = os.path.join(tmp, "src.bin")
        with open(src, "wb") as f:
            for _ in range(args.size_mib):
                f.write(os.urandom(MiB))
        client = boto3.session.Session(
            aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "bench"),
            aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "bench"),
            region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        ).client("s3", endpoint_url=endpoint,
                 config=Config(retries={"mode": "standard"}, max_pool_connections=20))
        if not args.endpoint:
            client.create_bucket(Bucket=args.bucket)
        options: Dict[str, Any] = {}
        if args.part_size_mib:
            options["part_size"] = args.part_size_mib * MiB
        if args.upload_workers:
            options["upload_workers"] = args.upload_workers
        store = S3Store(args.bucket, "bench", client=client, **options)
        store.connect()

        def boto_up() -> None:
            with open(src, "rb") as f:
                client.upload_fileobj(f, args.bucket, "boto/value")

        def boto_down() -> None:
            with open(os.path.join(tmp, "boto.out"), "wb") as f:
                client.download_fileobj(args.bucket, "boto/value", f)

        def store_up() -> None:
            store.from_file("value", src)

        def store_down() -> None:
            store.to_file("value", os.path.join(tmp, "store.out"))

        runs = (("boto3 upload_fileobj", boto_up), ("S3Store.from_file", store_up),
                ("boto3 download_fileobj", boto_down), ("S3Store.to_file", store_down))
        # Memory is measured in runs of its own: the sampling thread competes for the
        # GIL and would slow the timed runs.
        peaks = {name: _timed(fn, memory=True)[1] for name, fn in runs[:2]}
        results: Dict[str, List[float]] = {}
        for _ in range(args.repeat):
            for name, fn in runs:
                results.setdefault(name, []).append(_timed(fn)[0])
        store.disconnect()
        same = all(os.path.getsize(os.path.join(tmp, n)) == size for n in ("boto.out", "store.out"))

    print(f"value: {args.size_mib} MiB; server: {'moto (child process)' if not args.endpoint else endpoint}; "
          f"{args.repeat} runs each, interleaved; python {sys.version.split()[0]}, boto3 {boto3.__version__}; "
          f"S3Store part_size {store.part_size // MiB} MiB x {store.upload_workers} workers")
    best: Dict[str, float] = {}
    median: Dict[str, float] = {}
    for name, times in results.items():
        seconds = min(times)
        best[name] = seconds
        median[name] = statistics.median(times)
        peak = peaks.get(name)
        memory = f"   peak RSS above baseline {peak:6.1f} MiB" if peak is not None else ""
        print(f"  {name:24s} best {size / MiB / seconds:7.1f} MiB/s, median {size / MiB / median[name]:7.1f} MiB/s"
              f"{memory}")
    for label, table in (("best", best), ("median", median)):
        up = table["boto3 upload_fileobj"] / table["S3Store.from_file"]
        down = table["boto3 download_fileobj"] / table["S3Store.to_file"]
        print(f"  ratio S3Store/boto3 ({label}): upload {up:.2f}x, download {down:.2f}x (throughput; >1 is faster)")
    print(f"  downloads complete and equal in size: {same}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
