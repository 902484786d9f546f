"""RedisRelay: relay logic on fakeredis, then the real thing on a local redis-server.

The integration tests need ``redis-server`` on PATH; without it they are skipped, except
when ``CI=true``, where a missing server is a failure. Every wait has a deadline.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import io
import json
import logging
import os
import pickle
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from typing import Any, Callable, List, Optional

import pytest

import kvstore
from kvstore import signals, testing
from kvstore.events import (
    StoreProgressEndEvent,
    StoreProgressStartEvent,
    StoreProgressStepEvent,
    StoreSetEvent,
)

fakeredis = pytest.importorskip("fakeredis")
redis = pytest.importorskip("redis")

from kvstore.relay import RedisRelay, RelayGap, RelayQueueFull, relay_gap  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if HERE not in sys.path:  # pytest's default import mode already put it there
    sys.path.insert(0, HERE)

from redis_server import RedisServer, redis_server_path  # noqa: E402

ALL_SIGNALS = (signals.store_set, signals.store_update, signals.store_delete,
               signals.progress_start, signals.progress_step, signals.progress_end,
               signals.transaction_start, signals.transaction_end)
FAST = dict(poll_interval=0.05, backoff=(0.01, 0.1))


# ----------------------------------------------------------------- helpers

def wait_for(predicate: Callable[[], Any], timeout: float = 5.0, what: str = "a condition") -> Any:
    return testing.wait_for(predicate, timeout, what)


class Recorder:
    """Records (sender, event) for every kvstore signal sent by one store."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.calls: List[Any] = []
        self._lock = threading.Lock()
        self._stack = contextlib.ExitStack()
        for sig in ALL_SIGNALS:
            self._stack.enter_context(sig.connected_to(self, sender=store))

    def __call__(self, sender: Any, event: Any = None, **_: Any) -> None:
        with self._lock:
            self.calls.append((sender, event))

    def events(self, remote: Optional[bool] = None, cls: Any = None) -> List[Any]:
        with self._lock:
            return [e for _, e in self.calls if (remote is None or e.remote == remote)
                    and (cls is None or isinstance(e, cls))]

    def wait(self, count: int, timeout: float = 5.0, **filters: Any) -> List[Any]:
        wait_for(lambda: len(self.events(**filters)) >= count, timeout,
                 f"{count} events {filters} (have {len(self.events(**filters))})")
        return self.events(**filters)

    def close(self) -> None:
        self._stack.close()


@pytest.fixture
def recorders():
    made: List[Recorder] = []

    def make(store: Any) -> Recorder:
        made.append(Recorder(store))
        return made[-1]

    yield make
    for rec in made:
        rec.close()


@pytest.fixture
def server():
    """A fake Redis server shared by the relays of one test."""
    return fakeredis.FakeServer()


def client(server: Any) -> Any:
    return fakeredis.FakeRedis(server=server)


@pytest.fixture
def stores():
    made: List[Any] = []

    def make(name: str = "s") -> Any:
        store = kvstore.MemoryStore(name=name)
        store.connect()
        made.append(store)
        return store

    yield make
    for store in made:
        store.disconnect()


def wire(event: Any, relay: str = "f" * 32, n: int = 1, secret: Optional[bytes] = None,
         **override: Any) -> bytes:
    """A message in the relay's wire format (documented in kvstore.relay.wire), made now."""
    envelope = {"kvstore": 1, "relay": relay, "n": n, "events": [event.to_dict()],
                "sent": int(time.time() * 1000)}
    envelope.update(override)
    if secret is not None:
        body = json.dumps(envelope, sort_keys=True, separators=(",", ":")).encode()
        envelope["sig"] = hmac.new(secret, body, hashlib.sha256).hexdigest()
    return json.dumps(envelope).encode()


def drain(pubsub: Any, quiet: float = 0.2) -> List[Any]:
    """Every message waiting on ``pubsub``: read until ``quiet`` seconds pass without one."""
    messages: List[Any] = []
    last = time.monotonic()
    while time.monotonic() - last < quiet:
        message = pubsub.get_message(timeout=0.02)
        if message is not None and message["type"] == "message":
            messages.append(message)
            last = time.monotonic()
    return messages


def foreign_set(key: str = "k", **metadata: Any) -> StoreSetEvent:
    return StoreSetEvent(origin="elsewhere:1:abc", key=key, metadata=metadata)


def inject(raw: Any, channel: str, payload: Any, durable: bool) -> None:
    if durable:
        raw.xadd(channel, {"m": payload})
    else:
        raw.publish(channel, payload)


# ------------------------------------------------------ construction, import

def test_missing_redis_names_the_extra(monkeypatch, stores):
    import importlib

    monkeypatch.setitem(sys.modules, "redis", None)  # as if redis-py were not installed
    monkeypatch.setattr(kvstore, "relay", sys.modules["kvstore.relay"])  # restored after
    monkeypatch.delitem(sys.modules, "kvstore.relay")
    relay_module = importlib.import_module("kvstore.relay")  # importing needs no redis
    with pytest.raises(ImportError, match=r"pip install 'kvstore\[redis\]'"):
        relay_module.RedisRelay(stores(), "redis://127.0.0.1:6379/0")


def test_bad_options(stores, server):
    store = stores()
    with pytest.raises(ValueError):
        RedisRelay(store, client(server), on_full="explode")
    with pytest.raises(ValueError):
        RedisRelay(store, client(server), channel="")
    with pytest.raises(TypeError):
        RedisRelay(store, client(server), secret=123)
    with pytest.raises(TypeError):
        RedisRelay(store, object())
    with pytest.raises(ValueError):
        RedisRelay(store, "http://127.0.0.1/")
    with pytest.raises(ValueError, match="decode_responses"):
        RedisRelay(store, fakeredis.FakeRedis(server=server, decode_responses=True))


def test_url_password_never_shown(stores, caplog):
    caplog.set_level(logging.DEBUG, logger="kvstore.relay")
    relay = RedisRelay(stores(), "redis://alice:hunter2@127.0.0.1:1/0")
    assert "hunter2" not in repr(relay)
    assert "alice" in repr(relay)


# ----------------------------------------------------------- publishing side

def test_publishes_own_events_as_json(stores, server):
    store = stores()
    raw = client(server)
    pubsub = raw.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe("kvstore")
    with RedisRelay(store, client(server), **FAST):
        store.set_metadata("a/b", {"n": 1})
        store.delete("a/b")
        messages: List[Any] = []

        def two() -> bool:
            msg = pubsub.get_message(timeout=0.05)
            if msg is not None:
                messages.append(msg)
            return sum(len(json.loads(m["data"])["events"]) for m in messages) >= 2

        wait_for(two, what="two events")
    pubsub.close()
    decoded = [json.loads(m["data"]) for m in messages]
    events = [(d["n"] + i, e) for d in decoded for i, e in enumerate(d["events"])]
    assert [(n, e["type"]) for n, e in events] == [(1, "StoreSetEvent"), (2, "StoreDeleteEvent")]
    assert all(d["kvstore"] == 1 and "sig" not in d for d in decoded)
    assert all(e["origin"] == store.origin for _, e in events)
    assert events[0][1]["metadata"] == {"n": 1} and events[0][1]["key"] == "a/b"


@pytest.mark.parametrize("durable", [False, True], ids=["pubsub", "durable"])
def test_two_relays_exchange_events(durable, stores, server, recorders):
    a, b = stores("a"), stores("b")
    rec_a, rec_b = recorders(a), recorders(b)
    with RedisRelay(a, client(server), durable=durable, progress_min_bytes=0, **FAST) as ra, \
            RedisRelay(b, client(server), durable=durable, progress_min_bytes=0, **FAST) as rb:
        assert ra.wait_ready(5) and rb.wait_ready(5)
        a.set("k", (b"data", {"x": 1}))
        a.update_metadata("k", {"y": 2})
        with a.transaction("batch"):
            a.delete("k")
        rec_b.wait(8, remote=True)
        b.set_metadata("from-b", {})
        rec_a.wait(1, remote=True)
    remote_b = rec_b.events(remote=True)
    assert [type(e).__name__ for e in remote_b] == [
        "StoreProgressStartEvent", "StoreProgressStepEvent", "StoreProgressEndEvent",
        "StoreSetEvent", "StoreUpdateEvent", "StoreTransactionStartEvent",
        "StoreDeleteEvent", "StoreTransactionEndEvent"]
    for sender, event in rec_b.calls:
        assert sender is b and event.store is b
        if event.remote:
            assert event.origin == a.origin
    assert remote_b[4].metadata == {"x": 1, "y": 2}
    assert remote_b[3].key == "k" and remote_b[1].step == 4
    # a heard b's one change, and never its own events back
    remote_a = rec_a.events(remote=True)
    assert [(type(e).__name__, e.key, e.origin) for e in remote_a] == [
        ("StoreSetEvent", "from-b", b.origin)]
    assert ra.stats["delivered"] == 1


def test_received_events_are_not_republished(stores, server, recorders):
    a, b = stores("a"), stores("b")
    raw = client(server)
    pubsub = raw.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe("kvstore")
    rec_b = recorders(b)
    with RedisRelay(a, client(server), progress=False, **FAST) as ra, \
            RedisRelay(b, client(server), progress=False, **FAST) as rb:
        assert ra.wait_ready(5) and rb.wait_ready(5)
        a.set_metadata("k", {"v": 1})
        rec_b.wait(1, remote=True)
        # as a FileSystemWatcher would: a remote change sent on b's signals
        b.dispatch(StoreSetEvent(origin="watcher-of-disk", key="w", remote=True))
        # an event of another store sent with b as sender (not b's own change)
        signals.store_set.send(b, event=StoreSetEvent(origin="someone-else", key="x"))
        b.set_metadata("own", {})  # b's own change: published
        wait_for(lambda: ra.stats["delivered"] >= 1, what="a hears b")
    seen = [e for m in drain(pubsub) for e in json.loads(m["data"])["events"]]
    pubsub.close()
    assert [(e["key"], e["origin"]) for e in seen] == [("k", a.origin), ("own", b.origin)]
    assert rb.stats["published"] == 1


def test_progress_is_rate_limited(stores, server, recorders):
    a, b = stores("a"), stores("b")
    rec_a, rec_b = recorders(a), recorders(b)

    class Slow(io.RawIOBase):
        """100 chunks of 1000 bytes, ~2 ms apart."""

        def __init__(self) -> None:
            self.left = 100

        def readable(self) -> bool:
            return True

        def readinto(self, buf: Any) -> int:
            if not self.left:
                return 0
            self.left -= 1
            time.sleep(0.002)  # the workload: a slow upload, not synchronisation
            buf[:1000] = b"x" * 1000
            return 1000

    with RedisRelay(a, client(server), progress_interval=0.05, **FAST), \
            RedisRelay(b, client(server), **FAST) as rb:
        assert rb.wait_ready(5)
        started = time.monotonic()
        a.set("big", (Slow(), {}), buffer_size=1000)
        elapsed = time.monotonic() - started
        rec_b.wait(1, remote=True, cls=StoreSetEvent)
    local_steps = rec_a.events(cls=StoreProgressStepEvent)
    remote = rec_b.events(remote=True)
    steps = [e for e in remote if isinstance(e, StoreProgressStepEvent)]
    assert len(local_steps) == 100
    assert isinstance(remote[0], StoreProgressStartEvent)
    assert isinstance(remote[-2], StoreProgressEndEvent) and isinstance(remote[-1], StoreSetEvent)
    # at most one step per 0.05 s, plus the last one (the total)
    assert 2 <= len(steps) <= elapsed / 0.05 + 2, (len(steps), elapsed)
    assert steps[-1].step == 100_000
    assert [s.step for s in steps] == sorted(s.step for s in steps)


def test_progress_can_be_left_out(stores, server, recorders):
    a, b = stores("a"), stores("b")
    rec_b = recorders(b)
    with RedisRelay(a, client(server), progress=False, **FAST) as ra, \
            RedisRelay(b, client(server), **FAST) as rb:
        assert rb.wait_ready(5)
        a.set("k", (b"abc", {}))
        rec_b.wait(1, remote=True)
        wait_for(lambda: ra.stats["published"] >= 1, what="publish")
    assert [type(e) for e in rec_b.events(remote=True)] == [StoreSetEvent]


def test_batches_split_and_oversized_events_left_out(stores, server, recorders, caplog):
    a, b = stores("a"), stores("b")
    rec_b = recorders(b)
    gaps: List[Any] = []
    with relay_gap.connected_to(lambda s, **kw: gaps.append(kw["gap"]), sender=b), \
            RedisRelay(a, client(server), durable=True, progress=False, max_message_size=4096,
                       **FAST) as ra, \
            RedisRelay(b, client(server), durable=True, **FAST) as rb:
        assert ra.wait_ready(5) and rb.wait_ready(5)
        a.set_metadata("first", {})
        rec_b.wait(1, remote=True)
        server.connected = False  # let a batch pile up
        for i in range(40):
            a.set_metadata(f"k{i}", {"i": i, "pad": "p" * 200})
            if i == 20:
                a.set_metadata("huge", {"pad": "h" * 10_000})
        wait_for(lambda: not ra.is_connected(), what="sender notices")
        server.connected = True
        rec_b.wait(41, remote=True)
    keys = [e.key for e in rec_b.events(remote=True)]
    assert keys == ["first"] + [f"k{i}" for i in range(40)]
    assert ra.stats["messages"] >= 4  # 40 x ~330 bytes do not fit in 4096
    assert [(g.reason, g.missed) for g in gaps] == [("sequence", 1)]
    assert "more than max_message_size=4096" in caplog.text


def test_progress_of_small_operations_can_be_left_out(stores, server, recorders):
    a, b = stores("a"), stores("b")
    rec_b = recorders(b)
    with RedisRelay(a, client(server), progress_min_bytes=1000, **FAST), \
            RedisRelay(b, client(server), **FAST) as rb:
        assert rb.wait_ready(5)
        a.set("small", (b"x" * 999, {}))
        a.set("large", (b"x" * 1000, {}))
        wait_for(lambda: len(rec_b.events(remote=True, cls=StoreSetEvent)) == 2, what="sets")
    assert [(type(e).__name__, e.key) for e in rec_b.events(remote=True)] == [
        ("StoreSetEvent", "small"), ("StoreProgressStartEvent", "large"),
        ("StoreProgressStepEvent", "large"), ("StoreProgressEndEvent", "large"),
        ("StoreSetEvent", "large")]


def test_progress_of_operations_under_a_mebibyte_is_not_relayed_by_default(stores, server, recorders):
    a, b = stores("a"), stores("b")
    rec_b = recorders(b)
    with RedisRelay(a, client(server), **FAST), RedisRelay(b, client(server), **FAST) as rb:
        assert rb.wait_ready(5)
        a.set("small", (b"x" * 1000, {}))
        a.set("large", (b"x" * (1 << 20), {}))
        wait_for(lambda: len(rec_b.events(remote=True, cls=StoreSetEvent)) == 2, what="sets")
    names = [(type(e).__name__, e.key) for e in rec_b.events(remote=True)]
    assert names[0] == ("StoreSetEvent", "small")
    assert ("StoreProgressStartEvent", "large") in names and names[-1] == ("StoreSetEvent", "large")


def test_a_relay_alone_makes_no_progress_events_for_small_operations(stores, server):
    from kvstore._progress import _progress_wanted

    a = stores("a")
    assert not _progress_wanted(a, 10)  # no listener at all
    with RedisRelay(a, client(server), progress_min_bytes=1000, **FAST):
        assert not _progress_wanted(a, 999)  # the relay would drop them: none are built
        assert _progress_wanted(a, 1000) and _progress_wanted(a, -1)  # big or of unknown size
        heard = []
        with signals.progress_start.connected_to(lambda sender, event: heard.append(event.key)):
            assert _progress_wanted(a, 10)  # another listener wants every operation
            a.set("small", (b"x" * 10, {}))
        assert heard == ["small"]
    assert a._progress_gates == {}  # stop() takes the floor away


# ------------------------------------------------------------ receiving side

class _Boom:
    """Unpickling this would set a flag: proof that nothing was unpickled."""

    fired = False

    def __reduce__(self):
        return (_fire, ())


def _fire() -> None:
    _Boom.fired = True


def _env(*events: bytes, n: bytes = b"1") -> bytes:
    return b'{"kvstore": 1, "relay": "x", "n": ' + n + b', "events": [' + b", ".join(events) + b"]}"


JUNK = [
    b"not json at all",
    pickle.dumps(_Boom()),
    pickle.dumps({"kvstore": 1, "events": [{"type": "StoreSetEvent"}]}),
    b"\xff\xfe\x00garbage",
    b"[1, 2, 3]",
    b'{"kvstore": 1}',
    b'{"kvstore": 2, "relay": "x", "n": 1, "events": [{}]}',
    _env(b'{"type": "StoreSetEvent", "origin": "o", "key": "k"}', n=b"true"),
    _env(n=b"2"),
    b'{"kvstore": 1, "relay": "x", "n": 3, "events": {"type": "StoreSetEvent"}}',
    _env(b'"a string"', n=b"4"),
    _env(b'{"type": "EvilEvent", "origin": "o"}', n=b"5"),
    _env(b'{"type": "StoreEvent", "origin": "o"}', n=b"6"),
    _env(b'{"type": "StoreSetEvent", "origin": "o", "key": 5}', n=b"7"),
    _env(b'{"type": "StoreSetEvent", "origin": "o", "key": "bad\\u0000key"}', n=b"8"),
    _env(b'{"type": "StoreSetEvent", "origin": "o", "key": "k", "metadata": [1]}', n=b"9"),
    _env(b'{"type": "StoreSetEvent", "origin": "o", "key": "k", "timestamp": NaN}', n=b"10"),
    _env(b'{"type": "StoreSetEvent", "origin": "", "key": "k"}', n=b"11"),
    _env(b'{"type": "StoreSetEvent", "origin": "o", "key": "k", "sequence": "1"}', n=b"12"),
    _env(b'{"type": "StoreProgressStepEvent", "origin": "o", "key": "k", "step": 1.5}',
         n=b"13"),
    b"[" * 100_000 + b"]" * 100_000,
    _env(b'{"type": "StoreSetEvent", "origin": "o", "key": "k", "metadata": {"pad": "'
         + b"x" * 70_000 + b'"}}', n=b"14"),
]


@pytest.mark.parametrize("durable", [False, True], ids=["pubsub", "durable"])
def test_junk_is_dropped_and_relay_keeps_running(durable, stores, server, recorders, caplog):
    caplog.set_level(logging.WARNING, logger="kvstore.relay")
    b = stores("b")
    rec_b = recorders(b)
    raw = client(server)
    with RedisRelay(b, client(server), durable=durable, max_message_size=65536, **FAST) as rb:
        assert rb.wait_ready(5)
        for payload in JUNK:
            inject(raw, "kvstore", payload, durable)
        if durable:
            raw.xadd("kvstore", {"other": "field"})  # an entry without our field
        inject(raw, "kvstore", wire(foreign_set("fine", ok=True), relay="y"), durable)
        got = rec_b.wait(1, remote=True)
        expected = len(JUNK) + (1 if durable else 0)
        wait_for(lambda: rb.stats["rejected"] >= expected, what="all junk counted")
        assert rb.is_started() and all(t.is_alive() for t in rb._threads)
    assert [(e.key, e.metadata) for e in got] == [("fine", {"ok": True})]
    assert rb.stats["rejected"] == expected and rb.stats["delivered"] == 1
    assert not _Boom.fired
    assert caplog.text.count("message dropped") >= expected
    assert "more than max_message_size" in caplog.text


def test_duplicates_and_replays_are_dropped(stores, server, recorders):
    b = stores("b")
    rec_b = recorders(b)
    raw = client(server)
    with RedisRelay(b, client(server), **FAST) as rb:
        assert rb.wait_ready(5)
        message = wire(foreign_set("once"), n=7)
        raw.publish("kvstore", message)
        raw.publish("kvstore", message)
        raw.publish("kvstore", wire(foreign_set("older"), n=3))
        raw.publish("kvstore", wire(foreign_set("next"), n=8))
        rec_b.wait(2, remote=True)
        wait_for(lambda: rb.stats["received"] >= 4, what="all received")
    assert [e.key for e in rec_b.events(remote=True)] == ["once", "next"]
    assert rb.stats["duplicates"] == 2


def test_missing_messages_are_reported(stores, server, recorders, caplog):
    b = stores("b")
    rec_b = recorders(b)
    gaps: List[Any] = []

    def on_gap(sender: Any, relay: Any = None, gap: Any = None) -> None:
        gaps.append((sender, relay, gap))

    raw = client(server)
    with relay_gap.connected_to(on_gap, sender=b), RedisRelay(b, client(server), **FAST) as rb:
        assert rb.wait_ready(5)
        raw.publish("kvstore", wire(foreign_set("one"), n=1))
        raw.publish("kvstore", wire(foreign_set("five"), n=5))
        rec_b.wait(2, remote=True)
    assert [g[2] for g in gaps] == [RelayGap(channel="kvstore", reason="sequence",
                                             publisher="elsewhere:1:abc", missed=3)]
    assert gaps[0][0] is b and gaps[0][1] is rb
    assert "3 events of publisher elsewhere:1:abc" in caplog.text


# -------------------------------------------------------------------- secret

def test_secret_signs_and_forgeries_are_dropped(stores, server, recorders):
    a, b, c = stores("a"), stores("b"), stores("c")
    rec_b = recorders(b)
    raw = client(server)
    secret = b"s3cret"
    with RedisRelay(a, client(server), secret="s3cret", progress=False, **FAST) as ra, \
            RedisRelay(b, client(server), secret=secret, **FAST) as rb, \
            RedisRelay(c, client(server), progress=False, **FAST) as rc:
        assert ra.wait_ready(5) and rb.wait_ready(5) and rc.wait_ready(5)
        a.set_metadata("signed", {})
        c.set_metadata("unsigned-relay", {})  # a relay without the secret
        raw.publish("kvstore", wire(foreign_set("nosig"), n=1))
        raw.publish("kvstore", wire(foreign_set("othersecret"), n=2, secret=b"guess"))
        genuine = json.loads(wire(foreign_set("genuine"), n=3, secret=secret))
        genuine["events"][0]["key"] = "tampered"
        raw.publish("kvstore", json.dumps(genuine))
        forged_n = json.loads(wire(foreign_set("replayed"), n=4, secret=secret))
        forged_n["n"] = 99
        raw.publish("kvstore", json.dumps(forged_n))
        raw.publish("kvstore", wire(foreign_set("good"), n=5, secret=secret))
        rec_b.wait(2, remote=True)
        wait_for(lambda: rb.stats["rejected"] >= 5, what="forgeries rejected")
        # a relay without a secret ignores signatures: it still hears a
        wait_for(lambda: rc.stats["delivered"] >= 1, what="c hears a")
    assert sorted(e.key for e in rec_b.events(remote=True)) == ["good", "signed"]
    assert rb.stats["rejected"] == 5


# ---------------------------------------------------- Redis slow or down

def test_store_stays_usable_and_drop_oldest_counts(stores, server, recorders, caplog):
    caplog.set_level(logging.INFO, logger="kvstore.relay")
    a, b = stores("a"), stores("b")
    rec_b = recorders(b)
    gaps: List[Any] = []
    with relay_gap.connected_to(lambda s, **kw: gaps.append(kw["gap"]), sender=b), \
            RedisRelay(a, client(server), queue_size=5, batch_size=1, progress=False,
                       **FAST) as ra, \
            RedisRelay(b, client(server), **FAST) as rb:
        assert rb.wait_ready(5)
        a.set_metadata("before", {})
        rec_b.wait(1, remote=True)
        server.connected = False
        slowest = 0.0
        for i in range(20):
            t = time.perf_counter()
            a.set_metadata(f"down{i}", {})
            slowest = max(slowest, time.perf_counter() - t)
        assert slowest < 0.05  # never waits for the network
        assert a.exists("down19")
        wait_for(lambda: not ra.is_connected(), what="the sender notices the outage")
        assert 14 <= ra.stats["dropped"] <= 15
        server.connected = True
        wait_for(lambda: ra.is_connected() and rb.is_connected(), what="both back")
        a.set_metadata("after", {})
        rec_b.wait(1, remote=True, cls=StoreSetEvent)
        wait_for(lambda: "after" in [e.key for e in rec_b.events(remote=True)], what="after")
    keys = [e.key for e in rec_b.events(remote=True)]
    assert keys[0] == "before" and keys[-1] == "after"
    assert len(keys) == len(set(keys))
    # everything b did not get is accounted for: 21 messages after "before"
    assert len(keys) - 1 + sum(g.missed for g in gaps) == 21
    assert "queue full" in caplog.text and "cannot reach" in caplog.text
    assert "reconnected" in caplog.text


def test_on_full_error(stores, server, caplog):
    a = stores("a")
    with RedisRelay(a, client(server), queue_size=2, batch_size=1, on_full="error",
                    progress=False, **FAST) as ra:
        server.connected = False
        for i in range(6):
            a.set_metadata(f"k{i}", {})  # the write succeeds; the store logs the receiver
        assert a.exists("k5")
        assert ra.stats["dropped"] >= 3
        server.connected = True
    assert "RelayQueueFull" in caplog.text
    assert issubclass(RelayQueueFull, RuntimeError)


def test_on_full_block_waits_for_room(stores, server, recorders):
    a, b = stores("a"), stores("b")
    rec_b = recorders(b)
    done: List[int] = []
    with RedisRelay(a, client(server), queue_size=2, batch_size=1, on_full="block",
                    durable=True, progress=False, **FAST) as ra, \
            RedisRelay(b, client(server), durable=True, **FAST) as rb:
        assert ra.wait_ready(5) and rb.wait_ready(5)
        server.connected = False

        def writer() -> None:
            for i in range(6):
                a.set_metadata(f"k{i}", {"i": i})
                done.append(i)

        thread = threading.Thread(target=writer)
        thread.start()
        wait_for(lambda: len(ra._outbox) == 2 and len(done) >= 2, what="queue full")
        assert thread.is_alive() and len(done) < 6  # the writer waits for room
        server.connected = True
        thread.join(10)
        assert not thread.is_alive()
        rec_b.wait(6, remote=True)
    assert [e.metadata["i"] for e in rec_b.events(remote=True)] == list(range(6))


def test_redis_down_at_start(stores, server, recorders):
    a, b = stores("a"), stores("b")
    rec_b = recorders(b)
    server.connected = False
    with RedisRelay(a, client(server), durable=True, progress=False, **FAST) as ra, \
            RedisRelay(b, client(server), durable=True, **FAST) as rb:
        a.set_metadata("early", {})
        assert not rb.wait_ready(0.2) and not rb.is_connected()
        server.connected = True
        assert rb.wait_ready(5) and ra.wait_ready(5)
        a.set_metadata("later", {})
        wait_for(lambda: "later" in [e.key for e in rec_b.events(remote=True)], what="later")
    # "early" arrives too if b positioned itself before a could publish it


# ------------------------------------------------------------ durable mode

def test_durable_resumes_after_last_id(stores, server, recorders):
    a, b = stores("a"), stores("b")
    rec_b = recorders(b)
    # batch_size=1: one stream entry per event, so the counts below are exact
    with RedisRelay(a, client(server), durable=True, progress=False, batch_size=1, **FAST):
        with RedisRelay(b, client(server), durable=True, **FAST) as rb:
            assert rb.wait_ready(5)
            for i in range(3):
                a.set_metadata(f"k{i}", {"i": i})
            rec_b.wait(3, remote=True)
        resume = rb.last_id
        for i in range(3, 8):
            a.set_metadata(f"k{i}", {"i": i})
        wait_for(lambda: client(server).xlen("kvstore") >= 8, what="stream holds 8")
        with RedisRelay(b, client(server), durable=True, since=resume, **FAST) as rb2:
            rec_b.wait(8, remote=True)
    assert [e.metadata["i"] for e in rec_b.events(remote=True)] == list(range(8))
    assert rb2.stats["gaps"] == 0


def test_durable_gap_older_than_stream_is_reported(stores, server, recorders, caplog):
    a, b = stores("a"), stores("b")
    rec_b = recorders(b)
    gaps: List[Any] = []
    raw = client(server)
    with RedisRelay(a, client(server), durable=True, progress=False, batch_size=1, **FAST):
        with RedisRelay(b, client(server), durable=True, **FAST) as rb:
            assert rb.wait_ready(5)
            a.set_metadata("k0", {"i": 0})
            rec_b.wait(1, remote=True)
        resume = rb.last_id
        for i in range(1, 21):
            a.set_metadata(f"k{i}", {"i": i})
        wait_for(lambda: raw.xlen("kvstore") >= 21, what="stream holds 21")
        raw.xtrim("kvstore", maxlen=5, approximate=False)  # what maxlen does to a long absence
        with relay_gap.connected_to(lambda s, **kw: gaps.append(kw["gap"]), sender=b), \
                RedisRelay(b, client(server), durable=True, since=resume, **FAST):
            rec_b.wait(6, remote=True)
    assert [e.metadata["i"] for e in rec_b.events(remote=True)] == [0, 16, 17, 18, 19, 20]
    assert len(gaps) == 1 and gaps[0].reason == "trimmed" and gaps[0].after_id == resume
    assert "no longer holds the entries after" in caplog.text


def test_start_stop_idempotent_and_threads_joined(stores, server):
    store = stores()
    before = [len(sig.receivers) for sig in ALL_SIGNALS]
    relay = RedisRelay(store, client(server), durable=True, **FAST)
    relay.stop()
    assert relay.start() is relay and relay.start() is relay
    names = {t.name for t in threading.enumerate()}
    assert any(n.startswith("kvstore-relay-send") for n in names)
    relay.stop()
    relay.stop()
    assert not any(t.name.startswith("kvstore-relay") for t in threading.enumerate())
    # nothing of the relay is left on the signals (stores skip events nobody hears)
    assert [len(sig.receivers) for sig in ALL_SIGNALS] == before
    with relay:  # restartable
        assert relay.wait_ready(5)
    assert [len(sig.receivers) for sig in ALL_SIGNALS] == before


def test_the_wait_grows_under_a_stream_and_falls_back_when_it_thins(stores, server):
    relay = RedisRelay(stores(), client(server), linger=0.001, max_linger=0.016)
    wait = relay.linger
    for _ in range(3):  # one event per linger: the wait stays at linger
        wait = relay._outbox.next_wait(wait, 1, 0.001)
        assert wait == 0.001
    waits = []
    for _ in range(6):  # ten events per ms: each wait twice the last, up to max_linger
        wait = relay._outbox.next_wait(wait, round(10 * wait / 0.001), wait)
        waits.append(wait)
    assert waits == [0.002, 0.004, 0.008, 0.016, 0.016, 0.016]
    # the stream thins to one event per ms: back to linger at once
    assert relay._outbox.next_wait(wait, 16, 0.016) == 0.001
    fixed = RedisRelay(stores(), client(server), linger=0.001, max_linger=0.001)
    assert fixed._outbox.next_wait(0.001, 100, 0.001) == 0.001
    # max_linger is never below linger
    assert RedisRelay(stores(), client(server), linger=0.01, max_linger=0.001).max_linger == 0.01


def test_a_stream_of_events_arrives_whole_and_in_order(stores, server, recorders):
    a, b = stores("a"), stores("b")
    rec_b = recorders(b)
    with RedisRelay(a, client(server), progress=False, **FAST) as ra, \
            RedisRelay(b, client(server), **FAST) as rb:
        assert ra.wait_ready(5) and rb.wait_ready(5)
        for i in range(2000):
            a.set_metadata(f"k{i % 50}", {"i": i})
        wait_for(lambda: len(rec_b.events(remote=True)) >= 2000, timeout=20, what="2000 events")
    assert [e.metadata["i"] for e in rec_b.events(remote=True)] == list(range(2000))
    assert ra.stats["published"] == 2000 and ra.stats["dropped"] == 0
    assert ra.stats["messages"] < 2000  # batched


def test_an_error_reply_is_retried_until_redis_takes_the_message(stores, server, recorders,
                                                                  caplog):
    a, b = stores("a"), stores("b")
    rec_b = recorders(b)
    raw = client(server)
    raw.set("blocked", b"not a stream")  # XADD onto it: WRONGTYPE
    with RedisRelay(a, client(server), channel="blocked", durable=True, progress=False,
                    **FAST) as ra, \
            RedisRelay(b, client(server), channel="blocked", durable=True, since="0",
                       **FAST) as rb:
        a.set_metadata("k", {"n": 1})
        wait_for(lambda: "WRONGTYPE" in caplog.text, what="the error logged")
        assert ra.stats["published"] == 0
        raw.delete("blocked")
        wait_for(lambda: [e.key for e in rec_b.events(remote=True)] == ["k"],
                 what="the event after the error cleared")
        assert rb.is_connected()
    assert ra.stats["published"] == 1


# ======================================================= real redis-server

@pytest.fixture(scope="session")
def redis_server():
    """One redis-server on 127.0.0.1 for the session (skipped if absent, unless CI=true)."""
    if redis_server_path() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is not on PATH and CI=true: install it "
                        "(apt-get install redis-server)")
        pytest.skip("redis-server is not on PATH (apt-get install redis-server); "
                    "set CI=true to make this a failure")
    server = RedisServer().start()
    yield server
    server.close()


def real_server(**kwargs: Any) -> RedisServer:
    """A dedicated server for a test that restarts it or needs a password."""
    if redis_server_path() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is not on PATH and CI=true")
        pytest.skip("redis-server is not on PATH (apt-get install redis-server)")
    return RedisServer(**kwargs)


def channel() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


def reap(proc: subprocess.Popen) -> None:
    """Kill ``proc`` if it is still running (a test failed or timed out), and wait for it."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def run_python(args: List[str], **kwargs: Any) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, *args], env=env, cwd=ROOT, text=True, **kwargs)


CHILD = textwrap.dedent("""
    import sys, threading
    import kvstore
    from kvstore.relay import RedisRelay

    url, channel, durable = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
    store = kvstore.MemoryStore(name="child")
    done = threading.Event()

    def on_event(event):
        if not event.remote:
            return
        if event.key.startswith("ping/"):
            store.set_metadata("pong/" + event.key[5:], {"seen": event.origin})
        elif event.key == "quit":
            done.set()

    with store, RedisRelay(store, url, channel=channel, durable=durable) as relay:
        with store.subscribe(on_event):
            if not relay.wait_ready(10):
                sys.exit("child: relay not ready")
            print("ready", store.origin, flush=True)
            ok = done.wait(30)
    print("bye", relay.stats["delivered"], flush=True)
    sys.exit(0 if ok else 1)
""")


@pytest.mark.parametrize("durable", [False, True], ids=["pubsub", "durable"])
def test_two_processes_exchange_events(durable, redis_server, stores, recorders):
    store = stores("parent")
    rec = recorders(store)
    ch = channel()
    with RedisRelay(store, redis_server.url, channel=ch, durable=durable) as relay:
        assert relay.wait_ready(10)
        child = run_python(["-c", CHILD, redis_server.url, ch, "1" if durable else "0"],
                           stdout=subprocess.PIPE)
        try:
            line = child.stdout.readline().split()
            assert line and line[0] == "ready", line
            child_origin = line[1]
            for i in range(20):
                store.set_metadata(f"ping/{i}", {"i": i})
            rec.wait(20, timeout=10, remote=True, cls=StoreSetEvent)
            store.set_metadata("quit", {})
            out, _ = child.communicate(timeout=15)
        finally:
            reap(child)
    assert child.returncode == 0, out
    remote = rec.events(remote=True)
    assert sorted(e.key for e in remote) == sorted(f"pong/{i}" for i in range(20))
    assert all(e.origin == child_origin and e.metadata == {"seen": store.origin} for e in remote)
    assert out.split()[:2] == ["bye", "21"]  # 20 pings and quit, each exactly once


@pytest.mark.parametrize("durable", [False, True], ids=["pubsub", "durable"])
def test_server_restart_mid_stream(durable, stores, recorders, caplog):
    caplog.set_level(logging.INFO, logger="kvstore.relay")
    # The durable case runs Redis with its append-only file, as one would in production,
    # so what it acknowledged survives the restart.
    extra = ["--appendonly", "yes", "--appendfsync", "always"] if durable else []
    total = 300
    with real_server(extra_args=extra) as srv:
        a, b = stores("a"), stores("b")
        rec_b = recorders(b)
        gaps: List[Any] = []
        slowest = [0.0]
        with relay_gap.connected_to(lambda s, **kw: gaps.append(kw["gap"]), sender=b), \
                RedisRelay(a, srv.url, durable=durable, progress=False, **FAST) as ra, \
                RedisRelay(b, srv.url, durable=durable, **FAST) as rb:
            assert ra.wait_ready(10) and rb.wait_ready(10)

            def writer() -> None:
                for i in range(total):
                    t = time.perf_counter()
                    a.set_metadata(f"k{i}", {"i": i})
                    slowest[0] = max(slowest[0], time.perf_counter() - t)
                    time.sleep(0.002)  # the workload's pace

            thread = threading.Thread(target=writer)
            thread.start()
            try:
                rec_b.wait(50, timeout=10, remote=True)
                srv.stop()
                wait_for(lambda: not rb.wait_ready(0), what="b notices the outage")
                srv.start()
            finally:
                thread.join(20)
            wait_for(lambda: rb.stats["subscriptions"] >= 2 and rb.wait_ready(0),
                     timeout=10, what="b back")
            wait_for(lambda: ra.stats["published"] >= total, timeout=10, what="a flushed")
            a.set_metadata("final", {"i": total})
            wait_for(lambda: any(e.key == "final" for e in rec_b.events(remote=True)),
                     timeout=10, what="final event")
    got = [e.metadata["i"] for e in rec_b.events(remote=True)]
    assert slowest[0] < 0.5  # the store never waited for Redis
    assert got == sorted(set(got)) and got[-1] == total  # in order, no duplicates
    if durable:
        assert got == list(range(total + 1)) and not gaps  # nothing lost
    else:
        # fire and forget: losses are possible, but never silent
        assert len(got) + sum(g.missed for g in gaps) == total + 1
    assert "cannot reach" in caplog.text and "reconnected" in caplog.text


def test_password_and_acl_user_via_url(stores, recorders, caplog):
    caplog.set_level(logging.INFO, logger="kvstore.relay")
    with real_server(password="pa55-word") as srv:
        raw = redis.Redis.from_url(srv.url)
        raw.execute_command("ACL", "SETUSER", "relayuser", "on", ">u5er-pw", "~*", "&*", "+@all")
        raw.close()
        acl_url = f"redis://relayuser:u5er-pw@127.0.0.1:{srv.port}/0"
        a, b, c = stores("a"), stores("b"), stores("c")
        rec_b = recorders(b)
        with RedisRelay(a, srv.url, progress=False) as ra, \
                RedisRelay(b, acl_url) as rb, \
                RedisRelay(c, f"redis://:b4d-pw-xyz@127.0.0.1:{srv.port}/0",
                           flush_timeout=0.2, **FAST) as rc:
            assert ra.wait_ready(10) and rb.wait_ready(10)
            a.set_metadata("k", {"v": 1})
            rec_b.wait(1, remote=True)
            c.set_metadata("c-key", {})  # the store works while its relay cannot log in
            assert c.exists("c-key") and not rc.wait_ready(0.3)
    assert [e.key for e in rec_b.events(remote=True)] == ["k"]
    assert "AuthenticationError" in caplog.text or "WRONGPASS" in caplog.text
    assert "pa55-word" not in caplog.text and "u5er-pw" not in caplog.text
    assert "b4d-pw-xyz" not in caplog.text


def test_tls_via_rediss_url(stores, recorders, caplog):
    caplog.set_level(logging.INFO, logger="kvstore.relay")
    with real_server(tls=True) as srv:
        assert srv.url.startswith("rediss://127.0.0.1:")
        a, b, c = stores("a"), stores("b"), stores("c")
        rec_b = recorders(b)
        with RedisRelay(a, srv.url, progress=False) as ra, RedisRelay(b, srv.url) as rb:
            assert ra.wait_ready(10) and rb.wait_ready(10)
            a.set_metadata("over-tls", {"n": 1})
            wait_for(lambda: [e.key for e in rec_b.events(remote=True)] == ["over-tls"],
                     what="the event over TLS")
        # Without the authority that signed the server's certificate, the server is not
        # trusted: the relay never connects, says why, and the store stays usable.
        untrusted = f"rediss://127.0.0.1:{srv.port}/0"
        with RedisRelay(c, untrusted, backoff=(0.05, 0.1), flush_timeout=0.2) as rc:
            assert not rc.wait_ready(1)
            c.set_metadata("still-usable", {})
            assert c.exists("still-usable")
            assert rc.stats["published"] == 0 and rc.stats["subscriptions"] == 0
        assert "certificate verify failed" in caplog.text.lower()
        # The TLS port does not speak plain Redis
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
            sock.sendall(b"PING\r\n")
            try:
                reply = sock.recv(64)
            except (TimeoutError, ConnectionResetError):
                reply = b""
        assert b"PONG" not in reply


def test_a_closed_publishing_connection_is_replaced_at_once(redis_server, stores, recorders,
                                                             caplog):
    caplog.set_level(logging.INFO, logger="kvstore.relay")
    ch = channel()
    a, b = stores("a"), stores("b")
    rec_b = recorders(b)
    with RedisRelay(a, redis_server.url, channel=ch, progress=False) as ra, \
            RedisRelay(b, redis_server.url, channel=ch) as rb:
        assert ra.wait_ready(10) and rb.wait_ready(10)
        a.set_metadata("one", {})
        wait_for(lambda: len(rec_b.events(remote=True)) == 1, what="the first event")
        # As a server's idle timeout would: close every connection that is not pub/sub
        raw = redis.Redis.from_url(redis_server.url)
        assert raw.client_kill_filter(_type="normal", skipme=True) >= 1
        raw.close()
        a.set_metadata("two", {})
        wait_for(lambda: len(rec_b.events(remote=True)) == 2, what="the second event")
    assert [e.key for e in rec_b.events(remote=True)] == ["one", "two"]
    assert "cannot reach" not in caplog.text  # replaced without a retry delay or a warning
    assert ra.stats["published"] == 2


def test_junk_on_real_server(redis_server, stores, recorders):
    b = stores("b")
    rec_b = recorders(b)
    ch = channel()
    raw = redis.Redis.from_url(redis_server.url)
    try:
        with RedisRelay(b, redis_server.url, channel=ch, secret="k") as rb:
            assert rb.wait_ready(10)
            for payload in JUNK[:6]:
                raw.publish(ch, payload)
            raw.publish(ch, wire(foreign_set("ok"), secret=b"k"))
            rec_b.wait(1, remote=True)
            wait_for(lambda: rb.stats["rejected"] >= 6, what="junk rejected")
    finally:
        raw.close()
    assert not _Boom.fired and [e.key for e in rec_b.events(remote=True)] == ["ok"]


def test_example_runs(redis_server):
    proc = run_python([os.path.join(ROOT, "examples", "redis_relay.py"), redis_server.url],
                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out, _ = proc.communicate(timeout=30)
    finally:
        reap(proc)
    assert proc.returncode == 0, out
    assert "worker: got 'job'" in out and "boss: got 'result'" in out
