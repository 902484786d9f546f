"""MemoryStore: a thread-safe store held in a dict, for tests, caches and examples."""

from __future__ import annotations

import collections
import threading
import time
import zlib
from typing import Any, Deque, Dict, Iterable, List, Mapping, NamedTuple, Optional, Tuple
from urllib.parse import SplitResult

from .._checksum import KeyStat, crc32_text
from .._options import as_str, url_options
from .._rules import EMPTY, KEEP, Overlay, check_revision, plan_delete, plan_write
from .._value import _copy_metadata
from ..base import AbstractStore, Change, ProgressReader, Value
from ..errors import ConflictError

__all__ = ["MemoryStore"]


class _Entry(NamedTuple):
    # (a NamedTuple, not a frozen dataclass: one is made on every write, at a third of the cost)
    data: bytes
    metadata: Dict[str, Any]  # private: only copies leave the store
    created: float
    modified: float
    crc32: int  # of data, computed once when the data is written
    revision: Optional[int] = None  # None: staged in a transaction, numbered at its commit

    def value(self) -> Value:
        return Value.from_bytes(self.data, self.metadata, self.created, self.modified, self.revision)


# One write, as recorded in a transaction and replayed at commit:
# (kind, key, data, metadata, update, if_revision) with kind "write" or "delete".
_Op = Tuple[str, str, Optional[bytes], Optional[Dict[str, Any]], Optional[Dict[str, Any]], Optional[int]]


_Staging = Overlay[_Entry, _Op]


def _compute(current: Optional[_Entry], op: _Op, revision: Optional[int],
             origin: str) -> Tuple[Optional[_Entry], Change]:
    """The entry after ``op`` and the change it makes, numbered ``revision`` (None: staged),
    by the store instance ``origin``; KeyError when ``op`` needs the key, ConflictError when
    its condition does not hold.

    A staged entry's revision is not known before the commit: its condition waits for it.
    """
    kind, key, data, metadata, update, expected = op
    current_md = current.metadata if current is not None else None
    actual = current.revision if current is not None else None
    if current is not None and actual is None:
        expected = None  # written earlier in this transaction: checked again at the commit
    if kind == "delete":
        outcome = plan_delete(key, current_md, expected=expected, revision=actual)
        return None, Change("delete", key, outcome.metadata, revision=revision, timestamp=time.time(),
                            origin=origin)
    outcome = plan_write(key, current_md, has_data=data is not None, metadata=metadata, update=update,
                         expected=expected, revision=actual)
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
    change = Change(outcome.kind, key, outcome.metadata, timestamp=now, revision=revision, origin=origin)
    return _Entry(data, outcome.metadata, created, now, crc, revision), change


class MemoryStore(AbstractStore):
    """A store in this process's memory. Thread-safe; transactions roll back.

    Revisions come from one counter of the store: every change takes the next number.
    ``history(key)`` gives the last :attr:`history_keep` changes of each key.

    Parameters
    ----------
    name : optional name, shown by ``info()``.
    """

    #: changes of each key kept for ``history()``
    history_keep = 64

    def __init__(self, *, name: Optional[str] = None) -> None:
        super().__init__(name=name)
        self._lock = threading.RLock()
        self._entries: Dict[str, _Entry] = {}
        self._revision = 0  # the store's last revision number
        self._history_of: Dict[str, Deque[Change]] = {}

    @classmethod
    def from_url(cls, url: str, parts: SplitResult, query: Mapping[str, str], **options: Any) -> MemoryStore:
        """``memory://`` (``?name=...`` optional): a new, empty store."""
        if parts.netloc or parts.path.strip("/"):
            raise ValueError(f"a memory:// URL names no place: {url!r}")
        return cls(**{**url_options(url, query, {"name": as_str}), **options})

    def _info(self) -> Dict[str, Any]:
        with self._lock:
            return {"keys": len(self._entries)}

    def _current(self, key: str, staging: Optional[_Staging] = None) -> Optional[_Entry]:
        """The key's entry as this thread sees it (``staging``: its transaction's, if known)."""
        if staging is None:
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
               update: Optional[Dict[str, Any]], if_revision: Optional[int] = None) -> List[Change]:
        data = None
        if source is not None:
            chunks = []
            while True:
                chunk = source.read(source.buffer_size)
                if not chunk:
                    break
                chunks.append(chunk)
            data = b"".join(chunks)
        return self._do(("write", key, data, metadata, update, if_revision))

    def _delete(self, key: str, if_revision: Optional[int] = None) -> List[Change]:
        return self._do(("delete", key, None, None, None, if_revision))

    def _copy(self, src: str, dst: str, buffer_size: int, if_revision: Optional[int] = None) -> List[Change]:
        # bytes are immutable: the copy shares them, and its CRC is known already
        with self._lock:
            entry = self._current(src)
            if entry is None:
                raise KeyError(src)
            return self._do(("write", dst, entry.data, _copy_metadata(entry.metadata), None, if_revision))

    def _move(self, src: str, dst: str, buffer_size: int, if_revision: Optional[int] = None,
              if_source_revision: Optional[int] = None) -> List[Change]:
        # One step under the lock: no reader ever sees both keys or neither.
        with self._lock:
            entry = self._current(src)
            if entry is None:
                if if_source_revision is not None:
                    raise ConflictError(src, if_source_revision, None)
                raise KeyError(src)
            if if_source_revision is not None and entry.revision is not None:
                # the source's condition first, so that a failed move names src
                check_revision(src, if_source_revision, entry.revision)
            return self._do_all([("write", dst, entry.data, _copy_metadata(entry.metadata), None,
                                  if_revision),
                                 ("delete", src, None, None, None, if_source_revision)])

    def _stat(self, key: str) -> KeyStat:
        with self._lock:
            entry = self._current(key)
        if entry is None:
            raise KeyError(key)
        return KeyStat(size=len(entry.data), checksum=crc32_text(entry.crc32),
                       metadata=_copy_metadata(entry.metadata), modified=entry.modified)

    def _do(self, op: _Op) -> List[Change]:
        """``_do_all([op])``: every single write and delete, so without its bookkeeping."""
        key = op[1]
        with self._lock:
            staging = self._tx_state()
            if staging is not None:
                entry, _ = _compute(self._current(key, staging), op, None, self.origin)
                staging.record(key, entry, op)
                return []
            entry, change = _compute(self._entries.get(key), op, self._revision + 1, self.origin)
            self._publish({key: entry}, [change])
            return [change]

    def _do_all(self, ops: List[_Op]) -> List[Change]:
        """Apply ``ops`` in order as one step (or stage them in this thread's transaction);
        a KeyError or ConflictError from any of them leaves everything as it was."""
        with self._lock:
            staging = self._tx_state()
            view: Dict[str, Optional[_Entry]] = {}
            computed = []
            for i, op in enumerate(ops):
                key = op[1]
                current = view[key] if key in view else self._current(key, staging)
                number = None if staging is not None else self._revision + 1 + i
                view[key], change = _compute(current, op, number, self.origin)
                computed.append((key, view[key], op, change))
            if staging is not None:
                for key, entry, op, _ in computed:
                    staging.record(key, entry, op)
                return []
            changes = [change for _, _, _, change in computed]
            self._publish(view, changes)
            return changes

    def _publish(self, view: Dict[str, Optional[_Entry]], changes: List[Change]) -> None:
        """Make ``view`` the committed state and number its ``changes`` (under the lock)."""
        for key, entry in view.items():
            if entry is None:
                self._entries.pop(key, None)
            else:
                self._entries[key] = entry
        for change in changes:
            self._revision = max(self._revision, change.revision or 0)
            kept = self._history_of.get(change.key)
            if kept is None:
                kept = self._history_of[change.key] = collections.deque(maxlen=self.history_keep)
            kept.append(change)  # made with origin=self.origin: as history() reports it

    def _history(self, key: str) -> List[Change]:
        with self._lock:
            return list(self._history_of.get(key, ()))

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
            # Conditions are checked again here, against the numbers the commit gives.
            view: Dict[str, Optional[_Entry]] = {}
            changes = []
            for i, op in enumerate(staging.ops):
                key = op[1]
                current = view[key] if key in view else self._entries.get(key)
                view[key], change = _compute(current, op, self._revision + 1 + i, self.origin)
                changes.append(change)
            self._publish(view, changes)
            return changes
