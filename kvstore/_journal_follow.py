"""Follow a FileSystemStore's change journal: a position, its checks, batch reading and waking.

Shared by :class:`kvstore.watch.FileSystemWatcher` (which sends the rows on the store's
signals from a thread of its own) and the streams of ``store.events()`` (which read them at
the consumer's pace). The journal, not the files, is the source of truth:

* rows are read after the last sequence handled, ``batch_size`` at a time, in order;
* watchdog's native observer of ``.kvstore/`` (where every commit writes the SQLite
  write-ahead log) only *wakes* the reader; when watchdog is missing (allowed for streams),
  the reader polls the journal instead;
* the reader also looks every ``poll_interval`` seconds, so a lost wake-up delays a change
  but never loses it;
* a row older than the position that is no longer there (the journal was trimmed under a
  slow reader) is a gap, handed to ``on_gap`` — never skipped silently.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable, List, Optional, Tuple

from ._optional import install_hint, require
from .errors import JournalGapError, StoreError

__all__ = ["JournalFollower", "load_observer", "INSTALL_HINT"]

INSTALL_HINT = install_hint("watch")
# After a wake-up that found no new row, look again after each of these delays (seconds),
# then every poll_interval: SQLite writes the log (which inotify reports) a moment before it
# publishes the commit in its shared-memory index (which inotify does not see), and a writer
# descheduled in between (a loaded machine) publishes it milliseconds later. Doubling delays
# see such a commit at most about twice as late as it was published, for a few reads.
_RECHECK_DELAYS = (0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128)
# watchdog events that do not mean anything was written.
_IGNORED_EVENT_TYPES = frozenset({"opened", "closed_no_write"})


def load_observer(required: bool, who: str = "FileSystemWatcher") -> Any:
    """watchdog's native observer class; None when it is missing and not ``required``."""
    try:
        return require("watchdog.observers", "watch", needed_by=who).Observer
    except ImportError:
        if not required:
            return None
        raise


class _Waker:
    """A watchdog event handler that only wakes the reader."""

    def __init__(self, wake: threading.Event) -> None:
        self._wake = wake

    def dispatch(self, event: Any) -> None:
        if getattr(event, "event_type", None) not in _IGNORED_EVENT_TYPES:
            self._wake.set()


class JournalFollower:
    """Read the journal of ``store`` after ``position``, woken by inotify or by polling.

    Parameters
    ----------
    store : FileSystemStore
    position : the last sequence handled; None: start at the journal's end (at :meth:`open`).
    observer_class : watchdog's observer class, or None to poll.
    poll_interval : seconds between two looks when nothing wakes the reader.
    batch_size : rows read at a time.
    on_gap : called with (first, last) missing sequence numbers when rows were trimmed
        before they were read; it may raise (then the position is left before the gap).
    should_stop : checked at each wake-up and every ``check_interval`` seconds while
        waiting (when set); :meth:`next_batch` returns [] once it is true.
    """

    def __init__(self, store: Any, position: Optional[int], *, observer_class: Any,
                 poll_interval: float, batch_size: int, on_gap: Callable[[int, int], None],
                 should_stop: Callable[[], bool], check_interval: Optional[float] = None) -> None:
        self.store = store
        self.position = position
        self.poll_interval = poll_interval
        self.batch_size = batch_size
        self.wake = threading.Event()
        self._observer_class = observer_class
        self._observer: Any = None
        self._on_gap = on_gap
        self._should_stop = should_stop
        self._check_interval = check_interval
        self._identity: Tuple[Tuple[int, int], ...] = ()
        self._timeout = 0.0
        self._rechecks = 0

    # ------------------------------------------------------------ lifecycle

    def open(self) -> None:
        """Check the position against the journal, note the directory, start the observer.

        Raises
        ------
        NotConnectedError : the store is not connected.
        JournalGapError : the position is older than the journal reaches.
        ValueError : the position is newer than the store's last sequence.
        StoreError : the store's internal directory is missing.
        """
        store = self.store
        last = store.last_sequence()  # NotConnectedError when not connected
        if self.position is None:
            self.position = last
        else:
            floor = store.journal_floor()
            if self.position < floor:
                raise JournalGapError(store.path, self.position + 1, floor)
            if self.position > last:
                raise ValueError(f"since={self.position} is ahead of the journal of {store.path} "
                                 f"(last sequence {last}): is this sequence from another store?")
        try:
            self._identity = self._identify()
        except OSError as exc:
            raise StoreError(f"cannot watch {store.path}: {exc}") from exc
        if self._observer_class is not None:
            self._start_observer(os.path.dirname(store.journal_path))
        self._timeout = 0.0  # read the backlog at once
        self.wake.set()

    def _start_observer(self, internal: str) -> None:
        observer = self._observer_class()
        try:
            observer.schedule(_Waker(self.wake), internal, recursive=False)
            observer.start()
        except BaseException:
            # The inotify observer starts a reading thread in its constructor.
            stop_observer(observer)
            raise
        self._observer = observer

    def close(self) -> None:
        """Stop the observer (join its threads) and wake a waiting reader. Safe to repeat."""
        self.wake.set()
        observer, self._observer = self._observer, None
        if observer is not None:
            stop_observer(observer)

    # ------------------------------------------------------------ reading

    def next_batch(self, deadline: Optional[float] = None) -> List[Any]:
        """The next rows after the position (not yet handled: the caller advances
        :attr:`position`), waiting for them; [] at ``deadline`` (time.monotonic()) or once
        ``should_stop()``."""
        while not self._should_stop():
            woke = self._wait(deadline)
            if woke is None or self._should_stop():
                return []
            entries = self.read()
            self._pace(bool(entries), woke)
            if entries:
                return entries
        return []

    def read(self) -> List[Any]:
        """Read one batch after the position now (no waiting); check the directory and gaps."""
        self.check_directory()
        position = self.position or 0
        try:
            entries = self.store.changes_since(position, self.batch_size)
        except Exception:
            # A store removed while being read fails in SQLite with a vague
            # "disk I/O error": report the cause rather than the symptom.
            self.check_directory()
            raise
        if entries and entries[0].sequence > position + 1:
            floor = self.store.journal_floor()
            if floor > position:  # else a hole in the numbering, not a trimmed change
                self._on_gap(position + 1, min(floor, entries[0].sequence - 1))
        return entries

    def _wait(self, deadline: Optional[float]) -> Optional[bool]:
        """Wait for a wake-up (True), the pace's timeout (False) or the deadline / a stop (None)."""
        end = time.monotonic() + self._timeout
        while True:
            if self.wake.is_set():
                self.wake.clear()
                return True
            now = time.monotonic()
            if now >= end:
                return False
            if deadline is not None and now >= deadline:
                return None
            limit = min(end, deadline) - now if deadline is not None else end - now
            if self._check_interval is not None:
                limit = min(limit, self._check_interval)
            if not self.wake.wait(limit) and self._should_stop():
                return None

    def _pace(self, found: bool, woke: bool) -> None:
        """Set how long the next wait lasts (without a wake-up) after a read."""
        if found:
            self._timeout, self._rechecks = 0.0, 0  # there may be more: read on at once
        elif woke or 0 < self._rechecks < len(_RECHECK_DELAYS):
            # A wake-up that found nothing (re)starts the rechecks, each empty recheck goes
            # on to the next delay: not only a further wake-up, which may never come.
            step = 0 if woke else self._rechecks
            self._timeout = min(_RECHECK_DELAYS[step], self.poll_interval)
            self._rechecks = step + 1
        else:
            self._timeout, self._rechecks = self.poll_interval, 0

    # ------------------------------------------------------------ the directory

    def _identify(self) -> Tuple[Tuple[int, int], ...]:
        out = []
        for path in (self.store.path, self.store.journal_path):
            st = os.stat(path)
            out.append((st.st_dev, st.st_ino))
        return tuple(out)

    def check_directory(self) -> None:
        """Raise StoreError when the store's directory vanished or was replaced."""
        # SQLite keeps reading a deleted index through its open descriptor, so a vanished or
        # replaced store would look like a store where nothing happens: check explicitly.
        try:
            identity = self._identify()
        except FileNotFoundError:
            raise StoreError(f"the store directory {self.store.path} (or its index) disappeared; "
                             f"the watcher stopped") from None
        if identity != self._identity:
            raise StoreError(f"the store directory {self.store.path} was replaced by another "
                             f"directory; the watcher stopped")


def stop_observer(observer: Any) -> None:
    observer.stop()
    if observer.is_alive() and observer is not threading.current_thread():
        observer.join()
