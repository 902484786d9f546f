"""How messages travel through Redis: pub/sub, or a Redis Stream (``durable=True``).

A :class:`Transport` sends a list of messages in one write (:meth:`Transport.publish`, from
the relay's sender thread) and reads the channel (:meth:`Transport.receive`, from its
receiver thread); both raise on a connection error and the relay retries. Everything that
knows redis-py (its exceptions, its connection pool, ``pack_commands`` and
``send_packed_command``) is here.
"""

from __future__ import annotations

import random
import threading
import time
import urllib.parse
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["INSTALL_HINT", "Backoff", "PubSubTransport", "StreamTransport", "Transport",
           "import_redis", "open_client", "parse_id", "redact_url"]

import logging

from .._optional import install_hint, require

log = logging.getLogger("kvstore.relay")

INSTALL_HINT = install_hint("redis")

#: ``handle(message, entry_ms)``: what a transport calls for each message it reads.
Handler = Callable[[Any, "int | None"], None]


def import_redis() -> Any:
    """The redis module; ImportError naming the extra to install when it is missing."""
    return require("redis", "redis", needed_by="kvstore.relay.RedisRelay")


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


def parse_id(value: Any) -> tuple[int, int]:
    """A stream id ``"ms-seq"`` (str or bytes) as a comparable tuple; ValueError if malformed."""
    if isinstance(value, bytes):
        value = value.decode("ascii")
    ms, _, seq = str(value).partition("-")
    return int(ms), int(seq or 0)


def as_str(value: Any) -> str:
    return value.decode("ascii") if isinstance(value, bytes) else str(value)


def open_client(redis: Any, url_or_client: Any, socket_timeout: float = 5.0) -> tuple[Any, bool, str]:
    """(client, whether the relay owns it, description for logs) for a URL or a client."""
    if isinstance(url_or_client, str):
        client = redis.Redis.from_url(
            url_or_client,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            socket_keepalive=True,
            # No hidden retries: an outage surfaces at once and our backoff handles it.
            retry=redis.retry.Retry(redis.backoff.NoBackoff(), 0),
        )
        return client, True, redact_url(url_or_client)
    if not (hasattr(url_or_client, "publish") and hasattr(url_or_client, "pubsub")):
        raise TypeError("redis must be a redis-py client or a redis:// URL")
    kwargs = getattr(getattr(url_or_client, "connection_pool", None), "connection_kwargs", {})
    if kwargs.get("decode_responses"):
        # Bytes that are not UTF-8 (a stray pickle) would then fail inside redis-py and, in
        # durable mode, be read again and again.
        raise ValueError("RedisRelay needs a client with decode_responses=False")
    return url_or_client, False, _describe(url_or_client)


class Backoff:
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


class Transport(ABC):
    """Messages to and from one channel of one Redis.

    Parameters
    ----------
    redis : the redis module.
    client : a redis-py client (or a compatible one).
    channel : the pub/sub channel or the stream's key.
    poll_interval : seconds a read waits at most, so that the receiver sees its stop flag.
    """

    #: ``"pub/sub"`` or ``"stream"``, for logs.
    kind = ""

    def __init__(self, redis: Any, client: Any, channel: str, poll_interval: float) -> None:
        self.redis = redis
        self.client = client
        self.channel = channel
        self.poll_interval = poll_interval
        self._conn: Any = None  # the sender thread's connection

    @property
    def last_id(self) -> str | None:
        """Id of the last stream entry read (None for pub/sub)."""
        return None

    @abstractmethod
    def commands(self, payloads: Sequence[bytes]) -> list[tuple[Any, ...]]:
        """The Redis commands that publish ``payloads``."""

    @abstractmethod
    def receive(self, stop: threading.Event, ready: Callable[[], None],
                handle: Handler) -> None:
        """Read until ``stop`` is set: ``ready()`` once listening, ``handle(message,
        entry_ms)`` for each message (never raises; ``entry_ms`` is the time in a stream
        entry's id, None for pub/sub). Raises on a connection error."""

    def socket_timeout(self) -> float | None:
        try:
            return self.client.connection_pool.connection_kwargs.get("socket_timeout")
        except AttributeError:
            return None

    def publish(self, payloads: Sequence[bytes]) -> None:
        """Send the messages in one write and read every reply; raise on any failure."""
        commands = self.commands(payloads)
        pool = getattr(self.client, "connection_pool", None)
        if pool is None:  # a client without a pool of connections: its own pipeline
            pipe = self.client.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            pipe.execute()
            return
        # One connection kept by the sender thread, spoken to directly: the client's
        # per-command machinery (pool checkout, retry wrapper, metrics) costs more CPU
        # than the write itself, and every bit of it is taken from the store's thread.
        for attempt in (1, 2):
            kept = self._conn is not None
            conn = self._conn if kept else self._checkout(pool)
            try:
                error = self._send(conn, commands)
            except self.redis.exceptions.ConnectionError:
                self.release(broken=True)
                if kept and attempt == 1:
                    continue  # closed while idle (server timeout, CLIENT KILL): a new one
                raise
            except BaseException:
                self.release(broken=True)
                raise
            if error is not None:
                raise error
            return

    def _checkout(self, pool: Any) -> Any:
        try:
            conn = pool.get_connection()
        except TypeError:  # redis-py before 5.3 wants a command name
            conn = pool.get_connection("PUBLISH")
        self._conn = conn
        return conn

    def _send(self, conn: Any, commands: list[tuple[Any, ...]]) -> Exception | None:
        """Write the commands and read every reply; the first error reply, if any."""
        conn.send_packed_command(conn.pack_commands(commands), check_health=False)
        error: Exception | None = None
        for _ in commands:
            try:
                conn.read_response()
            except self.redis.exceptions.ResponseError as exc:  # the connection is fine
                error = error or exc
        return error

    def release(self, broken: bool = False) -> None:
        """Give the sender's connection back to the pool (closed first if ``broken``)."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if broken:
                conn.disconnect()
            self.client.connection_pool.release(conn)
        except Exception:  # a connection that cannot even be closed is simply dropped
            log.debug("releasing the publishing connection failed", exc_info=True)


_PING_PAYLOAD = "kvstore-relay"


class PubSubTransport(Transport):
    """Fire and forget: PUBLISH, and a subscription that misses what comes while it is away.

    ``health_check_interval``: seconds of silence after which the subscription is PINGed; a
    connection that answers nothing for three intervals is replaced.
    """

    kind = "pub/sub"

    def __init__(self, redis: Any, client: Any, channel: str, poll_interval: float,
                 health_check_interval: float) -> None:
        super().__init__(redis, client, channel, poll_interval)
        self.health_check_interval = health_check_interval

    def commands(self, payloads: Sequence[bytes]) -> list[tuple[Any, ...]]:
        return [("PUBLISH", self.channel, payload) for payload in payloads]

    def receive(self, stop: threading.Event, ready: Callable[[], None],
                handle: Handler) -> None:
        pubsub = self.client.pubsub()
        try:
            pubsub.subscribe(self.channel)
            self._listen(pubsub, stop, ready, handle)
        finally:
            try:
                pubsub.close()
            except Exception:
                log.debug("closing the pub/sub connection failed", exc_info=True)

    def _listen(self, pubsub: Any, stop: threading.Event, ready: Callable[[], None],
                handle: Handler) -> None:
        last_rx = last_ping = time.monotonic()
        interval = self.health_check_interval
        while not stop.is_set():
            message = pubsub.get_message(timeout=self.poll_interval)
            now = time.monotonic()
            if message is None:
                if now - last_rx >= 3 * interval:
                    raise self.redis.exceptions.ConnectionError(
                        f"no answer to PING for {3 * interval:.0f}s")
                if now - last_rx >= interval and now - last_ping >= interval:
                    pubsub.ping(_PING_PAYLOAD)
                    last_ping = now
                continue
            last_rx = now
            kind = message.get("type")
            if kind in ("message", b"message"):
                handle(message.get("data"), None)
            elif kind in ("subscribe", b"subscribe"):
                # Also seen when redis-py reconnects and re-subscribes by itself.
                ready()


class StreamTransport(Transport):
    """A Redis Stream: XADD with approximate MAXLEN, XREAD from the last id read.

    Parameters (besides :class:`Transport`'s)
    -----------------------------------------
    maxlen : approximate length the stream is trimmed to on every XADD.
    since : where to start reading: None for entries added from now on, ``"0"`` for all
        the stream holds, or an id to resume after.
    read_count : entries (whole messages) read at most at once.
    on_trimmed : called as ``on_trimmed(after_id, first_id, reason)`` when the stream no
        longer holds entries after ``after_id`` that it had: ``reason`` is ``"trimmed"``
        (trimmed past it) or ``"missing"`` (the entry ``after_id`` itself is gone, and
        the stream was not trimmed past it: deleted, or lost by a Redis restart).
    prime : when given, ``prime(message, entry_ms)`` is called, each time the receiver
        positions itself, for the entries of the ``prime_ms`` before its position, oldest
        first (they are not delivered: see ``Inbox.prime``).
    """

    #: Entries read back at most when priming (the stream's maxlen bounds them too).
    max_prime_entries = 100_000

    kind = "stream"

    def __init__(self, redis: Any, client: Any, channel: str, poll_interval: float, *,
                 maxlen: int, since: str | None, read_count: int,
                 on_trimmed: Callable[[str, str | None, str], None],
                 prime: Callable[[Any, int], None] | None = None, prime_ms: int = 0) -> None:
        super().__init__(redis, client, channel, poll_interval)
        self.maxlen = maxlen
        self.read_count = read_count
        self.on_trimmed = on_trimmed
        self.prime = prime
        self.prime_ms = prime_ms
        self._last_id = None if since is None else as_str(since)
        timeout = self.socket_timeout()
        block = poll_interval if timeout is None else min(poll_interval, timeout / 2)
        self.block_ms = max(1, int(block * 1000))

    @property
    def last_id(self) -> str | None:
        return self._last_id

    def commands(self, payloads: Sequence[bytes]) -> list[tuple[Any, ...]]:
        return [("XADD", self.channel, "MAXLEN", "~", self.maxlen, "*", "m", payload)
                for payload in payloads]

    def receive(self, stop: threading.Event, ready: Callable[[], None],
                handle: Handler) -> None:
        if self._last_id is None:
            newest = self.client.xrevrange(self.channel, count=1)
            self._last_id = as_str(newest[0][0]) if newest else "0-0"
            resuming = False
        else:
            resuming = True  # check the stream still holds last_id and what follows it
        if self.prime is not None:
            self._prime(self._last_id)
        ready()
        lagging = resuming
        while not stop.is_set():
            response = self._read_lagging(resuming) if lagging else self.client.xread(
                {self.channel: self._last_id}, count=self.read_count, block=self.block_ms)
            resuming = False
            entries: list[Any] = []
            for _, items in response or []:
                entries.extend(items)
            for entry_id, fields in entries:
                self._last_id = as_str(entry_id)
                data = None
                if isinstance(fields, dict):
                    data = fields.get(b"m", fields.get("m"))
                handle(data, parse_id(entry_id)[0])
            lagging = len(entries) >= self.read_count

    def _prime(self, position: str) -> None:
        """Hand ``prime`` the entries of the ``prime_ms`` up to ``position``, oldest first."""
        assert self.prime is not None
        ms = parse_id(position)[0]
        if position == "0-0" or self.prime_ms <= 0:
            return
        low = f"{max(0, ms - self.prime_ms)}-0"
        high, entries = position, []  # type: tuple[str, list[Any]]
        while len(entries) < self.max_prime_entries:
            chunk = self.client.xrevrange(self.channel, max=high, min=low, count=512)
            entries.extend(chunk)
            if len(chunk) < 512:
                break
            high = "(" + as_str(chunk[-1][0])
        for entry_id, fields in reversed(entries):
            if isinstance(fields, dict):
                self.prime(fields.get(b"m", fields.get("m")), parse_id(entry_id)[0])

    def _read_lagging(self, resuming: bool = False) -> Any:
        """Read after the last id, and check (atomically) that nothing after it was lost;
        ``resuming``: also that the stream still holds the entry of the last id."""
        after = self._last_id
        assert after is not None
        pipe = self.client.pipeline(transaction=True)
        pipe.xinfo_stream(self.channel)
        pipe.xrange(self.channel, min=after, max=after, count=1)
        pipe.xread({self.channel: after}, count=self.read_count)
        info, present, response = pipe.execute(raise_on_error=False)
        for result in (info, present, response):
            if isinstance(result, self.redis.exceptions.ConnectionError):
                raise result
        if isinstance(response, Exception):
            raise response
        if parse_id(after) == (0, 0):
            return response
        if isinstance(info, dict):
            self._check_trimmed(info, after, bool(present) or not resuming)
        elif resuming and isinstance(info, self.redis.exceptions.ResponseError):
            self.on_trimmed(after, None, "missing")  # no such key: the stream is gone
        return response

    def _check_trimmed(self, info: dict[Any, Any], after: str, present: bool) -> None:
        """Say so when the stream dropped entries newer than ``after``, or (``present``
        False) no longer holds ``after`` though it was not trimmed past it."""
        info = {as_str(k): v for k, v in info.items()}
        after_t = parse_id(after)
        first = info.get("first-entry")
        first_id = as_str(first[0]) if first else None
        max_deleted = info.get("max-deleted-entry-id")
        trusted = max_deleted is not None and (
            parse_id(max_deleted) != (0, 0) or info.get("entries-added") == info.get("length"))
        if trusted:
            lost = parse_id(max_deleted) > after_t
            # the entry itself is gone, and this stream never deleted it: it is another
            # stream now (deleted and made again, or Redis restarted without its AOF)
            missing = not present and parse_id(max_deleted) < after_t
        else:  # Redis < 7 (or a fake): only the oldest entry left tells
            lost = first_id is not None and parse_id(first_id) > after_t
            missing = not present and first_id is None
        if lost:
            self.on_trimmed(after, first_id, "trimmed")
        elif missing:
            self.on_trimmed(after, first_id, "missing")
