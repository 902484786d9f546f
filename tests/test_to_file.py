"""to_file writes like cp: regular files replaced atomically keeping their permissions,
symlinks written through, FIFOs written in place and never replaced."""

from __future__ import annotations

import contextlib
import io
import os
import stat
import threading
from typing import Any, Iterator, List

import pytest

import kvstore


@pytest.fixture
def store() -> Any:
    with kvstore.MemoryStore() as s:
        s.set("k", (io.BytesIO(b"new data"), {}))
        yield s


def test_new_file(store: Any, tmp_path: Any) -> None:
    out = tmp_path / "out"
    store.to_file("k", out)
    assert out.read_bytes() == b"new data"
    assert os.listdir(tmp_path) == ["out"]


def test_existing_file_keeps_its_permissions(store: Any, tmp_path: Any) -> None:
    out = tmp_path / "secret"
    out.write_bytes(b"old")
    os.chmod(out, 0o600)
    store.to_file("k", out)
    assert out.read_bytes() == b"new data"
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600


def test_symlink_is_written_through(store: Any, tmp_path: Any) -> None:
    target = tmp_path / "target"
    target.write_bytes(b"old")
    os.chmod(target, 0o640)
    link = tmp_path / "link"
    link.symlink_to(target)
    store.to_file("k", link)
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_bytes() == b"new data"
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o640
    assert sorted(os.listdir(tmp_path)) == ["link", "target"]


@contextlib.contextmanager
def fifo_reader(fifo: Any, timeout: float = 30) -> Iterator[List[bytes]]:
    """Make the FIFO ``fifo`` and read it whole in a thread; the list it yields holds what
    was read once the block has ended (the reader is joined, with a deadline)."""
    os.mkfifo(fifo)
    got: List[bytes] = []

    def read() -> None:
        with open(fifo, "rb") as f:
            got.append(f.read())

    reader = threading.Thread(target=read)
    reader.start()
    try:
        yield got
    finally:
        reader.join(timeout)
    assert not reader.is_alive()


def test_fifo_is_written_in_place(store: Any, tmp_path: Any) -> None:
    fifo = tmp_path / "fifo"
    with fifo_reader(fifo) as got:
        store.to_file("k", fifo)
    assert got == [b"new data"]
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert os.listdir(tmp_path) == ["fifo"]


def test_failed_write_leaves_the_file(store: Any, tmp_path: Any) -> None:
    out = tmp_path / "out"
    out.write_bytes(b"old")
    with pytest.raises(KeyError):
        store.to_file("missing", out)
    assert out.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out"]
