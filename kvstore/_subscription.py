"""``store.subscribe(receiver, pattern, kinds)``: a receiver of one store's modification
events on keys matching a glob."""

from __future__ import annotations

import fnmatch
from typing import TYPE_CHECKING, Any, Callable, Sequence

from . import signals
from .events import StoreEvent

if TYPE_CHECKING:
    from .base import AbstractStore

__all__ = ["Subscription", "check_filter"]


class Subscription:
    """Handle returned by :meth:`AbstractStore.subscribe`; ``cancel()`` or leave the ``with``."""

    def __init__(self, store: AbstractStore, receiver: Callable[[StoreEvent], Any],
                 pattern: str, kinds: Sequence[str]) -> None:
        self.store = store
        self.receiver = receiver
        self.pattern = pattern
        self._every_key = pattern == "*"  # fnmatchcase(key, "*") holds for any str
        self.kinds = tuple(kinds)
        self._signals = [signals.MODIFICATION_SIGNALS[k] for k in self.kinds]
        for sig in self._signals:
            sig.connect(self._on_event, sender=store, weak=False)

    def _on_event(self, sender: Any, event: Any = None, **_: Any) -> None:
        if event is not None and (self._every_key or fnmatch.fnmatchcase(event.key, self.pattern)):
            self.receiver(event)

    def cancel(self) -> None:
        """Stop delivering events; safe to call more than once."""
        for sig in self._signals:
            # Without sender=: blinker would keep the receiver in signal.receivers, and
            # the stores' no-listener fast path would be lost for good.
            sig.disconnect(self._on_event)
        self._signals = []

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.cancel()


def check_filter(pattern: str, kinds: Sequence[str]) -> tuple:
    """Validate ``pattern`` and ``kinds`` like ``subscribe()``; return the kinds as a tuple."""
    if isinstance(kinds, str):
        kinds = (kinds,)
    unknown = [k for k in kinds if k not in signals.MODIFICATION_SIGNALS]
    if unknown:
        raise ValueError(f"unknown event kinds {unknown}; use 'set', 'update', 'delete'")
    if not isinstance(pattern, str):
        raise TypeError("pattern must be a str")
    return tuple(kinds)
