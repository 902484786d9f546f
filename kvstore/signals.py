"""The signal bus: blinker signals sent by every store.

Each signal is sent as ``signal.send(store, event=event)``: the sender is the store the
event is delivered for, and ``event`` an instance of the matching class in
:mod:`kvstore.events`. Connect with ``signal.connect(receiver, sender=store)`` to hear one
store, or without ``sender`` to hear them all; :meth:`kvstore.base.AbstractStore.subscribe`
adds key-pattern filtering on top.
"""

from __future__ import annotations

from blinker import Namespace

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
    "MODIFICATION_SIGNALS",
]

namespace = Namespace()

store_set = namespace.signal(
    "store-set",
    doc="A key that did not exist now exists. event: StoreSetEvent.",
)
store_update = namespace.signal(
    "store-update",
    doc="An existing key was written (data, metadata or both). event: StoreUpdateEvent.",
)
store_delete = namespace.signal(
    "store-delete",
    doc="A key was deleted; event.metadata is its last metadata. event: StoreDeleteEvent.",
)
progress_start = namespace.signal(
    "progress-start",
    doc="A value starts streaming in or out. event: StoreProgressStartEvent (steps = total bytes or -1).",
)
progress_step = namespace.signal(
    "progress-step",
    doc="Bytes moved so far, at least once per buffer_size. event: StoreProgressStepEvent.",
)
progress_end = namespace.signal(
    "progress-end",
    doc="A stream operation ended. event: StoreProgressEndEvent (exit_state).",
)
transaction_start = namespace.signal(
    "transaction-start",
    doc="``with store.transaction(notes):`` was entered. event: StoreTransactionStartEvent.",
)
transaction_end = namespace.signal(
    "transaction-end",
    doc="A transaction ended; event.state is 'done' or 'failed'. event: StoreTransactionEndEvent.",
)

#: The modification signals by kind name, as used by ``subscribe(kinds=...)``.
MODIFICATION_SIGNALS = {"set": store_set, "update": store_update, "delete": store_delete}
