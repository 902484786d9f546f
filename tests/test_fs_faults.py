"""FileSystemStore under real faults (issue 15): a damaged or lost index, a full disk (a
small tmpfs), read-only media (a tmpfs remounted read-only), a directory removed under a
connected store. No mocks: real files, real mounts.

Mounting needs root: without it these tests are skipped, except under CI (``CI`` set),
where they fail instead, so that CI never passes them silently.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
import subprocess
import sys
import textwrap

import pytest

from kvstore import open_store
from kvstore.errors import DiskFullError, JournalGapError, ReadOnlyError, StoreError
from kvstore.stores.filesystem import FileSystemStore, walfiles


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI must run this test, but {reason}")
    pytest.skip(reason)


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
def tmpfs(tmp_path):
    """A 2 MiB tmpfs mounted under tmp_path (unmounted at teardown)."""
    if os.geteuid() != 0:
        _unavailable("mounting a tmpfs needs root")
    point = tmp_path / "mnt"
    point.mkdir()
    try:
        _mount("-t", "tmpfs", "-o", "size=2m", "tmpfs", str(point))
    except (OSError, subprocess.CalledProcessError) as exc:
        _unavailable(f"cannot mount a tmpfs: {getattr(exc, 'stderr', b'') or exc}")
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], check=False, capture_output=True, timeout=30)


def _fill(store, prefix="k", n=20):
    expected = {}
    for i in range(n):
        key = f"{prefix}/{i}"
        data = (b"%d-" % i) * (i * 40 + 1)  # small and big (past inline_max) values
        md = {"i": i, "tag": prefix}
        store.set(key, (data, md))
        expected[key] = (data, md)
    return expected


def _check(store, expected):
    assert sorted(store.glob("*")) == sorted(expected)
    for key, (data, md) in expected.items():
        assert store.get_data(key).read() == data, key
        assert store.get_metadata(key) == md, key
    assert sorted(store.query_keys(tag=next(iter(expected.values()))[1]["tag"])) == sorted(expected)


# ------------------------------------------------------------------ a damaged or lost index


def _random_pages(path):
    with open(path, "r+b") as f:
        f.write(os.urandom(8192))


def _truncate(path):
    os.truncate(path, os.path.getsize(path) // 3)


DAMAGES = {"random bytes": _random_pages, "truncated": _truncate, "deleted": os.unlink}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_damaged_index_is_rebuilt_at_connect(tmp_path, damage, caplog):
    fs = FileSystemStore(tmp_path / "s", create=True)
    fs.connect()
    expected = _fill(fs, n=60)
    old = fs.last_sequence()
    fs.disconnect()  # the WAL is copied into the index and removed
    DAMAGES[damage](fs.journal_path)
    again = FileSystemStore(tmp_path / "s")
    with caplog.at_level(logging.WARNING, "kvstore.filesystem"):
        again.connect()
    try:
        if damage != "deleted":
            assert "is damaged" in caplog.text
            aside = [n for n in os.listdir(os.path.dirname(fs.journal_path)) if ".damaged-" in n]
            assert aside, "the damaged index is kept aside"
        _check(again, expected)
        assert again.last_sequence() >= old and again.journal_floor() >= old
        again.set("new", (b"x", {}))
        assert again.last_sequence() > old
        assert again.changes_since(again.journal_floor())[-1].key == "new"
    finally:
        again.disconnect()


def test_a_lost_wal_is_detected_and_the_index_rebuilt(tmp_path, caplog):
    """A writer killed before its WAL was copied into the index, then the WAL lost."""
    root = tmp_path / "s"
    script = textwrap.dedent(f"""
        import os, sys
        from kvstore.stores.filesystem import FileSystemStore
        fs = FileSystemStore({str(root)!r}, create=True)
        fs.checkpoint_idle = 3600
        fs.checkpoint_every = 10**9
        fs.connect()
        for i in range(50):
            fs.set(f"k/{{i}}", (b"v%d" % i, {{"i": i, "tag": "k"}}))
        print(fs.last_sequence(), flush=True)
        os._exit(0)  # no close: the WAL is left, not copied into the index
    """)
    out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True,
                         timeout=120)
    old = int(out.stdout.strip())
    wal = os.path.join(root, ".kvstore", "index.sqlite-wal")
    assert os.path.getsize(wal) > 0
    os.unlink(wal)
    fs = FileSystemStore(root)
    with caplog.at_level(logging.WARNING, "kvstore.filesystem"):
        fs.connect()
    try:
        assert "-wal" in caplog.text
        _check(fs, {f"k/{i}": (b"v%d" % i, {"i": i, "tag": "k"}) for i in range(50)})
        fs.set("new", (b"x", {}))
        assert fs.last_sequence() > old
    finally:
        fs.disconnect()


def test_a_watcher_resuming_from_before_a_rebuild_gets_a_gap(tmp_path):
    pytest.importorskip("watchdog")
    from kvstore.watch import FileSystemWatcher

    fs = FileSystemStore(tmp_path / "s", create=True)
    fs.connect()
    _fill(fs, n=51)
    assert fs.last_sequence() == 51
    fs.disconnect()
    os.unlink(fs.journal_path)
    fs = FileSystemStore(tmp_path / "s")
    fs.connect()
    try:
        for i in range(40):
            fs.set(f"later/{i}", (b"x", {}))
        assert fs.last_sequence() > 51 + 40 - 1
        with pytest.raises(JournalGapError) as caught:
            FileSystemWatcher(fs, since=30).start()
        assert caught.value.first == 31 and caught.value.floor > 51
        assert isinstance(caught.value, StoreError)
        from kvstore import watch
        assert watch.JournalGapError is JournalGapError
    finally:
        fs.disconnect()


def test_the_sequence_mark_is_written_once_per_block(tmp_path):
    fs = FileSystemStore(tmp_path / "s", create=True)
    fs.connect()
    try:
        mark = os.path.join(fs.path, ".kvstore", "sequence")
        fs.set("a", (b"1", {}))
        first = os.stat(mark)
        assert int(open(mark).read()) >= 1
        for i in range(50):
            fs.set("a", (b"%d" % i, {}))
        assert os.stat(mark).st_ino == first.st_ino  # not rewritten within the block
    finally:
        fs.disconnect()


def test_reindex_command(tmp_path):
    from kvstore.cli import main

    fs = FileSystemStore(tmp_path / "s", create=True)
    with fs:
        fs.set("a", (b"1", {"n": 1}))
    with open(os.path.join(fs.path, "b.data"), "wb") as f:
        f.write(b"2")
    with open(os.path.join(fs.path, "b.metadata"), "w") as f:
        json.dump({"n": 2}, f)
    assert main(["--store", str(fs.path), "reindex"]) == 0
    with fs:
        assert fs.get_metadata("b") == {"n": 2}


# ------------------------------------------------------------------ a full disk


def test_a_full_disk(tmpfs, caplog):
    fs = FileSystemStore(tmpfs / "s", create=True)
    fs.connect()
    try:
        fs.set("keep", (b"kept", {"n": 1}))
        written = []
        with pytest.raises(DiskFullError) as caught:
            for i in range(10_000):
                fs.set(f"fill/{i}", (os.urandom(50_000), {"i": i}))
                written.append(i)
        assert "disk is full" in str(caught.value) and caught.value.__cause__ is not None
        assert isinstance(caught.value, OSError)
        failed = len(written)
        assert not fs.exists(f"fill/{failed}")  # the key as it was
        with pytest.raises(StoreError):
            fs.set("keep", (os.urandom(500_000), {"n": 2}))
        assert fs.get_data("keep").read() == b"kept" and fs.get_metadata("keep") == {"n": 1}
        # readers connect and read
        reader = FileSystemStore(tmpfs / "s")
        reader.connect()
        assert reader.get_data("keep").read() == b"kept"
        reader.disconnect()
        # delete works, and frees space
        before = shutil.disk_usage(tmpfs).free
        for i in written:
            fs.delete(f"fill/{i}")
        assert shutil.disk_usage(tmpfs).free > before
        fs.set("after", (os.urandom(100_000), {}))
        assert fs.get_metadata("keep") == {"n": 1}
    finally:
        fs.disconnect()


def _wal_debt(shm_fd: int) -> int:
    """Bytes of log frames not yet copied into the index file, from the -shm header."""
    head = os.pread(shm_fd, 100, 0)
    page = struct.unpack("=H", head[14:16])[0]
    frames, backfilled = struct.unpack("=I", head[16:20])[0], struct.unpack("=I", head[96:100])[0]
    return max(0, frames - backfilled) * ((65536 if page == 1 else page) + 24)


def test_the_logs_checkpoint_debt_stays_within_the_free_space_as_the_disk_fills(tmpfs):
    """A checkpoint grows the index file by the log's frames not yet copied: as the disk
    fills, that debt is kept small (under half the free space while there is some), so that
    once the disk is full the space reserve a delete frees covers a checkpoint (with a
    background checkpoint every 256 commits the debt would reach megabytes)."""
    fs = FileSystemStore(tmpfs / "s", create=True)
    fs.connect()
    # kept open until the store has no connection: closing it would drop SQLite's locks
    shm = os.open(os.path.join(tmpfs, "s", ".kvstore", "index.sqlite-shm"), os.O_RDONLY)
    try:
        seen = []
        with pytest.raises(DiskFullError):
            for i in range(100_000):
                fs.set(f"k{i}", (b"x" * 3000, {"i": i}))
                st = os.statvfs(tmpfs)
                seen.append((_wal_debt(shm), st.f_bavail * st.f_frsize))
        assert any(free == 0 for _, free in seen), "the test did not fill the disk"
        # below sync_below free the writer checkpoints itself (above it, the checkpoint
        # thread is asked to; the two may overlap, once); a commit's own frames and files
        # come after its check
        low = [(debt, free) for debt, free in seen if 64 * 1024 < free < fs._checkpointer.sync_below]
        over = [2 * debt > free + 64 * 1024 for debt, free in low]
        assert low and not any(a and b for a, b in zip(over, over[1:], strict=False)), low
        # when the disk runs out, the space reserve a delete frees covers a checkpoint
        first_full = next(i for i, (_, free) in enumerate(seen) if free <= 64 * 1024)
        assert seen[first_full][0] <= fs.reserve_bytes // 2, seen[first_full - 3:first_full + 1]
    finally:
        fs.disconnect()
        os.close(shm)


def test_small_writes_on_a_full_disk_then_readers_connect(tmpfs):
    """Fill with small values until the disk refuses; a new instance still connects and
    reads every key it lists; deletes commit and free space."""
    fs = FileSystemStore(tmpfs / "s", create=True)
    fs.connect()
    try:
        written = {}
        with pytest.raises(DiskFullError):
            for i in range(100_000):
                fs.set(f"k{i}", (b"x" * 3000, {"i": i}))
                written[f"k{i}"] = i
        other = FileSystemStore(tmpfs / "s")
        other.connect()
        try:
            for key in other.glob("*"):
                assert other.get_metadata(key) == {"i": written[key]}
            assert len(list(other.glob("*"))) >= len(written)
        finally:
            other.disconnect()
        # Deletes still commit on the full disk (the space reserve and the emptied
        # write-ahead log make room), and they free space.
        free = os.statvfs(tmpfs).f_bavail
        for key in list(written)[:20]:
            fs.delete(key)
            assert not fs.exists(key)
        assert os.statvfs(tmpfs).f_bavail > free
        fs.set("after", (b"y" * 3000, {"ok": True}))
        assert fs.get_metadata("after") == {"ok": True}
    finally:
        fs.disconnect()


# ------------------------------------------------------------------ read-only media


def test_read_only_media(tmpfs):
    root = tmpfs / "s"
    fs = FileSystemStore(root, create=True)
    with fs:
        expected = _fill(fs, n=20)
    _mount("-o", "remount,ro", str(tmpfs))
    with pytest.raises(StoreError):
        FileSystemStore(root).connect()  # a writable open says why it cannot
    ro = open_store(f"file://{root}?readonly=1")
    assert isinstance(ro, FileSystemStore) and ro.readonly
    with ro:
        _check(ro, expected)
        for write in (lambda: ro.set("k/0", (b"x", {})), lambda: ro.delete("k/0"),
                      lambda: ro.set_metadata("k/0", {}), lambda: ro.update_metadata("k/0", {"a": 1}),
                      lambda: ro.set_data("k/0", b"x"), ro.reindex):
            with pytest.raises(ReadOnlyError):
                write()
        assert ro.get_data("k/0").read() == expected["k/0"][0]


# ------------------------------------------------------------------ a directory removed or replaced


def test_a_directory_removed_under_a_connected_store(tmp_path):
    root = tmp_path / "s"
    fs = FileSystemStore(root, create=True)
    fs.connect()
    try:
        fs.set("a", (b"1", {}))
        shutil.rmtree(root)
        for value in (b"small", b"x" * 100_000):
            with pytest.raises(StoreError, match="gone"):
                fs.set("b", (value, {}))
        with pytest.raises(StoreError):
            fs.delete("a")
        assert not os.path.exists(root), "a write re-created the directory"
    finally:
        fs.disconnect()


def test_a_directory_replaced_under_a_connected_store(tmp_path):
    root = tmp_path / "s"
    fs = FileSystemStore(root, create=True)
    fs.connect()
    try:
        fs.set("a", (b"1", {}))
        os.rename(root, tmp_path / "old")
        FileSystemStore(root, create=True)
        with pytest.raises(StoreError, match="replaced"):
            fs.set("b", (b"2", {}))
        assert sorted(os.listdir(root)) == [".FSStore"]
    finally:
        fs.disconnect()


# ------------------------------------------------------------------ no write permission


def test_read_only_without_write_permission():
    """A user who may read a store but not write it (here: root's store, read by uid 65534
    in a forked child that dropped its privileges after Python was loaded) opens it with
    readonly=True and reads everything; writes raise ReadOnlyError; a writable open says
    why it cannot."""
    if os.geteuid() != 0:
        _unavailable("dropping privileges needs root")
    import multiprocessing
    import shutil
    import tempfile

    parent = tempfile.mkdtemp(prefix="kvstore-perm-")
    os.chmod(parent, 0o755)
    try:
        root = os.path.join(parent, "s")
        with FileSystemStore(root, create=True) as fs:
            expected = _fill(fs, n=12)
        ctx = multiprocessing.get_context("fork")
        results = ctx.Queue()

        def child() -> None:
            os.setgid(65534)
            os.setuid(65534)
            out = []
            try:
                FileSystemStore(root).connect()
                out.append("writable open worked")
            except StoreError:
                out.append("writable refused")
            ro = FileSystemStore(root, readonly=True)
            with ro:
                for key, (data, md) in expected.items():
                    if ro.get_data(key).read() != data or ro.get_metadata(key) != md:
                        out.append(f"bad read of {key}")
                out.append(sorted(ro.glob("*")) == sorted(expected))
                for write in (lambda: ro.set("k/0", (b"x", {})), lambda: ro.delete("k/0"),
                              lambda: ro.update_metadata("k/0", {"a": 1})):
                    try:
                        write()
                        out.append("a write went through")
                    except ReadOnlyError:
                        out.append("refused")
            results.put(out)

        proc = ctx.Process(target=child)
        proc.start()
        out = results.get(timeout=60)
        proc.join(timeout=30)
        assert proc.exitcode == 0
        assert out == ["writable refused", True, "refused", "refused", "refused"], out
        with FileSystemStore(root) as fs:  # nothing was written by the reader
            _check(fs, expected)
    finally:
        shutil.rmtree(parent, ignore_errors=True)


_SHM_LOCK_HELD = r"""
import fcntl, struct, sys
fd = open(sys.argv[1], "rb+")
# would a write lock on the wal-index's "dead man switch" byte (128) conflict with another's?
got = fcntl.fcntl(fd, fcntl.F_GETLK, struct.pack("hhqqi4x", fcntl.F_WRLCK, 0, 128, 1, 0))
print("held" if struct.unpack("hhqqi4x", got)[0] != fcntl.F_UNLCK else "free")
"""


def test_looking_for_a_lost_log_keeps_this_processs_sqlite_locks(tmp_path):
    """POSIX locks belong to the process: had the check for a lost -wal opened and closed the
    -shm file while a connection of this process is open, that connection's lock on it would
    go, and another process could reset the shared memory under it (a SIGBUS)."""
    path = tmp_path / "s"
    first = FileSystemStore(path, create=True)
    first.connect()
    try:
        first.set("k", (b"v", {}))
        shm = str(path / ".kvstore" / "index.sqlite-shm")

        def lock() -> str:
            return subprocess.run([sys.executable, "-c", _SHM_LOCK_HELD, shm], capture_output=True,
                                  text=True, check=True, timeout=60).stdout.strip()

        assert lock() == "held"
        second = FileSystemStore(path)
        assert walfiles.wal_lost(second._index.file) is False
        assert lock() == "held"
    finally:
        first.disconnect()
