"""The conformance suite every kvstore backend runs, importable by third-party backends.

Use it by subclassing :class:`StoreConformance` in a test module and providing a ``store``
fixture that yields a connected, empty store::

    from kvstore.testing import StoreConformance

    class TestMyStore(StoreConformance):
        @pytest.fixture
        def store(self, tmp_path):
            with MyStore(...) as s:
                yield s

Class attributes tell the suite what the backend promises: ``supports_rollback`` (writes
inside a failed transaction are undone) and ``has_journal`` (events carry an int
``sequence``). Requires pytest.
"""


from __future__ import annotations

from typing import Any

import pytest

from ._conformance.events import EventChecks
from ._conformance.queries import QueryAndKeyChecks
from ._conformance.support import (  # noqa: F401  (re-exported; FailingStream, _Boom for tests)
    BAD_KEYS,
    BAD_METADATA,
    ODD_KEYS,
    EventRecorder,
    FailingStream,
    _Boom,
    wait_for,
)
from ._conformance.transactions import TransactionChecks
from ._conformance.values import ValueChecks

__all__ = ["StoreConformance", "EventRecorder", "ODD_KEYS", "BAD_KEYS", "wait_for"]


class StoreConformance(ValueChecks, QueryAndKeyChecks, EventChecks, TransactionChecks):
    """Behaviour every backend shares. Subclasses provide a ``store`` fixture."""

    supports_rollback = True
    has_journal = False

    @pytest.fixture
    def events(self, store: Any) -> Any:
        recorder = EventRecorder(store)
        yield recorder
        recorder.close()
