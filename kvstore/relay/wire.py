"""The relay's wire format: one encoder and one decoder, shared by every relay.

A message is one JSON object carrying one or more events (``StoreEvent.to_dict()``) of one
relay, in the canonical layout: keys sorted, no spaces, ASCII only::

    {"events":[{...},{...}],"kvstore":1,"n":17,"relay":"<relay id>","sent":1700000000250,
     "sig":"<hex>"}

- ``kvstore`` is :data:`WIRE_VERSION`.
- ``n`` numbers the first event; the others are ``n + 1``, ``n + 2``, ... (per relay), so a
  receiver drops duplicates and notices missing events.
- ``relay`` is the id of the publishing relay (a relay skips its own messages by it).
- ``sent`` (added by issue 16; optional in unsigned messages) is the publisher's
  wall clock, integer milliseconds since the epoch, when it encoded the message (again at
  each retry): signed, it lets a receiver tell a fresh message from a replayed copy
  (:mod:`kvstore.relay.inbox`). Relays of earlier releases ignore it and still verify the
  signature (over the canonical form of the object, which includes it); a relay of this
  release accepts their unsigned messages and refuses their signed ones, which carry no
  ``sent`` and so could be replayed forever.
- ``sig`` is present with a secret: the hex HMAC-SHA256 of the *signed bytes*, the canonical
  JSON of the object without ``sig``. As ``sig`` sorts last, a signed message is its signed
  bytes with ``,"sig":"<hex>"`` inserted before the final ``}``, and a receiver gets the
  signed bytes back by taking that member out of the bytes it received.

Since the keys are sorted, the envelope's scalar members come after the events: a receiver
reads them (:func:`decode` does) without parsing the events, and so skips its own messages
(half of what a publishing relay reads) at no cost. A message laid out otherwise (another
JSON encoder: spaces, another key order) is accepted too; its signature is then checked
against the canonical form of its object, as the format defines it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..events import StoreEvent

try:  # optional: 10-15x faster to encode a batch, 3x to decode; the bytes are the same
    import orjson as _orjson
except ImportError:  # pragma: no cover - the stdlib does it all, only slower
    _orjson = None  # type: ignore[assignment]

__all__ = ["WIRE_VERSION", "WIRE_TYPES", "WireError", "Message", "encode", "pack", "decode",
           "canonical", "now_ms"]

log = logging.getLogger("kvstore.relay")

#: Version number carried by every message under ``"kvstore"``. Adding ``sent`` did not
#: change it: relays of earlier releases read the new messages as before (see above).
WIRE_VERSION = 1

#: Only these event classes travel; anything else on the wire is a wrong schema.
WIRE_TYPES = frozenset({
    "StoreSetEvent",
    "StoreUpdateEvent",
    "StoreDeleteEvent",
    "StoreProgressStartEvent",
    "StoreProgressStepEvent",
    "StoreProgressEndEvent",
    "StoreTransactionStartEvent",
    "StoreTransactionEndEvent",
})

#: Bytes of a message that are not its events (the envelope and the signature), at most.
ENVELOPE_ROOM = 200

# One encoder, built once: json.dumps with options builds a new one on every call.
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                            allow_nan=False)
_SIG_MEMBER = b',"sig":"'
# The envelope's members after the events, at the end of a message in the canonical layout.
_TRAILER = re.compile(rb',"kvstore":(?P<version>\d{1,9}),"n":(?P<n>\d{1,20}),'
                      rb'"relay":"(?P<relay>[^"\\]{1,64})"(?:,"sent":(?P<sent>\d{1,16}))?'
                      rb'(?P<sig>,"sig":"[0-9a-f]{64}")?\}\Z')
_TRAILER_MAX = 250  # bytes: the longest trailer _TRAILER can match, and some


class WireError(ValueError):
    """A message that is not a valid relay message; the text says why (for a log)."""


@dataclass(frozen=True)
class Message:
    """A decoded message: the publishing relay's id, the number of the first event, and the
    events as JSON objects (not yet checked: see ``StoreEvent.from_dict``)."""

    relay: str
    first: int
    events: list[Any]
    #: the publisher's clock (ms since the epoch) when it encoded the message, if given.
    sent: int | None = None

    @property
    def last(self) -> int:
        """The number of the last event."""
        return self.first + len(self.events) - 1


def now_ms(clock: Any = time.time) -> int:
    """``clock()`` (seconds since the epoch) as integer milliseconds, as ``sent`` carries."""
    return int(clock() * 1000)


# orjson writes what the stdlib would not (dataclasses, datetimes): those are refused here.
_ORJSON_OPTIONS = 0 if _orjson is None else (
    _orjson.OPT_SORT_KEYS | _orjson.OPT_PASSTHROUGH_DATACLASS | _orjson.OPT_PASSTHROUGH_DATETIME)


def _dumps(obj: Any) -> str:
    """``obj`` as canonical JSON text, the same characters as :data:`_ENCODER` makes.

    orjson, when installed, makes them when it can: its output is taken only when it is
    ASCII without DEL (it escapes neither; the stdlib does) and holds no ``e-`` and no
    ``0.0000`` (small numbers: it writes ``1e-7`` or ``0.00005`` where the stdlib writes
    ``1e-07`` and ``5e-05``); otherwise the stdlib encodes. One
    difference is left: orjson writes NaN and infinities as ``null`` where the stdlib
    refuses them, but a store refuses them in metadata before any event is made.
    Raises TypeError, ValueError.
    """
    if _orjson is not None:
        try:
            out = _orjson.dumps(obj, option=_ORJSON_OPTIONS)
        except TypeError:  # orjson.JSONEncodeError: let the stdlib say why, or do it
            out = b"\x80"
        # (three scans for bytes cost far less than one regular expression)
        if out.isascii() and b"e-" not in out and b"0.0000" not in out and b"\x7f" not in out:
            return out.decode("ascii")
    return _ENCODER.encode(obj)


def _loads(data: bytes) -> Any:
    """A JSON document (UTF-8 bytes); NaN and infinities are refused. Raises ValueError,
    UnicodeDecodeError, RecursionError."""
    if _orjson is not None:
        try:
            return _orjson.loads(data)
        except ValueError:  # orjson.JSONDecodeError: the stdlib decides (and says why)
            pass
    return json.loads(data.decode("utf-8"), parse_constant=_reject_constant)


def canonical(obj: Any) -> bytes:
    """``obj`` as canonical JSON: sorted keys, no spaces, ASCII. Raises TypeError, ValueError."""
    return _ENCODER.encode(obj).encode("ascii")


def _sign(secret: bytes, signed: bytes) -> str:
    return hmac.new(secret, signed, hashlib.sha256).hexdigest()


def encode(events_json: str, first: int, relay: str, secret: bytes | None = None,
           sent: int | None = None) -> bytes:
    """One message.

    Parameters
    ----------
    events_json : the events, already a canonical JSON array (``canonical([e.to_dict(), ...])``
        as text): a whole batch is encoded in one call, not one per event.
    first : the number of the first event.
    relay : the publishing relay's id.
    secret : signs the message when given.
    sent : the publisher's clock in ms (:func:`now_ms`); None leaves ``sent`` out (as the
        relays of earlier releases did).
    """
    stamp = "" if sent is None else f',"sent":{int(sent)}'
    signed = (f'{{"events":{events_json},"kvstore":{WIRE_VERSION},"n":{first},'
              f'"relay":{_ENCODER.encode(relay)}{stamp}}}').encode("ascii")
    if secret is None:
        return signed
    return b"%s%s%s\"}" % (signed[:-1], _SIG_MEMBER, _sign(secret, signed).encode("ascii"))


def pack(batch: Sequence[tuple[int, StoreEvent]], relay: str, secret: bytes | None,
         max_message_size: int, sent: int | None = None) -> list[tuple[bytes, int]]:
    """Messages (bytes, number of events) carrying a batch of numbered events, as few as fit.

    ``sent`` is the publisher's clock in ms (see :func:`encode`); None: now.

    Each message holds events with consecutive numbers. An event that cannot be encoded or
    is too large for ``max_message_size`` is logged and left out: receivers see the hole in
    the numbering and report it.
    """
    limit = max_message_size - ENVELOPE_ROOM
    first = batch[0][0]
    if sent is None:
        sent = now_ms()
    # The usual case: consecutive numbers, and all of it fits in one message. One encoder
    # call for the whole batch costs far less than one per event.
    if batch[-1][0] - first == len(batch) - 1:
        try:
            whole: str | None = _dumps([event.to_dict() for _, event in batch])
        except (TypeError, ValueError):
            whole = None
        if whole is not None and len(whole) <= limit:
            return [(encode(whole, first, relay, secret, sent), len(batch))]
    return _pack_each(batch, relay, secret, max_message_size, sent)


def _encode_one(event: StoreEvent, relay: str, max_message_size: int) -> str | None:
    try:
        text = _dumps(event.to_dict())
    except (TypeError, ValueError):
        log.exception("relay %s: cannot encode %s as JSON; not relayed", relay[:6],
                      type(event).__name__)
        return None
    if len(text) > max_message_size - ENVELOPE_ROOM:
        log.error("relay %s: %s of key %r is %d bytes as JSON, more than max_message_size=%d "
                  "allows; not relayed", relay[:6], type(event).__name__,
                  getattr(event, "key", None), len(text), max_message_size)
        return None
    return text


def _pack_each(batch: Sequence[tuple[int, StoreEvent]], relay: str, secret: bytes | None,
               max_message_size: int, sent: int) -> list[tuple[bytes, int]]:
    """:func:`pack`, one event at a time: numbers with holes, or more than one message."""
    limit = max_message_size - ENVELOPE_ROOM
    messages: list[tuple[bytes, int]] = []
    parts: list[str] = []
    first = expected = size = 0

    def flush() -> None:
        if parts:
            messages.append((encode("[" + ",".join(parts) + "]", first, relay, secret, sent),
                             len(parts)))
            parts.clear()

    for seq, event in batch:
        text = _encode_one(event, relay, max_message_size)
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


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _as_bytes(data: Any, max_message_size: int) -> bytes:
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    if not isinstance(data, (bytes, bytearray)):
        raise WireError(f"not a string ({type(data).__name__})")
    if len(data) > max_message_size:
        raise WireError(f"{len(data)} bytes, more than max_message_size={max_message_size}")
    return bytes(data)


def _parse(data: bytes) -> tuple[dict[str, Any], Message]:
    """The envelope of a message, checked: (object, message)."""
    try:
        envelope = _loads(data)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise WireError(f"not JSON ({str(exc)[:80]})") from None
    if not isinstance(envelope, dict) or envelope.get("kvstore") != WIRE_VERSION:
        raise WireError(f"not a kvstore message (version {WIRE_VERSION})")
    relay, events = envelope.get("relay"), envelope.get("events")
    first: Any = envelope.get("n")
    sent: Any = envelope.get("sent")
    if (not isinstance(relay, str) or not 0 < len(relay) <= 64
            or not _is_count(first) or not isinstance(events, list) or not events
            or not (sent is None or _is_count(sent))):
        raise WireError("bad envelope")
    return envelope, Message(relay, first, events, sent)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _verify(data: bytes, trailer: re.Match[bytes] | None, envelope: dict[str, Any],
            secret: bytes) -> None:
    """Raise WireError unless ``envelope`` (parsed from ``data``) is signed with ``secret``."""
    sig = envelope.pop("sig", None)
    if not isinstance(sig, str):
        raise WireError("unsigned, and this relay has a secret")
    if trailer is not None and trailer.group("sig"):
        # The canonical layout: the signed bytes are the message without its sig member.
        signed = data[:trailer.start("sig")] + b"}"
        if hmac.compare_digest(sig, _sign(secret, signed)):
            return
    # Laid out otherwise (or forged): the signed bytes are the canonical form of the object.
    try:
        expected = _sign(secret, canonical(envelope))
    except (TypeError, ValueError):
        expected = ""
    if not hmac.compare_digest(sig, expected):
        raise WireError("bad signature (forged, or another secret)")


def _trailer(data: bytes) -> re.Match[bytes] | None:
    """The envelope's members after the events, when ``data`` is in the canonical layout."""
    # The last ',"kvstore":' is the trailer's if there is one: nothing after it holds a quote.
    start = data.rfind(b',"kvstore":', max(0, len(data) - _TRAILER_MAX))
    return None if start < 0 else _TRAILER.match(data, start)


def decode(data: Any, secret: bytes | None = None, *, ignore: str | None = None,
           max_message_size: int = 1 << 20) -> Message | None:
    """Decode and check one message as received (bytes, or str).

    Parameters
    ----------
    data : the message.
    secret : when given, the message must be signed with it.
    ignore : a relay id (the receiver's own): None is returned for its messages, known by
        their relay id before their events are parsed.
    max_message_size : larger messages are refused.

    Returns
    -------
    Message, or None for a message of relay ``ignore``.

    Raises
    ------
    WireError : not a valid message (unsigned or forged included); the text says why.
    """
    data = _as_bytes(data, max_message_size)
    trailer = _trailer(data)
    if (trailer is not None and ignore is not None
            and trailer.group("relay") == ignore.encode("utf-8")):
        return None  # our own message coming back: its events need not be parsed
    envelope, message = _parse(data)
    if secret is not None:
        _verify(data, trailer, envelope, secret)
    if message.relay == ignore:
        return None
    return message
