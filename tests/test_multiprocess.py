"""Several processes sharing one FileSystemStore directory."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time

import pytest

import kvstore
from kvstore._keys import key_to_relpath

WORKER = r"""
import hashlib, io, os, random, sys
import kvstore
role, path, n, ident = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
store = kvstore.FileSystemStore(path)
store.connect()
rng = random.Random(ident)
keys = ["shared%d" % i for i in range(8)]
checked = 0
if role == "writer":
    for i in range(n):
        data = os.urandom(rng.choice([1, 100, 10_000, 200_000]))
        store.set(rng.choice(keys), (io.BytesIO(data), {"sha": hashlib.sha256(data).hexdigest(), "by": ident}))
        store.update_metadata("counter", {"%s-%d" % (ident, i): i})
elif role == "reader":
    # The writers may still be connecting: wait (with a deadline) for their first value.
    import time
    deadline = time.monotonic() + 60
    while not list(store.glob("shared*")) and time.monotonic() < deadline:
        time.sleep(0.005)
    for i in range(n):
        key = rng.choice(keys)
        try:
            value = store.get(key)
        except KeyError:
            continue
        data = value.data.read()
        assert hashlib.sha256(data).hexdigest() == value.metadata["sha"], "inconsistent snapshot"
        assert len(data) == value.size
        checked += 1
    for key, md in store.query():
        assert key == "counter" or "sha" in md
elif role == "updater":
    for i in range(n):
        store.update_metadata("counter", {"%s-%d" % (ident, i): i})
print("ok", checked)
"""


def _run_all(procs, timeout=120):
    outs = []
    deadline = time.monotonic() + timeout
    for p in procs:
        out, err = p.communicate(timeout=max(1, deadline - time.monotonic()))
        assert p.returncode == 0, err
        outs.append(out)
    return outs


def _spawn(role, path, n, ident):
    return subprocess.Popen([sys.executable, "-c", WORKER, role, path, str(n), ident],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_writers_and_readers_share_a_directory(tmp_path):
    path = str(tmp_path / "store")
    with kvstore.FileSystemStore(path, create=True) as store:
        store.set_metadata("counter", {})
    procs = [_spawn("writer", path, 150, f"w{i}") for i in range(3)]
    procs += [_spawn("reader", path, 1500, f"r{i}") for i in range(2)]
    outs = _run_all(procs)
    assert sum(int(o.split()[1]) for o in outs[3:]) > 0  # the readers did read values
    with kvstore.FileSystemStore(path) as store:
        counter = store.get_metadata("counter")
        assert len(counter) == 3 * 150  # no update lost
        assert len(list(store.glob("shared*"))) == 8
        seqs = [e.sequence for e in store.changes_since(0, limit=10**6)]
        # one journal row per change, numbered without gap or repeat across processes
        assert seqs == list(range(1, 1 + 1 + 3 * 150 * 2))
        assert store.last_sequence() == seqs[-1]
        # the files, written by three processes in turn, hold what the index holds
        for key in store.glob("*"):
            base = os.path.join(path, key_to_relpath(key))
            assert open(base + ".data", "rb").read() == store.get_data(key).read(), key
            assert json.loads(open(base + ".metadata", "rb").read()) == store.get_metadata(key), key


def test_update_metadata_is_atomic_across_processes(tmp_path):
    path = str(tmp_path / "store")
    with kvstore.FileSystemStore(path, create=True) as store:
        store.set("counter", (io.BytesIO(b"data"), {"start": True}))
    _run_all([_spawn("updater", path, 100, f"u{i}") for i in range(4)])
    with kvstore.FileSystemStore(path) as store:
        md = store.get_metadata("counter")
        assert len(md) == 401 and md["start"] is True
        assert store.get_data("counter").read() == b"data"


SLOW_WRITER = r"""
import io, os, sys, time
import kvstore
path, flag = sys.argv[1], sys.argv[2]
store = kvstore.FileSystemStore(path)
store.connect()
class Slow(io.RawIOBase):
    sent = False
    def readable(self): return True
    def read(self, n=-1):
        if not self.sent:
            self.sent = True
            print("streaming", flush=True)
            return b"first part "
        deadline = time.monotonic() + 60
        while not os.path.exists(flag):
            if time.monotonic() > deadline:
                raise TimeoutError
            time.sleep(0.01)
        if self.sent == "done":
            return b""
        self.sent = "done"
        return b"second part"
store.set("slow", (Slow(), {"v": "new"}))
print("committed", flush=True)
"""


def test_readers_and_writers_do_not_wait_for_a_stream(tmp_path):
    path = str(tmp_path / "store")
    flag = str(tmp_path / "flag")
    with kvstore.FileSystemStore(path, create=True) as store:
        store.set("slow", (io.BytesIO(b"old"), {"v": "old"}))
        proc = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, path, flag],
                                stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "streaming"
            # mid-stream: reads see the old pair, other writes commit, queries answer
            assert store.get_data("slow").read() == b"old"
            assert store.get_metadata("slow") == {"v": "old"}
            store.set("other", (io.BytesIO(b"x"), {"v": 1}))
            store.update_metadata("slow", {"touched": True})
            assert sorted(store.query_keys(v="old")) == ["slow"]
            open(flag, "w").close()
            assert proc.stdout.readline().strip() == "committed"
        finally:
            proc.wait(timeout=60)
            proc.stdout.close()
        value = store.get("slow")
        assert value.data.read() == b"first part second part"
        assert value.metadata == {"v": "new"}


PEEK = r"""
import sys, kvstore
store = kvstore.FileSystemStore(sys.argv[1]); store.connect()
print(store.exists("iso"), store.exists("gone"), sorted(store.glob("*")), store.last_sequence())
"""


def test_transaction_is_invisible_to_other_processes_until_commit(tmp_path):
    path = str(tmp_path / "store")

    def peek():
        return subprocess.run([sys.executable, "-c", PEEK, path], capture_output=True, text=True,
                              check=True).stdout.split(" ", 2)

    with kvstore.FileSystemStore(path, create=True) as store:
        store.set("gone", (io.BytesIO(b""), {}))
        seq = store.last_sequence()
        with store.transaction("isolated"):
            store.set("iso", (io.BytesIO(b"x"), {}))
            store.delete("gone")
            assert store.exists("iso") and not store.exists("gone")
            assert peek() == ["False", "True", f"['gone'] {seq}\n"]
        assert peek() == ["True", "False", f"['iso'] {seq + 2}\n"]
        with pytest.raises(RuntimeError):
            with store.transaction("rolled back"):
                store.set("never", (io.BytesIO(b"x"), {}))
                raise RuntimeError
        assert store.last_sequence() == seq + 2  # the journal never saw the rolled-back write
