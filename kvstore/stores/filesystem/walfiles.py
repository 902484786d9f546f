"""The index's write-ahead log as files: its size, whether it was lost, and the connections
of this process, whose SQLite locks on the ``-shm`` file must not be dropped.

POSIX locks belong to the process and go with *any* of its descriptors of the file: opening
and closing ``-shm`` here while a connection of this process is open on the index would
release that connection's locks, and another process could then reset the shared memory
under it (a SIGBUS there). So the size is read by ``stat`` only, and the ``-shm`` header is
read only while no connection of this process is open on the index.
"""

from __future__ import annotations

import os
import sqlite3
import struct
import weakref
from typing import Any

__all__ = ["Connection", "any_open", "wal_size", "wal_lost"]


class Connection(sqlite3.Connection):
    """A connection to an index file (``index_file``), known while open: see :func:`any_open`."""

    index_file = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _LIVE.add(self)

    def close(self) -> None:
        _LIVE.discard(self)
        super().close()


_LIVE: weakref.WeakSet[Connection] = weakref.WeakSet()


def any_open(file: str) -> bool:
    """Whether this process has a connection open on the index ``file``."""
    return any(conn.index_file == file for conn in list(_LIVE))


def wal_size(file: str) -> int:
    """The size of the index ``file``'s write-ahead log (0 when there is none): at least its
    frames not yet copied into the index file, which is what a checkpoint grows that file by."""
    try:
        return os.stat(file + "-wal").st_size
    except OSError:
        return 0


def wal_lost(file: str) -> bool:
    """Whether the write-ahead log of the index ``file`` is missing or shorter than the
    shared-memory index (``-shm``, left by a process that did not close) says, with frames
    not yet copied into the index file: then the index is older than the files. False,
    unchecked, while a connection of this process is open on the index (see the module)."""
    if any_open(file):
        return False
    try:
        with open(file + "-shm", "rb") as f:
            head = f.read(100)
        size = os.path.getsize(file + "-wal") if os.path.exists(file + "-wal") else 0
    except OSError:
        return False
    if len(head) < 100:
        return False
    order = "="  # the wal-index is in the writer's native byte order
    if struct.unpack(order + "I", head[0:4])[0] != 3007000 or not head[12]:
        return False  # not an initialised wal-index we know
    page = struct.unpack(order + "H", head[14:16])[0]
    page = 65536 if page == 1 else page
    frames = struct.unpack(order + "I", head[16:20])[0]
    backfilled = struct.unpack(order + "I", head[96:100])[0]
    return frames > backfilled and size < 32 + frames * (24 + page)
