"""The publishing side's queue: what a store write hands to the relay's sender thread.

- :class:`Outbox`: a bounded queue of numbered events with the ``on_full`` policies, from
  which the sender takes batches, and the sender's linger decision (how long to gather the
  events of a busy store before the next message).
- :class:`ProgressGate`: which progress events travel (rate limiting per operation, and
  nothing of operations too small to draw a progress bar for).

Both run in the store's thread for every event: they take one lock and do nothing that
touches the network.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Iterable

from ..events import StoreEvent, StoreProgressEndEvent, StoreProgressEvent, StoreProgressStartEvent

__all__ = ["ON_FULL", "Outbox", "ProgressGate", "RelayQueueFull"]

log = logging.getLogger("kvstore.relay")

#: The values of ``on_full``.
ON_FULL = ("drop_oldest", "block", "error")


class RelayQueueFull(RuntimeError):
    """The relay's queue is full and ``on_full="error"``: the event was not relayed."""


class Outbox:
    """Numbered events waiting to be published, at most ``size`` of them.

    Parameters
    ----------
    size : events waiting at most.
    on_full : ``"drop_oldest"``, ``"block"`` or ``"error"`` (see :class:`RedisRelay`).
    batch_size : events taken at most at once.
    linger, max_linger : seconds (see :meth:`next_wait`).
    name : the relay's short id, for logs.
    """

    #: Seconds between two warnings about dropped events (every drop is counted).
    drop_log_interval = 5.0

    def __init__(self, size: int, on_full: str, batch_size: int, linger: float,
                 max_linger: float, name: str = "") -> None:
        if on_full not in ON_FULL:
            raise ValueError(f"on_full must be one of {ON_FULL}, not {on_full!r}")
        self.size = size
        self.on_full = on_full
        self.batch_size = batch_size
        self.linger = linger
        self.max_linger = max(linger, max_linger)
        self.name = name
        self.dropped = 0
        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)
        self._not_full = threading.Condition(self._lock)
        self._queue: collections.deque[tuple[int, StoreEvent]] = collections.deque()
        self._seq = 0
        self._closed = False
        self._idle = False  # the sender waits for events (under _lock)
        self._last_drop_log = 0.0

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def closed(self) -> bool:
        return self._closed

    def open(self) -> None:
        with self._lock:
            self._closed = False

    def close(self) -> None:
        """No more events are taken in; a writer blocked on a full queue returns."""
        with self._lock:
            self._closed = True
            self._not_empty.notify_all()
            self._not_full.notify_all()

    def wake(self) -> None:
        """Make a sender waiting in :meth:`take` look again (at a stop flag, say)."""
        with self._lock:
            self._not_empty.notify_all()

    def put(self, events: Iterable[StoreEvent]) -> None:
        """Number and queue events (in the store's thread); ``on_full`` says what a full
        queue does. Raises :class:`RelayQueueFull` with ``on_full="error"``."""
        with self._lock:
            for event in events:
                if not self._queue_one(event):
                    return
            if self._idle:  # else the sender comes back for the queue by itself
                self._not_empty.notify()

    def put_one(self, event: StoreEvent) -> None:
        """:meth:`put` of one event (what nearly every store write hands over), without
        the loop and the tuple."""
        with self._lock:
            if self._queue_one(event) and self._idle:
                self._not_empty.notify()

    def _queue_one(self, event: StoreEvent) -> bool:
        """Number and queue ``event`` (the lock held), making room as ``on_full`` says;
        False when the outbox is closed (nothing queued)."""
        if len(self._queue) >= self.size or self._closed:
            while len(self._queue) >= self.size and not self._closed:
                self._make_room()
            if self._closed:
                return False
        self._seq += 1
        self._queue.append((self._seq, event))
        return True

    def _make_room(self) -> None:
        # Called with the lock held and the queue full.
        if self.on_full == "drop_oldest":
            self._queue.popleft()
            self._note_drop()
        elif self.on_full == "error":
            self.dropped += 1
            raise RelayQueueFull(f"relay queue full ({self.size} events waiting): Redis is "
                                 "slow or unreachable; event not relayed")
        else:
            self._not_full.wait(1.0)

    def _note_drop(self) -> None:
        # Called with the lock held: count every drop, log at most every drop_log_interval.
        self.dropped += 1
        now = time.monotonic()
        if now - self._last_drop_log >= self.drop_log_interval:
            self._last_drop_log = now
            log.warning("relay %s: queue full (Redis slow or unreachable): %d events dropped "
                        "so far (on_full='drop_oldest')", self.name, self.dropped)

    def take(self) -> list[tuple[int, StoreEvent]]:
        """The next batch (oldest first), waiting for one; empty once closed and drained."""
        with self._lock:
            while not self._queue and not self._closed:
                self._idle = True
                self._not_empty.wait()
                self._idle = False
            batch = [self._queue.popleft() for _ in range(min(self.batch_size, len(self._queue)))]
            self._not_full.notify_all()
        return batch

    def clear(self) -> int:
        """Drop what is queued; return how many events that was."""
        with self._lock:
            count = len(self._queue)
            self._queue.clear()
            self._not_full.notify_all()
        return count

    def next_wait(self, wait: float, count: int, interval: float) -> float:
        """How long the sender gathers events next, after sending ``count`` events that
        came in over ``interval`` seconds while it waited ``wait``.

        Each message costs the store's thread hand-offs of the interpreter lock to the
        relay's threads. While more than two events arrive per ``linger``, the wait doubles
        up to ``max_linger``; it is back to ``linger`` as soon as the stream thins.
        """
        if count * self.linger > 2 * interval:
            return min(self.max_linger, 2 * wait)
        return self.linger

    def should_linger(self, wait: float, count: int, interval: float) -> bool:
        """Whether the sender waits ``wait`` before taking the next batch, after sending
        ``count`` events ``interval`` seconds after the previous send.

        A lone event after a quiet spell, or a backlog of a whole batch, goes at once;
        events that keep coming gather for the next message.
        """
        busy = count > 1 or interval < 2 * self.linger
        return busy and wait > 0 and len(self._queue) < self.batch_size and not self._closed


class _Operation:
    """What the gate remembers of one progress operation."""

    __slots__ = ("last", "held", "skip")

    def __init__(self, last: float, skip: bool) -> None:
        self.last = last  # monotonic time of the last step sent
        self.held: StoreEvent | None = None  # a step not sent (yet)
        self.skip = skip  # too small: nothing of it travels


class ProgressGate:
    """Which progress events of a store travel.

    Start, end and the last step before the end always pass; other steps of one operation
    pass at most every ``interval`` seconds (a held step is sent before the end if it
    turns out to be the last). Operations of a known size below ``min_bytes`` do not pass at
    all (nobody draws a progress bar for them, and they cost three messages per write).
    """

    #: Operations remembered at most (the oldest are forgotten).
    max_tracked = 4096

    def __init__(self, interval: float, min_bytes: int) -> None:
        self.interval = interval
        self.min_bytes = min_bytes
        self._ops: collections.OrderedDict[str, _Operation] = collections.OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, event: StoreProgressEvent) -> list[StoreEvent]:
        """The events to relay for ``event``: none, it, or a held step and it."""
        now = time.monotonic()
        with self._lock:
            if isinstance(event, StoreProgressStartEvent):
                return self._start(event, now)
            if isinstance(event, StoreProgressEndEvent):
                return self._end(event)
            return self._step(event, now)

    def _start(self, event: StoreProgressStartEvent, now: float) -> list[StoreEvent]:
        skip = 0 <= event.steps < self.min_bytes
        self._ops[event.operation_id] = _Operation(now, skip)
        while len(self._ops) > self.max_tracked:
            self._ops.popitem(last=False)
        return [] if skip else [event]

    def _end(self, event: StoreProgressEndEvent) -> list[StoreEvent]:
        state = self._ops.pop(event.operation_id, None)
        if state is None:
            return [event]
        if state.skip:
            return []
        return [event] if state.held is None else [state.held, event]

    def _step(self, event: StoreProgressEvent, now: float) -> list[StoreEvent]:
        state = self._ops.get(event.operation_id)
        if state is None:  # the operation started before the relay did
            self._ops[event.operation_id] = _Operation(now, False)
            return [event]
        if state.skip:
            return []
        if now - state.last >= self.interval:
            state.last, state.held = now, None
            return [event]
        state.held = event  # held: sent later if it turns out to be the last one
        return []
