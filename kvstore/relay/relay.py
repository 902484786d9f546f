"""The relay itself: :class:`RedisRelay` wires a store to an outbox, the wire format and a
transport, and runs the sender and receiver threads."""

from __future__ import annotations

import collections
import logging
import threading
import time
import uuid
from typing import Any, Callable

from .. import signals
from .._bridge import Bridge
from ..events import StoreEvent, StoreProgressEvent
from . import wire
from .inbox import Inbox, RelayGap
from .outbox import ON_FULL, Outbox, ProgressGate
from .transports import Backoff, PubSubTransport, StreamTransport, Transport, import_redis, open_client, parse_id

__all__ = ["RedisRelay"]

log = logging.getLogger("kvstore.relay")

_MODIFICATION_SIGNALS = (
    signals.store_set,
    signals.store_update,
    signals.store_delete,
    signals.transaction_start,
    signals.transaction_end,
)
_PROGRESS_SIGNALS = (signals.progress_start, signals.progress_step, signals.progress_end)


class RedisRelay(Bridge):
    """Relay a store's events to and from other processes through Redis.

    Parameters
    ----------
    store : the local store (any :class:`kvstore.AbstractStore`).
    redis : a redis-py client (``redis.Redis``, or a compatible one such as fakeredis), or a
        URL: ``redis://[user:password@]host:port/db``, ``rediss://`` for TLS, ``unix://``.
        A client made from a URL belongs to the relay and is closed by :meth:`stop`; it has
        socket timeouts (:attr:`socket_timeout`) and no hidden retries, so an outage is
        noticed and handled here.
    channel : the pub/sub channel, and in durable mode the key of the Redis Stream. Every
        relay on one channel must use the same ``durable`` and ``secret``.
    durable : False for pub/sub (fire and forget: a relay that is not connected misses what
        is published meanwhile); True for a Redis Stream (XADD with approximate MAXLEN,
        XREAD from the last id read), so a relay that was disconnected receives, in order,
        what it missed while the stream still holds it.
    secret : bytes or str. When given, every message is signed with HMAC-SHA256 and unsigned
        or forged messages are dropped, and so are replayed copies of genuine ones (see
        :mod:`kvstore.relay.inbox` for how, and the clock assumption).
    replay_window : seconds; with ``secret``, a message is refused when the time it was
        sent (the publisher's clock) is further than this from the receiver's clock
        (pub/sub) or from the time of its stream entry (durable: the Redis server's
        clock). The clocks of the relays' hosts and of Redis must agree well within it.
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
        ``min(batch_size, max_read_entries)`` stream entries (messages) at once.
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

    ``wait_ready(timeout)`` waits until the receiver is subscribed (pub/sub) or
    positioned in the stream (durable).
    """

    #: Stream entries (whole messages, up to max_message_size each) read at most at once.
    max_read_entries = 128
    #: Seconds of the socket timeouts of a client the relay makes from a URL.
    socket_timeout = 5.0
    #: The wall clock (seconds since the epoch) that stamps and checks ``sent``.
    clock: Callable[[], float] = staticmethod(time.time)

    def __init__(
        self,
        store: Any,
        redis: Any,
        *,
        channel: str = "kvstore",
        durable: bool = False,
        secret: bytes | str | None = None,
        replay_window: float = 30.0,
        queue_size: int = 10000,
        on_full: str = "drop_oldest",
        progress: bool = True,
        progress_interval: float = 0.25,
        progress_min_bytes: int = 1 << 20,
        max_message_size: int = 1 << 20,
        maxlen: int = 10000,
        since: str | None = None,
        batch_size: int = 2048,
        linger: float = 0.001,
        max_linger: float = 0.02,
        poll_interval: float = 0.2,
        backoff: tuple[float, float] = (0.05, 5.0),
        health_check_interval: float = 5.0,
        flush_timeout: float = 2.0,
    ) -> None:
        super().__init__()
        self._redis = import_redis()
        secret = _check_options(channel, on_full, queue_size, batch_size, max_message_size,
                                secret, since)
        self.store = store
        self.channel = channel
        self.durable = bool(durable)
        self.progress = bool(progress)
        self.max_message_size = int(max_message_size)
        self.poll_interval = float(poll_interval)
        self.flush_timeout = float(flush_timeout)
        self._backoff = (float(backoff[0]), float(backoff[1]))
        self._secret = secret
        self.replay_window = float(replay_window)
        if not self.replay_window > 0:
            raise ValueError("replay_window must be > 0")
        self._origin = store.origin
        #: id of this relay, carried by every message it publishes.
        self.relay_id = uuid.uuid4().hex
        self._outbox = Outbox(int(queue_size), on_full, int(batch_size), float(linger),
                              float(max_linger), name=self.relay_id[:6])
        self._gate = ProgressGate(float(progress_interval), int(progress_min_bytes))
        self._client, self._owns_client, self._url = open_client(self._redis, redis,
                                                                 self.socket_timeout)
        self._inbox = Inbox(self, store, channel, secret, self.max_message_size,
                            self.replay_window, self._clock)
        self._transport = self._make_transport(int(maxlen), since, float(health_check_interval))
        self._lock = threading.Lock()  # guards _stats
        self._abort = threading.Event()
        self._stop_recv = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started = False
        self._send_up: bool | None = None
        self._recv_up: bool | None = None
        self._stats = collections.Counter({
            "published": 0, "messages": 0, "subscriptions": 0, "reconnects": 0})

    def _make_transport(self, maxlen: int, since: str | None,
                        health_check_interval: float) -> Transport:
        if self.durable:
            return StreamTransport(
                self._redis, self._client, self.channel, self.poll_interval, maxlen=maxlen,
                since=since, read_count=min(self._outbox.batch_size, self.max_read_entries),
                on_trimmed=self._trimmed,
                # with a secret, what precedes the position is read back, so that copies
                # of it added later are known (see kvstore.relay.inbox)
                prime=None if self._secret is None else self._inbox.prime,
                prime_ms=int(self.replay_window * 1000))
        return PubSubTransport(self._redis, self._client, self.channel, self.poll_interval,
                               health_check_interval)

    # ------------------------------------------------------------ public API

    @property
    def on_full(self) -> str:
        return self._outbox.on_full

    @property
    def batch_size(self) -> int:
        return self._outbox.batch_size

    @property
    def linger(self) -> float:
        return self._outbox.linger

    @property
    def max_linger(self) -> float:
        return self._outbox.max_linger

    @property
    def progress_interval(self) -> float:
        return self._gate.interval

    @property
    def progress_min_bytes(self) -> int:
        return self._gate.min_bytes

    @property
    def last_id(self) -> str | None:
        """Durable mode: id of the last stream entry read (pass it as ``since=`` to resume)."""
        return self._transport.last_id

    @property
    def stats(self) -> dict[str, int]:
        """Counters (a copy).

        published (events), messages (sent to Redis), received (messages), delivered
        (events sent locally), rejected, duplicates, dropped (queue full), gaps,
        subscriptions (times the receiver subscribed or positioned itself), reconnects.
        """
        with self._lock:
            stats = dict(self._stats)
        stats.update(self._inbox.stats, dropped=self._outbox.dropped)
        return stats

    def is_started(self) -> bool:
        """Whether :meth:`start` was called and :meth:`stop` not yet."""
        return self._started

    @property
    def running(self) -> bool:
        """Same as :meth:`is_started`: a relay never stops on its own (it reconnects), so its
        :attr:`error` is always None."""
        return self._started

    def is_connected(self) -> bool:
        """Whether the receiver is subscribed and the sender's last attempt succeeded."""
        return self._ready.is_set() and self._send_up is not False

    def start(self) -> RedisRelay:
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
        self._outbox.open()
        self._inbox.relay_id, self._inbox.name = self.relay_id, self.relay_id[:6]
        self._inbox.start_ms = None  # set when subscribed
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
            self.store.add_progress_floor(self.relay_id, self._gate.min_bytes)
        for sig in self._signals():
            sig.connect(self._on_event, sender=self.store, weak=False)
        self._started = True
        log.info("relay %s: started on %s channel %r (%s)", self.relay_id[:6], self._url,
                 self.channel, self._transport.kind)
        return self

    def _signals(self) -> tuple[Any, ...]:
        return _MODIFICATION_SIGNALS + (_PROGRESS_SIGNALS if self.progress else ())

    def stop(self) -> None:
        """Stop relaying and join the relay's threads.

        Events still queued are published for up to ``flush_timeout`` seconds, then dropped
        (logged). A client made from a URL is closed. Safe to call more than once.
        """
        if not self._started:
            return
        for sig in _MODIFICATION_SIGNALS + _PROGRESS_SIGNALS:
            # Not disconnect(..., sender=store): blinker then keeps the receiver in
            # sig.receivers (a strong reference, and stores would go on building events
            # for nobody). This bound method is ours alone, so disconnect it everywhere.
            sig.disconnect(self._on_event)
        self.store.remove_progress_floor(self.relay_id)
        self._outbox.close()
        self._stop_recv.set()
        sender, receiver = self._threads
        sender.join(self.flush_timeout)
        if sender.is_alive():
            self._abort.set()
            self._outbox.wake()
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

    def __repr__(self) -> str:
        mode = "durable" if self.durable else "pub/sub"
        return f"<RedisRelay {self.channel!r} {mode} {self._url}>"

    # ------------------------------------------------------- publishing side

    def _on_event(self, sender: Any, event: Any = None, **_: Any) -> None:
        # Runs in the store's thread: filter and enqueue, nothing that touches the network.
        if not isinstance(event, StoreEvent) or event.remote or event.origin != self._origin:
            return
        if isinstance(event, StoreProgressEvent):
            events = self._gate(event)
            if events:
                self._outbox.put(events)
            return
        self._outbox.put_one(event)

    def _send_loop(self) -> None:
        backoff = Backoff(*self._backoff)
        outbox = self._outbox
        unsent = 0
        last_sent = 0.0
        wait = outbox.linger
        while True:
            batch = outbox.take()
            if not batch or self._abort.is_set():
                unsent += len(batch) + outbox.clear()
                break
            published = self._publish(batch, backoff)
            if published is None:
                unsent += len(batch) + outbox.clear()
                break
            if not published:
                continue
            now = time.monotonic()
            interval, last_sent = now - last_sent, now
            wait = outbox.next_wait(wait, len(batch), interval)
            if outbox.should_linger(wait, len(batch), interval):
                time.sleep(wait)
        self._transport.release()
        if unsent:
            log.warning("relay %s: stopped with %d events unpublished (Redis unreachable for "
                        "flush_timeout=%.1fs)", self.relay_id[:6], unsent, self.flush_timeout)

    def _publish(self, batch: list[tuple[int, StoreEvent]], backoff: Backoff) -> int | None:
        """Publish a batch, retrying it until Redis takes it (the number of events it took:
        some may not encode) or stop() gives up (None). Each attempt encodes the batch
        anew, so that ``sent`` says when it was really sent."""
        while True:
            messages = wire.pack(batch, self.relay_id, self._secret, self.max_message_size,
                                 wire.now_ms(self.clock))
            if not messages:
                return 0
            try:
                self._transport.publish([payload for payload, _ in messages])
                break
            except Exception as exc:
                delay = backoff.next()
                self._set_state("send", False, exc, delay)
                if self._abort.wait(delay):
                    return None
        backoff.reset()
        self._set_state("send", True)
        count = sum(count for _, count in messages)
        with self._lock:
            self._stats["published"] += count
            self._stats["messages"] += len(messages)
        return count

    # -------------------------------------------------------- receiving side

    def _recv_loop(self) -> None:
        backoff = Backoff(*self._backoff)

        def ready() -> None:
            self._became_ready(backoff)

        while not self._stop_recv.is_set():
            try:
                self._transport.receive(self._stop_recv, ready, self._inbox.handle)
            except Exception as exc:
                self._ready.clear()
                if self._stop_recv.is_set():
                    break
                delay = backoff.next()
                self._set_state("receive", False, exc, delay)
                self._stop_recv.wait(delay)
        self._ready.clear()

    def _became_ready(self, backoff: Backoff) -> None:
        self._inbox.listening()
        backoff.reset()
        with self._lock:
            self._stats["subscriptions"] += 1
        if self._recv_up:
            log.info("relay %s: re-subscribed to %r", self.relay_id[:6], self.channel)
        self._set_state("receive", True)
        self._ready.set()

    def _trimmed(self, after_id: str, first_id: str | None, reason: str) -> None:
        self._inbox.report(RelayGap(channel=self.channel, reason=reason, after_id=after_id,
                           resumed_id=first_id))

    def _clock(self) -> float:
        return self.clock()

    # --------------------------------------------------------------- helpers

    def _set_state(self, side: str, up: bool, exc: BaseException | None = None,
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


def _check_options(channel: Any, on_full: str, queue_size: int, batch_size: int,
                   max_message_size: int, secret: bytes | str | None,
                   since: str | None) -> bytes | None:
    """Raise ValueError / TypeError for a bad option; return the secret as bytes."""
    if not isinstance(channel, str) or not channel:
        raise ValueError("channel must be a non-empty str")
    if on_full not in ON_FULL:
        raise ValueError(f"on_full must be one of {ON_FULL}, not {on_full!r}")
    if int(queue_size) < 1 or int(batch_size) < 1 or int(max_message_size) < 1024:
        raise ValueError("queue_size and batch_size must be >= 1, max_message_size >= 1024")
    if isinstance(secret, str):
        secret = secret.encode("utf-8")
    if secret is not None and (not isinstance(secret, bytes) or not secret):
        raise TypeError("secret must be non-empty bytes or str")
    if since is not None:
        parse_id(since)  # ValueError early for a malformed id
    return secret
