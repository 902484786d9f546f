"""Conformance checks (:class:`kvstore.testing.StoreConformance`): transactions and threads."""

from __future__ import annotations

import threading
from typing import Any, List

import pytest

from .support import EventRecorder, _Boom, _pair, _snapshot


class TransactionChecks:
    """Transactions and threads."""

    supports_rollback: bool  # set by StoreConformance

    # ------------------------------------------------------------ transactions

    def test_transaction_commit(self, store: Any, events: EventRecorder) -> None:
        store.set("existing", _pair(b"e", {"e": 1}))
        events.clear()
        with store.transaction("batch") as _:
            store.set("a", _pair(b"A", {"n": 1}))
            store.update_metadata("existing", {"f": 2})
            store.set_metadata("b", {"n": 2})
            store.delete("existing")
            assert events.modifications() == []
            assert store.exists("a") and not store.exists("existing")
            assert store.get_data("a").read() == b"A"
            assert sorted(store.glob("*")) == ["a", "b"]
            assert sorted(store.query_keys(n=2)) == ["b"]
        assert events.names()[0] == "transaction_start"
        assert events.names()[-1] == "transaction_end"
        assert events.of("transaction_start")[0].notes == "batch"
        assert events.of("transaction_end")[0].state == "done"
        assert all(e.source is store for e in events.of("transaction_start", "transaction_end"))
        assert events.modifications() == [
            ("store_set", "a", {"n": 1}),
            ("store_update", "existing", {"e": 1, "f": 2}),
            ("store_set", "b", {"n": 2}),
            ("store_delete", "existing", {"e": 1, "f": 2}),
        ]
        assert store.get_data("a").read() == b"A"
        assert not store.exists("existing")

    def test_transaction_failure(self, store: Any, events: EventRecorder) -> None:
        store.set("keep", _pair(b"k", {"k": 1}))
        before = _snapshot(store)
        events.clear()
        with pytest.raises(_Boom):
            with store.transaction("fails"):
                store.set("new", _pair(b"N", {}))
                store.set("keep", _pair(b"changed", {"k": 2}))
                raise _Boom()
        assert events.of("transaction_end")[0].state == "failed"
        if self.supports_rollback:
            assert _snapshot(store) == before
            assert events.modifications() == []
        else:
            # Writes that remain are announced after the end of the transaction.
            names = events.names()
            assert names.index("transaction_end") < names.index("store_set")
            assert [m[:2] for m in events.modifications()] == [("store_set", "new"), ("store_update", "keep")]

    def test_nested_transaction_joins_outer(self, store: Any, events: EventRecorder) -> None:
        with store.transaction("outer"):
            store.set("a", _pair(b"", {}))
            with store.transaction("inner"):
                store.set("b", _pair(b"", {}))
            assert events.modifications() == []
        assert [m[1] for m in events.modifications()] == ["a", "b"]
        assert len(events.of("transaction_start")) == 1

    # ------------------------------------------------------------ threads

    def test_threads(self, store: Any) -> None:
        errors: List[BaseException] = []
        store.set("shared", _pair(b"", {}))

        def work(n: int) -> None:
            try:
                for i in range(20):
                    key = f"t{n}/{i}"
                    data = f"{n}-{i}".encode() * 10
                    store.set(key, _pair(data, {"n": n, "i": i}))
                    value = store.get(key)
                    assert value.data.read() == data and value.metadata == {"n": n, "i": i}
                    store.update_metadata("shared", {f"t{n}-{i}": i})
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert len(list(store.glob("t*/*"))) == 120
        assert len(store.get_metadata("shared")) == 120  # no update lost
