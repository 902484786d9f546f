"""MemoryStore: a thread-safe store held in a dict, for tests, caches and examples."""

from __future__ import annotations

import json
import threading
import time
import zlib
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple
from urllib.parse import SplitResult

from .._checksum import KeyStat, crc32_text
from .._options import as_str, url_options
from .._rules import EMPTY, KEEP, Overlay, plan_delete, plan_write
from ..base import AbstractStore, Change, ProgressReader, Value

__all__ = ["MemoryStore"]


@dataclass(frozen=True)
class _Entry:
    data: bytes
    metadata: Dict[str, Any]  # private: only copies leave the store
    created: float
    modified: float
    crc32: int  # of data, computed once when the data is written

    def value(self) -> Value:
        return Value.from_bytes(self.data, self.metadata, self.created, self.modified)


# One write, as recorded in a transaction and replayed at commit:
# (kind, key, data, metadata, update) with kind "write" or "delete".
_Op = Tuple[str, str, Optional[bytes], Optional[Dict[str, Any]], Optional[Dict[str, Any]]]


_Staging = Overlay[_Entry, _Op]


def _compute(current: Optional[_Entry], op: _Op) -> Tuple[Optional[_Entry], Change]:
    """The entry after ``op`` and the change it makes; KeyError when ``op`` needs the key."""
    kind, key, data, metadata, update = op
    current_md = current.metadata if current is not None else None
    if kind == "delete":
        outcome = plan_delete(key, current_md)
        return None, Change("delete", key, outcome.metadata)
    outcome = plan_write(key, current_md, has_data=data is not None, metadata=metadata, update=update)
    if outcome.data == KEEP:
        assert current is not None
        data, crc = current.data, current.crc32
    elif outcome.data == EMPTY:
        data, crc = b"", 0
    else:
        assert data is not None
        crc = zlib.crc32(data)
    now = time.time()
    created = current.created if current is not None else now
    change = Change(outcome.kind, key, outcome.metadata, timestamp=now)
    return _Entry(data, outcome.metadata, created, now, crc), change


class MemoryStore(AbstractStore):
    """A store in this process's memory. Thread-safe; transactions roll back.

    Parameters
    ----------
    name : optional name, shown by ``info()``.
    """

    def __init__(self, *, name: Optional[str] = None) -> None:
        super().__init__(name=name)
        self._lock = threading.RLock()
        self._entries: Dict[str, _Entry] = {}

    @classmethod
    def from_url(cls, url: str, parts: SplitResult, query: Mapping[str, str], **options: Any) -> MemoryStore:
        """``memory://`` (``?name=...`` optional): a new, empty store."""
        if parts.netloc or parts.path.strip("/"):
            raise ValueError(f"a memory:// URL names no place: {url!r}")
        return cls(**{**url_options(url, query, {"name": as_str}), **options})

    def _info(self) -> Dict[str, Any]:
        with self._lock:
            return {"keys": len(self._entries)}

    def _current(self, key: str) -> Optional[_Entry]:
        staging = self._tx_state()
        if staging is not None and staging.touched(key):
            return staging.seen(key)
        return self._entries.get(key)

    def _get(self, key: str) -> Value:
        with self._lock:
            entry = self._current(key)
        if entry is None:
            raise KeyError(key)
        return entry.value()

    def _get_metadata(self, key: str) -> Dict[str, Any]:
        return self._get(key).metadata

    def _exists(self, key: str) -> bool:
        with self._lock:
            return self._current(key) is not None

    def _write(self, key: str, source: Optional[ProgressReader], metadata: Optional[Dict[str, Any]],
               update: Optional[Dict[str, Any]]) -> List[Change]:
        data = None
        if source is not None:
            chunks = []
            while True:
                chunk = source.read(source.buffer_size)
                if not chunk:
                    break
                chunks.append(chunk)
            data = b"".join(chunks)
        return self._do(("write", key, data, metadata, update))

    def _delete(self, key: str) -> List[Change]:
        return self._do(("delete", key, None, None, None))

    def _copy(self, src: str, dst: str, buffer_size: int) -> List[Change]:
        # bytes are immutable: the copy shares them, and its CRC is known already
        with self._lock:
            entry = self._current(src)
            if entry is None:
                raise KeyError(src)
            return self._do(("write", dst, entry.data, json.loads(json.dumps(entry.metadata)), None))

    def _move(self, src: str, dst: str, buffer_size: int) -> List[Change]:
        # One step under the lock: no reader ever sees both keys or neither.
        with self._lock:
            entry = self._current(src)
            if entry is None:
                raise KeyError(src)
            return self._do_all([("write", dst, entry.data, json.loads(json.dumps(entry.metadata)), None),
                                 ("delete", src, None, None, None)])

    def _stat(self, key: str) -> KeyStat:
        with self._lock:
            entry = self._current(key)
        if entry is None:
            raise KeyError(key)
        return KeyStat(size=len(entry.data), checksum=crc32_text(entry.crc32),
                       metadata=json.loads(json.dumps(entry.metadata)), modified=entry.modified)

    def _do(self, op: _Op) -> List[Change]:
        return self._do_all([op])

    def _do_all(self, ops: List[_Op]) -> List[Change]:
        """Apply ``ops`` in order as one step (or stage them in this thread's transaction);
        a KeyError from any of them leaves everything as it was."""
        with self._lock:
            staging = self._tx_state()
            view: Dict[str, Optional[_Entry]] = {}
            computed = []
            for op in ops:
                key = op[1]
                current = view[key] if key in view else self._current(key)
                view[key], change = _compute(current, op)
                computed.append((key, view[key], op, change))
            if staging is not None:
                for key, entry, op, _ in computed:
                    staging.record(key, entry, op)
                return []
            for key, entry in view.items():
                if entry is None:
                    del self._entries[key]
                else:
                    self._entries[key] = entry
            return [change for _, _, _, change in computed]

    def _iter_keys(self, prefix: str) -> Iterable[str]:
        with self._lock:
            keys = [k for k in self._entries if k.startswith(prefix)]
            staging = self._tx_state()
            return staging.keys(keys, prefix) if staging is not None else sorted(keys)

    def _begin(self) -> _Staging:
        return _Staging()

    def _commit(self, staging: _Staging) -> List[Change]:
        # Replay against the latest state so that updates merge with what other threads
        # wrote meanwhile; all or nothing.
        with self._lock:
            view: Dict[str, Optional[_Entry]] = {}
            changes = []
            for op in staging.ops:
                key = op[1]
                current = view[key] if key in view else self._entries.get(key)
                view[key], change = _compute(current, op)
                changes.append(change)
            for key, entry in view.items():
                if entry is None:
                    self._entries.pop(key, None)
                else:
                    self._entries[key] = entry
            return changes
