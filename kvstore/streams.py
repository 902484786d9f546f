"""``store.events()``: event streams you pull, with ``for``, ``get(timeout=)`` or ``async for``.

An :class:`EventStream` reads from a *source*:

* on a FileSystemStore, :class:`JournalSource` follows the change journal at the reader's
  pace (every process's commits, own ones included, exactly once, in sequence order), woken
  by inotify when watchdog is installed and by polling otherwise; it cannot overflow;
* on other stores, :class:`SignalSource` queues this store's modification signals (its own
  changes and what its bridges ``dispatch``); more than ``maxsize`` unread events make the
  next read raise :class:`~kvstore.errors.EventsOverflowError`.

The async iterator hands the blocking reads to one worker thread of the stream's own, so the
event loop never waits; cancelling the consuming task closes the stream.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import fnmatch
import logging
import re
import threading
import time
from typing import Any, Deque, List, Optional, Sequence

from . import signals
from ._subscription import check_filter
from ._journal_follow import JournalFollower, load_observer
from .errors import EventsOverflowError, JournalGapError
from .events import MODIFICATION_CLASSES, StoreEvent, StoreKeyEvent

__all__ = ["EventStream", "SignalSource", "JournalSource", "check_filter"]

log = logging.getLogger("kvstore")

# What a source's take() returns once the stream is over (closed, or the store disconnected).
_END: Any = object()
# Seconds between two checks that the store is still connected while a reader waits.
_CHECK_INTERVAL = 0.1


def _remaining(deadline: Optional[float]) -> Optional[float]:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


class SignalSource:
    """This store's modification signals, queued until read (at most ``maxsize`` unread)."""

    def __init__(self, store: Any, pattern: str, kinds: Sequence[str], maxsize: int) -> None:
        self.store = store
        self.pattern = pattern
        self.maxsize = maxsize
        self._queue: Deque[StoreEvent] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._overflowed = False
        self._signals = [signals.MODIFICATION_SIGNALS[k] for k in kinds]
        for sig in self._signals:
            sig.connect(self._on_event, sender=store, weak=False)

    def _on_event(self, sender: Any, event: Any = None, **_: Any) -> None:
        if event is None or not fnmatch.fnmatchcase(event.key, self.pattern):
            return
        with self._cond:
            if self._closed or self._overflowed:
                return
            if len(self._queue) >= self.maxsize:
                # Never a silent drop: the reader is told at its next read.
                self._overflowed = True
                self._queue.clear()
            else:
                self._queue.append(event)
            self._cond.notify_all()

    def take(self, deadline: Optional[float]) -> Any:
        """The next event, None at ``deadline``, or _END (closed / store disconnected)."""
        with self._cond:
            while True:
                if self._overflowed:
                    raise EventsOverflowError(
                        f"more than maxsize={self.maxsize} events of {self.store!r} waited unread; "
                        f"later ones were not kept: read faster or pass a larger maxsize")
                if self._queue:
                    return self._queue.popleft()
                if self._closed or not self.store.is_connected():
                    return _END
                remaining = _remaining(deadline)
                if remaining == 0.0:
                    return None
                self._cond.wait(_CHECK_INTERVAL if remaining is None else min(remaining, _CHECK_INTERVAL))

    def close(self) -> None:
        for sig in self._signals:
            # Without sender=: blinker would keep the receiver in signal.receivers, and
            # the stores' no-listener fast path would be lost for good.
            sig.disconnect(self._on_event)
        self._signals = []
        with self._cond:
            self._closed = True
            self._queue.clear()
            self._cond.notify_all()


class JournalSource:
    """A FileSystemStore's change journal, read at the reader's pace from ``since`` on."""

    #: Seconds between two looks at the journal: with watchdog (a safety net for lost
    #: wake-ups) and without it (then the only way changes are seen).
    poll_interval = 0.5
    poll_interval_without_watchdog = 0.05
    batch_size = 1000

    def __init__(self, store: Any, pattern: str, kinds: Sequence[str], since: Optional[int]) -> None:
        self.store = store
        self.pattern = pattern
        self.kinds = frozenset(kinds)
        self._closed = threading.Event()
        # The events of the batch read last, built at once, not yet taken; then the
        # sequence of that batch's last row (the position once they are all taken).
        self._pending: Deque[StoreKeyEvent] = collections.deque()
        self._batch_end: Optional[int] = None
        self._match = None if pattern == "*" else re.compile(fnmatch.translate(pattern)).match
        observer = load_observer(required=False)
        self._follower = JournalFollower(
            store, since, observer_class=observer, batch_size=self.batch_size,
            poll_interval=self.poll_interval if observer is not None else self.poll_interval_without_watchdog,
            on_gap=self._gap, should_stop=self._should_stop, check_interval=_CHECK_INTERVAL)
        self._follower.open()  # JournalGapError / ValueError now, with nothing left running

    @property
    def position(self) -> Optional[int]:
        return self._follower.position

    def _should_stop(self) -> bool:
        return self._closed.is_set() or not self.store.is_connected()

    def _gap(self, first: int, last: int) -> None:
        raise JournalGapError(self.store.path, first, last)

    def take(self, deadline: Optional[float]) -> Any:
        """The next matching event, None at ``deadline``, or _END (closed / store disconnected)."""
        follower = self._follower
        while True:
            if self._pending:
                event = self._pending.popleft()
                follower.position = event.sequence
                return event
            if self._batch_end is not None:
                # Past the rows of the batch that did not match, before reading on.
                follower.position, self._batch_end = self._batch_end, None
            if self._should_stop():
                return _END
            try:
                batch = follower.next_batch(deadline)
            except Exception:
                if self._should_stop():
                    return _END  # disconnected (or closed) under the read
                raise
            if not batch:
                return _END if self._should_stop() else None
            self._pending.extend(self._events(batch))
            self._batch_end = batch[-1].sequence

    def _events(self, batch: List[Any]) -> List[StoreKeyEvent]:
        """The events of the rows of ``batch`` that match, in order (one pass per batch)."""
        store, kinds, match = self.store, self.kinds, self._match
        own = store.origin
        out: List[StoreKeyEvent] = []
        for entry in batch:
            if entry.kind not in kinds or (match is not None and match(entry.key) is None):
                continue
            cls = MODIFICATION_CLASSES.get(entry.kind)
            if cls is None:
                log.warning("skipping journal row %s of %s: unknown kind %r",
                            entry.sequence, store.path, entry.kind)
                continue
            out.append(cls(store=store, origin=entry.origin, timestamp=entry.timestamp,
                           remote=entry.origin != own, key=entry.key, metadata=entry.metadata,
                           sequence=entry.sequence, revision=entry.sequence))
        return out

    def close(self) -> None:
        self._closed.set()
        self._follower.close()


class EventStream:
    """A store's modification events, pulled: ``for``, ``get(timeout=)``, ``async for``.

    Made by :meth:`kvstore.base.AbstractStore.events`. A context manager (closes on exit),
    an iterator (blocks until the next event; ends once closed or the store disconnects)
    and an async iterator (never blocks the event loop).
    """

    #: Seconds the async iterator's worker waits at most per hand-off (close() interrupts it).
    async_wait = 0.5
    #: Events handed to the event loop at most per hand-off.
    async_batch = 256

    def __init__(self, source: Any) -> None:
        self._source = source
        self._lock = threading.Lock()  # one reader at a time
        self._closed = False
        self._error: Optional[BaseException] = None
        self._sequence: Optional[int] = None
        self._executor: Optional[concurrent.futures.ThreadPoolExecutor] = None
        self._ready: Deque[StoreEvent] = collections.deque()  # handed over to the event loop

    @property
    def sequence(self) -> Optional[int]:
        """The sequence of the last event yielded (None before the first)."""
        return self._sequence

    @property
    def closed(self) -> bool:
        """Whether the stream has ended (closed, store disconnected, or failed)."""
        return self._closed

    def get(self, timeout: Optional[float] = None) -> Optional[StoreEvent]:
        """The next event, or None after ``timeout`` seconds or once the stream has ended.

        Raises
        ------
        JournalGapError
            (FileSystemStore) the reader fell behind the journal's floor.
        EventsOverflowError
            (other stores) more than ``maxsize`` events waited unread.
        """
        event = self._take(None if timeout is None else time.monotonic() + timeout)
        if event is not None:
            self._sequence = getattr(event, "sequence", None)
        return event

    def _take(self, deadline: Optional[float]) -> Optional[StoreEvent]:
        if self._error is not None:
            raise self._error
        if self._closed:
            return None
        with self._lock:
            try:
                event = self._source.take(deadline)
            except BaseException as exc:
                # Kept and raised again by every later read: never mistaken for an end.
                self._error = exc
                self.close()
                raise
        if event is _END:
            self.close()
            return None
        return event

    def close(self) -> None:
        """End the stream, from any thread or task; a blocked read returns. Safe to repeat."""
        if self._closed:
            return
        self._closed = True
        self._source.close()
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False)  # its worker returns at once: the source is closed

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __iter__(self) -> EventStream:
        return self

    def __next__(self) -> StoreEvent:
        event = self.get()
        if event is None:
            raise StopIteration
        return event

    # ------------------------------------------------------------ asyncio

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> StoreEvent:
        loop = asyncio.get_running_loop()
        while not self._ready:
            if self._error is not None:
                raise self._error
            if self._closed:
                raise StopAsyncIteration
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="kvstore-events")
            try:
                batch = await loop.run_in_executor(self._executor, self._take_batch)
            except asyncio.CancelledError:
                self.close()  # the worker's wait ends; nothing is left running
                raise
            self._ready.extend(batch)
        event = self._ready.popleft()
        self._sequence = getattr(event, "sequence", None)
        return event

    def _take_batch(self) -> List[StoreEvent]:
        """In the worker: the next event (waiting at most ``async_wait``), then what is ready."""
        event = self._take(time.monotonic() + self.async_wait)
        out: List[StoreEvent] = []
        while event is not None:
            out.append(event)
            if len(out) >= self.async_batch:
                break
            try:
                event = self._take(time.monotonic())
            except Exception:
                break  # kept in self._error: raised once the events before it are read
        return out
