"""The store lock: ``flock`` on ``.kvstore/lock`` between processes, a mutex between threads.

Held exclusively by a writer from before its SQLite transaction until its commit's file
operations are done; held shared by a reader that must not see a commit half-applied (a
big value's index row and data file). ``flock`` locks belong to the open file description,
which is shared by a process's threads (hence the mutex) and inherited across ``fork``
(hence a fresh descriptor in a child).
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

__all__ = ["StoreLock"]


class StoreLock:
    """The lock of the store whose lock file is ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.mutex = threading.RLock()
        self._fd = -1
        self._pid = 0

    def open(self) -> None:
        """Open the lock file (again in a child process after a fork)."""
        with self.mutex:
            if self._fd >= 0 and self._pid == os.getpid():
                return
            # After a fork the inherited descriptor shares its lock with the parent: take a
            # fresh one (the inherited one is left open: closing it would not release the
            # parent's lock, and the parent may still use it).
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            self._pid = os.getpid()

    def close(self) -> None:
        with self.mutex:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    @contextmanager
    def held(self, exclusive: bool) -> Iterator[None]:
        """Hold the lock, ``exclusive`` or shared, for the ``with`` block."""
        # The mutex first: the threads of one process share the flock, so without it a
        # thread's unlock would release a lock another thread still counts on.
        with self.mutex:
            if self._pid != os.getpid():
                self.open()
            fcntl.flock(self._fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            try:
                yield
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def shared(self) -> AbstractContextManager[None]:
        return self.held(False)

    def exclusive(self) -> AbstractContextManager[None]:
        return self.held(True)
