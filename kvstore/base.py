"""The store API: :class:`AbstractStore`, :class:`Value` and their helpers.

Every public method lives here once and follows one template: check the store is connected,
validate the key and metadata, open a progress operation where bytes stream, call the
backend's private hook (``_get``, ``_write``, ``_delete`` ...), and only then send the
signals. A backend implements the hooks and can neither forget a check nor an event.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import inspect
import io
import itertools
import json
import logging
import os
import socket
import stat
import threading
import time
import uuid
from abc import ABC, abstractmethod
from urllib.parse import SplitResult
from dataclasses import dataclass, field
from typing import (
    Any,
    BinaryIO,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Type,
    TypeVar,
    Union,
)

from . import signals
from ._checksum import KeyStat
from ._keys import check_key, criteria_of, dump_metadata, literal_prefix, matches, select_names
from .errors import NotConnectedError
from .events import (
    MODIFICATION_CLASSES,
    StoreEvent,
    StoreProgressEndEvent,
    StoreProgressStartEvent,
    StoreProgressStepEvent,
    StoreTransactionEndEvent,
    StoreTransactionStartEvent,
)

__all__ = ["AbstractStore", "Value", "Change", "Subscription", "DEFAULT_BUFFER_SIZE"]

log = logging.getLogger("kvstore")

DEFAULT_BUFFER_SIZE = 1048576

Opener = Callable[[int, int], BinaryIO]


def _copy_metadata(metadata: Dict[str, Any]) -> Dict[str, Any]:
    return json.loads(json.dumps(metadata))


class Value:
    """A consistent snapshot of one key: data and metadata from the same write.

    Parameters
    ----------
    size : number of bytes of data.
    metadata : the metadata (the Value keeps it as JSON text, so nothing is shared).
    created, modified : seconds since the epoch.
    opener : ``opener(start, end)`` returns a readable binary stream of ``data[start:end]``.
    metadata_json : the metadata as JSON text, instead of ``metadata``.
    """

    __slots__ = ("size", "_metadata_json", "created", "modified", "_opener", "__weakref__")

    def __init__(
        self,
        *,
        size: int,
        metadata: Optional[Dict[str, Any]] = None,
        created: float,
        modified: float,
        opener: Opener,
        metadata_json: Optional[str] = None,
    ) -> None:
        self.size = size
        self._metadata_json = metadata_json if metadata_json is not None else json.dumps(metadata or {})
        self.created = created
        self.modified = modified
        self._opener = opener

    @classmethod
    def from_bytes(
        cls, data: bytes, metadata: Dict[str, Any], created: float = 0.0, modified: float = 0.0
    ) -> "Value":
        """A Value holding ``data`` in memory."""
        data = bytes(data)
        return cls(
            size=len(data),
            metadata=metadata,
            created=created,
            modified=modified,
            opener=lambda start, end: io.BytesIO(data[start:end]),
        )

    @property
    def data(self) -> BinaryIO:
        """A new readable binary stream of the whole data (a context manager)."""
        return self._opener(0, self.size)

    @property
    def metadata(self) -> Dict[str, Any]:
        """A fresh copy of the metadata."""
        return json.loads(self._metadata_json)

    def range(self, start: Optional[int] = None, end: Optional[int] = None) -> BinaryIO:
        """A stream of ``data[start:end]`` (Python slice meaning, negative indices included)."""
        s, e, _ = slice(start, end).indices(self.size)
        return self._opener(s, max(s, e))

    @property
    def permissions(self) -> Dict[str, Any]:
        """encore.storage compatibility: kvstore keeps no permissions."""
        return {}

    def __repr__(self) -> str:
        return f"<Value size={self.size} metadata={self._metadata_json}>"


@dataclass
class Change:
    """One committed change, as a backend reports it: the base class turns it into an event."""

    kind: str  # "set", "update" or "delete"
    key: str
    metadata: Dict[str, Any]
    sequence: Optional[int] = None
    timestamp: Optional[float] = None
    text: Optional[str] = None  # the metadata as JSON, when the backend has it at hand


@dataclass
class _Transaction:
    notes: Optional[str]
    state: Any
    depth: int = 1
    held: List[Change] = field(default_factory=list)


class Subscription:
    """Handle returned by :meth:`AbstractStore.subscribe`; ``cancel()`` or leave the ``with``."""

    def __init__(self, store: "AbstractStore", receiver: Callable[[StoreEvent], Any],
                 pattern: str, kinds: Sequence[str]) -> None:
        self.store = store
        self.receiver = receiver
        self.pattern = pattern
        self.kinds = tuple(kinds)
        self._signals = [signals.MODIFICATION_SIGNALS[k] for k in self.kinds]
        for sig in self._signals:
            sig.connect(self._on_event, sender=store, weak=False)

    def _on_event(self, sender: Any, event: Any = None, **_: Any) -> None:
        if event is not None and fnmatch.fnmatchcase(event.key, self.pattern):
            self.receiver(event)

    def cancel(self) -> None:
        """Stop delivering events; safe to call more than once."""
        for sig in self._signals:
            # Without sender=: blinker would keep the receiver in signal.receivers, and
            # the stores' no-listener fast path would be lost for good.
            sig.disconnect(self._on_event)
        self._signals = []

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.cancel()


_operation_ids = itertools.count(1)


def _progress_wanted(store: "AbstractStore", steps: int) -> bool:
    if not any(signal.has_receivers_for(store) for signal in signals.PROGRESS_SIGNALS):
        return False
    gates = store._progress_gates
    counts = [len(signal.receivers) for signal in signals.PROGRESS_SIGNALS]
    if not gates or steps < 0 or max(counts) > len(gates):
        return True
    return steps >= min(gates.values())


class _Progress:
    """One progress operation: start was sent; ``advance`` sends steps; ``finish`` the end."""

    def __init__(self, store: "AbstractStore", key: str, message: str, steps: int) -> None:
        self.store = store
        self.key = key
        self.message = message
        self.steps = steps
        self.done = 0
        self.sent = -1
        self.live = _progress_wanted(store, steps)
        # Unique across processes and hosts: the store's origin and a per-process count.
        self.operation_id = f"{store.origin}:{next(_operation_ids)}" if self.live else ""
        if self.live:
            store._send(signals.progress_start, StoreProgressStartEvent(
                store=store, origin=store.origin, operation_id=self.operation_id,
                key=key, message=message, steps=steps))

    def advance(self, nbytes: int) -> None:
        self.done += nbytes
        if self.live and nbytes:
            self._step()

    def _step(self) -> None:
        self.sent = self.done
        self.store._send(signals.progress_step, StoreProgressStepEvent(
            store=self.store, origin=self.store.origin, operation_id=self.operation_id,
            key=self.key, message=self.message, step=self.done))

    def finish(self, exit_state: str) -> None:
        if not self.live:
            return
        if exit_state == "normal" and self.sent != self.done:
            self._step()  # the last step carries the total, even for empty data
        self.store._send(signals.progress_end, StoreProgressEndEvent(
            store=self.store, origin=self.store.origin, operation_id=self.operation_id,
            key=self.key, message=self.message, exit_state=exit_state))


class ProgressReader(io.RawIOBase):
    """Wraps a source stream; every ``read`` reports the bytes to the progress operation.

    Backends read the data they store from this object in ``buffer_size`` chunks.
    """

    def __init__(self, stream: Any, progress: _Progress, buffer_size: int) -> None:
        super().__init__()
        self._stream = stream
        self._progress = progress
        self.buffer_size = max(1, int(buffer_size))

    @property
    def steps(self) -> int:
        """The bytes the source is expected to hold, -1 when not known."""
        return self._progress.steps

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            chunks: List[bytes] = []
            while True:
                chunk = self.read(self.buffer_size)
                if not chunk:
                    return b"".join(chunks)
                chunks.append(chunk)
        data = self._stream.read(min(size, self.buffer_size))
        if data is None:
            data = b""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"a data stream must return bytes, not {type(data).__name__}")
        self._progress.advance(len(data))
        return bytes(data)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def fileno(self) -> int:
        return self._stream.fileno()

    def copy_to_fd(self, fd: int) -> bool:
        """Copy the rest of a regular-file source into ``fd`` in the kernel.

        Progress is reported per ``buffer_size`` as with ``read``. Returns False, having
        copied nothing, when the source is not a regular file or the kernel cannot copy
        between the two files; the caller then reads as usual.
        """
        try:
            src = self._stream.fileno()
            if not stat.S_ISREG(os.fstat(src).st_mode):
                return False
            pos = self._stream.tell()  # a buffered stream's logical position
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            return False
        first = True
        while True:
            try:
                n = os.copy_file_range(src, fd, self.buffer_size, pos)
            except OSError as exc:
                if first and exc.errno in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF):
                    return False
                raise
            first = False
            if n == 0:
                break
            pos += n
            self._progress.advance(n)
        self._stream.seek(pos)
        return True


def _stream_size(stream: Any) -> int:
    """Bytes left in ``stream`` when that can be known cheaply, else -1."""
    try:
        if isinstance(stream, io.BytesIO):
            return len(stream.getbuffer()) - stream.tell()
        fileno = stream.fileno()
        st = os.fstat(fileno)
        if not (st.st_mode & 0o170000 == 0o100000):  # not a regular file
            return -1
        return max(0, st.st_size - stream.tell())
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return -1


def _as_stream(data: Any) -> Any:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(data))
    if not hasattr(data, "read"):
        raise TypeError(f"data must be a readable binary stream, not {type(data).__name__}")
    return data


_NO_KEY = object()
_StoreT = TypeVar("_StoreT", bound="AbstractStore")

ValueLike = Union[Value, Tuple[Any, Mapping[str, Any]]]


class AbstractStore(ABC):
    """The key-value store API (encore.storage's names and meanings).

    Subclasses implement the private hooks; the public methods below validate, stream with
    progress and send the signals. Every store is a context manager that connects on entry
    and disconnects on exit.
    """

    def __init__(self, *, name: Optional[str] = None) -> None:
        self.name = name
        #: id of this store instance, carried by every event it originates.
        self.origin = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self._connected = False
        self._local = threading.local()
        # Progress listeners of this store that only want operations of at least so many
        # bytes (a relay's progress_min_bytes), by listener id. When every progress
        # receiver is one of them, a smaller operation of known size builds no events.
        self._progress_gates: Dict[str, int] = {}

    def add_progress_floor(self, owner_id: str, min_bytes: int) -> None:
        """Say that progress listener ``owner_id`` (a bridge) ignores operations of a known size
        below ``min_bytes``.

        While every progress receiver is such a listener, an operation smaller than all their
        floors builds no progress events at all. Replaces ``owner_id``'s previous floor.
        """
        self._progress_gates[owner_id] = int(min_bytes)

    def remove_progress_floor(self, owner_id: str) -> None:
        """Take away the floor of :meth:`add_progress_floor` (none left: nothing happens)."""
        self._progress_gates.pop(owner_id, None)

    # ------------------------------------------------------------------ hooks

    def _connect(self, credentials: Any) -> None:
        """Open backend resources."""

    def _disconnect(self) -> None:
        """Release backend resources."""

    def _info(self) -> Dict[str, Any]:
        return {}

    @abstractmethod
    def _get(self, key: str) -> Value:
        """Return a snapshot Value of ``key``; raise KeyError if it is missing."""

    def _get_metadata(self, key: str) -> Dict[str, Any]:
        """Return a fresh copy of the metadata of ``key``; raise KeyError if missing."""
        return self._get(key).metadata

    @abstractmethod
    def _exists(self, key: str) -> bool:
        """Whether ``key`` exists."""

    @abstractmethod
    def _write(self, key: str, source: Optional[ProgressReader], metadata: Optional[Dict[str, Any]],
               update: Optional[Dict[str, Any]]) -> List[Change]:
        """Write ``key`` atomically and return the changes made (empty when staged).

        ``source`` is the new data (None: keep the data, empty for a new key); ``metadata``
        replaces the metadata; ``update`` is merged into it (the key must exist: KeyError).
        With neither, the metadata is kept (``{}`` for a new key). A failure leaves the key
        as it was.
        """

    @abstractmethod
    def _delete(self, key: str) -> List[Change]:
        """Delete ``key`` (KeyError if missing) and return the changes made."""

    @abstractmethod
    def _iter_keys(self, prefix: str) -> Iterable[str]:
        """Every key that starts with ``prefix``."""

    def _query(self, criteria: Dict[str, str]) -> Iterable[Tuple[str, Dict[str, Any]]]:
        """(key, metadata) for every key matching ``criteria`` (see ``_keys.criteria_of``)."""
        for key in list(self._iter_keys("")):
            try:
                metadata = self._get_metadata(key)
            except KeyError:
                continue
            if matches(metadata, criteria):
                yield key, metadata

    def _query_keys(self, criteria: Dict[str, str]) -> Iterable[str]:
        for key, _ in self._query(criteria):
            yield key

    def _begin(self) -> Any:
        """Start staging writes for a transaction; return the backend's staging state."""
        return None

    def _commit(self, state: Any) -> List[Change]:
        """Make the staged writes visible at once; return their changes in order."""
        return []

    def _rollback(self, state: Any) -> None:
        """Drop the staged writes."""

    def _tx_state(self) -> Any:
        """The staging state of this thread's transaction, or None outside one."""
        tx = getattr(self._local, "tx", None)
        return None if tx is None else tx.state

    # ------------------------------------------------------------- lifecycle

    def connect(self, credentials: Any = None) -> None:
        """Connect to the store (``credentials`` are backend-specific and often unused)."""
        self._connect(credentials)
        self._connected = True

    def disconnect(self) -> None:
        """Disconnect; later data operations raise :class:`NotConnectedError`."""
        if self._connected:
            self._connected = False
            self._disconnect()

    def is_connected(self) -> bool:
        """Whether the store is connected."""
        return self._connected

    def info(self) -> Dict[str, Any]:
        """A dict describing the store: type, name, origin, connection state and backend details."""
        d = {"type": type(self).__name__, "name": self.name, "origin": self.origin,
             "connected": self._connected}
        d.update(self._info())
        return d

    def __enter__(self: _StoreT) -> _StoreT:
        if not self._connected:
            self.connect()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.disconnect()

    def _ready(self, key: Any = _NO_KEY) -> None:
        if key is not _NO_KEY:
            check_key(key)
        if not self._connected:
            raise NotConnectedError(f"{type(self).__name__} is not connected: call connect() first")

    # ------------------------------------------------------------------ reads

    def get(self, key: str) -> Value:
        """Return a :class:`Value`: data stream, metadata, size, created, modified.

        Raises
        ------
        KeyError : the key does not exist.
        InvalidKeyError : the key is not valid.
        NotConnectedError : the store is not connected.

        Events
        ------
        None.
        """
        self._ready(key)
        return self._get(key)

    def get_data(self, key: str) -> BinaryIO:
        """Return a readable binary stream of the key's data (a context manager).

        Events: none. Raises KeyError for a missing key.
        """
        self._ready(key)
        return self._get(key).data

    def get_data_range(self, key: str, start: Optional[int] = None, end: Optional[int] = None) -> bytes:
        """Return ``data[start:end]`` as bytes (Python slice meaning).

        Events: none. Raises KeyError for a missing key.
        """
        self._ready(key)
        with self._get(key).range(start, end) as stream:
            return stream.read()

    def get_metadata(self, key: str, select: Optional[Iterable[str]] = None) -> Dict[str, Any]:
        """Return a fresh copy of the key's metadata; ``select`` keeps only those names present.

        Events: none. Raises KeyError for a missing key.
        """
        self._ready(key)
        return select_names(self._get_metadata(key), select)

    def exists(self, key: str) -> bool:
        """Whether ``key`` exists. Events: none."""
        self._ready(key)
        return self._exists(key)

    # ----------------------------------------------------------------- writes

    def set(self, key: str, value: ValueLike, buffer_size: int = DEFAULT_BUFFER_SIZE) -> None:
        """Store data and metadata under ``key``, replacing both atomically.

        Parameters
        ----------
        key : the key.
        value : a :class:`Value`, or a ``(stream, metadata)`` pair (bytes are accepted as data).
        buffer_size : bytes read at a time; a progress step is sent at least this often.

        Raises
        ------
        InvalidKeyError, TypeError, ValueError : bad key or metadata; nothing written.
        Any exception of the data stream, unwrapped; the key keeps its old value.

        Events
        ------
        progress_start, progress_step (per chunk), progress_end; then store_set for a new
        key or store_update for an existing one (held until commit inside a transaction).
        """
        self._ready(key)
        given: Any
        if isinstance(value, Value):
            stream, given = value.data, value.metadata
        else:
            try:
                stream, given = value
            except (TypeError, ValueError):
                raise TypeError("value must be a Value or a (stream, metadata) pair") from None
        metadata: Dict[str, Any] = json.loads(dump_metadata(given))
        self._write_stream(key, _as_stream(stream), metadata, buffer_size, "set")

    def set_data(self, key: str, data: Any, buffer_size: int = DEFAULT_BUFFER_SIZE) -> None:
        """Replace the data of ``key``, keeping its metadata (a new key gets ``{}``).

        Events: progress_start/step/end, then store_set or store_update.
        """
        self._ready(key)
        self._write_stream(key, _as_stream(data), None, buffer_size, "set_data")

    def set_metadata(self, key: str, metadata: Mapping[str, Any]) -> None:
        """Replace the metadata of ``key`` (a new key gets empty data).

        Events: store_set or store_update.
        """
        self._ready(key)
        self._apply(self._write(key, None, json.loads(dump_metadata(metadata)), None))

    def update_metadata(self, key: str, metadata: Mapping[str, Any]) -> None:
        """Merge ``metadata`` into the stored metadata, atomically (no concurrent update is lost).

        Raises KeyError if the key does not exist.

        Events: store_update with the whole merged metadata.
        """
        self._ready(key)
        update = json.loads(dump_metadata(metadata))
        self._apply(self._write(key, None, None, update))

    def delete(self, key: str) -> None:
        """Delete ``key``. Raises KeyError if it does not exist.

        Events: store_delete with the key's last metadata.
        """
        self._ready(key)
        self._apply(self._delete(key))

    def _write_stream(self, key: str, stream: Any, metadata: Optional[Dict[str, Any]],
                      buffer_size: int, message: str) -> None:
        with self._progress(key, message, _stream_size(stream)) as progress:
            changes = self._write(key, ProgressReader(stream, progress, buffer_size), metadata, None)
        self._apply(changes)

    @contextlib.contextmanager
    def _progress(self, key: str, message: str, steps: int) -> Iterator[_Progress]:
        progress = _Progress(self, key, message, steps)
        try:
            yield progress
        except BaseException:
            progress.finish("exception")
            raise
        progress.finish("normal")

    # ------------------------------------------------- copy, move and stat (issue 20)
    #
    # The public methods check and signal; the hooks (_copy, _move, _stat) do the work.
    # Their defaults work for every backend through _get, _write, _delete and the
    # transaction staging; a backend overrides them with a fast path (a kernel copy in
    # one commit, a server-side CopyObject, a checksum kept in its index).
    # Revisions seam: copy/move will take ``if_revision`` (for dst) and move also
    # ``if_source_revision``; they are to be passed down to the hooks, which check them in
    # the same atomic step as the write (MemoryStore: under its lock, in _do_all).

    def copy(self, src: str, dst: str, buffer_size: int = DEFAULT_BUFFER_SIZE) -> None:
        """Give ``dst`` the data and metadata of ``src``; ``src`` is unchanged.

        Raises
        ------
        KeyError : ``src`` does not exist (nothing written).
        ValueError : ``src == dst``.
        InvalidKeyError : either key is not valid.

        Events
        ------
        store_set or store_update for ``dst`` (held until commit inside a transaction);
        progress_start/step/end where the backend streams the bytes.
        """
        self._check_pair(src, dst)
        self._apply(self._copy(src, dst, buffer_size))

    def move(self, src: str, dst: str, buffer_size: int = DEFAULT_BUFFER_SIZE) -> None:
        """Copy ``src`` to ``dst``, then delete ``src``.

        On a store that stages transactions (memory, filesystem) both happen in one atomic
        step: nobody sees both keys or neither. Where writes cannot be staged (S3) it is a
        copy, then a delete, and not atomic.

        Raises
        ------
        KeyError : ``src`` does not exist (nothing written).
        ValueError : ``src == dst``.
        InvalidKeyError : either key is not valid.

        Events
        ------
        store_set or store_update for ``dst``, then store_delete for ``src``.
        """
        self._check_pair(src, dst)
        self._apply(self._move(src, dst, buffer_size))

    def stat(self, key: str) -> KeyStat:
        """Size, checksum, metadata and modification time of ``key``, without its data
        where the backend can (see :meth:`checksum`).

        Raises KeyError for a missing key. Events: none.
        """
        self._ready(key)
        return self._stat(key)

    def checksum(self, key: str) -> Optional[str]:
        """The checksum the store keeps for the key's data (``"crc32:xxxxxxxx"``), or None
        when it keeps none and could only tell by reading the data.

        Raises KeyError for a missing key. Events: none.
        """
        return self.stat(key).checksum

    def _check_pair(self, src: str, dst: str) -> None:
        check_key(src)
        check_key(dst)
        self._ready()
        if src == dst:
            raise ValueError(f"source and destination are the same key ({src!r})")

    def _copy(self, src: str, dst: str, buffer_size: int) -> List[Change]:
        """Write ``dst`` with the data and metadata of ``src`` in one write; return the
        changes (empty when staged). KeyError if ``src`` is missing.

        The default streams the bytes through ``_get`` and ``_write`` with progress.
        """
        value = self._get(src)
        with self._progress(dst, "copy", value.size) as progress:
            with value.data as stream:
                return self._write(dst, ProgressReader(stream, progress, buffer_size), value.metadata, None)

    def _move(self, src: str, dst: str, buffer_size: int) -> List[Change]:
        """``_copy`` then ``_delete(src)``, atomically where the backend stages writes;
        return the changes in order (the write of ``dst``, then the delete of ``src``).

        The default stages both in a transaction of its own (no transaction events) and
        commits them at once; a backend whose ``_begin`` stages nothing (returns None)
        gets a copy followed by a delete.
        """
        if self._tx_state() is not None:  # inside the caller's transaction: staged there
            return self._copy(src, dst, buffer_size) + self._delete(src)
        state = self._begin()
        if state is None:
            changes = self._copy(src, dst, buffer_size)
            try:
                return changes + self._delete(src)
            except BaseException:
                self._apply(changes)  # the copy is real: observers hear of it
                raise
        self._local.tx = _Transaction(notes=None, state=state)
        try:
            self._copy(src, dst, buffer_size)
            self._delete(src)
        except BaseException:
            self._local.tx = None
            self._rollback(state)
            raise
        self._local.tx = None
        return self._commit(state)

    def _stat(self, key: str) -> KeyStat:
        """The :class:`KeyStat` of ``key``; KeyError if missing.

        The default knows no checksum and takes the size from ``_get`` (which reads the
        data of small values on some backends); a backend that keeps the size and a
        checksum beside the metadata overrides it.
        """
        value = self._get(key)
        return KeyStat(size=value.size, checksum=None, metadata=value.metadata, modified=value.modified)

    # ------------------------------------------------------------ multi-key

    def multiget(self, keys: Iterable[str]) -> List[Value]:
        """``[get(k) for k in keys]``."""
        return [self.get(k) for k in keys]

    def multiget_data(self, keys: Iterable[str]) -> List[BinaryIO]:
        """``[get_data(k) for k in keys]``."""
        return [self.get_data(k) for k in keys]

    def multiget_metadata(self, keys: Iterable[str], select: Optional[Iterable[str]] = None) -> List[Dict[str, Any]]:
        """``[get_metadata(k, select) for k in keys]``."""
        select = None if select is None else list(select)
        return [self.get_metadata(k, select) for k in keys]

    def multiset(self, keys: Iterable[str], values: Iterable[ValueLike],
                 buffer_size: int = DEFAULT_BUFFER_SIZE) -> None:
        """``set`` each pair of ``zip(keys, values)``."""
        for key, value in zip(keys, values):
            self.set(key, value, buffer_size)

    def multiset_data(self, keys: Iterable[str], datas: Iterable[Any],
                      buffer_size: int = DEFAULT_BUFFER_SIZE) -> None:
        """``set_data`` each pair of ``zip(keys, datas)``."""
        for key, data in zip(keys, datas):
            self.set_data(key, data, buffer_size)

    def multiset_metadata(self, keys: Iterable[str], metadatas: Iterable[Mapping[str, Any]]) -> None:
        """``set_metadata`` each pair of ``zip(keys, metadatas)``."""
        for key, metadata in zip(keys, metadatas):
            self.set_metadata(key, metadata)

    def multiupdate_metadata(self, keys: Iterable[str], metadatas: Iterable[Mapping[str, Any]]) -> None:
        """``update_metadata`` each pair of ``zip(keys, metadatas)``."""
        for key, metadata in zip(keys, metadatas):
            self.update_metadata(key, metadata)

    # ---------------------------------------------------------------- queries

    def query(self, select: Optional[Iterable[str]] = None, **kwargs: Any) -> Iterator[Tuple[str, Dict[str, Any]]]:
        """(key, metadata) of every key whose metadata JSON-equals every keyword.

        No keyword: every key. ``select`` keeps only those metadata names. Events: none.
        """
        self._ready()
        criteria = criteria_of(kwargs)
        select = None if select is None else list(select)
        return ((k, select_names(md, select)) for k, md in self._query(criteria))

    def query_keys(self, **kwargs: Any) -> Iterator[str]:
        """Keys whose metadata JSON-equals every keyword. Events: none."""
        self._ready()
        return iter(self._query_keys(criteria_of(kwargs)))

    def glob(self, pattern: str) -> Iterator[str]:
        """Keys matching ``fnmatch.fnmatchcase(key, pattern)`` (``*`` crosses ``/``). Events: none."""
        self._ready()
        if not isinstance(pattern, str):
            raise TypeError(f"a glob pattern must be a str, not {type(pattern).__name__}")
        keys = self._iter_keys(literal_prefix(pattern))
        return (k for k in keys if fnmatch.fnmatchcase(k, pattern))

    # ------------------------------------------------------------ file helpers

    def to_file(self, key: str, path: Union[str, os.PathLike], buffer_size: int = DEFAULT_BUFFER_SIZE) -> None:
        """Write the key's data to the file ``path``, as ``cp`` does.

        A regular file (new or existing) is replaced atomically when complete and an existing
        one keeps its permissions; a symlink is written through (its target is replaced, the
        link stays); a FIFO or a device is opened and written in place, never replaced.

        Events: progress_start/step/end.
        """
        self._ready(key)
        value = self._get(key)
        target = os.path.realpath(os.fspath(path))
        try:
            existing: Optional[os.stat_result] = os.stat(target)
        except FileNotFoundError:
            existing = None
        with self._progress(key, "to_file", value.size) as progress:
            if existing is not None and not stat.S_ISREG(existing.st_mode):
                with value.data as src, open(target, "wb") as dst:
                    _copy(src, dst, buffer_size, progress)
                return
            tmp = f"{target}.{uuid.uuid4().hex[:8]}.part"
            try:
                with value.data as src, open(tmp, "wb") as dst:
                    if existing is not None:  # keep the file's permissions and, where allowed, owner
                        os.chmod(dst.fileno(), stat.S_IMODE(existing.st_mode))
                        with contextlib.suppress(PermissionError):
                            os.chown(dst.fileno(), existing.st_uid, existing.st_gid)
                    _copy(src, dst, buffer_size, progress)
                os.replace(tmp, target)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise

    def from_file(self, key: str, path: Union[str, os.PathLike], buffer_size: int = DEFAULT_BUFFER_SIZE) -> None:
        """Store the contents of the file ``path`` as the key's data (``set_data``).

        Events: progress_start/step/end, then store_set or store_update.
        """
        self._ready(key)
        with open(path, "rb") as stream:
            self._write_stream(key, stream, None, buffer_size, "from_file")

    def to_bytes(self, key: str, buffer_size: int = DEFAULT_BUFFER_SIZE) -> bytes:
        """Return the key's data as bytes. Events: progress_start/step/end."""
        self._ready(key)
        value = self._get(key)
        out = io.BytesIO()
        with self._progress(key, "to_bytes", value.size) as progress:
            with value.data as src:
                _copy(src, out, buffer_size, progress)
        return out.getvalue()

    def from_bytes(self, key: str, data: bytes, buffer_size: int = DEFAULT_BUFFER_SIZE) -> None:
        """Store ``data`` as the key's data (``set_data``).

        Events: progress_start/step/end, then store_set or store_update.
        """
        self._ready(key)
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes, not {type(data).__name__}")
        self._write_stream(key, io.BytesIO(bytes(data)), None, buffer_size, "from_bytes")

    # ------------------------------------------------------------ transactions

    @contextlib.contextmanager
    def transaction(self, notes: Optional[str] = None) -> Iterator[Any]:
        """Group writes: they become visible together, or not at all if the block raises.

        Inside the block this thread reads its own writes. A nested transaction joins the
        outer one.

        Events
        ------
        transaction_start; on success the held store_set/update/delete signals in order,
        then transaction_end(state="done"); on failure transaction_end(state="failed")
        followed by the signals of any writes the backend could not roll back.
        """
        self._ready()
        tx = getattr(self._local, "tx", None)
        if tx is not None:
            tx.depth += 1
            try:
                yield tx
            finally:
                tx.depth -= 1
            return
        tx = _Transaction(notes=notes, state=self._begin())
        self._local.tx = tx
        self._send(signals.transaction_start, StoreTransactionStartEvent(
            store=self, origin=self.origin, notes=notes))
        try:
            yield tx
            self._local.tx = None
            changes = self._commit(tx.state)
        except BaseException:
            self._local.tx = None
            try:
                self._rollback(tx.state)
            finally:
                self._send(signals.transaction_end, StoreTransactionEndEvent(
                    store=self, origin=self.origin, notes=notes, state="failed"))
                self._emit(tx.held)
            raise
        self._emit(tx.held + changes)
        self._send(signals.transaction_end, StoreTransactionEndEvent(
            store=self, origin=self.origin, notes=notes, state="done"))

    # ----------------------------------------------------------------- events

    def subscribe(self, receiver: Callable[[Any], Any], pattern: str = "*",
                  kinds: Sequence[str] = ("set", "update", "delete")) -> Subscription:
        """Call ``receiver(event)`` for this store's modification events on keys matching
        the glob ``pattern`` (local and remote). Returns a handle with ``cancel()``.
        """
        if isinstance(kinds, str):
            kinds = (kinds,)
        unknown = [k for k in kinds if k not in signals.MODIFICATION_SIGNALS]
        if unknown:
            raise ValueError(f"unknown event kinds {unknown}; use 'set', 'update', 'delete'")
        if not isinstance(pattern, str):
            raise TypeError("pattern must be a str")
        if inspect.iscoroutinefunction(receiver):
            raise TypeError("subscribe() calls its receiver synchronously, so it cannot be a coroutine "
                            "function; iterate `async for event in store.events()` instead")
        return Subscription(self, receiver, pattern, kinds)

    def _apply(self, changes: List[Change]) -> None:
        tx = getattr(self._local, "tx", None)
        if tx is not None:
            tx.held.extend(changes)
        else:
            self._emit(changes)

    def _emit(self, changes: Iterable[Change]) -> None:
        for change in changes:
            signal = signals.MODIFICATION_SIGNALS[change.kind]
            if signal.is_muted or not signal.has_receivers_for(self):
                continue  # nobody listens to this store: build no event
            cls = MODIFICATION_CLASSES[change.kind]
            self._send(signal, cls(store=self, origin=self.origin, key=change.key,
                                   metadata=(_copy_metadata(change.metadata) if change.text is None
                                             else json.loads(change.text)),
                                   sequence=change.sequence,
                                   timestamp=time.time() if change.timestamp is None else change.timestamp))

    def _send(self, signal: Any, event: StoreEvent) -> None:
        # blinker's Signal.send semantics (muted() honoured; coroutine receivers are
        # refused when they connect, see kvstore.signals), except that a failing
        # receiver must not turn a write that happened into one that seems to have
        # failed, nor keep the other receivers from hearing of it: log and go on.
        if signal.is_muted or not signal.has_receivers_for(self):
            return
        for receiver in signal.receivers_for(self):
            try:
                receiver(self, event=event)
            except Exception:
                log.exception("receiver %r of %s raised", receiver, signal.name)

    def dispatch(self, event: StoreEvent) -> None:
        """Send an event made elsewhere (by a bridge) on this store's signals.

        The event is re-addressed to this store (``event.store``); ``remote`` is kept.
        """
        if event.store is not self:  # a copy costs more than the rest of the dispatch
            event = event.replace(store=self)
        self._send(signals.signal_for(event), event)

    @classmethod
    def from_url(cls: Type[_StoreT], url: str, parts: SplitResult, query: Mapping[str, str],
                 **options: Any) -> _StoreT:
        """Make (not connect) the store that ``url`` names; ``open_store`` calls this.

        ``parts`` is ``url`` split (:func:`urllib.parse.urlsplit`), ``query`` its query
        options as text; keyword ``options`` go to the constructor and win over the URL's.
        A backend that can be opened from a URL overrides this.

        Raises
        ------
        ValueError : the URL has a part or an option this backend does not read.
        """
        raise ValueError(f"{cls.__name__} cannot be opened from a URL ({url!r})")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r}>"


def _copy(src: Any, dst: Any, buffer_size: int, progress: _Progress) -> None:
    buffer_size = max(1, int(buffer_size))
    # A backend stream that can copy into a file descriptor in the kernel (the filesystem
    # store's) does so, still reporting progress per buffer_size.
    raw = getattr(src, "raw", src)
    copy_to_fd = getattr(raw, "copy_to_fd", None)
    if copy_to_fd is not None and src.tell() == raw.tell():  # nothing buffered above it
        try:
            fd = dst.fileno()
        except (AttributeError, OSError, io.UnsupportedOperation):
            fd = -1
        if fd >= 0:
            dst.flush()
            try:
                copy_to_fd(fd, progress.advance, buffer_size)
                return
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                    raise
    while True:
        chunk = src.read(buffer_size)
        if not chunk:
            return
        dst.write(chunk)
        progress.advance(len(chunk))
