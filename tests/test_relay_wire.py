"""Golden tests of the relay's wire format: the exact bytes of its messages.

Peers of other releases read and write these bytes, so any change here (a field added to an
event, another key order, a space, another signature layout) breaks them. The bytes were
produced by the relay as released; a test here that fails means the format changed.

Issue 16 changed them deliberately: every message now carries ``"sent"`` (the publisher's
clock in ms), which signed messages need so that replayed copies can be refused. The
messages of the previous release (``V1_*``, without ``sent``) are kept below: unsigned, a
relay of this release still reads them; signed, it refuses them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

pytest.importorskip("redis")
fakeredis = pytest.importorskip("fakeredis")

import kvstore  # noqa: E402
from kvstore import signals  # noqa: E402
from kvstore.events import StoreDeleteEvent, StoreEvent, StoreSetEvent  # noqa: E402
from kvstore.relay import RedisRelay  # noqa: E402

RELAY_ID = "0123456789abcdef0123456789abcdef"
ORIGIN = "host:1:0123456789ab"
SECRET = b"golden-secret"
FAST = dict(poll_interval=0.05, backoff=(0.01, 0.1))
CLOCK = 1700000000.5  # the relays' wall clock in these tests: "sent" is 1700000000500
SENT = 1700000000500

# One StoreSetEvent (non-ASCII metadata, nested values), number 1 of relay RELAY_ID.
GOLDEN_UNSIGNED = (
    b'{"events":[{"key":"golden/key","metadata":{"a":"caf\\u00e9 \\u2603","b":[1,2.5,null,true]},'
    b'"origin":"host:1:0123456789ab","remote":false,"sequence":null,"timestamp":1700000000.25,'
    b'"type":"StoreSetEvent"}],"kvstore":1,"n":1,"relay":"0123456789abcdef0123456789abcdef",'
    b'"sent":1700000000500}'
)
# The same, signed with SECRET.
GOLDEN_SIGNED = (
    b'{"events":[{"key":"golden/key","metadata":{"a":"caf\\u00e9 \\u2603","b":[1,2.5,null,true]},'
    b'"origin":"host:1:0123456789ab","remote":false,"sequence":null,"timestamp":1700000000.25,'
    b'"type":"StoreSetEvent"}],"kvstore":1,"n":1,"relay":"0123456789abcdef0123456789abcdef",'
    b'"sent":1700000000500,'
    b'"sig":"6340516d416b57206768c8d5a40e68bec3aeb47ba38339e6e50db3a841b76182"}'
)
# Two events in one message, numbers 7 and 8, sent at 1700000002000, signed with SECRET.
GOLDEN_BATCH = (
    b'{"events":[{"key":"a","metadata":{"n":1},"origin":"host:1:0123456789ab","remote":false,'
    b'"sequence":null,"timestamp":1700000000.25,"type":"StoreSetEvent"},{"key":"a","metadata":'
    b'{"n":1},"origin":"host:1:0123456789ab","remote":false,"sequence":null,"timestamp":'
    b'1700000001.5,"type":"StoreDeleteEvent"}],"kvstore":1,"n":7,'
    b'"relay":"0123456789abcdef0123456789abcdef","sent":1700000002000,'
    b'"sig":"ed2bf94c8d2c884ff2023993e5eddaddae99b321809ba06c3ea9e3112b38b5b5"}'
)

# The previous release's messages (no "sent"): GOLDEN_UNSIGNED and GOLDEN_SIGNED as they were.
V1_UNSIGNED = (
    b'{"events":[{"key":"golden/key","metadata":{"a":"caf\\u00e9 \\u2603","b":[1,2.5,null,true]},'
    b'"origin":"host:1:0123456789ab","remote":false,"sequence":null,"timestamp":1700000000.25,'
    b'"type":"StoreSetEvent"}],"kvstore":1,"n":1,"relay":"0123456789abcdef0123456789abcdef"}'
)
V1_SIGNED = (
    b'{"events":[{"key":"golden/key","metadata":{"a":"caf\\u00e9 \\u2603","b":[1,2.5,null,true]},'
    b'"origin":"host:1:0123456789ab","remote":false,"sequence":null,"timestamp":1700000000.25,'
    b'"type":"StoreSetEvent"}],"kvstore":1,"n":1,"relay":"0123456789abcdef0123456789abcdef",'
    b'"sig":"15b2be58653420e88bb0712e2a8b744512447a6368b1b290a87d582b662d02f2"}'
)


def golden_event(store: Any) -> StoreSetEvent:
    return StoreSetEvent(store=store, origin=ORIGIN, timestamp=1700000000.25, key="golden/key",
                         metadata={"b": [1, 2.5, None, True], "a": "caf\u00e9 \u2603"})


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


@pytest.fixture
def server() -> Any:
    return fakeredis.FakeServer()


@pytest.fixture
def stores():
    made: list[Any] = []

    def make(origin: str | None = None) -> Any:
        store = kvstore.MemoryStore()
        if origin is not None:
            store.origin = origin
        store.connect()
        made.append(store)
        return store

    yield make
    for store in made:
        store.disconnect()


class Heard:
    """The remote StoreEvents one store sends."""

    def __init__(self) -> None:
        self.events: list[StoreEvent] = []
        self.lock = threading.Lock()

    def __call__(self, sender: Any, event: Any = None, **_: Any) -> None:
        if isinstance(event, StoreEvent) and event.remote:
            with self.lock:
                self.events.append(event)


def published(server: Any, store: Any, secret: bytes | None) -> bytes:
    """The bytes the relay publishes for golden_event(), as its first message."""
    raw = fakeredis.FakeRedis(server=server)
    pubsub = raw.pubsub()
    pubsub.subscribe("kvstore")
    assert pubsub.get_message(timeout=1)["type"] == "subscribe"
    relay = RedisRelay(store, fakeredis.FakeRedis(server=server), secret=secret, **FAST)
    relay.relay_id = RELAY_ID
    relay.clock = lambda: CLOCK
    with relay:
        assert relay.wait_ready(5)
        signals.store_set.send(store, event=golden_event(store))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            message = pubsub.get_message(timeout=0.05)
            if message is not None and message["type"] == "message":
                pubsub.close()
                return bytes(message["data"])
    raise AssertionError("nothing published")


def sentinel(secret: bytes | None) -> bytes:
    """A valid message of another relay, sent after the one under test: once it is delivered,
    the relay has done all it will do with the one before it."""
    envelope = {"events": [StoreSetEvent(origin="elsewhere:1:abc", key="sentinel").to_dict()],
                "kvstore": 1, "n": 1, "relay": "f" * 32, "sent": SENT + 5000}
    if secret is not None:
        body = json.dumps(envelope, sort_keys=True, separators=(",", ":")).encode()
        envelope["sig"] = hmac.new(secret, body, hashlib.sha256).hexdigest()
    return json.dumps(envelope).encode()


def received(server: Any, store: Any, payload: bytes, secret: bytes | None,
             relay_id: str | None = None) -> tuple[list[StoreEvent], dict[str, int]]:
    """What a relay of ``store`` delivers of ``payload``, and its stats for it alone."""
    heard = Heard()
    relay = RedisRelay(store, fakeredis.FakeRedis(server=server), secret=secret, **FAST)
    relay.clock = lambda: CLOCK  # started then: the golden messages are fresh
    if relay_id is not None:
        relay.relay_id = relay_id
    with relay, signals.store_set.connected_to(heard, sender=store), \
            signals.store_delete.connected_to(heard, sender=store):
        assert relay.wait_ready(5)
        raw = fakeredis.FakeRedis(server=server)
        raw.publish("kvstore", payload)
        raw.publish("kvstore", sentinel(secret))
        wait_for(lambda: any(e.key == "sentinel" for e in heard.events), what="the sentinel")
        stats = relay.stats
    assert heard.events[-1].key == "sentinel"
    stats["received"] -= 1
    stats["delivered"] -= 1
    return heard.events[:-1], stats


# ------------------------------------------------------------------- encoder

def test_an_unsigned_message_has_these_bytes(server, stores):
    assert published(server, stores(ORIGIN), None) == GOLDEN_UNSIGNED


def test_a_signed_message_has_these_bytes(server, stores):
    assert published(server, stores(ORIGIN), SECRET) == GOLDEN_SIGNED


# ------------------------------------------------------------------- decoder

@pytest.mark.parametrize("payload, secret", [(GOLDEN_UNSIGNED, None), (GOLDEN_SIGNED, SECRET),
                                             (GOLDEN_SIGNED, None)],
                         ids=["unsigned", "signed", "signed-to-a-relay-without-secret"])
def test_the_golden_message_is_accepted(server, stores, payload, secret):
    store = stores()
    events, stats = received(server, store, payload, secret)
    assert stats["delivered"] == 1 and stats["rejected"] == 0
    (event,) = events
    assert type(event) is StoreSetEvent and event.remote and event.store is store
    assert (event.key, event.origin, event.timestamp, event.sequence) == (
        "golden/key", ORIGIN, 1700000000.25, None)
    assert event.metadata == {"a": "caf\u00e9 \u2603", "b": [1, 2.5, None, True]}


def test_a_golden_batch_is_accepted_in_order(server, stores):
    events, stats = received(server, stores(), GOLDEN_BATCH, SECRET)
    assert stats["delivered"] == 2 and stats["rejected"] == 0 and stats["gaps"] == 0
    assert [(type(e), e.key, e.timestamp) for e in events] == [
        (StoreSetEvent, "a", 1700000000.25), (StoreDeleteEvent, "a", 1700000001.5)]


@pytest.mark.parametrize("payload, secret", [
    (GOLDEN_SIGNED.replace(b"golden/key", b"golden/kez"), SECRET),  # tampered
    (GOLDEN_SIGNED, b"another-secret"),
    (GOLDEN_UNSIGNED, SECRET),
], ids=["tampered", "another-secret", "unsigned"])
def test_a_changed_or_unsigned_golden_message_is_rejected(server, stores, payload, secret):
    events, stats = received(server, stores(), payload, secret)
    assert events == [] and stats["rejected"] == 1 and stats["delivered"] == 0


@pytest.mark.parametrize("payload, secret", [(GOLDEN_UNSIGNED, None), (GOLDEN_SIGNED, SECRET)],
                         ids=["unsigned", "signed"])
def test_a_relay_skips_its_own_golden_message(server, stores, payload, secret):
    events, stats = received(server, stores(), payload, secret, relay_id=RELAY_ID)
    assert events == [] and stats["received"] == 1
    assert stats["rejected"] == 0 and stats["delivered"] == 0


# ------------------------------------------------- the wire module, directly

def test_the_encoder_makes_the_golden_bytes(stores):
    from kvstore.relay import wire

    store = stores(ORIGIN)
    event = golden_event(store)
    assert wire.pack([(1, event)], RELAY_ID, None, 1 << 20, SENT) == [(GOLDEN_UNSIGNED, 1)]
    assert wire.pack([(1, event)], RELAY_ID, SECRET, 1 << 20, SENT) == [(GOLDEN_SIGNED, 1)]
    batch = [(7, StoreSetEvent(store=store, origin=ORIGIN, timestamp=1700000000.25, key="a",
                               metadata={"n": 1})),
             (8, StoreDeleteEvent(store=store, origin=ORIGIN, timestamp=1700000001.5, key="a",
                                  metadata={"n": 1}))]
    assert wire.pack(batch, RELAY_ID, SECRET, 1 << 20, SENT + 1500) == [(GOLDEN_BATCH, 2)]


def test_the_decoder_reads_the_golden_bytes():
    from kvstore.relay import wire

    message = wire.decode(GOLDEN_BATCH, SECRET)
    assert message is not None and (message.relay, message.first) == (RELAY_ID, 7)
    assert (message.sent, message.last) == (SENT + 1500, 8)
    assert [e["type"] for e in message.events] == ["StoreSetEvent", "StoreDeleteEvent"]
    assert wire.decode(GOLDEN_UNSIGNED).events[0]["key"] == "golden/key"
    # its own messages: None, whether signed or not, checked or not
    assert wire.decode(GOLDEN_SIGNED, SECRET, ignore=RELAY_ID) is None
    assert wire.decode(GOLDEN_UNSIGNED, ignore=RELAY_ID) is None
    with pytest.raises(wire.WireError, match="bad signature"):
        wire.decode(GOLDEN_SIGNED.replace(b'"n":1', b'"n":2'), SECRET)
    with pytest.raises(wire.WireError, match="unsigned"):
        wire.decode(GOLDEN_UNSIGNED, SECRET)


def test_a_signed_message_laid_out_otherwise_is_checked_against_its_canonical_form():
    from kvstore.relay import wire

    envelope = json.loads(GOLDEN_SIGNED)
    spaced = json.dumps(envelope, indent=1).encode()  # the same object, other bytes
    message = wire.decode(spaced, SECRET)
    assert message is not None and message.events == envelope["events"]
    envelope["n"] = 2
    with pytest.raises(wire.WireError, match="bad signature"):
        wire.decode(json.dumps(envelope).encode(), SECRET)


def test_the_signature_covers_the_canonical_object_without_sig():
    # The layout rule, checked independently of the encoder: sig = HMAC of the canonical
    # JSON of the object without "sig" (so "sent" is signed too).
    for golden in (GOLDEN_SIGNED, GOLDEN_BATCH, V1_SIGNED):
        envelope = json.loads(golden)
        sig = envelope.pop("sig")
        body = json.dumps(envelope, sort_keys=True, separators=(",", ":")).encode()
        assert hmac.new(SECRET, body, hashlib.sha256).hexdigest() == sig


# ------------------------------------------------ the previous release's messages

def test_an_unsigned_message_of_the_previous_release_is_accepted(server, stores):
    events, stats = received(server, stores(), V1_UNSIGNED, None)
    assert stats["delivered"] == 1 and stats["rejected"] == 0
    assert [e.key for e in events] == ["golden/key"]


def test_a_signed_message_of_the_previous_release_is_refused(server, stores, caplog):
    from kvstore.relay import wire

    assert wire.decode(V1_SIGNED, SECRET).sent is None  # its signature is fine
    events, stats = received(server, stores(), V1_SIGNED, SECRET)
    assert events == [] and stats["rejected"] == 1 and stats["delivered"] == 0
    assert 'without "sent"' in caplog.text


def test_the_golden_bytes_with_and_without_orjson(stores, monkeypatch):
    # orjson (optional) encodes and decodes when installed; the stdlib otherwise. The bytes
    # are the same either way, and so is what the decoder makes of them.
    from kvstore.relay import wire

    store = stores(ORIGIN)
    for backend in ({wire._orjson} if wire._orjson is None else {wire._orjson, None}):
        monkeypatch.setattr(wire, "_orjson", backend)
        assert wire.pack([(1, golden_event(store))], RELAY_ID, SECRET, 1 << 20, SENT) == [
            (GOLDEN_SIGNED, 1)]
        message = wire.decode(GOLDEN_BATCH, SECRET)
        assert message is not None and message.events == json.loads(GOLDEN_BATCH)["events"]
        # what orjson would write otherwise than the stdlib goes through the stdlib
        odd = [{"small": 5e-05, "tiny": 1e-07, "del": "\x7f", "text": "caf\u00e9", "big": 2**70}]
        assert wire._dumps(odd) == json.dumps(odd, sort_keys=True, separators=(",", ":"))
        with pytest.raises(ValueError):  # NaN is not JSON
            wire._loads(b"[NaN]")
