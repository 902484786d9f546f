"""MemoryStore runs the shared conformance suite; its write path keeps the caller's, the
store's and the receivers' metadata apart."""

import io

import pytest

import kvstore
from kvstore import signals
from kvstore.events import StoreDeleteEvent, StoreSetEvent, StoreUpdateEvent
from kvstore.testing import StoreConformance


class TestMemoryStore(StoreConformance):
    @pytest.fixture
    def store(self):
        with kvstore.MemoryStore(name="test") as store:
            yield store


def test_open_store_memory():
    store = kvstore.open_store("memory://")
    assert isinstance(store, kvstore.MemoryStore) and store.is_connected()


def _writes():
    """(name, write(store, key, metadata)) for every write that takes metadata."""
    return [
        ("set", lambda s, k, md: s.set(k, (io.BytesIO(b"data"), md))),
        ("set_metadata", lambda s, k, md: s.set_metadata(k, md)),
        ("update_metadata", lambda s, k, md: s.update_metadata(k, md)),
    ]


@pytest.mark.parametrize("name,write", _writes(), ids=lambda v: v if isinstance(v, str) else "")
def test_metadata_copies_are_apart(name, write):
    # The caller's dict, the stored metadata, each event's and each history entry's metadata
    # are separate objects at every level: changing one changes none of the others.
    with kvstore.MemoryStore() as store:
        store.set_metadata("k", {"old": [0]})
        heard, raw = [], []

        def mutating(event):
            heard.append(event)
            event.metadata["list"].append("by receiver")
            event.metadata["nested"]["x"] = "by receiver"
            event.metadata["added"] = True

        def recorder(sender, event=None, **_):
            raw.append(event)

        signals.store_update.connect(recorder, sender=store, weak=False)
        try:
            with store.subscribe(mutating, kinds=("update",)):
                given = {"list": [1, (2, 3)], "nested": {"x": 1, "l": [{"y": 2}]}}
                write(store, "k", given)
                given["list"].append("by caller")
                given["nested"]["l"][0]["y"] = "by caller"
        finally:
            signals.store_update.disconnect(recorder)
        want = {"list": [1, [2, 3]], "nested": {"x": 1, "l": [{"y": 2}]}}
        if name == "update_metadata":
            want = {"old": [0], **want}
        assert store.get_metadata("k") == want
        assert store.history("k")[-1].metadata == want
        # both receivers got the one event (blinker's semantics: one event per send)
        assert len(heard) == 1 and raw[0] is heard[0] and heard[0].metadata["added"] is True
        # after the write: the event, the store and the history stay apart
        heard[0].metadata["nested"]["l"].append("later")
        store.history("k")[-1].metadata["list"].clear()
        store.get_metadata("k")["nested"]["l"].clear()
        assert store.get_metadata("k") == want and store.history("k")[-1].metadata == want
        store.update_metadata("k", {"list": "replaced"})
        assert heard[0].metadata["list"] == [1, [2, 3], "by receiver"]


def test_delete_and_transaction_events_carry_copies():
    with kvstore.MemoryStore() as store:
        heard = []

        def mutating(event):
            heard.append(event)
            event.metadata["l"].append(event.action)

        with store.subscribe(mutating):
            with store.transaction():
                store.set_metadata("t", {"l": [1]})
                store.update_metadata("t", {"u": 1})
            assert store.get_metadata("t") == {"l": [1], "u": 1}
            store.copy("t", "c")
            store.move("c", "m")
            store.delete("t")
        assert [(e.action, e.key, e.metadata) for e in heard] == [
            ("set", "t", {"l": [1, "set"]}), ("update", "t", {"l": [1, "update"], "u": 1}),
            ("set", "c", {"l": [1, "set"], "u": 1}), ("set", "m", {"l": [1, "set"], "u": 1}),
            ("delete", "c", {"l": [1, "delete"], "u": 1}), ("delete", "t", {"l": [1, "delete"], "u": 1})]
        assert store.get_metadata("m") == {"l": [1], "u": 1}
        assert [e.metadata for e in store.history("t")] == [{"l": [1]}, {"l": [1], "u": 1}, {"l": [1], "u": 1}]


def test_events_keep_every_field():
    with kvstore.MemoryStore() as store:
        heard = []
        with store.subscribe(heard.append):
            store.set_metadata("k", {"a": 1})
            store.update_metadata("k", {"b": 2})
            store.delete("k")
        history = store.history("k")
        for event, kept, (cls, revision) in zip(heard, history, [
                (StoreSetEvent, 1), (StoreUpdateEvent, 2), (StoreDeleteEvent, 3)], strict=True):
            assert type(event) is cls and type(kept) is cls
            assert event.store is store and event.origin == store.origin and event.remote is False
            assert event.key == "k" and event.sequence is None and event.revision == revision
            assert event == kept  # history reports what was sent, timestamp included
        assert [e.metadata for e in heard] == [{"a": 1}, {"a": 1, "b": 2}, {"a": 1, "b": 2}]
        assert heard[0].timestamp <= heard[1].timestamp <= heard[2].timestamp
