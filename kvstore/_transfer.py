"""``copy``, ``move`` and ``stat`` of the store API: the public methods check and signal,
the hooks (``_copy``, ``_move``, ``_stat``) do the work."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ContextManager, Dict, List, Optional, Tuple

from ._checksum import KeyStat
from ._keys import check_key
from ._progress import ProgressReader
from ._rules import check_if_revision, check_revision
from .errors import ConflictError
from ._value import DEFAULT_BUFFER_SIZE, Change, Value, _Transaction

if TYPE_CHECKING:
    from ._progress import _Progress

__all__ = ["TransferMixin"]


class TransferMixin:
    """``copy``, ``move``, ``stat`` and ``checksum`` of :class:`~kvstore.base.AbstractStore`."""

    if TYPE_CHECKING:  # provided by AbstractStore
        _local: Any

        def _apply(self, changes: List[Change]) -> None: ...

        def _ready(self, key: Any = ...) -> None: ...

        def _check_writable(self) -> None: ...

        def _get(self, key: str) -> Value: ...

        def _progress(self, key: str, message: str, steps: int) -> ContextManager[_Progress]: ...

        def _write(self, key: str, source: Optional[ProgressReader], metadata: Optional[Dict[str, Any]],
                   update: Optional[Dict[str, Any]], if_revision: Optional[int] = None) -> List[Change]: ...

        def _tx_state(self) -> Any: ...

        def _delete(self, key: str, if_revision: Optional[int] = None) -> List[Change]: ...

        def _begin(self) -> Any: ...

        def _rollback(self, state: Any) -> None: ...

        def _commit(self, state: Any) -> List[Change]: ...

    # ------------------------------------------------- copy, move and stat (issue 20)
    #
    # The public methods check and signal; the hooks (_copy, _move, _stat) do the work.
    # Their defaults work for every backend through _get, _write, _delete and the
    # transaction staging; a backend overrides them with a fast path (a kernel copy in
    # one commit, a server-side CopyObject, a checksum kept in its index).
    # Revisions: copy/move take ``if_revision`` (for dst) and move also
    # ``if_source_revision``; they are passed down to the hooks, which check them in the
    # same atomic step as the write (MemoryStore: under its lock, in _do_all).

    def copy(self, src: str, dst: str, buffer_size: int = DEFAULT_BUFFER_SIZE, *,
             if_revision: Optional[int] = None) -> None:
        """Give ``dst`` the data and metadata of ``src``; ``src`` is unchanged.

        Raises
        ------
        KeyError : ``src`` does not exist (nothing written).
        ValueError : ``src == dst``.
        InvalidKeyError : either key is not valid.
        ConflictError : ``if_revision`` (a condition on ``dst``, as for ``set``) does not hold.

        Events
        ------
        store_set or store_update for ``dst`` (held until commit inside a transaction);
        progress_start/step/end where the backend streams the bytes.
        """
        self._check_pair(src, dst)
        expected = check_if_revision(if_revision)
        self._apply(self._copy(src, dst, buffer_size, expected))

    def move(self, src: str, dst: str, buffer_size: int = DEFAULT_BUFFER_SIZE, *,
             if_revision: Optional[int] = None, if_source_revision: Optional[int] = None) -> None:
        """Copy ``src`` to ``dst``, then delete ``src``.

        On a store that stages transactions (memory, filesystem) both happen in one atomic
        step: nobody sees both keys or neither. Where writes cannot be staged (S3) it is a
        copy, then a delete, and not atomic.

        Raises
        ------
        KeyError : ``src`` does not exist (nothing written).
        ValueError : ``src == dst``.
        InvalidKeyError : either key is not valid.
        ConflictError : ``if_revision`` (on ``dst``) or ``if_source_revision`` (on ``src``,
            named as ``.key``) does not hold; nothing written.

        Events
        ------
        store_set or store_update for ``dst``, then store_delete for ``src``.
        """
        self._check_pair(src, dst)
        expected = check_if_revision(if_revision)
        expected_src = check_if_revision(if_source_revision, "if_source_revision")
        self._apply(self._move(src, dst, buffer_size, expected, expected_src))

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

    def _copy_in(self, source: Any, src: str, dst: str, buffer_size: int = DEFAULT_BUFFER_SIZE) -> None:
        """``copy`` from another store, ``source``, whose keys this store can copy without
        reading them (``_can_copy_from(source)``): used by :func:`kvstore.sync`.
        Checked and signalled like ``copy``; KeyError if ``src`` is missing in ``source``."""
        check_key(src)
        check_key(dst)
        self._ready()
        source._ready()
        self._apply(self._copy_from(source, src, dst, buffer_size))

    def _can_copy_from(self, source: Any) -> bool:
        """Whether ``_copy_from(source, ...)`` copies without the data passing through this
        process (S3Store: the same S3 service). The default: no."""
        return False

    def _copy_from(self, source: Any, src: str, dst: str, buffer_size: int) -> List[Change]:
        """The changes of copying ``source``'s ``src`` to this store's ``dst`` server-side;
        only called when ``_can_copy_from(source)``."""
        raise NotImplementedError

    # ------------------------------------------------------------ what kvstore.sync asks of a destination
    # Hints and shortcuts only: a store that keeps the defaults is synced with stat() per key.

    def _sync_listing(self, pattern: str) -> Optional[Dict[str, Tuple[int, str]]]:
        """key -> (size, token) of every key that may match ``pattern`` (more keys are
        harmless), from a listing that costs no request per key (S3Store: ListObjectsV2
        pages); ``token`` is :attr:`KeyStat.token`. None: the store has no such listing."""
        return None

    def _expect_new(self, key: str) -> None:
        """Hint: this thread's next write of ``key`` is probably of a key that does not
        exist (a listing said so); the write must be right all the same if it does. The
        default ignores it."""

    def _written_stat(self, key: str) -> Optional[KeyStat]:
        """The stat of what this thread's last write of ``key`` committed, where the store
        knows it from the commit itself (S3Store); taken once. None: ask :meth:`stat`."""
        return None

    def _check_pair(self, src: str, dst: str) -> None:
        check_key(src)
        check_key(dst)
        self._ready()
        self._check_writable()
        if src == dst:
            raise ValueError(f"source and destination are the same key ({src!r})")

    def _copy(self, src: str, dst: str, buffer_size: int, if_revision: Optional[int] = None) -> List[Change]:
        """Write ``dst`` with the data and metadata of ``src`` in one write; return the
        changes (empty when staged). KeyError if ``src`` is missing; ConflictError if
        ``if_revision`` does not hold for ``dst``.

        The default streams the bytes through ``_get`` and ``_write`` with progress.
        """
        value = self._get(src)
        with self._progress(dst, "copy", value.size) as progress:
            with value.data as stream:
                return self._write(dst, ProgressReader(stream, progress, buffer_size), value.metadata, None,
                                   if_revision)

    def _move(self, src: str, dst: str, buffer_size: int, if_revision: Optional[int] = None,
              if_source_revision: Optional[int] = None) -> List[Change]:
        """``_copy`` then ``_delete(src)``, atomically where the backend stages writes;
        return the changes in order (the write of ``dst``, then the delete of ``src``).

        The default stages both in a transaction of its own (no transaction events) and
        commits them at once; a backend whose ``_begin`` stages nothing (returns None)
        gets a copy followed by a delete.
        """
        if self._tx_state() is not None:  # inside the caller's transaction: staged there
            return self._copy_then_delete(src, dst, buffer_size, if_revision, if_source_revision)
        state = self._begin()
        if state is None:
            self._check_source(src, if_source_revision)  # before the copy; the delete checks again
            changes = self._copy(src, dst, buffer_size, if_revision)
            try:
                return changes + self._delete(src, if_source_revision)
            except BaseException:
                self._apply(changes)  # the copy is real: observers hear of it
                raise
        self._local.tx = _Transaction(notes=None, state=state)
        try:
            self._copy_then_delete(src, dst, buffer_size, if_revision, if_source_revision)
        except BaseException:
            self._local.tx = None
            self._rollback(state)
            raise
        self._local.tx = None
        return self._commit(state)

    def _copy_then_delete(self, src: str, dst: str, buffer_size: int, if_revision: Optional[int],
                          if_source_revision: Optional[int]) -> List[Change]:
        self._check_source(src, if_source_revision)
        return self._copy(src, dst, buffer_size, if_revision) + self._delete(src, if_source_revision)

    def _stat(self, key: str) -> KeyStat:
        """The :class:`KeyStat` of ``key``; KeyError if missing.

        The default knows no checksum and takes the size from ``_get`` (which reads the
        data of small values on some backends); a backend that keeps the size and a
        checksum beside the metadata overrides it.
        """
        value = self._get(key)
        return KeyStat(size=value.size, checksum=None, metadata=value.metadata, modified=value.modified)


    def _check_source(self, src: str, expected: Optional[int]) -> None:
        """A move's condition on ``src``, checked first: a failed move names ``src`` and
        copies nothing (the delete of ``src`` checks it again, atomically)."""
        if expected is None:
            return
        try:
            actual = self._get(src).revision
        except KeyError:
            raise ConflictError(src, expected, None) from None
        if actual is not None:  # None: written in this transaction, checked at the commit
            check_revision(src, expected, actual)
