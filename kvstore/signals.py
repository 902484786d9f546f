"""The signal bus: blinker signals sent by every store.

Each signal is sent as ``signal.send(store, event=event)``: the sender is the store the
event is delivered for, and ``event`` an instance of the matching class in
:mod:`kvstore.events`. Connect with ``signal.connect(receiver, sender=store)`` to hear one
store, or without ``sender`` to hear them all; :meth:`kvstore.base.AbstractStore.subscribe`
adds key-pattern filtering on top.
"""

from __future__ import annotations

from inspect import iscoroutinefunction
from typing import Any, Dict, Tuple

from blinker import NamedSignal, Namespace

__all__ = [
    "store_set",
    "store_update",
    "store_delete",
    "progress_start",
    "progress_step",
    "progress_end",
    "transaction_start",
    "transaction_end",
    "namespace",
    "SIGNALS",
    "MODIFICATION_SIGNALS",
    "PROGRESS_SIGNALS",
    "signal_for",
]

namespace = Namespace()

#: The one table of kvstore's signals: (attribute name, blinker name, event class name,
#: what it means). Everything else (the module attributes, the lookups below, the relay's
#: list of what it carries, the test recorder) is derived from it.
_TABLE: Tuple[Tuple[str, str, str, str], ...] = (
    ("store_set", "store-set", "StoreSetEvent",
     "A key that did not exist now exists. event: StoreSetEvent."),
    ("store_update", "store-update", "StoreUpdateEvent",
     "An existing key was written (data, metadata or both). event: StoreUpdateEvent."),
    ("store_delete", "store-delete", "StoreDeleteEvent",
     "A key was deleted; event.metadata is its last metadata. event: StoreDeleteEvent."),
    ("progress_start", "progress-start", "StoreProgressStartEvent",
     "A value starts streaming in or out. event: StoreProgressStartEvent (steps = total bytes or -1)."),
    ("progress_step", "progress-step", "StoreProgressStepEvent",
     "Bytes moved so far, at least once per buffer_size. event: StoreProgressStepEvent."),
    ("progress_end", "progress-end", "StoreProgressEndEvent",
     "A stream operation ended. event: StoreProgressEndEvent (exit_state)."),
    ("transaction_start", "transaction-start", "StoreTransactionStartEvent",
     "``with store.transaction(notes):`` was entered. event: StoreTransactionStartEvent."),
    ("transaction_end", "transaction-end", "StoreTransactionEndEvent",
     "A transaction ended; event.state is 'done' or 'failed'. event: StoreTransactionEndEvent."),
)


def _refuse_coroutine(signal: Any, *, receiver: Any, **_: Any) -> None:
    # Stores send from the writer's thread and never await: a coroutine receiver would
    # get a coroutine that nobody runs. blinker's own send() refuses them too (at send
    # time); refusing at connect time tells the author where the mistake is.
    if iscoroutinefunction(receiver):
        raise TypeError(f"{signal.name}: kvstore sends its signals synchronously, so a coroutine "
                        f"function cannot be a receiver ({receiver!r}); iterate "
                        f"`async for event in store.events()` instead, or wrap it")


#: signal attribute name -> signal, in the table's order.
SIGNALS: Dict[str, NamedSignal] = {}
_BY_EVENT: Dict[str, NamedSignal] = {}
for _attr, _name, _event, _doc in _TABLE:
    _signal = namespace.signal(_name, doc=_doc)
    _signal.receiver_connected.connect(_refuse_coroutine, sender=_signal, weak=False)
    SIGNALS[_attr] = _BY_EVENT[_event] = _signal

store_set: NamedSignal = SIGNALS["store_set"]
store_update: NamedSignal = SIGNALS["store_update"]
store_delete: NamedSignal = SIGNALS["store_delete"]
progress_start: NamedSignal = SIGNALS["progress_start"]
progress_step: NamedSignal = SIGNALS["progress_step"]
progress_end: NamedSignal = SIGNALS["progress_end"]
transaction_start: NamedSignal = SIGNALS["transaction_start"]
transaction_end: NamedSignal = SIGNALS["transaction_end"]

#: The modification signals by kind name, as used by ``subscribe(kinds=...)``.
MODIFICATION_SIGNALS = {"set": store_set, "update": store_update, "delete": store_delete}
PROGRESS_SIGNALS = (progress_start, progress_step, progress_end)


def signal_for(event: Any) -> NamedSignal:
    """The signal that carries ``event`` (an instance of a :mod:`kvstore.events` class).

    Raises
    ------
    ValueError : no kvstore signal carries that kind of event.
    """
    try:
        return _BY_EVENT[type(event).__name__]
    except KeyError:
        raise ValueError(f"no signal carries {type(event).__name__}") from None
