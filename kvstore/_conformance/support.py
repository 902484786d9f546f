"""What the conformance suite (:mod:`kvstore.testing`) works with: the keys and metadata it
tries, an event recorder, a failing stream, and waiting with a deadline."""

from __future__ import annotations

import io
import math
import threading
import time
from typing import Any, Callable, Dict, List, Tuple


from .. import signals


#: Keys every backend must store and give back exactly.
ODD_KEYS = [
    "plain",
    "UPPER",
    "upper",
    "with space",
    " lead and trail ",
    "a/b/c",
    "/leading",
    "trailing/",
    "double//slash",
    ".",
    "..",
    "../escape",
    "a/../../escape",
    "./dot",
    ".hidden",
    ".FSStore",
    ".kvstore/index.sqlite",
    "x.data",
    "x.metadata",
    "x.data/y",
    "%*?[]",
    "%41",
    "~tilde",
    "new\nline",
    "tab\there",
    "caf\u00e9",
    "cafe\u0301",
    "\u65e5\u672c\u8a9e/\u30ad\u30fc",
    "\U0001F600 emoji",
    "\u20ac" * 255,
    "a" * 255,
    "/".join(["d"] * 127),
    "back\\slash",
    "colon:key",
    "CON",
]

#: Values that are not keys: (value, description).
BAD_KEYS = [
    (None, "None"),
    (b"bytes", "bytes"),
    (42, "int"),
    ("", "empty"),
    ("nul\x00key", "NUL"),
    ("lone\udcffsurrogate", "lone surrogate"),
    ("k" * 256, "too long"),
]

BAD_METADATA = [
    ([("a", 1)], TypeError),
    ("text", TypeError),
    ({1: "int name"}, TypeError),
    ({"nested": {2: "x"}}, TypeError),
    ({"in_list": [{3: "x"}]}, TypeError),
    ({"nan": math.nan}, ValueError),
    ({"inf": math.inf}, ValueError),
    ({"obj": object()}, TypeError),
    ({"bytes": b"x"}, TypeError),
    ({"set": {1, 2}}, TypeError),
]

ALL_SIGNALS = signals.SIGNALS


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "a condition",
             interval: float = 0.005) -> Any:
    """Poll ``predicate`` until it returns something true and return that; fail with an
    AssertionError naming ``what`` after ``timeout`` seconds. Tests wait with this, never
    with a bare sleep."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class EventRecorder:
    """Records every signal sent for ``store`` as ``(signal name, event)``."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.events: List[Tuple[str, Any]] = []
        self._lock = threading.Lock()
        self._receivers: List[Tuple[Any, Callable[..., None]]] = []
        for name, sig in ALL_SIGNALS.items():
            def receiver(sender: Any, event: Any = None, _name: str = name, **_: Any) -> None:
                with self._lock:
                    self.events.append((_name, event))
            sig.connect(receiver, sender=store, weak=False)
            self._receivers.append((sig, receiver))

    def close(self) -> None:
        for sig, receiver in self._receivers:
            sig.disconnect(receiver)
        self._receivers = []

    def names(self) -> List[str]:
        return [n for n, _ in self.events]

    def of(self, *names: str) -> List[Any]:
        return [e for n, e in self.events if n in names]

    def modifications(self) -> List[Tuple[str, str, Dict[str, Any]]]:
        return [(n, e.key, e.metadata) for n, e in self.events if n.startswith("store_")]

    def clear(self) -> None:
        with self._lock:
            self.events.clear()


class _Boom(Exception):
    pass


class FailingStream(io.RawIOBase):
    """A stream that yields ``good`` bytes and then raises."""

    def __init__(self, good: bytes) -> None:
        super().__init__()
        self._data = io.BytesIO(good)

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        chunk = self._data.read(n if n and n > 0 else 1 << 20)
        if not chunk:
            raise _Boom("stream failed")
        return chunk


def _pair(data: bytes, metadata: Dict[str, Any]) -> Tuple[io.BytesIO, Dict[str, Any]]:
    return io.BytesIO(data), metadata


def _snapshot(store: Any) -> Dict[str, Tuple[bytes, Dict[str, Any]]]:
    return {k: (store.get(k).data.read(), store.get_metadata(k)) for k in store.glob("*")}
