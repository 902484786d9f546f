"""FileSystemStore copy and move: the kernel copies a copy's bytes, a move is one commit
(a rename of the data file) that readers of both keys see at once, and a replay after
kill -9 finishes it."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
import zlib
from typing import Any

import pytest

import kvstore
from kvstore.stores.filesystem import commit, files
from kvstore.stores.filesystem.commit import Rename, Unlink, WriteMeta, WriteOp, decode_files, encode_files

BIG = 300_000  # above inline_max and eager_read: a data file of its own


def _store(tmp_path: Any) -> kvstore.FileSystemStore:
    return kvstore.FileSystemStore(tmp_path / "fs", create=True)


def test_copy_of_a_big_value_is_made_by_the_kernel(tmp_path: Any, monkeypatch: Any) -> None:
    ways: list[str] = []

    def recording(*args: Any) -> str:
        ways.append(files.kernel_copy(*args))
        return ways[-1]

    monkeypatch.setattr(kvstore.FileSystemStore, "_kernel_copy", staticmethod(recording))
    # no byte of the value may be read into Python on the way
    monkeypatch.setattr(os, "pread", lambda *a: pytest.fail("the data passed through Python"))
    with _store(tmp_path) as store:
        data = os.urandom(BIG)
        store.set("src", (data, {"n": 1}))
        store.copy("src", "dst")
        assert ways and ways[0] in ("copy_file_range", "reflink")
        with open(os.path.join(store.path, "dst.data"), "rb") as f:
            assert f.read() == data
        assert store.get_metadata("dst") == {"n": 1}
        assert os.listdir(os.path.join(store.path, ".kvstore", "tmp")) == []


def test_a_copy_of_a_big_value_keeps_its_checksum_in_the_index(tmp_path: Any) -> None:
    # The kernel copies the bytes unseen: the copy's CRC-32 is the source's, so that stat()
    # (and kvstore.sync) need not read the copy to know it.
    with _store(tmp_path) as store:
        data = os.urandom(BIG)
        store.set("src", (data, {}))
        store.copy("src", "dst")
        assert store.checksum("dst") == store.checksum("src") == f"crc32:{zlib.crc32(data):08x}"
        store.set("src", (b"x" * BIG, {}))  # the copy keeps its own
        assert store.checksum("dst") == f"crc32:{zlib.crc32(data):08x}"


def test_a_moved_big_value_keeps_its_checksum_in_the_index(tmp_path: Any) -> None:
    # The move renames the data file: its CRC-32 goes with it.
    with _store(tmp_path) as store:
        data = os.urandom(BIG)
        store.set("src", (data, {}))
        store.move("src", "dst")
        assert store.checksum("dst") == f"crc32:{zlib.crc32(data):08x}"


def test_copy_falls_back_to_reflink_then_to_reading(tmp_path: Any, monkeypatch: Any) -> None:
    import fcntl

    def no_copy_file_range(*a: Any) -> int:
        raise OSError(errno.EXDEV, "cross-device")

    calls: list[int] = []

    def no_reflink(fd: int, request: int, arg: Any = 0) -> int:
        calls.append(request)
        raise OSError(errno.EOPNOTSUPP, "no reflink")

    monkeypatch.setattr(os, "copy_file_range", no_copy_file_range)
    monkeypatch.setattr(fcntl, "ioctl", no_reflink)
    progress: list[int] = []
    src, dst = tmp_path / "a", tmp_path / "b"
    src.write_bytes(b"z" * 100_001)
    with open(src, "rb") as s, open(dst, "wb") as d:
        way = files.kernel_copy(s.fileno(), d.fileno(), 100_001, progress.append, 65536)
    assert way == "read" and calls == [files.FICLONE]
    assert dst.read_bytes() == b"z" * 100_001 and progress == [65536, 34465]


def test_move_renames_the_data_file_in_one_commit(tmp_path: Any) -> None:
    with _store(tmp_path) as store:
        store.set("in/src", (b"m" * BIG, {"k": 1}))
        inode = os.stat(os.path.join(store.path, "in", "src.data")).st_ino
        before = store.last_sequence()
        store.move("in/src", "out/dst")
        assert os.stat(os.path.join(store.path, "out", "dst.data")).st_ino == inode  # not copied
        assert not os.path.exists(os.path.join(store.path, "in"))  # emptied directory pruned
        assert [(e.key, e.kind) for e in store.changes_since(before)] == [("out/dst", "set"),
                                                                          ("in/src", "delete")]
        assert store.to_bytes("out/dst") == b"m" * BIG and store.get_metadata("out/dst") == {"k": 1}


def test_move_plan_uses_the_existing_journal_operations(tmp_path: Any) -> None:
    root = str(tmp_path)
    op = commit.resolve_move(WriteOp("write", "dst", move_from="src"), ({"a": 1}, None, False),
                             (None, '{"a": 1}'), root)
    assert (op.data_file, op.metadata, op.meta_text) == (os.path.join(root, "src.data"), {"a": 1}, '{"a": 1}')
    plan = commit.plan_commit([op, WriteOp("delete", "src")], {"src": ({"a": 1}, None, False), "dst": None}, root)
    src, dst = os.path.join(root, "src"), os.path.join(root, "dst")
    assert plan.files == [Rename(src + ".data", dst + ".data"), WriteMeta(dst + ".metadata", "dst"),
                          Unlink(src + ".data"), Unlink(src + ".metadata")]
    assert decode_files(encode_files(plan.files)) == plan.files  # an older replay reads them too
    small = commit.resolve_move(WriteOp("write", "dst", move_from="src"), ({}, None, True), (b"tiny", "{}"), root)
    assert (small.data, small.data_file) == (b"tiny", None)
    with pytest.raises(KeyError):
        commit.resolve_move(WriteOp("write", "dst", move_from="src"), None, None, root)


READER = r"""
import sys, time
import kvstore
store = kvstore.FileSystemStore(sys.argv[1])
store.connect()
expected = open(sys.argv[2], "rb").read()
print("ready", flush=True)
reads = 0
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    keys = set(store.glob("*"))
    if len(keys) != 1:
        print("saw", sorted(keys), flush=True); sys.exit(1)
    # the value only moves forward along k000, k001, ...: reading them in that order from
    # the key just listed must find it (a move never shows neither key), whole (never a
    # half-moved data file)
    found = None
    (listed,) = keys
    for key in ["k%03d" % i for i in range(int(listed[1:]), int(sys.argv[4]) + 1)]:
        try:
            found = store.to_bytes(key)
            break
        except KeyError:
            continue
    if found != expected:
        print("bad data", None if found is None else len(found), flush=True); sys.exit(1)
    reads += 1
    with open(sys.argv[5], "w") as progress:
        progress.write(str(reads))
    if open(sys.argv[3]).read() == "stop":
        break
print("reads", reads, flush=True)
"""


def test_move_of_a_big_value_is_atomic_for_a_reader_in_another_process(tmp_path: Any) -> None:
    payload = os.urandom(BIG)
    (tmp_path / "expected").write_bytes(payload)
    flag = tmp_path / "flag"
    flag.write_text("")
    progress = tmp_path / "progress"
    progress.write_text("0")
    with _store(tmp_path) as store:
        limit = 900
        store.set("k000", (payload, {"n": 0}))
        proc = subprocess.Popen([sys.executable, "-c", READER, store.path, str(tmp_path / "expected"), str(flag),
                                 str(limit), str(progress)],
                                stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            # At least 80 moves, and on until the reader has read 20 times alongside them
            # (a loaded machine may run it slowly), within a deadline.
            moves, deadline = 0, time.monotonic() + 60
            while moves < limit and time.monotonic() < deadline and (
                    moves < 80 or int(progress.read_text() or 0) < 20):
                store.move(f"k{moves:03d}", f"k{moves + 1:03d}")
                moves += 1
            flag.write_text("stop")
            out, _ = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0, out
        assert int(out.split()[-1]) > 10  # the reader really ran alongside the moves
        assert list(store.glob("*")) == [f"k{moves:03d}"] and store.to_bytes(f"k{moves:03d}") == payload


DIE_IN_MOVE = r"""
import os, signal, sys
import kvstore
store = kvstore.FileSystemStore(sys.argv[1])
store.connect()
real_replace = os.replace
def die(a, b):
    if sys.argv[2] == "after":
        real_replace(a, b)
    os.kill(os.getpid(), signal.SIGKILL)   # killed after the COMMIT, around the rename
os.replace = die
store.move("src", "dir/dst")
"""


@pytest.mark.parametrize("when", ["before", "after"])
def test_move_killed_around_its_rename_is_finished_on_open(tmp_path: Any, when: str) -> None:
    path = str(tmp_path / "fs")
    with kvstore.FileSystemStore(path, create=True) as store:
        store.set("src", (b"S" * BIG, {"v": "src"}))
        store.set("dir/dst", (b"old", {"v": "old"}))
    proc = subprocess.run([sys.executable, "-c", DIE_IN_MOVE, path, when], timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert os.path.exists(os.path.join(path, "src.data")) == (when == "before")  # half done on disk
    with kvstore.FileSystemStore(path) as store:
        assert list(store.glob("*")) == ["dir/dst"]
        assert store.to_bytes("dir/dst") == b"S" * BIG and store.get_metadata("dir/dst") == {"v": "src"}
    assert sorted(os.listdir(path)) == [".FSStore", ".kvstore", "dir"]
    assert open(os.path.join(path, "dir", "dst.metadata")).read() == '{"v": "src"}'


def test_move_and_copy_of_small_values_stay_in_the_index(tmp_path: Any) -> None:
    with _store(tmp_path) as store:
        store.set("a", (b"small", {"x": 1}))
        store.copy("a", "b")
        store.move("a", "c")
        assert [(k, store.to_bytes(k)) for k in store.glob("*")] == [("b", b"small"), ("c", b"small")]
        assert open(os.path.join(store.path, "c.data"), "rb").read() == b"small"
        assert not os.path.exists(os.path.join(store.path, "a.data"))
