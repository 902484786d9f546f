"""The bus follows blinker's send semantics: muted() is honoured, coroutine receivers are
refused, and a store builds no event when nobody listens to it (even if others listen to
another store). The signals are listed in one table."""

from __future__ import annotations

import io
from typing import Any, List

import pytest

import kvstore
from kvstore import _bus, events, signals


def _recorder(into: List[Any]) -> Any:
    def receive(sender: Any, event: Any = None, **_: Any) -> None:
        into.append(event)
    return receive


def test_table_names_every_signal_once() -> None:
    assert list(signals.SIGNALS) == ["store_set", "store_update", "store_delete", "progress_start",
                                     "progress_step", "progress_end", "transaction_start",
                                     "transaction_end"]
    for attr, sig in signals.SIGNALS.items():
        assert getattr(signals, attr) is sig
        assert signals.namespace.signal(sig.name) is sig
    assert signals.signal_for(events.StoreDeleteEvent(store=None, origin="o", key="k")) is signals.store_delete
    with pytest.raises(ValueError):
        signals.signal_for(object())


def test_muted_signal_sends_nothing() -> None:
    store = kvstore.MemoryStore()
    store.connect()
    heard: List[Any] = []
    receiver = _recorder(heard)
    signals.store_set.connect(receiver, sender=store)
    try:
        with signals.store_set.muted():
            store.set_metadata("a", {"x": 1})
        assert heard == []
        store.set_metadata("b", {"x": 2})
        assert [e.key for e in heard] == ["b"]
    finally:
        signals.store_set.disconnect(receiver)


def test_muted_dispatch_sends_nothing() -> None:
    store = kvstore.MemoryStore()
    heard: List[Any] = []
    receiver = _recorder(heard)
    signals.store_update.connect(receiver, sender=store)
    try:
        event = events.StoreUpdateEvent(store=None, origin="elsewhere", key="k", metadata={}, remote=True)
        with signals.store_update.muted():
            store.dispatch(event)
        assert heard == []
        store.dispatch(event)
        assert len(heard) == 1 and heard[0].store is store
    finally:
        signals.store_update.disconnect(receiver)


def test_coroutine_receiver_refused_at_connect() -> None:
    async def receiver(sender: Any, **kwargs: Any) -> None:  # pragma: no cover - never called
        pass

    for sig in signals.SIGNALS.values():
        with pytest.raises(TypeError, match="coroutine"):
            sig.connect(receiver)
        assert not sig.receivers, sig.name


def test_coroutine_refused_by_subscribe() -> None:
    async def receiver(event: Any) -> None:  # pragma: no cover - never called
        pass

    store = kvstore.MemoryStore()
    with pytest.raises(TypeError, match="coroutine"):
        store.subscribe(receiver)
    assert not signals.store_set.receivers


def test_no_event_built_for_a_store_nobody_listens_to(monkeypatch: pytest.MonkeyPatch) -> None:
    built: List[str] = []
    make = _bus._key_event

    def counting(cls: Any, store: Any, origin: str, timestamp: float, remote: bool, key: str,
                 *rest: Any) -> Any:
        built.append(key)
        return make(cls, store, origin, timestamp, remote, key, *rest)

    monkeypatch.setattr(_bus, "_key_event", counting)
    listened, quiet = kvstore.MemoryStore(), kvstore.MemoryStore()
    listened.connect()
    quiet.connect()
    heard: List[Any] = []
    receiver = _recorder(heard)
    signals.store_set.connect(receiver, sender=listened)
    try:
        quiet.set("q", (io.BytesIO(b"x"), {}))
        assert built == []
        listened.set("l", (io.BytesIO(b"x"), {}))
        assert built == ["l"] and [e.key for e in heard] == ["l"]
    finally:
        signals.store_set.disconnect(receiver)
