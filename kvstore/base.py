"""The store API: :class:`AbstractStore`, :class:`Value` and their helpers.

Every public method lives here once and follows one template: check the store is connected,
validate the key and metadata, open a progress operation where bytes stream, call the
backend's private hook (``_get``, ``_write``, ``_delete`` ...), and only then send the
signals. A backend implements the hooks and can neither forget a check nor an event.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import socket
import threading
import uuid
from abc import ABC, abstractmethod
from typing import Any, BinaryIO, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple, Type, TypeVar
from urllib.parse import SplitResult

from . import signals
from ._bus import BusMixin
from ._conveniences import ConvenienceMixin
from ._keys import check_key, criteria_of, literal_prefix, matches, normalize_metadata, select_names
from ._progress import ProgressReader, _as_stream, _Progress, _stream_size
from ._rules import check_if_revision
from ._subscription import Subscription
from .streams import EventStream, SignalSource, check_filter
from ._transfer import TransferMixin
from ._value import DEFAULT_BUFFER_SIZE, Change, Value, ValueLike, _Transaction
from .errors import NotConnectedError
from .events import StoreTransactionEndEvent, StoreTransactionStartEvent
from .query import Criterion

__all__ = ["AbstractStore", "Value", "Change", "Subscription", "ProgressReader", "DEFAULT_BUFFER_SIZE",
           "ValueLike"]

_NO_KEY = object()
_StoreT = TypeVar("_StoreT", bound="AbstractStore")


class _ThreadState(threading.local):
    """A store's per-thread state: ``tx``, this thread's open transaction (or None)."""

    # A class attribute: in a thread that never opened a transaction, reading ``tx`` finds
    # it here instead of raising and catching AttributeError, which cost every write
    # about a microsecond.
    tx: Optional[_Transaction] = None



class AbstractStore(BusMixin, TransferMixin, ConvenienceMixin, ABC):
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
        self._local = _ThreadState()
        # Progress listeners of this store that only want operations of at least so many
        # bytes (a relay's progress_min_bytes), by listener id. When every progress
        # receiver is one of them, a smaller operation of known size builds no events.
        self._progress_gates: Dict[str, int] = {}

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
               update: Optional[Dict[str, Any]], if_revision: Optional[int] = None) -> List[Change]:
        """Write ``key`` atomically and return the changes made (empty when staged).

        ``source`` is the new data (None: keep the data, empty for a new key); ``metadata``
        replaces the metadata; ``update`` is merged into it (the key must exist: KeyError).
        With neither, the metadata is kept (``{}`` for a new key). ``if_revision`` is checked
        by :func:`kvstore._rules.check_revision` in the same atomic step as the write
        (ConflictError). A failure leaves the key as it was.
        """

    @abstractmethod
    def _delete(self, key: str, if_revision: Optional[int] = None) -> List[Change]:
        """Delete ``key`` (KeyError if missing; ConflictError if ``if_revision`` does not
        hold) and return the changes made."""

    def _history(self, key: str) -> List[Change]:
        """The key's changes that the store keeps, oldest first."""
        raise NotImplementedError(f"{type(self).__name__} keeps no history of its keys")

    @abstractmethod
    def _iter_keys(self, prefix: str) -> Iterable[str]:
        """Every key that starts with ``prefix``."""

    def _query(self, criteria: Dict[str, Criterion]) -> Iterable[Tuple[str, Dict[str, Any]]]:
        """(key, metadata) for every key matching ``criteria`` (see ``_keys.criteria_of``).

        Plain equalities are :class:`kvstore.query.eq` with their canonical JSON ``text``.
        """
        for key in list(self._iter_keys("")):
            try:
                metadata = self._get_metadata(key)
            except KeyError:
                continue
            if matches(metadata, criteria):
                yield key, metadata

    def _query_keys(self, criteria: Dict[str, Criterion]) -> Iterable[str]:
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

    def _event_source(self, pattern: str, kinds: Tuple[str, ...], since: Optional[int], maxsize: int) -> Any:
        """Where :meth:`events` reads: this instance's modification signals (its own changes and
        what its bridges dispatch). A store with a change journal overrides it."""
        if since is not None:
            raise ValueError(f"since= needs a store with a change journal (a FileSystemStore), "
                             f"not a {type(self).__name__}")
        return SignalSource(self, pattern, kinds, maxsize)

    def _tx_state(self) -> Any:
        """The staging state of this thread's transaction, or None outside one."""
        tx = self._local.tx
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

    def events(self, pattern: str = "*", kinds: Iterable[str] = ("set", "update", "delete"), *,
               since: Optional[int] = None, maxsize: int = 10000) -> EventStream:
        """A stream of this store's modification events on keys matching ``pattern``, pulled
        with ``for``, ``stream.get(timeout=)`` or ``async for``; close it (or leave its ``with``).

        Parameters
        ----------
        pattern : glob the keys must match.
        kinds : among "set", "update", "delete".
        since : (FileSystemStore) first every change after this journal sequence, then live ones.
        maxsize : (other stores) events kept unread at most; more raise
            :class:`~kvstore.errors.EventsOverflowError` at the next read.

        Returns
        -------
        EventStream : events in commit order, each once. FileSystemStore: every change committed
            to the directory by any process or instance (``event.remote`` says whose); other
            stores: this instance's changes and what its bridges deliver.

        Raises
        ------
        NotConnectedError : the store is not connected.
        JournalGapError : the journal no longer reaches back to ``since``.
        ValueError : bad ``kinds``, ``maxsize`` or ``since``.

        Events
        ------
        None sent: the stream only listens.
        """
        self._ready()
        kinds = check_filter(pattern, tuple(kinds) if not isinstance(kinds, str) else kinds)
        if since is not None and (isinstance(since, bool) or not isinstance(since, int) or since < 0):
            raise ValueError(f"since must be a sequence number (an int >= 0) or None, not {since!r}")
        if isinstance(maxsize, bool) or not isinstance(maxsize, int) or maxsize < 1:
            raise ValueError(f"maxsize must be an int >= 1, not {maxsize!r}")
        return EventStream(self._event_source(pattern, kinds, since, maxsize))

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

    def _ready_to_write(self, key: str) -> None:
        """``_ready(key)``, and the store takes writes (:meth:`_check_writable`)."""
        self._ready(key)
        self._check_writable()

    def _check_writable(self) -> None:
        """Raise :class:`~kvstore.errors.ReadOnlyError` when the store takes no writes (a
        store opened read-only); called by every public write before anything happens."""

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

    def get_data_range(self, key: str, start: Optional[int] = None, end: Optional[int] = None) -> BinaryIO:
        """Return a readable binary stream of ``data[start:end]`` (Python slice meaning).

        The stream is a context manager, as encore.storage's is; ``.read()`` gives the bytes.

        Events: none. Raises KeyError for a missing key.
        """
        self._ready(key)
        return self._get(key).range(start, end)

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

    def set(self, key: str, value: ValueLike, buffer_size: int = DEFAULT_BUFFER_SIZE, *,
            if_revision: Optional[int] = None) -> None:
        """Store data and metadata under ``key``, replacing both atomically.

        Parameters
        ----------
        key : the key.
        value : a :class:`Value`, or a ``(stream, metadata)`` pair (bytes are accepted as data).
        buffer_size : bytes read at a time; a progress step is sent at least this often.
        if_revision : None (no condition), ``0`` (only if the key does not exist) or the
            revision the key must be at; checked in one atomic step with the write.

        Raises
        ------
        InvalidKeyError, TypeError, ValueError : bad key, metadata or ``if_revision``;
            nothing written.
        ConflictError : ``if_revision`` does not hold; nothing written, no event.
        Any exception of the data stream, unwrapped; the key keeps its old value.

        Events
        ------
        progress_start, progress_step (per chunk), progress_end; then store_set for a new
        key or store_update for an existing one (held until commit inside a transaction).
        """
        self._ready_to_write(key)
        expected = check_if_revision(if_revision)
        given: Any
        if isinstance(value, Value):
            stream, given = value.data, value.metadata
        else:
            try:
                stream, given = value
            except (TypeError, ValueError):
                raise TypeError("value must be a Value or a (stream, metadata) pair") from None
        metadata: Dict[str, Any] = normalize_metadata(given)
        self._write_stream(key, _as_stream(stream), metadata, buffer_size, "set", expected)

    def set_data(self, key: str, data: Any, buffer_size: int = DEFAULT_BUFFER_SIZE, *,
                 if_revision: Optional[int] = None) -> None:
        """Replace the data of ``key``, keeping its metadata (a new key gets ``{}``).

        ``if_revision`` as for :meth:`set` (ConflictError).

        Events: progress_start/step/end, then store_set or store_update.
        """
        self._ready_to_write(key)
        expected = check_if_revision(if_revision)
        self._write_stream(key, _as_stream(data), None, buffer_size, "set_data", expected)

    def set_metadata(self, key: str, metadata: Mapping[str, Any], *, if_revision: Optional[int] = None) -> None:
        """Replace the metadata of ``key`` (a new key gets empty data).

        ``if_revision`` as for :meth:`set` (ConflictError).

        Events: store_set or store_update.
        """
        self._ready_to_write(key)
        expected = check_if_revision(if_revision)
        self._apply(self._write(key, None, normalize_metadata(metadata), None, expected))

    def update_metadata(self, key: str, metadata: Mapping[str, Any], *, if_revision: Optional[int] = None) -> None:
        """Merge ``metadata`` into the stored metadata, atomically (no concurrent update is lost).

        Raises KeyError if the key does not exist (ConflictError instead when
        ``if_revision`` is given; ``if_revision`` as for :meth:`set`).

        Events: store_update with the whole merged metadata.
        """
        self._ready_to_write(key)
        expected = check_if_revision(if_revision)
        update = normalize_metadata(metadata)
        self._apply(self._write(key, None, None, update, expected))

    def delete(self, key: str, *, if_revision: Optional[int] = None) -> None:
        """Delete ``key``. Raises KeyError if it does not exist (ConflictError instead when
        ``if_revision`` is given; ``if_revision`` as for :meth:`set`).

        Events: store_delete with the key's last metadata and the delete's revision.
        """
        self._ready_to_write(key)
        expected = check_if_revision(if_revision)
        self._apply(self._delete(key, expected))

    def _write_stream(self, key: str, stream: Any, metadata: Optional[Dict[str, Any]],
                      buffer_size: int, message: str, if_revision: Optional[int] = None) -> None:
        with _Progress(self, key, message, _stream_size(stream)) as progress:
            changes = self._write(key, ProgressReader(stream, progress, buffer_size), metadata, None,
                                  if_revision)
        self._apply(changes)

    def _progress(self, key: str, message: str, steps: int) -> _Progress:
        """A progress operation, for a ``with`` block (its end is sent when the block ends)."""
        return _Progress(self, key, message, steps)

    # ---------------------------------------------------------------- queries

    def query(self, select: Optional[Iterable[str]] = None, **kwargs: Any) -> Iterator[Tuple[str, Dict[str, Any]]]:
        """(key, metadata) of every key whose metadata meets every keyword.

        A keyword's value is a JSON value (JSON equality: ``1`` matches ``1.0``, ``True`` only
        ``True``) or an operator of :mod:`kvstore.query` (``gt(1000)``, ``contains("raw")``,
        ``exists()``, ``not_(...)`` ...). No keyword: every key. ``select`` keeps only those
        metadata names. Events: none.

        Raises
        ------
        TypeError
            A value JSON cannot hold, or an operator object kvstore does not know.
        ValueError
            NaN, infinity or a cycle in a value.
        """
        self._ready()
        criteria = criteria_of(kwargs)
        select = None if select is None else list(select)
        return ((k, select_names(md, select)) for k, md in self._query(criteria))

    def query_keys(self, **kwargs: Any) -> Iterator[str]:
        """Keys whose metadata meets every keyword, as for :meth:`query`. Events: none."""
        self._ready()
        return iter(self._query_keys(criteria_of(kwargs)))

    def glob(self, pattern: str) -> Iterator[str]:
        """Keys matching ``fnmatch.fnmatchcase(key, pattern)`` (``*`` crosses ``/``). Events: none."""
        self._ready()
        if not isinstance(pattern, str):
            raise TypeError(f"a glob pattern must be a str, not {type(pattern).__name__}")
        return iter(self._glob(pattern))

    def _glob(self, pattern: str) -> Iterable[str]:
        """The keys matching ``pattern`` (a str), for :meth:`glob`."""
        keys = self._iter_keys(literal_prefix(pattern))
        return (k for k in keys if fnmatch.fnmatchcase(k, pattern))

    # ------------------------------------------------------------ transactions

    @contextlib.contextmanager
    def transaction(self, notes: Optional[str] = None) -> Iterator[Any]:
        """Group writes: they become visible together, or not at all if the block raises.

        Inside the block this thread reads its own writes. A nested transaction joins the
        outer one. Conditions (``if_revision``) are checked when each write is made and again
        at the commit; if one fails there, the whole transaction is rolled back and
        :class:`~kvstore.errors.ConflictError` is raised (memory and filesystem stores).

        Events
        ------
        transaction_start; on success the held store_set/update/delete signals in order,
        then transaction_end(state="done"); on failure transaction_end(state="failed")
        followed by the signals of any writes the backend could not roll back.
        """
        self._ready()
        tx = self._local.tx
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
