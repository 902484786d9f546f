"""The receiving side: check each message, drop what is not for us, deliver the rest.

:class:`Inbox` decodes a message (:func:`kvstore.relay.wire.decode`), skips this relay's
own messages and this store's own events, drops duplicate events and reports missing ones
(:data:`relay_gap`), checks each event's schema and sends it on the store's signals.
"""

from __future__ import annotations

import collections
import logging
import threading
from dataclasses import dataclass
from typing import Any

from blinker import Namespace

from .._keys import check_key
from ..events import StoreEvent, StoreKeyEvent, StoreProgressEvent
from . import wire

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
        (durable mode: the relay was away longer than the stream keeps), or ``"sequence"``
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
    secret : messages must be signed with it, when given.
    max_message_size : larger messages are dropped.
    """

    #: Publishers whose event numbers are remembered at most (the oldest are forgotten).
    max_tracked = 4096

    def __init__(self, owner: Any, store: Any, channel: str, secret: bytes | None,
                 max_message_size: int) -> None:
        self.owner = owner
        self.store = store
        self.channel = channel
        self.secret = secret
        self.max_message_size = max_message_size
        #: the relay's own id: its messages are skipped (set by the relay when it starts).
        self.relay_id = ""
        self.name = ""  # the relay's short id, for logs
        self._origin = store.origin
        self._seen: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._lock = threading.Lock()  # guards _stats
        self._stats = collections.Counter(
            {"received": 0, "delivered": 0, "rejected": 0, "duplicates": 0, "gaps": 0})

    @property
    def stats(self) -> dict[str, int]:
        """received (messages), delivered (events), rejected, duplicates, gaps (a copy)."""
        with self._lock:
            return dict(self._stats)

    def report(self, gap: RelayGap) -> None:
        """Log a loss of events and send :data:`relay_gap`."""
        with self._lock:
            self._stats["gaps"] += 1
        if gap.reason == "trimmed":
            log.warning("relay %s: stream %r no longer holds the entries after %s (trimmed to "
                        "maxlen; it now starts at %s): events were lost", self.name,
                        self.channel, gap.after_id, gap.resumed_id)
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

    def handle(self, data: Any) -> None:
        """Decode one message and deliver its events; never raises."""
        with self._lock:
            self._stats["received"] += 1
        try:
            message = wire.decode(data, self.secret, ignore=self.relay_id,
                                  max_message_size=self.max_message_size)
            if message is None:
                return  # our own message coming back
            for seq, body in enumerate(message.events, message.first):
                self._deliver(message.relay, seq, body)
        except wire.WireError as exc:
            self._reject("%s", exc)
        except Exception:
            with self._lock:
                self._stats["rejected"] += 1
            log.exception("relay %s: message dropped: unexpected error", self.name)

    def _deliver(self, relay: str, seq: int, body: Any) -> None:
        """Check one event of a message and send it on the store's signals."""
        if not isinstance(body, dict):
            return self._reject("an event is not a JSON object")
        origin = body.get("origin")
        if origin == self._origin:
            return  # made by our own store (another relay of it published it)
        if not self._sequence_ok(relay, seq, str(origin)[:200]):
            return
        if body.get("type") not in wire.WIRE_TYPES:
            return self._reject("unknown event type %r", str(body.get("type"))[:60])
        try:
            # remote=True set here rather than by a replace(): one object fewer per event
            event = StoreEvent.from_dict({**body, "remote": True}, store=self.store)
            if not event.origin:
                raise ValueError("empty origin")
            if isinstance(event, (StoreKeyEvent, StoreProgressEvent)):
                check_key(event.key)
        except ValueError as exc:
            return self._reject("wrong schema (%s)", str(exc)[:120])
        self.store.dispatch(event)
        with self._lock:
            self._stats["delivered"] += 1

    def _sequence_ok(self, relay: str, seq: int, origin: str) -> bool:
        """Drop duplicates and report missing events of one publisher."""
        last = self._seen.get(relay)
        if last is not None and seq <= last:
            with self._lock:
                self._stats["duplicates"] += 1
            log.debug("relay %s: duplicate event %d of %s dropped", self.name, seq, relay)
            return False
        self._seen[relay] = seq
        self._seen.move_to_end(relay)
        while len(self._seen) > self.max_tracked:
            self._seen.popitem(last=False)
        if last is not None and seq > last + 1:
            self.report(RelayGap(channel=self.channel, reason="sequence", publisher=origin,
                               missed=seq - last - 1))
        return True

