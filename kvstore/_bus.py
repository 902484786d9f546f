"""How a store sends its events: on blinker's signals, with blinker's semantics (muted()
honoured, coroutine receivers refused), building an event only when somebody listens to
this store, and held until the commit inside a transaction."""

from __future__ import annotations

import inspect
import json
import logging
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Sequence

from . import signals
from ._subscription import Subscription, check_filter
from ._value import Change, _copy_metadata
from .events import MODIFICATION_CLASSES, StoreEvent, StoreModificationEvent, _key_event

__all__ = ["BusMixin"]

log = logging.getLogger("kvstore")


class BusMixin:
    """The event side of :class:`~kvstore.base.AbstractStore`."""

    if TYPE_CHECKING:
        origin: str
        _local: Any
        _progress_gates: Dict[str, int]

        def _ready(self, key: Any = ...) -> None: ...

        def _history(self, key: str) -> List[Change]: ...

    def add_progress_floor(self, owner_id: str, min_bytes: int) -> None:
        """Say that progress listener ``owner_id`` (a bridge) ignores operations of a known size
        below ``min_bytes``.

        While every progress receiver is such a listener, an operation smaller than all their
        floors builds no progress events at all. Replaces ``owner_id``'s previous floor.
        """
        self._progress_gates[owner_id] = int(min_bytes)

    def remove_progress_floor(self, owner_id: str) -> None:
        """Take away the floor of :meth:`add_progress_floor` (none left: nothing happens)."""
        self._progress_gates.pop(owner_id, None)

    # ----------------------------------------------------------------- events

    def subscribe(self, receiver: Callable[[Any], Any], pattern: str = "*",
                  kinds: Sequence[str] = ("set", "update", "delete")) -> Subscription:
        """Call ``receiver(event)`` for this store's modification events on keys matching
        the glob ``pattern`` (local and remote). Returns a handle with ``cancel()``.
        """
        kinds = check_filter(pattern, kinds)
        if inspect.iscoroutinefunction(receiver):
            raise TypeError("subscribe() calls its receiver synchronously, so it cannot be a coroutine "
                            "function; iterate `async for event in store.events()` instead")
        return Subscription(self, receiver, pattern, kinds)  # type: ignore[arg-type]  # self is an AbstractStore

    def _apply(self, changes: List[Change]) -> None:
        tx = self._local.tx
        if tx is not None:
            tx.held.extend(changes)
        else:
            self._emit(changes)

    def _emit(self, changes: Iterable[Change]) -> None:
        # _send's loop, with the event built when the first receiver of this store comes
        # up: nobody listening (or muted()) builds no event, and the receivers are looked
        # up once (has_receivers_for then receivers_for would look the sender up twice).
        for change in changes:
            signal = signals.MODIFICATION_SIGNALS[change.kind]
            if signal.is_muted or not signal.receivers:
                continue
            event = None
            for receiver in signal.receivers_for(self):
                if event is None:
                    event = self._event_of(change)
                try:
                    receiver(self, event=event)
                except Exception:
                    log.exception("receiver %r of %s raised", receiver, signal.name)

    def history(self, key: str) -> List[StoreModificationEvent]:
        """The key's changes, oldest first, as events (``StoreSetEvent``,
        ``StoreUpdateEvent``, ``StoreDeleteEvent`` with ``metadata``, ``revision``,
        ``sequence``, ``timestamp``, ``origin``), as far back as the store keeps them; ``[]``
        for a key never written. Writes of an open transaction are not in it.

        Raises
        ------
        NotImplementedError : the store keeps no history (S3Store without bucket versioning).

        Events
        ------
        None (the events returned are not sent).
        """
        self._ready(key)
        return [self._event_of(change) for change in self._history(key)]

    def _event_of(self, change: Change) -> StoreModificationEvent:
        """The event of ``change`` for this store (``remote`` when another instance made it)."""
        origin = self.origin if change.origin is None else change.origin
        return _key_event(MODIFICATION_CLASSES[change.kind], self, origin,
                         time.time() if change.timestamp is None else change.timestamp,
                         origin != self.origin, change.key,
                         _copy_metadata(change.metadata) if change.text is None else json.loads(change.text),
                         change.sequence, change.revision)

    def _send(self, signal: Any, event: StoreEvent) -> None:
        # blinker's Signal.send semantics (muted() honoured; coroutine receivers are
        # refused when they connect, see kvstore.signals), except that a failing
        # receiver must not turn a write that happened into one that seems to have
        # failed, nor keep the other receivers from hearing of it: log and go on.
        # (receivers_for alone: has_receivers_for would look the sender up a second time)
        if signal.is_muted:
            return
        for receiver in signal.receivers_for(self):
            try:
                receiver(self, event=event)
            except Exception:
                log.exception("receiver %r of %s raised", receiver, signal.name)

    def dispatch(self, event: StoreEvent) -> None:
        """Send an event made elsewhere (by a bridge) on this store's signals.

        The event is re-addressed to this store (``event.store``); ``remote`` is kept.
        """
        if event.store is not self:  # a copy costs more than the rest of the dispatch
            event = event.replace(store=self)
        self._send(signals.signal_for(event), event)

