"""Fault injection: writers killed with SIGKILL at random instants never leave a torn pair.

Every value carries the SHA-256 of its data in its metadata, and every transaction writes
two keys with the same generation number; after each kill the store is reopened (which
finishes or discards the interrupted commit) and checked: each key is a complete pair,
both transaction keys agree, no temporary file shows as a key, and the index agrees with
the files.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

import kvstore
from kvstore._keys import key_to_relpath

WRITER = r"""
import hashlib, io, os, random, sys
import kvstore
store = kvstore.FileSystemStore(sys.argv[1], durable=sys.argv[2] == "1")
store.connect()
rng = random.Random(int(sys.argv[3]))
print("ready", flush=True)
gen = 0
while True:
    gen += 1
    action = rng.random()
    key = "k%d" % rng.randrange(6) if rng.random() < 0.7 else "dir/sub/k%d" % rng.randrange(3)
    size = rng.choice([0, 10, 1000, 100_000, 1_000_000])
    data = os.urandom(size)
    md = {"sha": hashlib.sha256(data).hexdigest(), "gen": gen, "pid": os.getpid()}
    if action < 0.55:
        store.set(key, (io.BytesIO(data), md), buffer_size=65536)
    elif action < 0.7 and store.exists(key):
        store.update_metadata(key, {"touched": gen})
    elif action < 0.8 and store.exists(key):
        store.delete(key)
    else:
        with store.transaction("pair"):
            for k in ("tx/a", "tx/b"):
                d = os.urandom(rng.choice([10, 50_000]))
                store.set(k, (io.BytesIO(d), {"sha": hashlib.sha256(d).hexdigest(), "gen": gen}))
"""


def _check_store(path):
    with kvstore.FileSystemStore(path) as store:
        keys = sorted(store.glob("*"))
        files = set()
        for dirpath, dirnames, filenames in os.walk(path):
            if dirpath == path:
                dirnames[:] = [d for d in dirnames if d != ".kvstore"]
            files.update(os.path.join(dirpath, f) for f in filenames)
        for key in keys:
            value = store.get(key)
            data = value.data.read()
            assert hashlib.sha256(data).hexdigest() == value.metadata["sha"], f"torn pair at {key}"
            # and the files, the source of truth, hold the same pair (a small value is
            # served from the index: its files were written in place after the commit)
            base = os.path.join(path, key_to_relpath(key))
            with open(base + ".data", "rb") as f:
                assert f.read() == data, f"data file of {key} differs from the store"
            with open(base + ".metadata", "rb") as f:
                assert json.loads(f.read()) == value.metadata, f"metadata file of {key} differs"
        if "tx/a" in keys or "tx/b" in keys:
            assert store.get_metadata("tx/a")["gen"] == store.get_metadata("tx/b")["gen"]
        # nothing but keys' files in the store directory
        for f in files:
            rel = os.path.relpath(f, path)
            assert rel == ".FSStore" or rel.endswith((".data", ".metadata")), rel
        assert len(files) == 2 * len(keys) + 1
        # the index agrees with the files
        indexed = {k: md for k, md in store.query()}
        store.reindex()
        assert {k: md for k, md in store.query()} == indexed
        assert sorted(indexed) == keys
        # the journal's last word on each key agrees too
        last = {}
        for entry in store.changes_since(0, limit=10**9):
            last[entry.key] = entry
        for key in keys:
            assert last[key].kind != "delete" and last[key].metadata == indexed[key], key
        for key, entry in last.items():
            if entry.kind == "delete":
                assert key not in indexed
        return len(keys)


@pytest.mark.parametrize("durable", [False, True], ids=["plain", "durable"])
def test_kill_9_never_tears_a_pair(tmp_path, durable):
    path = str(tmp_path / "store")
    kvstore.FileSystemStore(path, create=True)
    rng = random.Random(1234 + durable)
    rounds = 25
    for round_ in range(rounds):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, path, "1" if durable else "0", str(round_)],
                                stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "ready"
            time.sleep(rng.uniform(0.005, 0.25))  # the random instant of the kill
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            proc.stdout.close()
        assert proc.returncode == -signal.SIGKILL
        _check_store(path)
    with kvstore.FileSystemStore(path) as store:
        assert store.last_sequence() > rounds  # the writers did make progress


DIE_BETWEEN_FILES = r"""
import io, os, signal, sys
import kvstore
from kvstore.stores.filesystem import files

store = kvstore.FileSystemStore(sys.argv[1])
store.connect()
real_put = files.put_file
count = 0
def put_then_die(path, payload, durable):
    global count
    count += 1
    if count == int(sys.argv[2]) and sys.argv[4] == "torn":
        fd = os.open(path, os.O_WRONLY)
        os.write(fd, b"XX")   # killed in the middle of an in-place write: neither old nor new
        os.kill(os.getpid(), signal.SIGKILL)
    real_put(path, payload, durable)
    if count == int(sys.argv[2]):
        os.kill(os.getpid(), signal.SIGKILL)   # killed between two file writes of one commit
files.put_file = put_then_die
if sys.argv[3] == "tx":
    with store.transaction("t"):
        store.set("a", (io.BytesIO(b"new a"), {"v": "new"}))
        store.set("b", (io.BytesIO(b"new b"), {"v": "new"}))
else:
    store.set("a", (io.BytesIO(b"new a"), {"v": "new"}))
"""


@pytest.mark.parametrize("files_done,mode,how", [(1, "single", "after"), (1, "tx", "after"), (2, "tx", "after"),
                                                 (3, "tx", "after"), (1, "single", "torn"), (4, "tx", "torn")])
def test_commit_interrupted_between_file_writes_is_finished_on_open(tmp_path, mode, files_done, how, caplog):
    path = str(tmp_path / "store")
    with kvstore.FileSystemStore(path, create=True) as store:
        store.set("a", (b"old a", {"v": "old"}))
        store.set("b", (b"old b", {"v": "old"}))
    proc = subprocess.run([sys.executable, "-c", DIE_BETWEEN_FILES, path, str(files_done), mode, how])
    assert proc.returncode == -signal.SIGKILL

    def on_disk(name):
        return open(os.path.join(path, name), "rb").read()

    # what the files show right now, before anyone finishes the commit
    expected = {  # file writes in order: a.data, a.metadata, b.data, b.metadata
        (1, "after"): (b"new a", b'{"v": "old"}', b"old b", b'{"v": "old"}'),  # a torn
        (2, "after"): (b"new a", b'{"v": "new"}', b"old b", b'{"v": "old"}'),  # transaction half done
        (3, "after"): (b"new a", b'{"v": "new"}', b"new b", b'{"v": "old"}'),  # b torn
        (1, "torn"): (b"XXd a", b'{"v": "old"}', b"old b", b'{"v": "old"}'),  # a.data half written
        (4, "torn"): (b"new a", b'{"v": "new"}', b"new b", b'XXv": "old"}'),  # b.metadata half written
    }[files_done, how]
    assert tuple(on_disk(n) for n in ("a.data", "a.metadata", "b.data", "b.metadata")) == expected
    with caplog.at_level("INFO", logger="kvstore.filesystem"):
        with kvstore.FileSystemStore(path) as store:
            assert store.get_data("a").read() == b"new a"
            assert store.get_metadata("a") == {"v": "new"}
            if mode == "tx":
                assert store.get_data("b").read() == b"new b"
                assert store.get_metadata("b") == {"v": "new"}
            assert os.listdir(os.path.join(path, ".kvstore", "tmp")) == []
    assert "finishing the file operations" in caplog.text
    # the files were made whole again, not only the index
    assert on_disk("a.data") == b"new a" and on_disk("a.metadata") == b'{"v": "new"}'
    if mode == "tx":
        assert on_disk("b.data") == b"new b" and on_disk("b.metadata") == b'{"v": "new"}'


DIE_AFTER_RENAME = r"""
import io, os, signal, sys
import kvstore
from kvstore.stores import filesystem

store = kvstore.FileSystemStore(sys.argv[1])
store.connect()
real_replace = os.replace
def replace_then_die(a, b):
    real_replace(a, b)
    os.kill(os.getpid(), signal.SIGKILL)   # killed after the rename, before the metadata write
os.replace = replace_then_die
store.set("big", (io.BytesIO(b"N" * 100_000), {"v": "new"}))
"""


def test_big_value_commit_interrupted_after_its_rename_is_finished_on_open(tmp_path):
    path = str(tmp_path / "store")
    with kvstore.FileSystemStore(path, create=True) as store:
        store.set("big", (b"O" * 100_000, {"v": "old"}))
    proc = subprocess.run([sys.executable, "-c", DIE_AFTER_RENAME, path])
    assert proc.returncode == -signal.SIGKILL
    on_disk = os.path.join(path, "big.metadata")
    assert open(on_disk, "rb").read() == b'{"v": "old"}'  # torn on disk until the store is opened
    with kvstore.FileSystemStore(path) as store:
        assert store.get_data("big").read() == b"N" * 100_000
        assert store.get_metadata("big") == {"v": "new"}
    assert open(on_disk, "rb").read() == b'{"v": "new"}'
