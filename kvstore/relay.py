"""Carry store events between processes and hosts through Redis (extra ``[redis]``).

A :class:`RedisRelay` joins one store to one Redis channel. While started it publishes the
events that this store instance makes, and sends the events that other relays publish on the
channel locally, with ``sender`` = this store and ``event.remote == True``::

    store = kvstore.MemoryStore()
    with store, RedisRelay(store, "redis://localhost:6379/0") as relay:
        store.subscribe(print)   # local and remote changes
        ...

Design
------
- A store operation never waits for the network: the signal receivers filter the event and
  put it on a bounded queue; a sender thread serialises and publishes it (pipelined). When
  the queue is full (Redis slow or down) ``on_full`` decides: ``"drop_oldest"`` (default,
  logged with a count), ``"block"`` (the writer waits for room) or ``"error"``
  (:class:`RelayQueueFull` is raised in the receiver; kvstore stores log a failing receiver
  and the write itself still succeeds, so this acts as drop-newest with a logged traceback).
- A receiver thread reads the channel (pub/sub, or a Redis Stream with ``durable=True``),
  validates every message and dispatches it. Both threads survive Redis going away: they
  reconnect with exponential backoff, re-subscribe, and log every change of state.
- Messages are JSON, never pickle. A message is one JSON object carrying one or more
  events (``StoreEvent.to_dict()``) of one relay::

      {"events": [{...}, {...}], "kvstore": 1, "n": 17, "relay": "<relay id>", "sig": "<hex>"}

  The events are numbered ``n``, ``n + 1``, ... per relay, so receivers drop duplicates (a
  publish retried after a connection error) and report missing events (:data:`relay_gap`).
  ``sig`` is present with ``secret=``: HMAC-SHA256 of the canonical JSON (sorted keys, no
  spaces, ASCII) of the object without ``sig``.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import json
import logging
import random
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from typing import Any, Deque, Dict, List, Optional, Tuple, Union

from blinker import Namespace

from . import signals
from ._keys import check_key
from .events import (
    StoreEvent,
    StoreKeyEvent,
    StoreProgressEndEvent,
    StoreProgressEvent,
    StoreProgressStartEvent,
)

__all__ = [
    "RedisRelay",
    "RelayGap",
    "RelayQueueFull",
    "relay_gap",
    "namespace",
    "WIRE_VERSION",
    "redact_url",
]

log = logging.getLogger("kvstore.relay")

INSTALL_HINT = "pip install 'kvstore[redis]'"

#: Version number carried by every message under ``"kvstore"``.
WIRE_VERSION = 1

namespace = Namespace()

relay_gap = namespace.signal(
    "relay-gap",
    doc="Events were lost before reaching this relay. Sent as "
        "``relay_gap.send(store, relay=relay, gap=RelayGap(...))``.",
)

# Only these event classes travel; anything else on the wire is a wrong schema.
_WIRE_TYPES = frozenset({
    "StoreSetEvent",
    "StoreUpdateEvent",
    "StoreDeleteEvent",
    "StoreProgressStartEvent",
    "StoreProgressStepEvent",
    "StoreProgressEndEvent",
    "StoreTransactionStartEvent",
    "StoreTransactionEndEvent",
})

_SIGNALS = (
    signals.store_set,
    signals.store_update,
    signals.store_delete,
    signals.progress_start,
    signals.progress_step,
    signals.progress_end,
    signals.transaction_start,
    signals.transaction_end,
)

_ON_FULL = ("drop_oldest", "block", "error")
_MAX_READ_ENTRIES = 128  # stream entries read at most at once
_MAX_TRACKED = 4096  # publishers (and progress operations) remembered at most
_PING_PAYLOAD = "kvstore-relay"


def _import_redis() -> Any:
    try:
        import redis
    except ImportError as exc:
        raise ImportError(f"kvstore.relay.RedisRelay needs redis-py: {INSTALL_HINT}") from exc
    return redis


class RelayQueueFull(RuntimeError):
    """The relay's queue is full and ``on_full="error"``: the event was not relayed."""


@dataclass(frozen=True)
class RelayGap:
    """A description of events lost before they reached a relay.

    Attributes
    ----------
    channel : the relay's channel (and stream key).
    reason : ``"trimmed"`` when the stream no longer holds entries after the last id read
        (durable mode: the relay was away longer than the stream keeps), or ``"sequence"``
        when events of one publisher are missing (pub/sub outage, a full queue at the
        publisher, an event too large to send, a server restart that lost unread entries).
    after_id : durable mode, the last stream id read before the gap.
    resumed_id : durable mode, the oldest id the stream still holds.
    publisher : for ``"sequence"``, the origin of the store whose events are missing.
    missed : number of events missing, when known.
    """

    channel: str
    reason: str
    after_id: Optional[str] = None
    resumed_id: Optional[str] = None
    publisher: Optional[str] = None
    missed: Optional[int] = None


def redact_url(url: str) -> str:
    """The URL without its password, fit for a log."""
    try:
        parts = urllib.parse.urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.rsplit("@", 1)[1]
        user = parts.username or ""
        return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))
    except ValueError:
        return "<redis url>"


def _describe(client: Any) -> str:
    """``host:port/db`` of a client, for logs (never its password)."""
    try:
        kwargs = client.connection_pool.connection_kwargs
    except AttributeError:
        return type(client).__name__
    where = kwargs.get("path") or f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"
    return f"{type(client).__name__}({where}/{kwargs.get('db', 0)})"


def _parse_id(value: Any) -> Tuple[int, int]:
    """A stream id ``"ms-seq"`` (str or bytes) as a comparable tuple."""
    if isinstance(value, bytes):
        value = value.decode("ascii")
    ms, _, seq = str(value).partition("-")
    return int(ms), int(seq or 0)


def _as_str(value: Any) -> str:
    return value.decode("ascii") if isinstance(value, bytes) else str(value)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# One encoder, built once: json.dumps with options builds a new one on every call.
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                            allow_nan=False)
_ENVELOPE_ROOM = 200  # bytes of a message that are not its events (envelope, signature)
_SIG_TAIL = len(',"sig":"') + 64 + len('"}')  # bytes after the relay id in a signed message


def _canonical(envelope: Dict[str, Any]) -> bytes:
    """The bytes a signature covers: sorted keys, no spaces, ASCII."""
    return _ENCODER.encode(envelope).encode("ascii")


class _Backoff:
    """Exponential backoff with jitter between ``low`` and ``high`` seconds."""

    def __init__(self, low: float, high: float) -> None:
        self.low = low
        self.high = high
        self.delay = low

    def next(self) -> float:
        delay = self.delay
        self.delay = min(self.high, self.delay * 2)
        return delay * random.uniform(0.75, 1.25)

    def reset(self) -> None:
        self.delay = self.low


class RedisRelay:
    """Relay a store's events to and from other processes through Redis.

    Parameters
    ----------
    store : the local store (any :class:`kvstore.AbstractStore`).
    redis : a redis-py client (``redis.Redis``, or a compatible one such as fakeredis), or a
        URL: ``redis://[user:password@]host:port/db``, ``rediss://`` for TLS, ``unix://``.
        A client made from a URL belongs to the relay and is closed by :meth:`stop`; it has
        socket timeouts and no hidden retries, so an outage is noticed and handled here.
    channel : the pub/sub channel, and in durable mode the key of the Redis Stream. Every
        relay on one channel must use the same ``durable`` and ``secret``.
    durable : False for pub/sub (fire and forget: a relay that is not connected misses what
        is published meanwhile); True for a Redis Stream (XADD with approximate MAXLEN,
        XREAD from the last id read), so a relay that was disconnected receives, in order,
        what it missed while the stream still holds it.
    secret : bytes or str. When given, every message is signed with HMAC-SHA256 and unsigned
        or forged messages are dropped.
    queue_size : events waiting to be published at most.
    on_full : what a store write does when the queue is full: ``"drop_oldest"`` (default;
        the oldest waiting event is dropped and counted in a logged warning; receivers
        report the gap), ``"block"`` (wait until there is room or the relay stops) or
        ``"error"`` (raise :class:`RelayQueueFull` in the signal receiver).
    progress : relay progress events (rate-limited); False relays modification and
        transaction events only.
    progress_interval : seconds between two relayed progress steps of one operation. The
        start, the end and the last step before the end are always relayed.
    progress_min_bytes : operations of a known size below this are not relayed at all
        (nobody draws a progress bar for them, and they cost three messages per write).
        The default is 1 MiB; 0 relays every operation.
    max_message_size : bytes; larger messages are neither sent nor accepted.
    maxlen : durable mode, approximate length the stream is trimmed to on every XADD.
    since : durable mode, where to start reading: None for events published from now on,
        ``"0"`` for everything the stream holds, or a stream id (e.g. a previous relay's
        :attr:`last_id`) to resume after it.
    batch_size : events published at most in one go (one message when they fit, else
        several of at most ``max_message_size``). A durable relay reads at most
        ``min(batch_size, 128)`` stream entries (messages) at once.
    linger : seconds the sender waits, after publishing while events keep coming (a batch
        of several, or one less than two lingers after the last), before it takes the next
        ones, so the events of a busy store travel together: fewer messages cost the
        writing thread less, each event may wait that long. A lone event after a quiet
        spell leaves at once; 0 never waits.
    max_linger : seconds the wait grows to under a sustained stream: while more than two
        events arrive per ``linger``, each wait is twice the last, up to this; it is back
        to ``linger`` as soon as the stream thins. It bounds how long an event of a busy
        store waits; ``max_linger=linger`` keeps the wait fixed.
    poll_interval : seconds; how often the receiver looks at the stop flag (pub/sub read
        timeout, XREAD BLOCK time).
    backoff : (first, largest) delay in seconds between reconnection attempts.
    health_check_interval : seconds of silence after which the pub/sub connection is
        PINGed; a connection that answers nothing for three intervals is replaced.
    flush_timeout : seconds :meth:`stop` gives the sender to publish what is still queued.

    Raises
    ------
    ImportError : redis-py is not installed (``pip install 'kvstore[redis]'``).
    ValueError, TypeError : a bad option or URL.

    Events
    ------
    Sends the events received from other relays on the store's signals, with
    ``event.remote == True``; sends :data:`relay_gap` when it knows events were lost.
    """

    def __init__(
        self,
        store: Any,
        redis: Any,
        *,
        channel: str = "kvstore",
        durable: bool = False,
        secret: Union[bytes, str, None] = None,
        queue_size: int = 10000,
        on_full: str = "drop_oldest",
        progress: bool = True,
        progress_interval: float = 0.25,
        progress_min_bytes: int = 1 << 20,
        max_message_size: int = 1 << 20,
        maxlen: int = 10000,
        since: Optional[str] = None,
        batch_size: int = 2048,
        linger: float = 0.001,
        max_linger: float = 0.02,
        poll_interval: float = 0.2,
        backoff: Tuple[float, float] = (0.05, 5.0),
        health_check_interval: float = 5.0,
        flush_timeout: float = 2.0,
    ) -> None:
        self._redis = _import_redis()
        if not isinstance(channel, str) or not channel:
            raise ValueError("channel must be a non-empty str")
        if on_full not in _ON_FULL:
            raise ValueError(f"on_full must be one of {_ON_FULL}, not {on_full!r}")
        if int(queue_size) < 1 or int(batch_size) < 1 or int(max_message_size) < 1024:
            raise ValueError("queue_size and batch_size must be >= 1, max_message_size >= 1024")
        if isinstance(secret, str):
            secret = secret.encode("utf-8")
        if secret is not None and (not isinstance(secret, bytes) or not secret):
            raise TypeError("secret must be non-empty bytes or str")
        if since is not None:
            _parse_id(since)  # ValueError early for a malformed id
        self.store = store
        self.channel = channel
        self.durable = bool(durable)
        self.on_full = on_full
        self.progress = bool(progress)
        self.progress_interval = float(progress_interval)
        self.progress_min_bytes = int(progress_min_bytes)
        self.max_message_size = int(max_message_size)
        self.maxlen = int(maxlen)
        self.batch_size = int(batch_size)
        # Stream entries are whole messages (up to max_message_size each): read fewer.
        self._read_count = min(self.batch_size, _MAX_READ_ENTRIES)
        self.linger = float(linger)
        self.max_linger = max(self.linger, float(max_linger))
        self.poll_interval = float(poll_interval)
        self.health_check_interval = float(health_check_interval)
        self.flush_timeout = float(flush_timeout)
        self._backoff = (float(backoff[0]), float(backoff[1]))
        self._secret = secret
        self._origin = store.origin
        #: id of this relay, carried by every message it publishes.
        self.relay_id = uuid.uuid4().hex
        self._own_marker = b'"relay":"%s"' % self.relay_id.encode("ascii")

        if isinstance(redis, str):
            self._url = redact_url(redis)
            self._client = self._redis.Redis.from_url(
                redis,
                socket_timeout=5.0,
                socket_connect_timeout=5.0,
                socket_keepalive=True,
                # No hidden retries: an outage surfaces at once and our backoff handles it.
                retry=self._redis.retry.Retry(self._redis.backoff.NoBackoff(), 0),
            )
            self._owns_client = True
        else:
            if not (hasattr(redis, "publish") and hasattr(redis, "pubsub")):
                raise TypeError("redis must be a redis-py client or a redis:// URL")
            kwargs = getattr(getattr(redis, "connection_pool", None), "connection_kwargs", {})
            if kwargs.get("decode_responses"):
                # Bytes that are not UTF-8 (a stray pickle) would then fail inside redis-py
                # and, in durable mode, be read again and again.
                raise ValueError("RedisRelay needs a client with decode_responses=False")
            self._url = _describe(redis)
            self._client = redis
            self._owns_client = False
        timeout = self._socket_timeout()
        block = self.poll_interval if timeout is None else min(self.poll_interval, timeout / 2)
        self._block_ms = max(1, int(block * 1000))

        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)
        self._not_full = threading.Condition(self._lock)
        self._queue: Deque[Tuple[int, StoreEvent]] = collections.deque()
        self._queue_size = int(queue_size)
        self._seq = 0
        self._stopping = False
        self._abort = threading.Event()
        self._stop_recv = threading.Event()
        self._ready = threading.Event()
        self._ops: "collections.OrderedDict[str, List[Any]]" = collections.OrderedDict()
        self._ops_lock = threading.Lock()
        self._seen: "collections.OrderedDict[str, int]" = collections.OrderedDict()
        self._last_id: Optional[str] = None if since is None else _as_str(since)
        self._threads: List[threading.Thread] = []
        self._started = False
        self._send_up: Optional[bool] = None
        self._recv_up: Optional[bool] = None
        self._last_drop_log = 0.0
        self._pub_conn: Any = None  # the sender thread's connection
        self._idle = False  # the sender waits for events (under _lock)
        self._stats = collections.Counter({
            "published": 0, "messages": 0, "received": 0, "delivered": 0, "rejected": 0,
            "duplicates": 0, "dropped": 0, "gaps": 0, "subscriptions": 0, "reconnects": 0,
        })

    # ------------------------------------------------------------ public API

    @property
    def last_id(self) -> Optional[str]:
        """Durable mode: id of the last stream entry read (pass it as ``since=`` to resume)."""
        return self._last_id

    @property
    def stats(self) -> Dict[str, int]:
        """Counters (a copy).

        published (events), messages (sent to Redis), received (messages), delivered
        (events sent locally), rejected, duplicates, dropped (queue full), gaps,
        subscriptions (times the receiver subscribed or positioned itself), reconnects.
        """
        with self._lock:
            return dict(self._stats)

    def is_started(self) -> bool:
        """Whether :meth:`start` was called and :meth:`stop` not yet."""
        return self._started

    @property
    def running(self) -> bool:
        """Same as :meth:`is_started`: a relay never stops on its own (it reconnects)."""
        return self._started

    def is_connected(self) -> bool:
        """Whether the receiver is subscribed and the sender's last attempt succeeded."""
        return self._ready.is_set() and self._send_up is not False

    def wait_ready(self, timeout: Optional[float] = None) -> bool:
        """Wait until the receiver is subscribed (pub/sub) or positioned (durable).

        Parameters
        ----------
        timeout : seconds; None waits as long as it takes.

        Returns
        -------
        bool : whether the relay is ready.
        """
        return self._ready.wait(timeout)

    def start(self) -> "RedisRelay":
        """Start relaying. Returns at once, even if Redis is unreachable (it retries).

        Returns
        -------
        RedisRelay : self.

        Events
        ------
        From now on the store's own events are published and remote ones sent locally.
        """
        if self._started:
            return self
        with self._lock:
            self._stopping = False
        self._abort.clear()
        self._stop_recv.clear()
        self._ready.clear()
        suffix = f"{self.channel}:{self.relay_id[:6]}"
        self._threads = [
            threading.Thread(target=self._send_loop, name=f"kvstore-relay-send[{suffix}]",
                             daemon=True),
            threading.Thread(target=self._recv_loop, name=f"kvstore-relay-recv[{suffix}]",
                             daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        if self.progress:
            # Smaller operations of a known size are not relayed: the store need not even
            # build their progress events when no one else listens.
            self.store._progress_gates[self.relay_id] = self.progress_min_bytes
        for sig in _SIGNALS:
            if sig in (signals.progress_start, signals.progress_step, signals.progress_end) \
                    and not self.progress:
                continue
            sig.connect(self._on_event, sender=self.store, weak=False)
        self._started = True
        log.info("relay %s: started on %s channel %r (%s)", self.relay_id[:6], self._url,
                 self.channel, "stream" if self.durable else "pub/sub")
        return self

    def stop(self) -> None:
        """Stop relaying and join the relay's threads.

        Events still queued are published for up to ``flush_timeout`` seconds, then dropped
        (logged). A client made from a URL is closed. Safe to call more than once.
        """
        if not self._started:
            return
        for sig in _SIGNALS:
            # Not disconnect(..., sender=store): blinker then keeps the receiver in
            # sig.receivers (a strong reference, and stores would go on building events
            # for nobody). This bound method is ours alone, so disconnect it everywhere.
            sig.disconnect(self._on_event)
        self.store._progress_gates.pop(self.relay_id, None)
        with self._lock:
            self._stopping = True
            self._not_empty.notify_all()
            self._not_full.notify_all()
        self._stop_recv.set()
        sender, receiver = self._threads
        sender.join(self.flush_timeout)
        if sender.is_alive():
            self._abort.set()
            with self._lock:
                self._not_empty.notify_all()
            sender.join()
        receiver.join()
        self._threads = []
        self._started = False
        self._ready.clear()
        if self._owns_client:
            try:
                self._client.close()
            except Exception:  # closing a broken connection must not fail stop()
                log.debug("closing the Redis client failed", exc_info=True)
        log.info("relay %s: stopped (%s)", self.relay_id[:6],
                 ", ".join(f"{k}={v}" for k, v in sorted(self.stats.items())))

    def __enter__(self) -> "RedisRelay":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        mode = "durable" if self.durable else "pub/sub"
        return f"<RedisRelay {self.channel!r} {mode} {self._url}>"

    # ------------------------------------------------------- publishing side

    def _on_event(self, sender: Any, event: Any = None, **_: Any) -> None:
        # Runs in the store's thread: filter and enqueue, nothing that touches the network.
        if not isinstance(event, StoreEvent) or event.remote or event.origin != self._origin:
            return
        if isinstance(event, StoreProgressEvent):
            events = self._gate_progress(event)
            if events:
                self._enqueue(events)
            return
        self._enqueue((event,))

    def _gate_progress(self, event: StoreProgressEvent) -> List[StoreEvent]:
        """Rate-limit one operation's steps; start, end and the last step always pass.

        Operations of a known size below ``progress_min_bytes`` are not relayed at all.
        """
        now = time.monotonic()
        op = event.operation_id
        with self._ops_lock:
            if isinstance(event, StoreProgressStartEvent):
                skip = 0 <= event.steps < self.progress_min_bytes
                self._ops[op] = [now, None, skip]
                while len(self._ops) > _MAX_TRACKED:
                    self._ops.popitem(last=False)
                return [] if skip else [event]
            if isinstance(event, StoreProgressEndEvent):
                state = self._ops.pop(op, None)
                if state is None:
                    return [event]
                if state[2]:
                    return []
                return [event] if state[1] is None else [state[1], event]
            state = self._ops.get(op)
            if state is None:  # the operation started before the relay did
                self._ops[op] = [now, None, False]
                return [event]
            if state[2]:
                return []
            if now - state[0] >= self.progress_interval:
                state[0], state[1] = now, None
                return [event]
            state[1] = event  # held: sent later if it turns out to be the last one
            return []

    def _enqueue(self, events: Any) -> None:
        with self._lock:
            for event in events:
                while len(self._queue) >= self._queue_size and not self._stopping:
                    if self.on_full == "drop_oldest":
                        self._queue.popleft()
                        self._note_drop()
                    elif self.on_full == "error":
                        self._stats["dropped"] += 1
                        raise RelayQueueFull(
                            f"relay queue full ({self._queue_size} events waiting): "
                            "Redis is slow or unreachable; event not relayed")
                    else:
                        self._not_full.wait(1.0)
                if self._stopping:
                    return
                self._seq += 1
                self._queue.append((self._seq, event))
            if self._idle:  # else the sender comes back for the queue by itself
                self._not_empty.notify()

    def _note_drop(self) -> None:
        # Called with the lock held: count every drop, log at most every 5 s.
        self._stats["dropped"] += 1
        now = time.monotonic()
        if now - self._last_drop_log >= 5.0:
            self._last_drop_log = now
            log.warning("relay %s: queue full (Redis slow or unreachable): %d events dropped "
                        "so far (on_full='drop_oldest')", self.relay_id[:6], self._stats["dropped"])

    def _pack(self, batch: List[Tuple[int, StoreEvent]]) -> List[Tuple[bytes, int]]:
        """Messages (payload, number of events) carrying a batch, as few as fit.

        Each message holds events with consecutive numbers starting at its ``n``. An event
        that cannot be encoded or is too large is logged and left out; receivers see the
        hole in the numbering and report it.
        """
        messages: List[Tuple[bytes, int]] = []
        limit = self.max_message_size - _ENVELOPE_ROOM

        def message(events_json: str, first: int, count: int) -> None:
            # Built by hand but byte-for-byte the canonical form (keys sorted): the
            # receiver checks signatures by encoding the parsed object again.
            body = ('{"events":%s,"kvstore":%d,"n":%d,"relay":"%s"}' % (
                events_json, WIRE_VERSION, first, self.relay_id)).encode("ascii")
            if self._secret is not None:
                sig = hmac.new(self._secret, body, hashlib.sha256).hexdigest().encode("ascii")
                body = body[:-1] + b',"sig":"' + sig + b'"}'
            messages.append((body, count))

        # The usual case: consecutive numbers, and all of it fits in one message. One
        # encoder call for the whole batch costs far less than one per event.
        first = batch[0][0]
        if batch[-1][0] - first == len(batch) - 1:
            try:
                whole = _ENCODER.encode([event.to_dict() for _, event in batch])
            except (TypeError, ValueError):
                whole = None
            if whole is not None and len(whole) <= limit:
                message(whole, first, len(batch))
                return messages

        parts: List[str] = []
        expected = size = 0

        def flush() -> None:
            if parts:
                message("[" + ",".join(parts) + "]", first, len(parts))
                parts.clear()

        for seq, event in batch:
            try:
                text: Optional[str] = _ENCODER.encode(event.to_dict())
            except (TypeError, ValueError):
                log.exception("relay %s: cannot encode %s as JSON; not relayed",
                              self.relay_id[:6], type(event).__name__)
                text = None
            if text is not None and len(text) > limit:
                log.error("relay %s: %s of key %r is %d bytes as JSON, more than "
                          "max_message_size=%d allows; not relayed", self.relay_id[:6],
                          type(event).__name__, getattr(event, "key", None), len(text),
                          self.max_message_size)
                text = None
            if text is None:
                flush()
                continue
            if parts and (seq != expected or size + len(text) + 1 > limit):
                flush()
            if not parts:
                first, size = seq, 0
            parts.append(text)
            size += len(text) + 1
            expected = seq + 1
        flush()
        return messages

    def _send_loop(self) -> None:
        backoff = _Backoff(*self._backoff)
        unsent = 0
        last_sent = 0.0
        wait = self.linger
        while True:
            with self._lock:
                while not self._queue and not self._stopping:
                    self._idle = True
                    self._not_empty.wait()
                    self._idle = False
                if not self._queue or self._abort.is_set():
                    unsent += len(self._queue)
                    self._queue.clear()
                    break
                batch = [self._queue.popleft()
                         for _ in range(min(self.batch_size, len(self._queue)))]
                self._not_full.notify_all()
            messages = self._pack(batch)
            # Retry the same messages, in order, until Redis takes them or stop() gives up.
            while messages:
                try:
                    self._publish([payload for payload, _ in messages])
                except Exception as exc:
                    delay = backoff.next()
                    self._set_state("send", False, exc, delay)
                    if self._abort.wait(delay):
                        unsent += sum(count for _, count in messages)
                        break
                    continue
                backoff.reset()
                self._set_state("send", True)
                with self._lock:
                    self._stats["published"] += sum(count for _, count in messages)
                    self._stats["messages"] += len(messages)
                now = time.monotonic()
                interval, last_sent = now - last_sent, now
                wait = self._next_wait(wait, len(batch), interval)
                # A lone event after a quiet spell, or a backlog of a whole batch, goes
                # at once; events that keep coming gather for the next message.
                busy = len(batch) > 1 or interval < 2 * self.linger
                if (busy and wait > 0 and len(self._queue) < self.batch_size
                        and not self._stopping):
                    time.sleep(wait)
                break
        self._release_pub_conn()
        if unsent:
            log.warning("relay %s: stopped with %d events unpublished (Redis unreachable for "
                        "flush_timeout=%.1fs)", self.relay_id[:6], unsent, self.flush_timeout)

    def _next_wait(self, wait: float, count: int, interval: float) -> float:
        """How long the sender gathers events next, after sending ``count`` events that
        came in over ``interval`` seconds while it waited ``wait``.

        Each message costs the store's thread hand-offs of the interpreter lock to this
        thread and the receiver's. While more than two events arrive per ``linger``, the
        wait doubles up to ``max_linger``; it is back to ``linger`` as soon as the stream
        thins.
        """
        if count * self.linger > 2 * interval:
            return min(self.max_linger, 2 * wait)
        return self.linger

    def _publish(self, payloads: List[bytes]) -> None:
        """Send the messages in one write and read every reply; raise on any failure."""
        commands: List[Tuple[Any, ...]]
        if self.durable:
            commands = [("XADD", self.channel, "MAXLEN", "~", self.maxlen, "*", "m", payload)
                        for payload in payloads]
        else:
            commands = [("PUBLISH", self.channel, payload) for payload in payloads]
        pool = getattr(self._client, "connection_pool", None)
        if pool is None:  # a client without a pool of connections: its own pipeline
            pipe = self._client.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            pipe.execute()
            return
        # One connection kept by the sender thread, spoken to directly: the client's
        # per-command machinery (pool checkout, retry wrapper, metrics) costs more CPU
        # than the write itself, and every bit of it is taken from the store's thread.
        for attempt in (1, 2):
            conn = self._pub_conn
            kept = conn is not None
            if conn is None:
                try:
                    conn = pool.get_connection()
                except TypeError:  # redis-py before 5.3 wants a command name
                    conn = pool.get_connection("PUBLISH")
                self._pub_conn = conn
            try:
                conn.send_packed_command(conn.pack_commands(commands), check_health=False)
                error: Optional[Exception] = None
                for _ in commands:
                    try:
                        conn.read_response()
                    except self._redis.exceptions.ResponseError as exc:  # connection is fine
                        error = error or exc
            except self._redis.exceptions.ConnectionError:
                self._release_pub_conn(broken=True)
                if kept and attempt == 1:
                    continue  # closed while idle (server timeout, CLIENT KILL): a new one
                raise
            except BaseException:
                self._release_pub_conn(broken=True)
                raise
            if error is not None:
                raise error
            return

    def _release_pub_conn(self, broken: bool = False) -> None:
        conn, self._pub_conn = self._pub_conn, None
        if conn is None:
            return
        try:
            if broken:
                conn.disconnect()
            self._client.connection_pool.release(conn)
        except Exception:  # a connection that cannot even be closed is simply dropped
            log.debug("releasing the publishing connection failed", exc_info=True)

    # -------------------------------------------------------- receiving side

    def _recv_loop(self) -> None:
        backoff = _Backoff(*self._backoff)
        while not self._stop_recv.is_set():
            try:
                if self.durable:
                    self._read_stream(backoff)
                else:
                    self._read_pubsub(backoff)
            except Exception as exc:
                self._ready.clear()
                if self._stop_recv.is_set():
                    break
                delay = backoff.next()
                self._set_state("receive", False, exc, delay)
                self._stop_recv.wait(delay)
        self._ready.clear()

    def _became_ready(self, backoff: _Backoff) -> None:
        backoff.reset()
        with self._lock:
            self._stats["subscriptions"] += 1
        if self._recv_up:
            log.info("relay %s: re-subscribed to %r", self.relay_id[:6], self.channel)
        self._set_state("receive", True)
        self._ready.set()

    def _read_pubsub(self, backoff: _Backoff) -> None:
        pubsub = self._client.pubsub()
        try:
            pubsub.subscribe(self.channel)
            last_rx = last_ping = time.monotonic()
            interval = self.health_check_interval
            while not self._stop_recv.is_set():
                message = pubsub.get_message(timeout=self.poll_interval)
                now = time.monotonic()
                if message is None:
                    if now - last_rx >= 3 * interval:
                        raise self._redis.exceptions.ConnectionError(
                            f"no answer to PING for {3 * interval:.0f}s")
                    if now - last_rx >= interval and now - last_ping >= interval:
                        pubsub.ping(_PING_PAYLOAD)
                        last_ping = now
                    continue
                last_rx = now
                kind = message.get("type")
                if kind in ("message", b"message"):
                    self._handle(message.get("data"))
                elif kind in ("subscribe", b"subscribe"):
                    # Also seen when redis-py reconnects and re-subscribes by itself.
                    self._became_ready(backoff)
        finally:
            try:
                pubsub.close()
            except Exception:
                log.debug("closing the pub/sub connection failed", exc_info=True)

    def _read_stream(self, backoff: _Backoff) -> None:
        client = self._client
        if self._last_id is None:
            newest = client.xrevrange(self.channel, count=1)
            self._last_id = _as_str(newest[0][0]) if newest else "0-0"
            lagging = False
        else:
            lagging = True  # resuming: check the stream still reaches back to last_id
        self._became_ready(backoff)
        while not self._stop_recv.is_set():
            after = self._last_id
            if lagging:
                # Atomically: what the stream has lost, and what it still has after us.
                pipe = client.pipeline(transaction=True)
                pipe.xinfo_stream(self.channel)
                pipe.xread({self.channel: after}, count=self._read_count)
                info, response = pipe.execute(raise_on_error=False)
                for result in (info, response):
                    if isinstance(result, self._redis.exceptions.ConnectionError):
                        raise result
                if isinstance(response, Exception):
                    raise response
                if isinstance(info, dict):
                    self._check_trimmed(info, after)
            else:
                response = client.xread({self.channel: after}, count=self._read_count,
                                        block=self._block_ms)
            entries: List[Any] = []
            for _, items in response or []:
                entries.extend(items)
            for entry_id, fields in entries:
                self._last_id = _as_str(entry_id)
                data = None
                if isinstance(fields, dict):
                    data = fields.get(b"m", fields.get("m"))
                self._handle(data)
            lagging = len(entries) >= self._read_count

    def _check_trimmed(self, info: Dict[Any, Any], after: str) -> None:
        """Say so when the stream dropped entries newer than ``after``."""
        info = {_as_str(k): v for k, v in info.items()}
        after_t = _parse_id(after)
        if after_t == (0, 0):
            return
        first = info.get("first-entry")
        first_id = _as_str(first[0]) if first else None
        max_deleted = info.get("max-deleted-entry-id")
        trusted = max_deleted is not None and (
            _parse_id(max_deleted) != (0, 0) or info.get("entries-added") == info.get("length"))
        if trusted:
            lost = _parse_id(max_deleted) > after_t
        else:  # Redis < 7 (or a fake): only the oldest entry left tells
            lost = first_id is not None and _parse_id(first_id) > after_t
        if lost:
            self._gap(RelayGap(channel=self.channel, reason="trimmed", after_id=after,
                               resumed_id=first_id))

    def _gap(self, gap: RelayGap) -> None:
        with self._lock:
            self._stats["gaps"] += 1
        if gap.reason == "trimmed":
            log.warning("relay %s: stream %r no longer holds the entries after %s (trimmed to "
                        "maxlen; it now starts at %s): events were lost", self.relay_id[:6],
                        self.channel, gap.after_id, gap.resumed_id)
        else:
            log.warning("relay %s: %s events of publisher %s on %r were lost",
                        self.relay_id[:6], gap.missed, gap.publisher, self.channel)
        try:
            relay_gap.send(self.store, relay=self, gap=gap)
        except Exception:
            log.exception("a receiver of relay_gap raised")

    def _reject(self, reason: str, *args: Any) -> None:
        with self._lock:
            self._stats["rejected"] += 1
        log.warning("relay %s: message dropped: " + reason, self.relay_id[:6], *args)

    def _handle(self, data: Any) -> None:
        """Validate one message and deliver its event; never raises."""
        try:
            self._handle_message(data)
        except Exception:
            with self._lock:
                self._stats["rejected"] += 1
            log.exception("relay %s: message dropped: unexpected error", self.relay_id[:6])

    def _handle_message(self, data: Any) -> None:
        with self._lock:
            self._stats["received"] += 1
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogatepass")
        if not isinstance(data, (bytes, bytearray)):
            return self._reject("not a string (%s)", type(data).__name__)
        if len(data) > self.max_message_size:
            return self._reject("%d bytes, more than max_message_size=%d", len(data),
                                self.max_message_size)
        # Our own messages come back to us: know them by their tail (the envelope ends
        # with our id, then the signature if any) without parsing them. A message that
        # only claims to be ours would be dropped after parsing just the same.
        end = len(data) - _SIG_TAIL
        if data.endswith(self._own_marker + b"}") or (
                data.endswith(self._own_marker, 0, end) and data.startswith(b',"sig":"', end)):
            return
        try:
            envelope = json.loads(bytes(data).decode("utf-8"), parse_constant=_reject_constant)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            return self._reject("not JSON (%s)", str(exc)[:80])
        if not isinstance(envelope, dict) or envelope.get("kvstore") != WIRE_VERSION:
            return self._reject("not a kvstore message (version %d)", WIRE_VERSION)
        relay, first, events = envelope.get("relay"), envelope.get("n"), envelope.get("events")
        if (not isinstance(relay, str) or not 0 < len(relay) <= 64
                or not isinstance(first, int) or isinstance(first, bool) or first < 0
                or not isinstance(events, list) or not events):
            return self._reject("bad envelope")
        if self._secret is not None:
            sig = envelope.pop("sig", None)
            if not isinstance(sig, str):
                return self._reject("unsigned, and this relay has a secret")
            expected = hmac.new(self._secret, _canonical(envelope), hashlib.sha256).hexdigest()
            if not hmac.compare_digest(sig, expected):
                return self._reject("bad signature (forged, or another secret)")
        if relay == self.relay_id:
            return  # our own message coming back
        for seq, body in enumerate(events, first):
            self._deliver(relay, seq, body)

    def _deliver(self, relay: str, seq: int, body: Any) -> None:
        """Check one event of a message and send it on the store's signals."""
        if not isinstance(body, dict):
            return self._reject("an event is not a JSON object")
        origin = body.get("origin")
        if origin == self._origin:
            return  # made by our own store (another relay of it published it)
        if not self._sequence_ok(relay, seq, str(origin)[:200]):
            return
        if body.get("type") not in _WIRE_TYPES:
            return self._reject("unknown event type %r", str(body.get("type"))[:60])
        try:
            # remote=True set here rather than by a replace(): one object fewer per event
            event = StoreEvent.from_dict({**body, "remote": True}, store=self.store)
            if not event.origin:
                raise ValueError("empty origin")
            if isinstance(event, (StoreKeyEvent, StoreProgressEvent)):
                check_key(event.key)
        except ValueError as exc:
            return self._reject("wrong schema (%s)", str(exc)[:120])
        self.store.dispatch(event)
        with self._lock:
            self._stats["delivered"] += 1

    def _sequence_ok(self, relay: str, seq: int, origin: str) -> bool:
        """Drop duplicates and report missing events of one publisher."""
        last = self._seen.get(relay)
        if last is not None and seq <= last:
            with self._lock:
                self._stats["duplicates"] += 1
            log.debug("relay %s: duplicate event %d of %s dropped", self.relay_id[:6], seq, relay)
            return False
        self._seen[relay] = seq
        self._seen.move_to_end(relay)
        while len(self._seen) > _MAX_TRACKED:
            self._seen.popitem(last=False)
        if last is not None and seq > last + 1:
            self._gap(RelayGap(channel=self.channel, reason="sequence", publisher=origin,
                               missed=seq - last - 1))
        return True

    # --------------------------------------------------------------- helpers

    def _socket_timeout(self) -> Optional[float]:
        try:
            return self._client.connection_pool.connection_kwargs.get("socket_timeout")
        except AttributeError:
            return None

    def _set_state(self, side: str, up: bool, exc: Optional[BaseException] = None,
                   delay: float = 0.0) -> None:
        """Log each change of a side's connection state once (not every retry)."""
        attr = "_send_up" if side == "send" else "_recv_up"
        before = getattr(self, attr)
        setattr(self, attr, up)
        if up:
            if before is False:
                with self._lock:
                    self._stats["reconnects"] += 1
                log.info("relay %s: %s side reconnected to %s", self.relay_id[:6], side,
                         self._url)
            elif before is None:
                log.info("relay %s: %s side connected to %s", self.relay_id[:6], side, self._url)
            return
        level = logging.DEBUG if before is False else (
            logging.ERROR if isinstance(exc, self._redis.exceptions.AuthenticationError)
            else logging.WARNING)
        log.log(level, "relay %s: %s side cannot reach %s (%s: %s); retrying in %.2fs%s",
                self.relay_id[:6], side, self._url, type(exc).__name__, exc, delay,
                "; events are queued" if side == "send" else "")
