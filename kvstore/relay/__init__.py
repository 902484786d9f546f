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
  put it on a bounded queue (:mod:`kvstore.relay.outbox`); a sender thread serialises and
  publishes it (pipelined). When the queue is full (Redis slow or down) ``on_full`` decides:
  ``"drop_oldest"`` (default, logged with a count), ``"block"`` (the writer waits for room)
  or ``"error"`` (:class:`RelayQueueFull` is raised in the receiver; kvstore stores log a
  failing receiver and the write itself still succeeds, so this acts as drop-newest with a
  logged traceback).
- A receiver thread reads the channel (pub/sub, or a Redis Stream with ``durable=True``:
  :mod:`kvstore.relay.transports`), validates every message and dispatches it. Both threads
  survive Redis going away: they reconnect with exponential backoff, re-subscribe, and log
  every change of state.
- Messages are JSON, never pickle (:mod:`kvstore.relay.wire` defines the format, encodes and
  decodes it). A message is one JSON object carrying one or more events
  (``StoreEvent.to_dict()``) of one relay::

      {"events":[{...},{...}],"kvstore":1,"n":17,"relay":"<relay id>","sent":<ms>,
       "sig":"<hex>"}

  The events are numbered ``n``, ``n + 1``, ... per relay, so receivers drop duplicates (a
  publish retried after a connection error) and report missing events (:data:`relay_gap`).
  ``sig`` is present with ``secret=``: HMAC-SHA256 of the canonical JSON (sorted keys, no
  spaces, ASCII) of the object without ``sig``. ``sent`` (the publisher's clock) lets a
  relay with a secret refuse replayed copies (:mod:`kvstore.relay.inbox` has the rules and
  the clock assumption). A message is checked whole before it changes what a relay knows.

Importing this package needs no redis-py; making a :class:`RedisRelay` does.
"""

from __future__ import annotations

from .inbox import RelayGap, namespace, relay_gap
from .outbox import RelayQueueFull
from .relay import RedisRelay
from .transports import redact_url
from .wire import WIRE_VERSION

__all__ = [
    "RedisRelay",
    "RelayGap",
    "RelayQueueFull",
    "relay_gap",
    "namespace",
    "WIRE_VERSION",
    "redact_url",
]
