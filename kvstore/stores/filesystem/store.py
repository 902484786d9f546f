"""FileSystemStore: the backend hooks, wiring the index, the lock, the files and the commits."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, unquote

from ..._keys import dump_json, matches
from ..._checksum import KeyStat, crc32_text
from ..._options import as_bool, as_str, url_options
from ..._rules import KEEP, Overlay, plan_delete, plan_write
from ...base import AbstractStore, Change, ProgressReader, Value
from ...errors import DiskFullError, ReadOnlyError, StoreError
from ...query import Criterion
from .checkpoint import Checkpointer
from .commit import Committer, WriteOp, key_paths
from .files import INTERNAL_DIR, SpaceReserve, TempFiles, bytes_value, fd_value, scan, store_error, unlink
from .index import Index
from .lock import StoreLock
from .recovery import IndexRecovery
from .transfer import KernelCopies
from .sequence import HighWater

log = logging.getLogger("kvstore.filesystem")

__all__ = ["FileSystemStore", "init_shared_store", "JournalEntry"]


def init_shared_store(path: str, magic_fname: str = ".FSStore") -> None:
    """Create the magic file that marks ``path`` as a store (encore.storage's initialiser)."""
    with open(os.path.join(path, magic_fname), "wb") as f:
        f.write(b"__version__ = 0\n")


@dataclass(frozen=True)
class JournalEntry:
    """One row of the change journal."""

    sequence: int
    key: str
    kind: str
    metadata: dict[str, Any]
    origin: str
    timestamp: float


# A key as a transaction sees it: (data: a file path or the bytes, metadata).
_Entry = tuple[str | bytes, dict[str, Any]]
_Staging = Overlay[_Entry, WriteOp]


class FileSystemStore(IndexRecovery, KernelCopies, AbstractStore):
    """A store in a local directory, shared safely by threads and processes.

    Parameters
    ----------
    path : the store's directory.
    create : make the directory and its magic file if missing (else StoreError).
    magic_fname : the file that marks the directory as a store (encore's ``.FSStore``).
    name : optional name shown by ``info()``.
    durable : fsync files and directories so a commit survives a power cut (slower).
    readonly : open for reading only: works on read-only media and without write
        permission; nothing is created, and every write raises ReadOnlyError.

    Raises
    ------
    StoreError : ``path`` is not a store and ``create`` is false.

    Tuning: the class attributes below (set on a subclass, or on an instance before
    ``connect`` for ``wal_safety_pages`` and ``checkpoint_idle``).
    """

    #: journal rows kept when the journal is trimmed
    journal_keep = 100_000
    #: the journal is trimmed when a commit's sequences cross a multiple of this
    journal_trim_every = 1_000
    #: values up to this size are kept in the index too (``keys.data``)
    inline_max = 4096
    #: values up to this size are read whole by ``get()``
    eager_read = 65536
    #: a background checkpoint is asked for every this many commits ...
    checkpoint_every = 256
    #: ... and runs at least this many seconds after the last ones
    checkpoint_idle = 1.0
    #: a writer checkpoints by itself only when the WAL reaches this many pages
    wal_safety_pages = 4_000
    #: bytes kept allocated in ``.kvstore/reserve``, freed to let deletes commit on a full disk
    reserve_bytes = 256 * 1024

    def __init__(self, path: str | os.PathLike[str], *, create: bool = False,
                 magic_fname: str = ".FSStore", name: str | None = None,
                 durable: bool = False, readonly: bool = False) -> None:
        super().__init__(name=name)
        self.path = os.path.abspath(os.fspath(path))
        self.magic_fname = magic_fname
        self.durable = bool(durable)
        self.readonly = bool(readonly)
        magic = os.path.join(self.path, magic_fname)
        if create and not self.readonly:
            os.makedirs(self.path, exist_ok=True)
            if not os.path.exists(magic):
                init_shared_store(self.path, magic_fname)
        if not os.path.isdir(self.path):
            raise StoreError(f"no store at {self.path}: the directory does not exist "
                             f"(use create=True to make one)")
        if not os.path.exists(magic):
            raise StoreError(f"{self.path} is not a store: it has no {magic_fname} file "
                             f"(use create=True to make one)")
        self._internal = os.path.join(self.path, INTERNAL_DIR)
        self._tmp = TempFiles(os.path.join(self._internal, "tmp"), self.durable)
        self._lock = StoreLock(os.path.join(self._internal, "lock"), self.readonly)
        self._index = Index(self.path, self._internal, self.durable, self.readonly)
        self._high_water = HighWater(self._internal, self.durable)
        self._reserve = SpaceReserve(os.path.join(self._internal, "reserve"), self.reserve_bytes)
        self._checkpointer = Checkpointer(self._index, f"kvstore-checkpoint[{self.path}]")
        self._committer = Committer(self._index, self._lock, self.path, self._tmp.directory, self.durable,
                                    self._checkpointer, self._high_water)

    @classmethod
    def from_url(cls, url: str, parts: SplitResult, query: Mapping[str, str], **options: Any) -> FileSystemStore:
        """``file:///abs/path``, ``file:rel/path`` or a bare path; created when missing (unless
        ``create=0``, or ``readonly=1``). Options: ``durable``, ``create``, ``readonly``, ``magic_fname``,
        ``name``.

        Raises
        ------
        ValueError : a host other than ``localhost``, no path, or an unknown option.
        StoreError : the path is a non-empty directory that is not a store (a typo such as
            ``--store ~`` must not turn a home directory into one).
        """
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"file URLs name a local path: {url!r}")
        path = os.path.expanduser(unquote(parts.path))
        if not path:
            raise ValueError(f"no path in {url!r}")
        given = url_options(url, query, {"durable": as_bool, "create": as_bool, "readonly": as_bool,
                                         "magic_fname": as_str, "name": as_str})
        given.update(options)
        given.setdefault("create", not given.get("readonly", False))
        magic = os.path.join(path, given.get("magic_fname", ".FSStore"))
        if given["create"] and os.path.isdir(path) and os.listdir(path) and not os.path.exists(magic):
            raise StoreError(f"{path} is not a store (no {os.path.basename(magic)} file) and is "
                             f"not empty: refusing to make it one")
        return cls(path, **given)

    @property
    def journal_path(self) -> str:
        """The file that holds the change journal (the SQLite index; every commit writes its
        write-ahead log beside it, in the same directory)."""
        return self._index.file

    # ------------------------------------------------------------ lifecycle

    def _connect(self, credentials: Any) -> None:
        try:
            st = os.stat(self.path)
            if not self.readonly:
                os.makedirs(self._tmp.directory, exist_ok=True)
            self._lock.open()
        except OSError as exc:
            raise store_error(exc, f"cannot open the store at {self.path}") from exc
        self._committer.root_id = (st.st_dev, st.st_ino)
        self._index.wal_safety_pages = self.wal_safety_pages
        try:
            if self.readonly:
                self._connect_readonly()
            else:
                self._connect_writable()
        except BaseException:
            self._index.close()
            self._lock.close()
            raise
        if not self.readonly:
            self._reserve.make()
            self._checkpointer.start(self.checkpoint_idle)

    def _disconnect(self) -> None:
        self._checkpointer.stop()
        with self._lock.mutex:
            self._index.close()
            self._lock.close()

    def _info(self) -> dict[str, Any]:
        d: dict[str, Any] = {"path": self.path, "durable": self.durable, "readonly": self.readonly}
        if self._connected:
            d["keys"] = self._index.count()
            d["sequence"] = self.last_sequence()
        return d

    # ------------------------------------------------------------ reads

    def _current(self, key: str) -> _Entry | None:
        """(data: file path or bytes, metadata) of ``key`` as this thread sees it, or None."""
        staging = self._tx_state()
        if staging is not None and staging.touched(key):
            return staging.seen(key)
        row = self._index.located(key)
        if row is None:
            return None
        data = row[2] if row[2] is not None else key_paths(self.path, key, row[1])[0]
        return data, json.loads(row[0])

    def _get(self, key: str) -> Value:
        staging = self._tx_state()
        if staging is not None and staging.touched(key):
            return self._staged_value(key, staging.seen(key))
        # A small value is in its index row with its metadata: one SQLite snapshot, no lock.
        row = self._index.inline(key)
        if row is None:
            raise KeyError(key)
        if row[3] is not None:
            return bytes_value(row[3], row[0], row[1], row[2], row[4])
        # Under the shared lock no commit is half-applied, so the index row and the data
        # file opened are of the same commit; the open descriptor keeps that data.
        with self._lock.shared:
            full = self._index.full(key)
            if full is None:
                raise KeyError(key)
            text, created, modified, row_path, data, revision = full
            if data is not None:  # it became a small value meanwhile
                return bytes_value(data, text, created, modified, revision)
            try:
                fd = os.open(key_paths(self.path, key, row_path)[0], os.O_RDONLY)
            except (FileNotFoundError, NotADirectoryError):
                raise StoreError(f"the data file of {key!r} is missing: the directory was changed "
                                 f"behind the store's back; call reindex()") from None
        size = os.fstat(fd).st_size
        if size <= self.eager_read:
            # Small values are read at once: no descriptor stays open for them.
            try:
                small = os.pread(fd, size, 0)
            finally:
                os.close(fd)
            return bytes_value(small, text, created, modified, revision)
        return fd_value(fd, size, text, created, modified, revision)

    @staticmethod
    def _staged_value(key: str, entry: _Entry | None) -> Value:
        if entry is None:
            raise KeyError(key)
        data, metadata = entry
        if isinstance(data, bytes):
            return bytes_value(data, json.dumps(metadata), time.time(), time.time())
        fd = os.open(data, os.O_RDONLY)
        st = os.fstat(fd)
        return fd_value(fd, st.st_size, metadata, st.st_mtime, st.st_mtime)

    def _get_metadata(self, key: str) -> dict[str, Any]:
        staging = self._tx_state()
        if staging is not None and staging.touched(key):
            entry = staging.seen(key)
            if entry is None:
                raise KeyError(key)
            return json.loads(json.dumps(entry[1]))
        text = self._index.metadata(key)
        if text is None:
            raise KeyError(key)
        return json.loads(text)

    def _exists(self, key: str) -> bool:
        staging = self._tx_state()
        if staging is not None and staging.touched(key):
            return staging.seen(key) is not None
        return self._index.exists(key)

    # ------------------------------------------------------------ writes

    def _write(self, key: str, source: ProgressReader | None, metadata: dict[str, Any] | None,
               update: dict[str, Any] | None, if_revision: int | None = None) -> list[Change]:
        self._check_writable()
        op = WriteOp("write", key, metadata=metadata, update=update, if_revision=if_revision)
        try:
            if source is not None:
                op.data, op.data_tmp, op.data_crc32 = self._take(key, source)
            if metadata is not None:
                op.meta_text = dump_json(metadata)
            return self._submit(op)
        except BaseException:
            unlink(op.data_tmp)
            raise

    def _take(self, key: str, source: ProgressReader) -> tuple[bytes | None, str | None, int | None]:
        try:
            return self._tmp.take(source, self.inline_max)
        except OSError as exc:
            if exc.filename is None and exc.errno not in (28, 122):
                raise  # an error of the caller's stream, not of the store: unwrapped
            if not os.path.isdir(self.path):
                raise StoreError(f"the store's directory {self.path} is gone: nothing was written") from exc
            raise store_error(exc, f"cannot write {key!r}") from exc

    def _delete(self, key: str, if_revision: int | None = None) -> list[Change]:
        self._check_writable()
        return self._submit(WriteOp("delete", key, if_revision=if_revision))

    def _check_writable(self) -> None:
        # Called by every public write before anything happens (no progress event, no
        # stream read), and again by the hooks.
        if self.readonly:
            raise ReadOnlyError(f"the store at {self.path} is open read-only")

    def _submit(self, op: WriteOp) -> list[Change]:
        staging = self._tx_state()
        if staging is None:  # the hot path: straight to the commit
            return self._commit_ops([op])
        # Inside a transaction: check the write against this transaction's view, record
        # it, and show it to this thread's reads; nothing is visible to others yet.
        # Its condition is checked now against the committed revision (a key this
        # transaction wrote has none yet), and again at the commit.
        current = self._current(op.key)
        current_md = current[1] if current is not None else None
        expected, actual = op.if_revision, None
        if expected is not None and current is not None:
            if staging.touched(op.key):
                expected = None
            else:
                located = self._index.located(op.key)
                actual = located[3] if located is not None else None
        entry: _Entry | None = None
        if op.kind == "delete":
            plan_delete(op.key, current_md, expected=expected, revision=actual)
        else:
            outcome = plan_write(op.key, current_md, has_data=op.has_data, metadata=op.metadata,
                                 update=op.update, expected=expected, revision=actual)
            data: str | bytes
            if op.data_tmp is not None:
                data = op.data_tmp
            elif op.data is not None:
                data = op.data
            else:
                data = current[0] if outcome.data == KEEP and current is not None else b""
            entry = (data, outcome.metadata)
        staging.record(op.key, entry, op)
        return []

    def _commit_ops(self, ops: list[WriteOp]) -> list[Change]:
        try:
            return self._committer.commit(ops, self.origin, self.journal_keep, self.journal_trim_every,
                                          self.checkpoint_every)
        except DiskFullError:
            # Deletes free space: on a full disk, let them commit: copy the write-ahead log
            # into the index and empty it (TRUNCATE: its space comes back; each commit
            # adds more log pages than a small value's files free), with the space reserve
            # freed.
            if not all(op.kind == "delete" for op in ops):
                raise
            # The reserve goes first: the checkpoint itself needs room, to grow the index
            # file by the pages it copies.
            if self._reserve.release():
                log.warning("%s: the disk is full; the space reserve was freed for a delete", self.path)
            with self._lock.exclusive:
                try:
                    self._index.checkpoint(self._index.conn(), "TRUNCATE")
                except StoreError:
                    pass
        changes = self._committer.commit(ops, self.origin, self.journal_keep, self.journal_trim_every,
                                         self.checkpoint_every)
        self._reserve.make()
        return changes

    # ------------------------------------------------------------ transactions

    def _begin(self) -> _Staging:
        return _Staging()

    def _commit(self, staging: _Staging) -> list[Change]:
        if not staging.ops:
            return []
        return self._commit_ops(staging.ops)

    def _rollback(self, staging: _Staging) -> None:
        for op in staging.ops:
            unlink(op.data_tmp)

    # ------------------------------------------------------------ queries

    def _iter_keys(self, prefix: str) -> Iterable[str]:
        # Under the shared lock, as for get(): no listed key is still waiting for its files.
        with self._lock.shared:
            keys = self._index.keys(prefix)
        staging = self._tx_state()
        if staging is None or not staging.view:
            return keys
        return staging.keys(keys, prefix)

    def _query(self, criteria: dict[str, Criterion]) -> Iterable[tuple[str, dict[str, Any]]]:
        # Answered by the index (see filesystem/query.py); rows of keys this thread's
        # transaction touched are replaced by what it staged.
        with self._lock.shared:
            rows, recheck = self._index.query(criteria, True)
        staging = self._tx_state()
        out = []
        for key, text in rows:
            if staging is not None and staging.touched(key):
                continue
            metadata = json.loads(text)
            if not recheck or matches(metadata, criteria):
                out.append((key, metadata))
        if staging is not None:
            for key, entry in staging.view.items():
                if entry is not None and matches(entry[1], criteria):
                    out.append((key, json.loads(json.dumps(entry[1]))))
            out.sort()
        return out

    def _query_keys(self, criteria: dict[str, Criterion]) -> Iterable[str]:
        if self._tx_state() is None:
            with self._lock.shared:
                rows, recheck = self._index.query(criteria, False)
            if not recheck:
                return rows
            return [key for key, text in rows if matches(json.loads(text), criteria)]
        return [k for k, _ in self._query(criteria)]

    # ------------------------------------------------------------ stat

    def _stat(self, key: str) -> KeyStat:
        """Size, CRC-32 (None when the index has none) and metadata from the index; the size
        of a big value from its file's inode: no data is read."""
        staging = self._tx_state()
        if staging is not None and staging.touched(key):
            return super()._stat(key)
        with self._lock.shared:
            row = self._index.stat(key)
            if row is None:
                raise KeyError(key)
            text, modified, row_path, size, crc = row
            if size is None:
                try:
                    size = os.stat(key_paths(self.path, key, row_path)[0]).st_size
                except (FileNotFoundError, NotADirectoryError):
                    raise StoreError(f"the data file of {key!r} is missing: the directory was changed "
                                     f"behind the store's back; call reindex()") from None
        return KeyStat(size, None if crc is None else crc32_text(crc), json.loads(text), modified)

    # ------------------------------------------------------------ index and journal

    def reindex(self) -> int:
        """Rebuild the index from the files (the source of truth); return the number of keys.

        Files whose names are not a key's canonical name (see the README's layout) are
        skipped with a warning. The change journal is kept (an index rebuilt without one
        starts its journal above the sequence mark: sequences never go back).

        Raises ReadOnlyError on a store opened read-only.
        """
        self._ready()
        self._check_writable()
        return self._reindex()

    def _reindex(self) -> int:
        with self._committer.exclusive() as conn:
            try:
                rows = scan(self.path, self.inline_max)
            except OSError as exc:
                raise store_error(exc, f"cannot read the files of {self.path}") from exc
            # An empty journal (a new index) starts above every sequence ever committed.
            floor = self._high_water.read() if self._index.pending(conn) is None else 0
            self._index.rebuild(conn, rows, floor)
        return len(rows)

    def last_sequence(self) -> int:
        """The sequence number of the newest change in the journal (0 when none)."""
        self._ready()
        return max(self._index.last_sequence(), self.journal_floor())

    def journal_floor(self) -> int:
        """Changes with a sequence at or below this number are no longer in the journal."""
        self._ready()
        return self._index.journal_floor()

    def _history(self, key: str) -> list[Change]:
        return [Change(kind, key, {}, seq, timestamp, text, revision=seq, origin=origin)
                for seq, kind, text, origin, timestamp in self._index.history(key)]

    def changes_since(self, sequence: int, limit: int = 1000) -> list[JournalEntry]:
        """Journal entries with a sequence greater than ``sequence``, oldest first."""
        self._ready()
        return [JournalEntry(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5])
                for r in self._index.changes_since(sequence, limit)]

    def _event_source(self, pattern: str, kinds: tuple[str, ...], since: int | None, maxsize: int) -> Any:
        # events() follows the journal (every process's commits, at the reader's pace).
        from ...streams import JournalSource

        return JournalSource(self, pattern, kinds, since)

