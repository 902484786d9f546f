"""Relay hardening (issue 16), against a real redis-server on 127.0.0.1.

- Signed messages cannot be replayed: a captured copy published again is refused by the
  relay that delivered the original, by a relay started afterwards and by a receiver
  restarted after the publisher stopped (pub/sub and durable).
- A message refused for any reason leaves no state behind: a wrong-type message naming a
  real relay with a huge number does not make that relay's later events duplicates.
- A durable relay resuming from an id its stream no longer holds (FLUSHALL, a restart
  without the append-only file) reports the loss.

Each wait has a deadline. A "sentinel" is a genuine event sent after the messages under
test: once it is delivered, the relay has done all it will do with those before it.
"""

from __future__ import annotations

import json
import logging
from typing import Any, List

import pytest

redis = pytest.importorskip("redis")
pytest.importorskip("fakeredis")

import test_relay as base  # noqa: E402
from test_relay import channel, foreign_set, real_server, wait_for, wire  # noqa: E402

from kvstore.events import StoreSetEvent  # noqa: E402
from kvstore.relay import RedisRelay, relay_gap  # noqa: E402

# fixtures shared with test_relay
redis_server, stores, recorders = base.redis_server, base.stores, base.recorders

SECRET = b"replay-secret"
FAST = dict(poll_interval=0.05, backoff=(0.01, 0.1))


def capture(raw: Any, ch: str, durable: bool, pubsub: Any = None, count: int = 1) -> List[bytes]:
    """The first ``count`` messages published on ``ch`` (as an eavesdropper sees them)."""
    if durable:
        wait_for(lambda: raw.xlen(ch) >= count, what=f"{count} stream entries")
        return [fields[b"m"] for _, fields in raw.xrange(ch, count=count)]
    got: List[bytes] = []

    def more() -> bool:
        message = pubsub.get_message(timeout=0.05)
        if message is not None and message["type"] == "message":
            got.append(bytes(message["data"]))
        return len(got) >= count

    wait_for(more, what=f"{count} published messages")
    return got


def listen(raw: Any, ch: str) -> Any:
    pubsub = raw.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(ch)
    wait_for(lambda: pubsub.get_message(timeout=0.05) is None and pubsub.subscribed,
             what="subscribed")
    return pubsub


def replay(raw: Any, ch: str, payload: bytes, durable: bool) -> None:
    if durable:
        raw.xadd(ch, {"m": payload})
    else:
        raw.publish(ch, payload)


def keys(rec: Any) -> List[str]:
    return [e.key for e in rec.events(remote=True, cls=StoreSetEvent)]


def send_sentinel(store: Any, rec: Any) -> None:
    """A genuine event of ``store`` (a relay with the secret), and wait until it is heard."""
    store.set_metadata("sentinel", {})
    wait_for(lambda: "sentinel" in keys(rec), timeout=10, what="the sentinel")


@pytest.fixture
def raw(redis_server):
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


# ------------------------------------------------------------- replays, signed

@pytest.mark.parametrize("durable", [False, True], ids=["pubsub", "durable"])
def test_a_replay_is_refused_by_the_running_relay(durable, redis_server, raw, stores,
                                                  recorders):
    ch = channel()
    a, b = stores("a"), stores("b")
    rec_b = recorders(b)
    pubsub = None if durable else listen(raw, ch)
    opts = dict(channel=ch, durable=durable, secret=SECRET, progress=False, **FAST)
    with RedisRelay(a, redis_server.url, **opts) as ra, \
            RedisRelay(b, redis_server.url, **opts) as rb:
        assert ra.wait_ready(10) and rb.wait_ready(10)
        a.set_metadata("once", {})
        (copy,) = capture(raw, ch, durable, pubsub)
        wait_for(lambda: keys(rec_b) == ["once"], what="the original")
        for _ in range(3):
            replay(raw, ch, copy, durable)
        send_sentinel(a, rec_b)
        stats = rb.stats
    assert keys(rec_b) == ["once", "sentinel"]
    assert stats["duplicates"] == 3 and stats["gaps"] == 0


@pytest.mark.parametrize("durable", [False, True], ids=["pubsub", "durable"])
def test_a_replay_is_refused_by_a_relay_started_later(durable, redis_server, raw, stores,
                                                      recorders):
    ch = channel()
    a, c = stores("a"), stores("c")
    rec_c = recorders(c)
    pubsub = None if durable else listen(raw, ch)
    opts = dict(channel=ch, durable=durable, secret=SECRET, progress=False, **FAST)
    with RedisRelay(a, redis_server.url, **opts) as ra:
        assert ra.wait_ready(10)
        a.set_metadata("captured", {})
        (copy,) = capture(raw, ch, durable, pubsub)
        with RedisRelay(c, redis_server.url, **opts) as rc:  # started after the original
            assert rc.wait_ready(10)
            replay(raw, ch, copy, durable)
            send_sentinel(a, rec_c)
            stats = rc.stats
    assert keys(rec_c) == ["sentinel"]
    assert stats["delivered"] == 1 and stats["duplicates"] + stats["rejected"] == 1


@pytest.mark.parametrize("durable", [False, True], ids=["pubsub", "durable"])
def test_a_replay_is_refused_after_a_receiver_restart(durable, redis_server, raw, stores,
                                                      recorders):
    ch = channel()
    a, b, d = stores("a"), stores("b"), stores("d")
    rec_b = recorders(b)
    pubsub = None if durable else listen(raw, ch)
    opts = dict(channel=ch, durable=durable, secret=SECRET, progress=False, **FAST)
    with RedisRelay(b, redis_server.url, **opts) as rb:
        assert rb.wait_ready(10)
        with RedisRelay(a, redis_server.url, batch_size=1, **opts) as ra:
            assert ra.wait_ready(10)
            for i in range(3):
                a.set_metadata(f"k{i}", {})
            copies = capture(raw, ch, durable, pubsub, count=3)
            wait_for(lambda: len(keys(rec_b)) == 3, what="the originals")
        # the publisher has stopped; the receiver restarts (resuming, when durable)
    since = rb.last_id if durable else None
    with RedisRelay(b, redis_server.url, since=since, **opts) as rb2, \
            RedisRelay(d, redis_server.url, **opts) as rd:
        assert rb2.wait_ready(10) and rd.wait_ready(10)
        for copy in copies:
            replay(raw, ch, copy, durable)
        send_sentinel(d, rec_b)
        stats = rb2.stats
    assert keys(rec_b) == ["k0", "k1", "k2", "sentinel"]
    assert stats["delivered"] == 1 and stats["duplicates"] + stats["rejected"] == 3


def test_a_stale_copy_is_refused_even_by_a_relay_that_never_saw_it(stores, recorders):
    # The freshness window alone, on the inbox: the reference is the receiver's clock
    # (pub/sub) or the stream entry's time (durable).
    from kvstore.relay import wire
    from kvstore.relay.inbox import Inbox

    b = stores("b")
    rec_b = recorders(b)
    now = [1700000000.0]
    inbox = Inbox(None, b, "ch", SECRET, 1 << 20, replay_window=5, clock=lambda: now[0])
    events = [(1, foreign_set("k1")), (2, foreign_set("k2")), (3, foreign_set("k3"))]
    sent = wire.now_ms(lambda: now[0])
    m1, m2, m3 = (wire.pack([e], "p" * 32, SECRET, 1 << 20, sent)[0][0] for e in events)
    now[0] += 4.9
    inbox.handle(m1)  # 4.9 s old: fresh
    now[0] += 0.2
    inbox.handle(m2)  # 5.1 s old: stale
    inbox.handle(m3, entry_ms=sent + 4000)  # durable: added 4 s after it was sent
    inbox.handle(m3, entry_ms=sent + 6000)  # a copy added 6 s after: stale, and a duplicate
    assert keys(rec_b) == ["k1", "k3"]
    assert inbox.stats["rejected"] == 2 and inbox.stats["gaps"] == 1  # k2 was never delivered


# ------------------------------------------- a refused message leaves no state

@pytest.mark.parametrize("durable", [False, True], ids=["pubsub", "durable"])
def test_a_rejected_message_with_a_huge_number_leaves_no_state(durable, redis_server, raw,
                                                               stores, recorders, caplog):
    ch = channel()
    a, b = stores("a"), stores("b")
    rec_b = recorders(b)
    gaps: List[Any] = []
    opts = dict(channel=ch, durable=durable, progress=False, **FAST)
    with relay_gap.connected_to(lambda s, **kw: gaps.append(kw["gap"]), sender=b), \
            RedisRelay(a, redis_server.url, **opts) as ra, \
            RedisRelay(b, redis_server.url, **opts) as rb:
        assert ra.wait_ready(10) and rb.wait_ready(10)
        a.set_metadata("before", {})
        wait_for(lambda: keys(rec_b) == ["before"], what="the first event")
        # naming a's relay, a number far ahead, and an event of a type nobody sends
        bad = wire(foreign_set("bad"), relay=ra.relay_id, n=10**15)
        bad = bad.replace(b'"StoreSetEvent"', b'"EvilEvent"')
        replay(raw, ch, bad, durable)
        # ... or a good event followed by a bad one, in one message
        two = json.loads(wire(foreign_set("half"), relay=ra.relay_id, n=10**15))
        two["events"].append({"type": "StoreSetEvent", "origin": "o", "key": 5})
        replay(raw, ch, json.dumps(two).encode(), durable)
        wait_for(lambda: rb.stats["rejected"] >= 2, what="both rejected")
        for i in range(10):
            a.set_metadata(f"genuine{i}", {})
        wait_for(lambda: len(keys(rec_b)) >= 11, timeout=10, what="the 10 genuine events")
        stats = rb.stats
    assert keys(rec_b) == ["before"] + [f"genuine{i}" for i in range(10)]
    assert stats["rejected"] == 2 and stats["duplicates"] == 0 and gaps == []


# ------------------------------------------------------ durable resume, lost

def _resume_after(ch: str, url: str, a: Any, b: Any, rec_b: Any, lose: Any,
                  caplog: Any) -> tuple[List[Any], dict]:
    """b reads one event, stops; a writes 500; ``lose()`` loses them; a writes one more;
    b resumes with since=: what b hears, and the gaps it reports."""
    gaps: List[Any] = []
    opts = dict(channel=ch, durable=True, **FAST)
    with RedisRelay(a, url, progress=False, **opts) as ra:
        with RedisRelay(b, url, **opts) as rb:
            assert rb.wait_ready(10) and ra.wait_ready(10)
            a.set_metadata("first", {})
            wait_for(lambda: keys(rec_b) == ["first"], what="the first event")
        saved = rb.last_id
        for i in range(500):
            a.set_metadata(f"offline{i}", {})
        wait_for(lambda: ra.stats["published"] >= 501, timeout=10, what="500 published")
        lose()
        a.set_metadata("later", {})
        wait_for(lambda: ra.stats["published"] >= 502, timeout=20, what="later published")
        with relay_gap.connected_to(lambda s, **kw: gaps.append(kw["gap"]), sender=b), \
                RedisRelay(b, url, since=saved, **opts) as rb2:
            assert rb2.wait_ready(10)
            wait_for(lambda: "later" in keys(rec_b), timeout=10, what="the later event")
            stats = rb2.stats
    assert saved is not None and all(g.after_id == saved for g in gaps)
    return gaps, stats


def test_durable_resume_after_flushall_is_reported(redis_server, raw, stores, recorders,
                                                   caplog):
    caplog.set_level(logging.WARNING, logger="kvstore.relay")
    a, b = stores("a"), stores("b")
    rec_b = recorders(b)
    gaps, stats = _resume_after(channel(), redis_server.url, a, b, rec_b, raw.flushall,
                                caplog)
    assert keys(rec_b) == ["first", "later"]
    assert [g.reason for g in gaps] == ["missing"] and stats["gaps"] == 1
    assert "no longer holds entry" in caplog.text


def test_durable_resume_after_a_restart_without_aof_is_reported(stores, recorders, caplog):
    caplog.set_level(logging.WARNING, logger="kvstore.relay")
    a, b = stores("a"), stores("b")
    rec_b = recorders(b)
    with real_server() as srv:  # no persistence: a restart loses everything
        gaps, stats = _resume_after(channel(), srv.url, a, b, rec_b, srv.restart, caplog)
    assert keys(rec_b) == ["first", "later"]
    assert [g.reason for g in gaps] == ["missing"] and stats["gaps"] == 1
    assert "Redis restarted without its append-only file" in caplog.text


def test_a_running_durable_relay_reports_a_restart_without_aof(stores, recorders, caplog):
    caplog.set_level(logging.WARNING, logger="kvstore.relay")
    a, b = stores("a"), stores("b")
    rec_b = recorders(b)
    gaps: List[Any] = []
    ch = channel()
    opts = dict(channel=ch, durable=True, **FAST)
    with real_server() as srv, \
            relay_gap.connected_to(lambda s, **kw: gaps.append(kw["gap"]), sender=b), \
            RedisRelay(a, srv.url, progress=False, **opts) as ra, \
            RedisRelay(b, srv.url, **opts) as rb:
        assert ra.wait_ready(10) and rb.wait_ready(10)
        a.set_metadata("first", {})
        wait_for(lambda: keys(rec_b) == ["first"], what="the first event")
        srv.restart()
        wait_for(lambda: rb.stats["subscriptions"] >= 2, timeout=10, what="b back")
        a.set_metadata("later", {})
        wait_for(lambda: "later" in keys(rec_b), timeout=10, what="the later event")
    assert [g.reason for g in gaps] == ["missing"]


def test_durable_resume_with_nothing_lost_reports_nothing(redis_server, stores, recorders):
    a, b = stores("a"), stores("b")
    rec_b = recorders(b)
    gaps, stats = _resume_after(channel(), redis_server.url, a, b, rec_b, lambda: None, None)
    assert keys(rec_b) == ["first"] + [f"offline{i}" for i in range(500)] + ["later"]
    assert gaps == [] and stats["gaps"] == 0
