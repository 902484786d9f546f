"""Conformance checks (:class:`kvstore.testing.StoreConformance`): a failing stream, and the events
of writes, progress and subscribers."""

from __future__ import annotations

import io
import json
from typing import Any, List

import pytest

from .. import signals
from .support import EventRecorder, FailingStream, _Boom, _pair


class EventChecks:
    """A failing stream, and the events of writes, progress and subscribers."""

    has_journal: bool  # set by StoreConformance

    # ------------------------------------------------------------ failures

    def test_failing_stream_leaves_old_value(self, store: Any, events: EventRecorder) -> None:
        store.set("k", _pair(b"old data", {"v": "old"}))
        events.clear()
        with pytest.raises(_Boom):
            store.set("k", (FailingStream(b"partial new data" * 100), {"v": "new"}), buffer_size=64)
        with pytest.raises(_Boom):
            store.set_data("k", FailingStream(b"partial"), buffer_size=4)
        with pytest.raises(_Boom):
            store.set("fresh", (FailingStream(b"partial"), {}), buffer_size=4)
        assert store.get_data("k").read() == b"old data"
        assert store.get_metadata("k") == {"v": "old"}
        assert not store.exists("fresh")
        assert sorted(store.glob("*")) == ["k"]
        assert events.modifications() == []
        ends = events.of("progress_end")
        assert len(ends) == 3 and all(e.exit_state == "exception" for e in ends)

    # ------------------------------------------------------------ events

    def _check_event(self, store: Any, event: Any) -> None:
        assert event.store is store
        assert event.source is store  # encore's name for it
        assert event.origin == store.origin
        assert event.remote is False
        assert isinstance(event.timestamp, float)
        if self.has_journal:
            assert isinstance(event.sequence, int)
        else:
            assert event.sequence is None

    def test_modification_events(self, store: Any, events: EventRecorder) -> None:
        store.set("k", _pair(b"1", {"a": 1}))
        store.set("k", _pair(b"2", {"a": 2}))
        store.set_data("k", io.BytesIO(b"3"))
        store.set_metadata("k", {"b": 1})
        store.update_metadata("k", {"c": 2})
        store.set_data("d", io.BytesIO(b"x"))
        store.set_metadata("m", {"z": 0})
        store.from_bytes("fb", b"x")
        store.delete("k")
        assert events.modifications() == [
            ("store_set", "k", {"a": 1}),
            ("store_update", "k", {"a": 2}),
            ("store_update", "k", {"a": 2}),
            ("store_update", "k", {"b": 1}),
            ("store_update", "k", {"b": 1, "c": 2}),
            ("store_set", "d", {}),
            ("store_set", "m", {"z": 0}),
            ("store_set", "fb", {}),
            ("store_delete", "k", {"b": 1, "c": 2}),
        ]
        mods = [e for n, e in events.events if n.startswith("store_")]
        for event in mods:
            self._check_event(store, event)
        if self.has_journal:
            seqs = [e.sequence for e in mods]
            assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        # the JSON form round-trips
        from ..events import StoreEvent
        for event in mods:
            again = StoreEvent.from_dict(json.loads(json.dumps(event.to_dict())))
            assert again == event and type(again) is type(event)

    def test_events_fire_after_change_is_visible(self, store: Any) -> None:
        seen: List[Any] = []

        def receiver(sender: Any, event: Any = None, **_: Any) -> None:
            if event.action == "delete":
                seen.append(("delete", store.exists(event.key)))
            else:
                seen.append((event.action, store.get_data(event.key).read(), store.get_metadata(event.key)))

        for sig in (signals.store_set, signals.store_update, signals.store_delete):
            sig.connect(receiver, sender=store, weak=False)
        try:
            store.set("k", _pair(b"v1", {"n": 1}))
            store.update_metadata("k", {"m": 2})
            store.delete("k")
        finally:
            for sig in (signals.store_set, signals.store_update, signals.store_delete):
                sig.disconnect(receiver)
        assert seen == [("set", b"v1", {"n": 1}), ("update", b"v1", {"n": 1, "m": 2}), ("delete", False)]

    def test_event_metadata_is_a_copy(self, store: Any, events: EventRecorder) -> None:
        store.set("k", _pair(b"", {"l": [1]}))
        events.of("store_set")[0].metadata["l"].append(2)
        assert store.get_metadata("k") == {"l": [1]}

    def test_receiver_error_does_not_break_write(self, store: Any) -> None:
        def bad(sender: Any, **_: Any) -> None:
            raise RuntimeError("receiver bug")

        signals.store_set.connect(bad, sender=store, weak=False)
        try:
            store.set("k", _pair(b"x", {}))
        finally:
            signals.store_set.disconnect(bad)
        assert store.get_data("k").read() == b"x"

    def test_progress_events(self, store: Any, events: EventRecorder, tmp_path: Any) -> None:
        data = b"x" * 1000
        store.set("p", _pair(data, {}), buffer_size=100)
        names = events.names()
        assert names[0] == "progress_start" and names[-1] == "store_set"
        start = events.of("progress_start")[0]
        steps = events.of("progress_step")
        end = events.of("progress_end")[0]
        assert start.steps == 1000 and start.key == "p"
        assert len(steps) >= 10
        assert [s.step for s in steps] == sorted(s.step for s in steps)
        assert steps[-1].step == 1000
        assert all(b.step - a.step <= 100 for a, b in zip(steps, steps[1:], strict=False))
        assert end.exit_state == "normal"
        assert len({e.operation_id for e in [start, *steps, end]}) == 1
        for event in [start, *steps, end]:
            assert event.store is store and event.origin == store.origin
            assert event.source is store

        for name, call in [("to_bytes", lambda: store.to_bytes("p", buffer_size=100)),
                           ("to_file", lambda: store.to_file("p", str(tmp_path / "o"), buffer_size=100)),
                           ("from_file", lambda: store.from_file("q", str(tmp_path / "o"), buffer_size=100)),
                           ("from_bytes", lambda: store.from_bytes("r", data, buffer_size=100)),
                           ("set_data", lambda: store.set_data("s", io.BytesIO(data), buffer_size=100)),
                           ("multiset", lambda: store.multiset(["t"], [_pair(data, {})], buffer_size=100))]:
            events.clear()
            call()
            steps = events.of("progress_step")
            assert events.of("progress_start")[0].steps == 1000, name
            assert len(steps) >= 10 and steps[-1].step == 1000, name
            assert events.of("progress_end")[0].exit_state == "normal", name

    def test_progress_unknown_size_and_empty(self, store: Any, events: EventRecorder) -> None:
        class Unsized(io.RawIOBase):
            def __init__(self) -> None:
                self.left = 250

            def readable(self) -> bool:
                return True

            def read(self, n: int = -1) -> bytes:
                n = min(self.left, 100 if n is None or n < 0 else n)
                self.left -= n
                return b"u" * n

        store.set("u", (Unsized(), {}), buffer_size=100)
        assert events.of("progress_start")[0].steps == -1
        assert events.of("progress_step")[-1].step == 250
        events.clear()
        store.set("e", _pair(b"", {}))
        assert events.of("progress_start")[0].steps == 0
        assert [s.step for s in events.of("progress_step")] == [0]

    def test_subscribe(self, store: Any) -> None:
        heard: List[Any] = []
        deletes: List[Any] = []
        sub = store.subscribe(heard.append, "images/*")
        with store.subscribe(deletes.append, kinds=("delete",)):
            store.set("images/a.png", _pair(b"", {"n": 1}))
            store.set("docs/b.txt", _pair(b"", {}))
            store.update_metadata("images/a.png", {"m": 2})
            store.delete("docs/b.txt")
            store.delete("images/a.png")
        store.set("images/after.png", _pair(b"", {}))
        store.delete("images/after.png")
        sub.cancel()
        sub.cancel()
        store.set("images/cancelled.png", _pair(b"", {}))
        assert [(e.action, e.key) for e in heard] == [
            ("set", "images/a.png"), ("update", "images/a.png"), ("delete", "images/a.png"),
            ("set", "images/after.png"), ("delete", "images/after.png")]
        assert heard[1].metadata == {"n": 1, "m": 2}
        assert [(e.action, e.key) for e in deletes] == [("delete", "docs/b.txt"), ("delete", "images/a.png")]
        with pytest.raises(ValueError):
            store.subscribe(heard.append, kinds=("bogus",))
