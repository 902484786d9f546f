"""The checkpointer: a background thread that copies the index's WAL into the index file.

A COMMIT only appends to the write-ahead log; copying the log into the index file, with its
fsyncs, is a checkpoint, and it is this thread's work so that writers never pay for it. It
is asked for every ``every`` commits and runs at least ``idle`` seconds after the last
ones; writers checkpoint by themselves only when the WAL grows past
``Index.wal_safety_pages`` (the thread is stuck, or gone after a fork).

A checkpoint grows the index file by up to the log's frames not yet copied (its *debt*),
which a full disk may not have room for: then no delete could commit to free space. So the
debt, bounded by the log file's size, is kept under half the disk's free space: asked for
sooner when the disk fills up, and done by the writer itself once the free space is below
``sync_below`` bytes.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading

from ...errors import StoreError
from . import walfiles
from .index import Index

log = logging.getLogger("kvstore.filesystem")

__all__ = ["Checkpointer"]


class Checkpointer:
    """The checkpoint thread of one store instance (named ``kvstore-checkpoint[<path>]``)."""

    def __init__(self, index: Index, name: str) -> None:
        self._index = index
        self._name = name
        self._mutex = threading.Lock()
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._idle = 1.0
        self._commits = 0  # commits made by this instance
        self._commits_asked = 0  # ... when a checkpoint was last asked for
        self.sync_below = 1 << 20  # free bytes under which the writer checkpoints itself
        self._free = -1  # the disk's free bytes when last looked at (-1: not yet)

    def start(self, idle: float) -> None:
        """Start the thread (if not running), checkpointing at least ``idle`` s after commits."""
        with self._mutex:
            thread = self._thread
            if thread is not None and thread.is_alive():
                return
            self._idle = idle
            self._stop.clear()
            thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
            self._thread = thread
            thread.start()

    def stop(self) -> None:
        with self._mutex:
            thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        self._wake.set()
        if thread.is_alive() and thread is not threading.current_thread():
            thread.join()

    def after_commit(self, every: int) -> None:
        """Count a commit (called under the store's exclusive lock); ask for a checkpoint
        every ``every`` commits."""
        self._commits += 1
        if self._commits - self._commits_asked >= every or self._short_of_space():
            self._commits_asked = self._commits
            thread = self._thread
            if thread is None or not thread.is_alive():
                self.start(self._idle)  # first commit after a fork
            self._wake.set()

    def _short_of_space(self) -> bool:
        """Whether the log's debt (at most its size) is past half the free space (looked at every 8th commit,
        every commit once the disk has less than 16 ``sync_below``); checkpoints in the
        caller when less than ``sync_below`` is free."""
        low = 0 <= self._free < 16 * self.sync_below
        if not low and self._commits % 8:
            return False
        debt = walfiles.wal_size(self._index.file)
        if debt == 0:
            return False
        try:
            st = os.statvfs(self._index.root)
        except OSError:
            return False
        self._free = st.f_bavail * st.f_frsize
        if 2 * debt <= self._free:
            return False
        if self._free < self.sync_below:
            try:
                self._index.checkpoint(self._index.conn())
            except StoreError as exc:
                log.debug("checkpoint of %s on a filling disk failed: %s", self._index.root, exc)
            return False
        return True

    def _loop(self) -> None:
        conn: sqlite3.Connection | None = None
        done = self._commits  # commits of this instance that the last checkpoint covered
        try:
            while not self._stop.is_set():
                # Woken when a writer asks; else, a while after the last commits.
                self._wake.wait(self._idle)
                self._wake.clear()
                if self._stop.is_set():
                    break
                if self._commits == done:
                    continue
                done = self._commits
                try:
                    if conn is None:
                        conn = self._index.checkpoint_connection()
                    self._index.checkpoint(conn)
                except StoreError as exc:  # the next writers checkpoint themselves
                    busy = "locked" in str(exc) or "busy" in str(exc)  # another one runs
                    log.log(logging.DEBUG if busy else logging.WARNING,
                            "background checkpoint of %s failed: %s", self._index.root, exc)
        finally:
            if conn is not None:
                conn.close()
