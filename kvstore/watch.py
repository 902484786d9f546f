"""FileSystemWatcher: hear, on this process's signals, what other processes do to a store.

How it works
------------
A :class:`~kvstore.stores.filesystem.FileSystemStore` records every commit in its change
journal (``.kvstore/index.sqlite``) under a sequence number that grows across every process
writing the directory. The journal, not the files, is the source of the watcher's events:

* one reader thread reads the journal after the last sequence it has handled and sends one
  event per journal row, in sequence order, on this store's signals (``remote=True``,
  ``sender`` = this store), skipping the rows this store instance wrote itself (those were
  signalled locally when they were made);
* watchdog's native observer watches ``.kvstore/`` (not the keys' files) and only *wakes*
  the reader: every commit writes the SQLite write-ahead log there. The many created /
  modified / moved events of one commit, their duplicates, and a kernel queue overflow
  (which drops events silently) therefore change nothing but when the reader looks;
* the reader also looks every ``poll_interval`` seconds, so a lost wake-up delays an event
  but never loses it.

A value is never reported half-written: a journal row exists only once its commit has
passed, and the new data and metadata were complete before that (a small value in the
index row itself, a big one in a temporary file). A receiver that reads the key sees the
change: ``get_metadata``, ``exists``, ``query`` and ``get`` of a small value read the index,
committed with the journal row, and ``get`` of a big value takes the store lock shared,
which waits for the writer to finish the file operations of that commit. (The watcher
itself does not wait for that lock: a writer descheduled while holding it would delay
every event.)

This module needs the ``watch`` extra: ``pip install 'kvstore[watch]'``.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from typing import Any, Optional, Tuple

from . import signals
from ._bridge import Bridge
from .errors import JournalGapError, StoreError
from .events import MODIFICATION_CLASSES

__all__ = ["FileSystemWatcher", "JournalGapError", "JournalGapWarning"]

log = logging.getLogger("kvstore.watch")

_INSTALL_HINT = "pip install 'kvstore[watch]'"
# After a wake-up that found no new row, look again after these delays (seconds): SQLite
# writes the log (which inotify reports) a moment before it publishes the commit in its
# shared-memory index (which inotify does not see).
_RECHECK_DELAYS = (0.001, 0.003, 0.01, 0.03)
# watchdog events that do not mean anything was written.
_IGNORED_EVENT_TYPES = frozenset({"opened", "closed_no_write"})


def _gap_message(path: str, first: int, last: int) -> str:
    return (f"the change journal of {path} no longer holds changes {first} to {last} "
            f"(trimmed): {last - first + 1} change(s) cannot be delivered")


class JournalGapWarning(UserWarning):
    """A running watcher fell so far behind that changes were trimmed before it read them.

    Issued (and logged) from the watcher's thread, which then goes on with the oldest change
    the journal still holds. ``first`` and ``last`` are the missing sequence numbers.
    """

    def __init__(self, path: str, first: int, last: int) -> None:
        super().__init__(_gap_message(path, first, last))
        self.first = first
        self.last = last


def _load_watchdog() -> Any:
    """Import watchdog's native observer class, or say how to install it."""
    try:
        from watchdog.observers import Observer
    except ImportError as exc:
        raise ImportError(f"FileSystemWatcher needs the watchdog package; install it with: "
                          f"{_INSTALL_HINT}") from exc
    return Observer


class _Waker:
    """A watchdog event handler that only wakes the reader."""

    def __init__(self, wake: threading.Event) -> None:
        self._wake = wake

    def dispatch(self, event: Any) -> None:
        if getattr(event, "event_type", None) not in _IGNORED_EVENT_TYPES:
            self._wake.set()


class FileSystemWatcher(Bridge):
    """Send, on a FileSystemStore's signals, the changes other processes make to its directory.

    While started, every change committed through kvstore by another process or another
    store instance is sent as one ``store_set`` / ``store_update`` / ``store_delete`` event
    with ``sender`` = ``store`` and ``event.remote == True``, carrying the key, the metadata
    as committed, the writer's ``origin`` and ``timestamp`` and the journal ``sequence``.
    Events come in journal order (one thread sends them all), exactly one per change; changes
    made through ``store`` itself are skipped, as they were signalled when they were made.

    Parameters
    ----------
    store : FileSystemStore
        The store to watch. It must be connected when :meth:`start` is called and stay
        connected while the watcher runs.
    since : int, optional
        Deliver first every change committed after this sequence number, including those
        made before :meth:`start`, then the live ones (a listener that saved
        :attr:`sequence` resumes where it stopped). Without it, delivery starts with the
        changes committed after :meth:`start`.
    poll_interval : float, optional
        Seconds between two looks at the journal when watchdog reports nothing (the
        fallback for lost inotify events). Default 0.5.
    batch_size : int, optional
        Journal rows read at a time. Default 1000.

    Raises
    ------
    ImportError
        watchdog is not installed (the message names ``pip install 'kvstore[watch]'``).
    TypeError
        ``store`` has no change journal (it is not a FileSystemStore).
    ValueError
        ``since``, ``poll_interval`` or ``batch_size`` is out of range.

    Notes
    -----
    If ``since`` is older than the journal reaches (``since < store.journal_floor()``),
    :meth:`start` raises :class:`JournalGapError` naming the missing sequence numbers. If a
    running watcher falls so far behind that rows are trimmed before it reads them, it issues
    a :class:`JournalGapWarning` (also logged) naming them and goes on. Never silently.

    If the store's directory disappears (or is replaced) or the store is disconnected, the
    watcher stops: the reason is logged, kept in :attr:`error`, and raised by :meth:`wait`
    and :meth:`stop`.

    Examples
    --------
    >>> with FileSystemWatcher(store):                          # doctest: +SKIP
    ...     store.subscribe(print, pattern="sensors/*")
    """

    def __init__(self, store: Any, *, since: Optional[int] = None, poll_interval: float = 0.5,
                 batch_size: int = 1000) -> None:
        for name in ("changes_since", "last_sequence", "journal_floor", "dispatch", "origin", "path"):
            if not hasattr(store, name):
                raise TypeError(f"FileSystemWatcher needs a FileSystemStore (a store with a change "
                                f"journal), not {type(store).__name__}")
        if since is not None and (isinstance(since, bool) or not isinstance(since, int) or since < 0):
            raise ValueError(f"since must be a sequence number (an int >= 0) or None, not {since!r}")
        if not poll_interval > 0:
            raise ValueError(f"poll_interval must be > 0, not {poll_interval!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, not {batch_size!r}")
        self._observer_class = _load_watchdog()
        super().__init__()
        self.store = store
        self.since = since
        self.poll_interval = float(poll_interval)
        self.batch_size = batch_size
        self._position: Optional[int] = since
        self._control = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._reader: Optional[threading.Thread] = None
        self._observer: Any = None
        self._identity: Tuple[Tuple[int, int], ...] = ()
        self._error_raised = False

    # ------------------------------------------------------------ public

    @property
    def sequence(self) -> Optional[int]:
        """The last journal sequence handled (sent, or skipped as this store's own).

        Save it and pass it as ``since=`` to resume after a restart. None before the first
        :meth:`start` when no ``since`` was given.
        """
        return self._position

    @property
    def running(self) -> bool:
        """True between :meth:`start` and the watcher stopping (by :meth:`stop` or an error)."""
        reader = self._reader
        return reader is not None and reader.is_alive() and not self._stopping.is_set()

    def start(self) -> "FileSystemWatcher":
        """Start watching: set up the inotify watch and the reader thread.

        Returns
        -------
        FileSystemWatcher
            ``self``.

        Raises
        ------
        RuntimeError
            The watcher is already running.
        NotConnectedError
            The store is not connected.
        JournalGapError
            ``since`` is older than the journal reaches; nothing was started.
        ValueError
            ``since`` is newer than the store's last sequence (another store's number?).
        StoreError
            The store's internal directory is missing.

        Events
        ------
        From the reader thread, after ``start`` returns: the changes after ``since`` (if
        given), then every change other store instances commit, one store_set /
        store_update / store_delete each, ``remote=True``.
        """
        with self._control:
            if self._reader is not None:
                if self._reader.is_alive():
                    raise RuntimeError("this FileSystemWatcher is already running; stop() it first")
                self._shutdown()  # it had stopped on an error: start afresh
            store = self.store
            last = store.last_sequence()  # NotConnectedError when not connected
            if self._position is None:
                self._position = last
            else:
                floor = store.journal_floor()
                if self._position < floor:
                    raise JournalGapError(store.path, self._position + 1, floor)
                if self._position > last:
                    raise ValueError(f"since={self._position} is ahead of the journal of {store.path} "
                                     f"(last sequence {last}): is this sequence from another store?")
            internal = os.path.dirname(store.journal_path)  # the journal and its WAL
            try:
                self._identity = self._identify()
            except OSError as exc:
                raise StoreError(f"cannot watch {store.path}: {exc}") from exc
            observer = self._observer_class()
            try:
                observer.schedule(_Waker(self._wake), internal, recursive=False)
                observer.start()
            except BaseException:
                # The inotify observer starts a reading thread in its constructor.
                observer.stop()
                if observer.is_alive():
                    observer.join()
                raise
            self._observer = observer
            self._error = None
            self._error_raised = False
            self._stopping.clear()
            self._wake.set()  # deliver the backlog (since=) at once
            self._reader = threading.Thread(target=self._run, daemon=True,
                                            name=f"kvstore-watch:{store.path}")
            self._ready.clear()
            self._reader.start()
            # Wait for the reader's own SQLite connection to be open, so that whatever
            # happens to the directory from now on, the reader never creates files there.
            while not self._ready.wait(0.05) and self._reader.is_alive():
                pass
            if not self._ready.is_set():
                self._shutdown()
                self._raise_error()
            log.debug("watching %s from sequence %s", store.path, self._position)
        return self

    def stop(self) -> None:
        """Stop watching; join the reader and the watchdog threads. Safe to call again.

        A change being sent when ``stop`` is called is finished; later ones are left for the
        next ``start`` (:attr:`sequence` says where it resumes).

        Raises
        ------
        BaseException
            The error that had stopped the watcher on its own (see :attr:`error`), once.
        """
        if self._reader is threading.current_thread():
            # Called by a receiver: the reader returns after it; a later stop() joins it.
            self._stopping.set()
            return
        with self._control:
            self._shutdown()
        self._raise_error()

    def _shutdown(self) -> None:
        self._stopping.set()
        self._ready.clear()
        self._wake.set()
        reader, self._reader = self._reader, None
        observer, self._observer = self._observer, None
        if reader is not None and reader is not threading.current_thread():
            reader.join()
        if observer is not None:
            _stop_observer(observer)

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until the watcher stops (another thread's :meth:`stop`, or an error).

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait at most; None waits as long as it takes.

        Returns
        -------
        bool
            True if the watcher has stopped, False if ``timeout`` passed first.

        Raises
        ------
        BaseException
            The error that stopped the watcher (see :attr:`error`).
        """
        reader = self._reader
        if reader is not None:
            reader.join(timeout)
            if reader.is_alive():
                return False
        if self._error is not None:
            self._error_raised = True
            raise self._error
        return True

    def __repr__(self) -> str:
        state = "running" if self.running else ("failed" if self._error else "stopped")
        return f"<FileSystemWatcher {self.store.path!r} {state} sequence={self._position}>"

    # ------------------------------------------------------------ reader thread

    def _run(self) -> None:
        timeout = 0.0
        rechecks = 0
        try:
            self.store.last_sequence()  # opens this thread's connection
            self._ready.set()
            while True:
                woke = self._wake.wait(timeout)
                if self._stopping.is_set():
                    return
                self._wake.clear()
                self._check_directory()
                try:
                    found = self._drain()
                except Exception:
                    # A store removed while being read fails in SQLite with a vague
                    # "disk I/O error": report the cause rather than the symptom.
                    self._check_directory()
                    raise
                if found or not woke:
                    rechecks = 0
                    timeout = self.poll_interval
                elif rechecks < len(_RECHECK_DELAYS):
                    timeout = _RECHECK_DELAYS[rechecks]
                    rechecks += 1
                else:
                    timeout = self.poll_interval
        except BaseException as exc:  # noqa: BLE001 - kept, logged, raised by stop() / wait()
            self._fail(exc)

    def _drain(self) -> int:
        """Send every journal row after the position; return the number of rows read."""
        store = self.store
        total = 0
        while not self._stopping.is_set():
            position = self._position or 0
            entries = store.changes_since(position, self.batch_size)
            if not entries:
                return total
            if entries[0].sequence > position + 1:
                self._check_gap(position, entries[0].sequence)
            for entry in entries:
                if self._stopping.is_set():
                    return total
                if entry.origin != store.origin:
                    self._send(entry)
                self._position = entry.sequence
                total += 1
        return total

    def _send(self, entry: Any) -> None:
        signal = signals.MODIFICATION_SIGNALS.get(entry.kind)
        if signal is None:
            log.warning("skipping journal row %s of %s: unknown kind %r",
                        entry.sequence, self.store.path, entry.kind)
            return
        if not signal.receivers:
            return
        event = MODIFICATION_CLASSES[entry.kind](
            store=self.store, origin=entry.origin, timestamp=entry.timestamp, remote=True,
            key=entry.key, metadata=entry.metadata, sequence=entry.sequence)
        # dispatch() logs and swallows a receiver's exception, so one bad receiver
        # neither stops the watcher nor keeps the others from hearing the change.
        self.store.dispatch(event)

    def _check_gap(self, position: int, first_found: int) -> None:
        floor = self.store.journal_floor()
        if floor <= position:
            return  # a hole in the numbering, not a trimmed change
        last = min(floor, first_found - 1)
        warning = JournalGapWarning(self.store.path, position + 1, last)
        log.error("%s", warning)
        warnings.warn(warning, stacklevel=2)

    def _identify(self) -> Tuple[Tuple[int, int], ...]:
        paths = (self.store.path, self.store.journal_path)
        out = []
        for path in paths:
            st = os.stat(path)
            out.append((st.st_dev, st.st_ino))
        return tuple(out)

    def _check_directory(self) -> None:
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

    def _fail(self, exc: BaseException) -> None:
        self._error = exc
        self._stopping.set()
        log.error("the watcher of %s stopped: %s: %s", self.store.path, type(exc).__name__, exc,
                  exc_info=not isinstance(exc, StoreError))
        # Let the watchdog threads go now rather than at stop().
        observer = self._observer
        if observer is not None:
            try:
                _stop_observer(observer)
            except Exception:  # pragma: no cover - best effort; stop() tries again
                log.exception("stopping the watchdog observer of %s", self.store.path)

    def _raise_error(self) -> None:
        if self._error is not None and not self._error_raised:
            self._error_raised = True
            raise self._error


def _stop_observer(observer: Any) -> None:
    observer.stop()
    if observer.is_alive() and observer is not threading.current_thread():
        observer.join()

