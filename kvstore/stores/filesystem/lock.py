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
from types import TracebackType

__all__ = ["StoreLock"]


class _Held:
    """``with lock.shared:`` / ``with lock.exclusive:``: a class, not a generator, and
    its methods bound once, as it is on the path of every big value's read."""

    __slots__ = ("_lock", "_mode", "_acquire", "_release")

    def __init__(self, lock: StoreLock, mode: int) -> None:
        self._lock = lock
        self._mode = mode
        self._acquire = lock.mutex.acquire
        self._release = lock.mutex.release

    def __enter__(self) -> None:
        # The mutex first: the threads of one process share the flock, so without it a
        # thread's unlock would release a lock another thread still counts on.
        self._acquire()
        lock = self._lock
        try:
            if lock._pid != os.getpid():
                lock.open()
            if lock._fd >= 0:  # -1: read-only with no lock file to take (nobody writes)
                fcntl.flock(lock._fd, self._mode)
        except BaseException:
            self._release()
            raise

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if self._lock._fd >= 0:
                fcntl.flock(self._lock._fd, fcntl.LOCK_UN)
        finally:
            self._release()


class StoreLock:
    """The lock of the store whose lock file is ``path``."""

    def __init__(self, path: str, readonly: bool = False) -> None:
        self.path = path
        self.readonly = readonly
        self.mutex = threading.RLock()
        self._fd = -1
        self._pid = 0
        #: ``with lock.shared:`` holds the lock shared, ``with lock.exclusive:`` exclusively
        self.shared = _Held(self, fcntl.LOCK_SH)
        self.exclusive = _Held(self, fcntl.LOCK_EX)

    def open(self) -> None:
        """Open the lock file (again in a child process after a fork)."""
        with self.mutex:
            if self._fd >= 0 and self._pid == os.getpid():
                return
            # After a fork the inherited descriptor shares its lock with the parent: take a
            # fresh one (the inherited one is left open: closing it would not release the
            # parent's lock, and the parent may still use it).
            self._pid = os.getpid()
            if self.readonly:
                # flock works on a descriptor open for reading; read-only media, where the
                # file may be missing or unreadable, have no writer to exclude.
                try:
                    self._fd = os.open(self.path, os.O_RDONLY)
                except OSError:
                    self._fd = -1
                return
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)

    def close(self) -> None:
        with self.mutex:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
