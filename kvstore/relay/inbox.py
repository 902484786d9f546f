"""The receiving side: check each message, drop what is not for us, deliver the rest.

:class:`Inbox` decodes a message (:func:`kvstore.relay.wire.decode`), skips this relay's
own messages, checks it whole (signature, freshness, every event's schema), and only then
touches its state: it drops duplicate events, reports missing ones (:data:`relay_gap`) and
sends the others on the store's signals (this store's own events excepted). A message
refused for any reason leaves nothing behind, so it cannot make later genuine events look
like duplicates.

Freshness (with a secret)
-------------------------
A signed message carries ``sent``, its publisher's clock when it was encoded. A copy
published again (a replay) is refused:

- by a relay that delivered the original: the publisher's event numbers are remembered
  (:attr:`Inbox.max_tracked` publishers; a forgotten publisher's messages must be newer
  than the newest message of any publisher forgotten);
- by any relay once ``replay_window`` has passed: ``sent`` must be within the window of
  the receiver's clock (pub/sub) or of the time in the Redis Stream entry's id (durable:
  the Redis server's clock when the entry was added, so a legitimate resume still
  delivers old entries, while a copy added later is stale);
- by a pub/sub relay started after the original was published: it refuses messages
  ``sent`` before it subscribed (it could not have received them);
- by a durable relay started (or resumed) after it: before reading on, it reads back the
  ``replay_window`` of entries before its position and remembers their publishers' event
  numbers without delivering them (:meth:`Inbox.prime`).

The clock assumption: the clocks of the hosts running relays and of the Redis server agree
(NTP) to well within ``replay_window``. A skew of ``d`` makes a pub/sub relay refuse a
publisher's messages in its first ``d`` (publisher behind) or accept once a copy of a
message published in the ``d`` before it subscribed (publisher ahead).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from blinker import Namespace

from .._keys import check_key
from ..events import StoreEvent, StoreKeyEvent, StoreProgressEvent
from . import wire
from .wire import WireError

_Clock = Callable[[], float]

__all__ = ["Inbox", "RelayGap", "namespace", "relay_gap"]

log = logging.getLogger("kvstore.relay")

namespace = Namespace()

relay_gap = namespace.signal(
    "relay-gap",
    doc="Events were lost before reaching this relay. Sent as "
        "``relay_gap.send(store, relay=relay, gap=RelayGap(...))``.",
)

@dataclass(frozen=True)
class RelayGap:
    """A description of events lost before they reached a relay.

    Attributes
    ----------
    channel : the relay's channel (and stream key).
    reason : ``"trimmed"`` when the stream no longer holds entries after the last id read
        (durable mode: the relay was away longer than the stream keeps), ``"missing"``
        when the stream no longer holds the entry of the last id read and was not trimmed
        past it (durable mode: the stream was deleted or emptied, or Redis restarted
        without its append-only file: what it held after that id is lost), or ``"sequence"``
        when events of one publisher are missing (pub/sub outage, a full queue at the
        publisher, an event too large to send, a server restart that lost unread entries).
    after_id : durable mode, the last stream id read before the gap.
    resumed_id : durable mode, the oldest id the stream still holds.
    publisher : for ``"sequence"``, the origin of the store whose events are missing.
    missed : number of events missing, when known.
    """

    channel: str
    reason: str
    after_id: str | None = None
    resumed_id: str | None = None
    publisher: str | None = None
    missed: int | None = None


class Inbox:
    """What one relay does with the messages it reads.

    Parameters
    ----------
    owner : the relay (sent as ``relay=`` with :data:`relay_gap`).
    store : the local store; events are sent on its signals, ``remote=True``.
    channel : the relay's channel, for :class:`RelayGap` and logs.
    secret : messages must be signed with it, when given (and fresh: see the module).
    max_message_size : larger messages are dropped.
    replay_window : seconds; with a secret, how far ``sent`` may be from the reference
        time (see the module).
    clock : the wall clock, seconds since the epoch.
    """

    #: Publishers whose event numbers are remembered at most (the oldest are forgotten).
    max_tracked = 4096
    #: Seconds between two warnings about duplicates (every duplicate is counted).
    duplicate_log_interval = 5.0

    def __init__(self, owner: Any, store: Any, channel: str, secret: bytes | None,
                 max_message_size: int, replay_window: float = 30.0,
                 clock: _Clock = time.time) -> None:
        self.owner = owner
        self.store = store
        self.channel = channel
        self.secret = secret
        self.max_message_size = max_message_size
        self.window_ms = int(replay_window * 1000)
        self.clock = clock
        #: the relay's own id: its messages are skipped (set by the relay when it starts).
        self.relay_id = ""
        self.name = ""  # the relay's short id, for logs
        #: pub/sub: the clock (ms) when this relay subscribed; signed messages sent before
        #: are refused. None: not subscribed yet (set by :meth:`listening`).
        self.start_ms: int | None = None
        self._origin = store.origin
        # publisher -> (number of its last event, its clock when it sent it)
        self._seen: collections.OrderedDict[str, tuple[int, int]] = collections.OrderedDict()
        self._floor_ms = 0  # the newest ``sent`` of a publisher forgotten
        self._last_dup_log = 0.0
        self._lock = threading.Lock()  # guards _stats
        self._stats = collections.Counter(
            {"received": 0, "delivered": 0, "rejected": 0, "duplicates": 0, "gaps": 0})

    @property
    def stats(self) -> dict[str, int]:
        """received (messages), delivered (events), rejected, duplicates, gaps (a copy)."""
        with self._lock:
            return dict(self._stats)

    def listening(self) -> None:
        """The relay has subscribed (pub/sub): messages sent from now on can reach it."""
        if self.start_ms is None:
            self.start_ms = wire.now_ms(self.clock)

    def report(self, gap: RelayGap) -> None:
        """Log a loss of events and send :data:`relay_gap`."""
        with self._lock:
            self._stats["gaps"] += 1
        if gap.reason == "trimmed":
            log.warning("relay %s: stream %r no longer holds the entries after %s (trimmed to "
                        "maxlen; it now starts at %s): events were lost", self.name,
                        self.channel, gap.after_id, gap.resumed_id)
        elif gap.reason == "missing":
            log.warning("relay %s: stream %r no longer holds entry %s, the last this relay "
                        "read, and was not trimmed past it (deleted or emptied, or Redis "
                        "restarted without its append-only file; it now starts at %s): the "
                        "events after it are lost", self.name, self.channel, gap.after_id,
                        gap.resumed_id)
        else:
            log.warning("relay %s: %s events of publisher %s on %r were lost",
                        self.name, gap.missed, gap.publisher, self.channel)
        try:
            relay_gap.send(self.store, relay=self.owner, gap=gap)
        except Exception:
            log.exception("a receiver of relay_gap raised")

    def _reject(self, reason: str, *args: Any) -> None:
        with self._lock:
            self._stats["rejected"] += 1
        log.warning("relay %s: message dropped: " + reason, self.name, *args)

    def handle(self, data: Any, entry_ms: int | None = None) -> None:
        """Decode one message, check it whole, and deliver its events; never raises.

        ``entry_ms``: durable mode, the time in the id of the stream entry that held it.
        """
        with self._lock:
            self._stats["received"] += 1
        try:
            checked = self._check(data, entry_ms)
            if checked is None:
                return  # our own message coming back
            message, events = checked
        except wire.WireError as exc:
            return self._reject("%s", exc)
        except Exception:
            with self._lock:
                self._stats["rejected"] += 1
            log.exception("relay %s: message dropped: unexpected error", self.name)
            return
        # Every check passed: only now does the message change what this relay knows.
        self._accept(message, events)

    def prime(self, data: Any, entry_ms: int) -> None:
        """Durable mode, with a secret: remember the event numbers of a message read back
        from before this relay's position, without delivering it, so that a copy of it
        added to the stream later is a duplicate. Messages that fail a check are ignored.

        Only the signature and freshness are checked, not each event's schema: a message
        signed with the secret was made by a relay that has it, and the events need not
        be built (priming may read back many)."""
        if self.secret is None:
            return  # unsigned numbers are anyone's to claim: nothing to remember
        try:
            message = wire.decode(data, self.secret, ignore=self.relay_id,
                                  max_message_size=self.max_message_size)
            if message is None:
                return
            self._check_fresh(message, entry_ms)
        except Exception:  # not ours to report: the relay that read it did
            return
        last = self._seen.get(message.relay)
        if last is None or last[0] < message.last:
            self._remember(message.relay, message.last, message.sent or 0)

    def _check(self, data: Any, entry_ms: int | None
               ) -> tuple[wire.Message, list[StoreEvent | None]] | None:
        """The message and its events (None for this store's own), every check passed;
        None for this relay's own message. Raises WireError."""
        message = wire.decode(data, self.secret, ignore=self.relay_id,
                              max_message_size=self.max_message_size)
        if message is None:
            return None
        if self.secret is not None:
            self._check_fresh(message, entry_ms)
        return message, [self._event(body) for body in message.events]

    def _check_fresh(self, message: wire.Message, entry_ms: int | None) -> None:
        """Raise WireError unless a signed message is fresh (see the module)."""
        sent = message.sent
        if sent is None:
            raise WireError("signed, but without \"sent\" (a relay of an earlier release): "
                            "a copy of it could not be told from it")
        reference = wire.now_ms(self.clock) if entry_ms is None else entry_ms
        if abs(reference - sent) > self.window_ms:
            raise WireError(f"stale: sent {(reference - sent) / 1000:.1f}s before "
                            f"{'its stream entry was added' if entry_ms is not None else 'now'}"
                            f" (replay_window={self.window_ms / 1000:g}s): a replayed copy?")
        if entry_ms is None and self.start_ms is not None and sent < self.start_ms:
            raise WireError("sent before this relay subscribed: a replayed copy?")
        if message.relay not in self._seen and sent <= self._floor_ms:
            raise WireError("sent before the newest message of a publisher this relay "
                            "forgot: a replayed copy?")

    def _event(self, body: Any) -> StoreEvent | None:
        """One event of a message, checked; None for this store's own. Raises WireError."""
        if not isinstance(body, dict):
            raise WireError("an event is not a JSON object")
        if body.get("origin") == self._origin:
            return None  # made by our own store (another relay of it published it)
        if body.get("type") not in wire.WIRE_TYPES:
            raise WireError(f"unknown event type {str(body.get('type'))[:60]!r}")
        try:
            # remote=True set as it is built: no copy of the dict, no replace()
            event = StoreEvent.from_dict(body, store=self.store, remote=True)
            if not event.origin:
                raise ValueError("empty origin")
            if isinstance(event, (StoreKeyEvent, StoreProgressEvent)):
                check_key(event.key)
        except ValueError as exc:
            raise WireError(f"wrong schema ({str(exc)[:120]})") from None
        return event

    def _accept(self, message: wire.Message, events: list[StoreEvent | None]) -> None:
        """Drop what was seen already, report what is missing, deliver the rest."""
        relay, first = message.relay, message.first
        known = self._seen.get(relay)
        last = None if known is None else known[0]
        skip = 0 if last is None else max(0, last - first + 1)
        if skip:
            self._duplicates(relay, min(skip, len(events)), first, last)
            if skip >= len(events):
                return
        self._remember(relay, message.last, message.sent or 0)
        if last is not None and first > last + 1:
            origin = message.events[0].get("origin") if isinstance(message.events[0], dict) \
                else None
            self.report(RelayGap(channel=self.channel, reason="sequence",
                                 publisher=str(origin)[:200], missed=first - last - 1))
        delivered = 0
        for event in events[skip:]:
            if event is not None:
                self.store.dispatch(event)
                delivered += 1
        with self._lock:
            self._stats["delivered"] += delivered

    def _remember(self, relay: str, last: int, sent: int) -> None:
        self._seen[relay] = (last, sent)
        self._seen.move_to_end(relay)
        while len(self._seen) > self.max_tracked:
            _, (_, forgotten) = self._seen.popitem(last=False)
            self._floor_ms = max(self._floor_ms, forgotten)

    def _duplicates(self, relay: str, count: int, first: int, last: int | None) -> None:
        # A publish retried after a broken connection, or a replayed copy: counted, and
        # logged at most every duplicate_log_interval.
        with self._lock:
            self._stats["duplicates"] += count
            total = self._stats["duplicates"]
        now = time.monotonic()
        if now - self._last_dup_log >= self.duplicate_log_interval:
            self._last_dup_log = now
            log.warning("relay %s: %d duplicate events of relay %s dropped (numbers from %d; "
                        "%d seen already; %d duplicates so far): a publish retried, or a "
                        "replayed copy", self.name, count, relay[:6], first, last, total)
