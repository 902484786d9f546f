"""The state file of a sync run: its JSON document (:func:`encode_state` /
:func:`decode_state`), and :class:`StateFile`, which keeps every key's state as the run goes
(see :mod:`kvstore._sync` for what it records and how a run resumes from it)."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import uuid
from typing import Any, Dict, Optional

from .._keys import canonical
from ..base import AbstractStore

__all__ = ["encode_state", "decode_state", "StateFile", "fingerprint", "same_source", "describe",
           "STATE_FORMAT", "STATE_VERSION"]

STATE_FORMAT = "kvstore-sync-state"
STATE_VERSION = 1


def encode_state(document: Dict[str, Any]) -> bytes:
    """The bytes of a state file holding ``document`` (keys sorted: stable output)."""
    return (json.dumps(document, ensure_ascii=False, sort_keys=True, indent=1) + "\n").encode("utf-8")


def decode_state(data: bytes, where: str = "the state file") -> Dict[str, Any]:
    """The document of a state file; ``ValueError`` when it is not one this version reads."""
    try:
        document = json.loads(data.decode("utf-8"))
    except ValueError as exc:
        raise ValueError(f"{where} is not a kvstore sync state file: {exc}") from None
    if not isinstance(document, dict) or document.get("format") != STATE_FORMAT:
        raise ValueError(f"{where} is not a kvstore sync state file")
    if document.get("version") != STATE_VERSION:
        raise ValueError(f"{where} has version {document.get('version')!r}; this kvstore reads "
                         f"version {STATE_VERSION}")
    if not isinstance(document.get("keys"), dict):
        raise ValueError(f"{where} has no 'keys' object")
    return document


def describe(store: AbstractStore) -> Dict[str, Any]:
    """Which store this is, as a state file records it (a place, or this instance)."""
    info = store.info()
    d: Dict[str, Any] = {"type": type(store).__name__}
    for name in ("path", "bucket", "prefix", "endpoint_url"):
        if info.get(name) is not None:
            d[name] = info[name]
    if len(d) == 1:  # a store with no place (memory): only this instance is the same store
        d["origin"] = store.origin
    return d


def fingerprint(size: int, checksum: Optional[str], metadata: Dict[str, Any], modified: float) -> Dict[str, Any]:
    digest = hashlib.sha256(canonical(metadata).encode("utf-8")).hexdigest()
    return {"size": size, "checksum": checksum, "metadata": digest, "modified": modified}


def same_source(recorded: Any, now: Dict[str, Any]) -> bool:
    if not isinstance(recorded, dict):
        return False
    if any(recorded.get(name) != now[name] for name in ("size", "metadata", "modified")):
        return False
    return recorded.get("checksum") is None or now["checksum"] is None or recorded["checksum"] == now["checksum"]


class StateFile:
    """Per-key states kept in memory and written to ``path`` atomically as they change.

    A write takes a snapshot of the document under the lock and writes it (file, fsync,
    rename) outside it, one writer at a time: the workers recording states never wait for
    a disk's fsync, and a snapshot is never older than the one written before it.
    """

    #: at most one write of the file per this many seconds while the run goes on
    interval = 0.25

    def __init__(self, path: Optional[str], source: Dict[str, Any], destination: Dict[str, Any],
                 writable: bool) -> None:
        self.path = path
        self.writable = writable and path is not None
        self._lock = threading.Lock()
        self._writing = threading.Lock()  # held while a snapshot goes to disk
        self._written = 0.0
        self._dirty = False
        self.keys: Dict[str, Dict[str, Any]] = {}
        if path is not None and os.path.exists(path):
            with open(path, "rb") as f:
                document = decode_state(f.read(), path)
            if document.get("source") != source or document.get("destination") != destination:
                raise ValueError(f"the state file {path} was written by a sync between other stores "
                                 f"({document.get('source')} -> {document.get('destination')})")
            self.keys = {k: v for k, v in document["keys"].items() if isinstance(v, dict)}
        self._document = {"format": STATE_FORMAT, "version": STATE_VERSION,
                          "source": source, "destination": destination}

    def get(self, key: str) -> Optional[Dict[str, Any]]:
        with self._lock:
            entry = self.keys.get(key)
            return dict(entry) if entry is not None else None

    def set(self, key: str, state: str, *, attempts: Optional[int] = None, message: Optional[str] = None,
            source: Optional[Dict[str, Any]] = None, destination: Optional[str] = None) -> None:
        """Record ``key``'s ``state``; ``source`` is the fingerprint of the source it matched
        and ``destination`` the token of the destination's key (:attr:`KeyStat.token`), once
        done or skipped."""
        with self._lock:
            entry = self.keys.setdefault(key, {"attempts": 0})
            before = dict(entry)
            entry["state"] = state
            if attempts is not None:
                entry["attempts"] = attempts
            entry["message"] = message
            if source is not None:
                entry["source"] = source
                if destination is not None:
                    entry["destination"] = destination
                else:
                    entry.pop("destination", None)
            elif state not in ("done", "skipped"):
                entry.pop("source", None)
                entry.pop("destination", None)
            if entry == before:
                return
            self._dirty = True
            due = time.monotonic() - self._written >= self.interval
        if due:
            self._flush(wait=False)

    def flush(self) -> None:
        """Write the document now (waiting for a write under way)."""
        self._flush(wait=True)

    def _flush(self, wait: bool) -> None:
        if not self.writable:
            return
        if not self._writing.acquire(blocking=wait):
            return  # another thread is writing; a later write or the last one takes ours
        try:
            with self._lock:
                if not self._dirty:
                    return
                data = encode_state({**self._document, "keys": self.keys})
                self._dirty = False
                self._written = time.monotonic()
            try:
                self._write(data)
            except BaseException:
                with self._lock:
                    self._dirty = True
                raise
        finally:
            self._writing.release()

    def _write(self, data: bytes) -> None:
        assert self.path is not None
        directory = os.path.dirname(os.path.abspath(self.path))
        tmp = os.path.join(directory, f".{os.path.basename(self.path)}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
