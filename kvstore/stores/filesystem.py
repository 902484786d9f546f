"""FileSystemStore: a directory of ``<key>.data`` + ``<key>.metadata`` files (encore's layout).

How a commit works
------------------
A value bigger than ``_INLINE_MAX`` is first written to a temporary file in
``.kvstore/tmp`` (outside any lock, so readers never wait for a stream); a smaller one is
kept in memory. Then, holding the store's exclusive lock (``flock`` on ``.kvstore/lock``,
plus a thread mutex), one SQLite transaction in ``.kvstore/index.sqlite`` (WAL mode)
records, together:

* the index rows (``keys``: metadata per key, and the bytes of a small value;
  ``meta``: one row per top-level name with its canonical JSON value, for indexed queries),
* the change journal row(s) with their sequence numbers, the last of them also listing the
  file operations that realise the change (``journal.files``): renames of temporary files,
  unlinks, and in-place writes of a small value's data file and of metadata files, whose
  contents are the index rows.

That COMMIT is the commit point (it writes the WAL; copying the WAL into the index file,
with its fsyncs, is left to a background thread's checkpoints, off the writer's path).
The file operations are then done, still under the lock.
If the process dies before they are all done (even in the middle of a write), the next
writer (or the next ``connect``) finds the newest journal row still listing its operations
and does them again, from the index rows: every operation is idempotent because temporary
names are never reused and writes are whole. The next commit clears that list. So a key is
always its complete old pair or its complete new pair.

A small value is read from its index row: data and metadata of one commit, no lock. A big
one is read under the lock *shared*, held only while the index row is read and the data
file opened; the open descriptor keeps the data of that moment, so a :class:`Value` is a
consistent snapshot however long it is read. A file that is a big value's is therefore
always replaced (renamed over or unlinked), never rewritten in place.

Each commit touches few pages, which is what a WAL commit costs: ``keys`` and ``meta`` are
WITHOUT ROWID tables (no second B-tree), only the ``meta`` rows of names whose value
changed are written, and the journal's sequence is its rowid (never reused: trimming keeps
the newest rows).

The files stay the source of truth: ``reindex()`` rebuilds the index from them, and an
encore-era directory (no index yet) is indexed when first connected.

Local filesystems only: NFS does not give ``flock`` and ``rename`` the guarantees relied on.
"""

from __future__ import annotations

import errno
import fcntl
import io
import itertools
import json
import logging
import os
import sqlite3
import threading
import time
import urllib.parse
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

from .._keys import (
    DATA_SUFFIX,
    METADATA_SUFFIX,
    canonical,
    check_key,
    dump_json,
    key_to_relpath,
    matches,
    relpath_to_key,
    split_suffix,
)
from ..base import AbstractStore, Change, ProgressReader, Value
from ..errors import InvalidKeyError, StoreError
from ..query import Criterion

__all__ = ["FileSystemStore", "init_shared_store", "JournalEntry"]

log = logging.getLogger("kvstore.filesystem")

INTERNAL_DIR = ".kvstore"
_SCHEMA_VERSION = "4"
# keys.path is NULL for a key stored under its canonical file name, else the name another
# tool (encore) gave its files. keys.data holds a copy of a value of _INLINE_MAX bytes or
# less (NULL for a bigger one): get() serves it from there, and it is what a commit's
# in-place file writes are redone from.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS settings(name TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS keys(
    key TEXT PRIMARY KEY, metadata TEXT NOT NULL, created REAL, modified REAL,
    path TEXT, data BLOB) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta(
    name TEXT NOT NULL, value TEXT NOT NULL, key TEXT NOT NULL,
    PRIMARY KEY(name, value, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS journal(
    seq INTEGER PRIMARY KEY, key TEXT NOT NULL, kind TEXT NOT NULL,
    metadata TEXT NOT NULL, origin TEXT NOT NULL, timestamp REAL NOT NULL, files TEXT);
"""
_JOURNAL_KEEP = 100_000
_EAGER_READ = 65536  # values up to this size are read whole by get()
_INLINE_MAX = 4096  # values up to this size are kept in the index too (keys.data)
_JOURNAL_TRIM_EVERY = 1_000
# Checkpoints (copying the WAL into the index file, with its fsyncs) are a background
# thread's work, asked for every _CHECKPOINT_EVERY commits and at least every
# _CHECKPOINT_IDLE seconds after one; a writer checkpoints itself only if the WAL reaches
# _WAL_SAFETY_PAGES (the thread is stuck, or gone after a fork).
_CHECKPOINT_EVERY = 256
_CHECKPOINT_IDLE = 1.0
_WAL_SAFETY_PAGES = 4_000


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
    metadata: Dict[str, Any]
    origin: str
    timestamp: float


# A staged write: kind "write" or "delete". New data is either ``data`` (a small value, in
# memory) or ``data_tmp`` (a temporary file written before the commit); metadata
# replaces, update merges.
@dataclass
class _Op:
    kind: str
    key: str
    data_tmp: Optional[str] = None
    data: Optional[bytes] = None
    metadata: Optional[Dict[str, Any]] = None
    update: Optional[Dict[str, Any]] = None
    meta_text: Optional[str] = None  # JSON of ``metadata``, made once


@dataclass
class _Staging:
    ops: List[_Op] = field(default_factory=list)
    # key -> (data: a file path or the bytes, metadata) as this transaction sees it;
    # None when deleted
    view: Dict[str, Optional[Tuple["str | bytes", Dict[str, Any]]]] = field(default_factory=dict)


class _Fd:
    """An open file descriptor shared by a Value and its streams; closed when all are gone."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __del__(self) -> None:
        os.close(self.fd)


class _RangeReader(io.RawIOBase):
    """Reads ``[start, end)`` of a shared descriptor with pread: independent positions."""

    def __init__(self, fd: _Fd, start: int, end: int) -> None:
        super().__init__()
        self._fd = fd
        self._start = start
        self._pos = start
        self._end = end

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos - self._start

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: self._start, 1: self._pos, 2: self._end}[whence]
        self._pos = max(self._start, base + offset)
        return self._pos - self._start

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self._end - self._pos)
        if n <= 0:
            return 0
        view = memoryview(buffer).cast("B")[:n]
        got = os.preadv(self._fd.fd, [view], self._pos)
        self._pos += got
        return got

    def copy_to_fd(self, fd: int, advance: Any, chunk: int) -> None:
        """Copy the rest of the range into ``fd`` in the kernel, ``advance(n)`` per chunk."""
        while self._pos < self._end:
            n = os.copy_file_range(self._fd.fd, fd, min(chunk, self._end - self._pos), self._pos)
            if n == 0:
                return
            self._pos += n
            advance(n)

    def read(self, size: int = -1) -> bytes:
        if self.closed:
            raise ValueError("read of closed file")
        n = self._end - self._pos if size is None or size < 0 else min(size, self._end - self._pos)
        if n <= 0:
            return b""
        data = os.pread(self._fd.fd, n, self._pos)
        self._pos += len(data)
        return data

    def readall(self) -> bytes:
        return self.read(-1)


def _fd_value(fd: int, size: int, metadata: Any, created: float, modified: float) -> Value:
    """A Value reading an open descriptor; ``metadata`` is a dict or its JSON text."""
    holder = _Fd(fd)
    text = metadata if isinstance(metadata, str) else json.dumps(metadata)
    return Value(size=size, metadata_json=text, created=created, modified=modified,
                 opener=lambda start, end: io.BufferedReader(_RangeReader(holder, start, end), 1 << 16))


def _bytes_value(data: bytes, metadata_json: str, created: float, modified: float) -> Value:
    return Value(size=len(data), metadata_json=metadata_json, created=created, modified=modified,
                 opener=lambda start, end: io.BytesIO(data[start:end]))


def _read_json(path: str) -> Dict[str, Any]:
    with open(path, "rb") as f:
        return json.loads(f.read() or b"{}")


class FileSystemStore(AbstractStore):
    """A store in a local directory, shared safely by threads and processes.

    Parameters
    ----------
    path : the store's directory.
    create : make the directory and its magic file if missing (else StoreError).
    magic_fname : the file that marks the directory as a store (encore's ``.FSStore``).
    name : optional name shown by ``info()``.
    durable : fsync files and directories so a commit survives a power cut (slower).

    Raises
    ------
    StoreError : ``path`` is not a store and ``create`` is false.
    """

    def __init__(self, path: "str | os.PathLike[str]", *, create: bool = False,
                 magic_fname: str = ".FSStore", name: Optional[str] = None,
                 durable: bool = False) -> None:
        super().__init__(name=name)
        self.path = os.path.abspath(os.fspath(path))
        self.magic_fname = magic_fname
        self.durable = bool(durable)
        magic = os.path.join(self.path, magic_fname)
        if create:
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
        self._tmpdir = os.path.join(self._internal, "tmp")
        self._mutex = threading.RLock()
        self._lock_fd = -1
        self._pid = 0
        self._conns: Dict[int, sqlite3.Connection] = {}
        self._counter = itertools.count()
        self._token = uuid.uuid4().hex[:12]
        self._schema_ready = False
        # sequence of the last commit whose file operations this instance applied, so
        # that it does not replay them, and of the journal row still listing files
        # (cleared by the next commit); see _replay_pending
        self._applied = 0
        self._listed = 0
        self._commits = 0  # commits made by this instance
        self._commits_asked = 0  # ... when a checkpoint was last asked for
        self._checkpointer: Optional[threading.Thread] = None
        self._checkpoint_wake = threading.Event()
        self._checkpoint_stop = threading.Event()

    # ------------------------------------------------------------ lifecycle

    def _connect(self, credentials: Any) -> None:
        try:
            os.makedirs(self._tmpdir, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot prepare {self._internal}: {exc}") from exc
        self._open_lock()
        with self._exclusive() as conn:
            self._clean_tmp()
            row = conn.execute("SELECT value FROM settings WHERE name='indexed'").fetchone()
            needs_index = row is None
        if needs_index:
            self._reindex()
        self._start_checkpointer()

    def _disconnect(self) -> None:
        self._stop_checkpointer()
        with self._mutex:
            for conn in self._conns.values():
                try:
                    conn.close()
                except sqlite3.Error:
                    pass
            self._conns.clear()
            self._schema_ready = False
            if self._lock_fd >= 0:
                os.close(self._lock_fd)
                self._lock_fd = -1

    def _info(self) -> Dict[str, Any]:
        d: Dict[str, Any] = {"path": self.path, "durable": self.durable}
        if self._connected:
            conn = self._conn()
            d["keys"] = conn.execute("SELECT count(*) FROM keys").fetchone()[0]
            d["sequence"] = self.last_sequence()
        return d

    # ------------------------------------------------------------ checkpoints

    def _index_uri(self, mode: str) -> str:
        return ("file:" + urllib.parse.quote(os.path.join(self._internal, "index.sqlite"))
                + "?mode=" + mode)

    def _start_checkpointer(self) -> None:
        with self._mutex:
            thread = self._checkpointer
            if thread is not None and thread.is_alive():
                return
            self._checkpoint_stop.clear()
            thread = threading.Thread(target=self._checkpoint_loop,
                                      name=f"kvstore-checkpoint[{self.path}]", daemon=True)
            self._checkpointer = thread
            thread.start()

    def _stop_checkpointer(self) -> None:
        with self._mutex:
            thread, self._checkpointer = self._checkpointer, None
        if thread is None:
            return
        self._checkpoint_stop.set()
        self._checkpoint_wake.set()
        if thread.is_alive() and thread is not threading.current_thread():
            thread.join()

    def _after_commit(self) -> None:
        # Called under the exclusive lock after each COMMIT.
        self._commits += 1
        if self._commits - self._commits_asked >= _CHECKPOINT_EVERY:
            self._commits_asked = self._commits
            if self._checkpointer is None or not self._checkpointer.is_alive():
                self._start_checkpointer()  # first commit after a fork
            self._checkpoint_wake.set()

    def _checkpoint_loop(self) -> None:
        """Copy the WAL into the index file now and then (SQLite's PASSIVE checkpoint: it
        waits for no reader or writer), so that writers never pay for it."""
        conn: Optional[sqlite3.Connection] = None
        done = self._commits  # commits of this instance that the last checkpoint covered
        try:
            while not self._checkpoint_stop.is_set():
                # Woken when a writer asks; else, a while after the last commits.
                self._checkpoint_wake.wait(_CHECKPOINT_IDLE)
                self._checkpoint_wake.clear()
                if self._checkpoint_stop.is_set():
                    break
                if self._commits == done:
                    continue
                done = self._commits
                try:
                    if conn is None:
                        conn = sqlite3.connect(self._index_uri("rw"), uri=True, timeout=60,
                                               isolation_level=None, check_same_thread=False)
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:  # the next writers checkpoint themselves
                    busy = "locked" in str(exc) or "busy" in str(exc)  # another one runs
                    log.log(logging.DEBUG if busy else logging.WARNING,
                            "background checkpoint of %s failed: %s", self.path, exc)
        finally:
            if conn is not None:
                conn.close()

    def _open_lock(self) -> None:
        with self._mutex:
            if self._lock_fd >= 0 and self._pid == os.getpid():
                return
            # After a fork the inherited descriptor shares its lock with the parent:
            # take a fresh one, and fresh SQLite connections.
            self._conns = {}
            self._lock_fd = os.open(os.path.join(self._internal, "lock"), os.O_RDWR | os.O_CREAT, 0o644)
            self._pid = os.getpid()

    def _conn(self) -> sqlite3.Connection:
        if self._pid != os.getpid():
            self._open_lock()
        ident = threading.get_ident()
        conn = self._conns.get(ident)
        if conn is None:
            # Only the first connection may create the index: a later one finding it gone
            # (the directory was removed) must fail, not start an empty index.
            mode = "rw" if self._schema_ready else "rwc"
            try:
                conn = sqlite3.connect(self._index_uri(mode), uri=True, timeout=60,
                                       isolation_level=None, check_same_thread=False)
            except sqlite3.OperationalError as exc:
                raise StoreError(f"cannot open the index of {self.path}: {exc}") from exc
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={'FULL' if self.durable else 'NORMAL'}")
            conn.execute(f"PRAGMA wal_autocheckpoint={_WAL_SAFETY_PAGES}")
            with self._mutex:
                if not self._schema_ready:
                    _ensure_schema(conn)
                    self._schema_ready = True
                self._conns[ident] = conn
        return conn

    @contextmanager
    def _shared(self) -> Iterator[None]:
        """Hold the store lock shared: no commit is half-applied while held."""
        with self._mutex:
            if self._pid != os.getpid():
                self._open_lock()
            fcntl.flock(self._lock_fd, fcntl.LOCK_SH)
            try:
                yield
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    @contextmanager
    def _exclusive(self, begin: bool = False) -> Iterator[sqlite3.Connection]:
        """Hold the store lock exclusively, with every earlier commit fully applied.

        With ``begin`` an SQLite write transaction is open from the start (one snapshot
        for the checks and the writes; the caller commits), and rolled back on error.
        """
        with self._mutex:
            conn = self._conn()
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                if begin:
                    conn.execute("BEGIN IMMEDIATE")
                try:
                    self._replay_pending(conn)
                    yield conn
                except BaseException:
                    if begin and conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    # ------------------------------------------------------------ paths

    def _paths(self, rel: str) -> Tuple[str, str]:
        base = os.path.join(self.path, rel)
        return base + DATA_SUFFIX, base + METADATA_SUFFIX

    def _tmp(self, suffix: str) -> str:
        # pid first: _clean_tmp removes the files of dead processes; the instance token
        # keeps two instances of one process apart. Names are never reused.
        return os.path.join(self._tmpdir, f"{os.getpid()}-{self._token}-{next(self._counter)}{suffix}")

    def _new_tmp(self, fill: Callable[[int], None]) -> str:
        """A new temporary file filled by ``fill(fd)``; removed again if that fails."""
        path = self._tmp(".part")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            fill(fd)
            if self.durable:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            _unlink(path)
            raise
        os.close(fd)
        return path

    def _take(self, source: ProgressReader, op: _Op) -> None:
        """Read a small value into ``op.data``; stream a bigger one to ``op.data_tmp``."""
        head = b""
        if source.steps <= _INLINE_MAX:  # small, or of unknown size: read to find out
            chunks: List[bytes] = []
            size = 0
            while size <= _INLINE_MAX:
                chunk = source.read(source.buffer_size)
                if not chunk:
                    op.data = b"".join(chunks)
                    return
                chunks.append(chunk)
                size += len(chunk)
            head = b"".join(chunks)
        op.data_tmp = self._stage_stream(source, head)

    def _stage_stream(self, source: ProgressReader, head: bytes) -> str:
        def fill(fd: int) -> None:
            _write_all(fd, head)
            # A regular file is copied by the kernel; anything else is read in chunks.
            if source.copy_to_fd(fd):
                return
            while True:
                chunk = source.read(source.buffer_size)
                if not chunk:
                    return
                _write_all(fd, chunk)

        return self._new_tmp(fill)

    # ------------------------------------------------------------ reads

    def _locate(self, key: str, row_path: Optional[str]) -> Tuple[str, str]:
        """Data and metadata paths of ``key``: its canonical name, or the file name an
        older writer (encore) gave it, as recorded in the index."""
        return self._paths(row_path if row_path is not None else key_to_relpath(key))

    def _current(self, key: str) -> Optional[Tuple["str | bytes", Dict[str, Any]]]:
        """(data: file path or bytes, metadata) of ``key`` as this thread sees it, or None."""
        staging = self._tx_state()
        if staging is not None and key in staging.view:
            return staging.view[key]
        row = self._conn().execute("SELECT metadata, path, data FROM keys WHERE key=?", (key,)).fetchone()
        if row is None:
            return None
        data = row[2] if row[2] is not None else self._locate(key, row[1])[0]
        return data, json.loads(row[0])

    def _get(self, key: str) -> Value:
        staging = self._tx_state()
        if staging is not None and key in staging.view:
            current = staging.view[key]
            if current is None:
                raise KeyError(key)
            if isinstance(current[0], bytes):
                return _bytes_value(current[0], json.dumps(current[1]), time.time(), time.time())
            fd = os.open(current[0], os.O_RDONLY)
            st = os.fstat(fd)
            return _fd_value(fd, st.st_size, current[1], st.st_mtime, st.st_mtime)
        conn = self._conn()
        # A small value is in its index row with its metadata: one SQLite snapshot, no lock.
        row = conn.execute("SELECT metadata, created, modified, data FROM keys WHERE key=?", (key,)).fetchone()
        if row is None:
            raise KeyError(key)
        if row[3] is not None:
            return _bytes_value(row[3], row[0], row[1], row[2])
        # Under the shared lock no commit is half-applied, so the index row and the data
        # file opened are of the same commit; the open descriptor keeps that data.
        with self._mutex:
            fcntl.flock(self._lock_fd, fcntl.LOCK_SH)
            try:
                row = conn.execute("SELECT metadata, created, modified, path, data FROM keys WHERE key=?",
                                   (key,)).fetchone()
                if row is None:
                    raise KeyError(key)
                if row[4] is not None:  # it became a small value meanwhile
                    return _bytes_value(row[4], row[0], row[1], row[2])
                try:
                    fd = os.open(self._locate(key, row[3])[0], os.O_RDONLY)
                except (FileNotFoundError, NotADirectoryError):
                    raise StoreError(f"the data file of {key!r} is missing: the directory was changed "
                                     f"behind the store's back; call reindex()") from None
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        size = os.fstat(fd).st_size
        if size <= _EAGER_READ:
            # Small values are read at once: no descriptor stays open for them.
            try:
                data = os.pread(fd, size, 0)
            finally:
                os.close(fd)
            return _bytes_value(data, row[0], row[1], row[2])
        return _fd_value(fd, size, row[0], row[1], row[2])

    def _get_metadata(self, key: str) -> Dict[str, Any]:
        staging = self._tx_state()
        if staging is not None and key in staging.view:
            current = staging.view[key]
            if current is None:
                raise KeyError(key)
            return json.loads(json.dumps(current[1]))
        row = self._conn().execute("SELECT metadata FROM keys WHERE key=?", (key,)).fetchone()
        if row is None:
            raise KeyError(key)
        return json.loads(row[0])

    def _exists(self, key: str) -> bool:
        staging = self._tx_state()
        if staging is not None and key in staging.view:
            return staging.view[key] is not None
        return self._conn().execute("SELECT 1 FROM keys WHERE key=?", (key,)).fetchone() is not None

    # ------------------------------------------------------------ writes

    def _write(self, key: str, source: Optional[ProgressReader], metadata: Optional[Dict[str, Any]],
               update: Optional[Dict[str, Any]]) -> List[Change]:
        op = _Op("write", key, metadata=metadata, update=update)
        try:
            if source is not None:
                self._take(source, op)
            if metadata is not None:
                op.meta_text = dump_json(metadata)
            return self._submit(op)
        except BaseException:
            _unlink(op.data_tmp)
            raise

    def _delete(self, key: str) -> List[Change]:
        return self._submit(_Op("delete", key))

    def _submit(self, op: _Op) -> List[Change]:
        staging = self._tx_state()
        if staging is None:
            return self._commit_ops([op])
        # Inside a transaction: check the write against this transaction's view, record
        # it, and show it to this thread's reads; nothing is visible to others yet.
        current = self._current(op.key)
        if op.kind == "delete":
            if current is None:
                raise KeyError(op.key)
            staging.view[op.key] = None
        else:
            if op.update is not None:
                if current is None:
                    raise KeyError(op.key)
                new_md = {**current[1], **op.update}
            elif op.metadata is not None:
                new_md = op.metadata
            else:
                new_md = current[1] if current is not None else {}
            data: "str | bytes"
            if op.data_tmp is not None:
                data = op.data_tmp
            elif op.data is not None:
                data = op.data
            else:
                data = current[0] if current is not None else b""
            staging.view[op.key] = (data, new_md)
        staging.ops.append(op)
        return []

    def _commit_ops(self, ops: List[_Op]) -> List[Change]:
        """Apply ``ops`` as one commit (see the module docstring). All or nothing."""
        with self._exclusive(begin=True) as conn:
            now = time.time()
            # File operations, each [op, path, key or target]: "rename" tmp -> path,
            # "unlink" path, "data"/"meta" path: write the key's value/metadata there as
            # its index row holds it (in place: redone from the row if interrupted).
            files: List[List[Optional[str]]] = []
            # Under the exclusive lock, with earlier commits fully applied, the index says
            # exactly what the files hold: read the current state from it.
            # key -> (metadata or None when absent, recorded path, value is inline)
            view: Dict[str, Tuple[Optional[Dict[str, Any]], Optional[str], bool]] = {}
            final: Dict[str, Tuple[Optional[bytes], str]] = {}  # key -> (inline data, metadata text)
            records: List[_Record] = []
            for op in ops:
                if op.key in view:
                    current, row_path, inline = view[op.key]
                else:
                    row = conn.execute("SELECT metadata, path, data IS NOT NULL FROM keys WHERE key=?",
                                       (op.key,)).fetchone()
                    if row is None:
                        current, row_path, inline = None, None, False
                    else:
                        current, row_path, inline = json.loads(row[0]), row[1], bool(row[2])
                data_path, meta_path = self._locate(op.key, row_path)
                if op.kind == "delete":
                    if current is None:
                        raise KeyError(op.key)
                    files.append(["unlink", data_path, None])
                    files.append(["unlink", meta_path, None])
                    view[op.key] = (None, None, False)
                    records.append(_Record("delete", op.key, current, dump_json(current),
                                           current, _KEEP))
                    continue
                text = op.meta_text
                if op.update is not None:
                    if current is None:
                        raise KeyError(op.key)
                    metadata = {**current, **op.update}
                    text = None
                elif op.metadata is not None:
                    metadata = op.metadata
                else:
                    metadata = current if current is not None else {}
                if text is None:
                    text = dump_json(metadata)
                data: Any = _KEEP
                if op.data_tmp is not None:
                    files.append(["rename", op.data_tmp, data_path])
                    data, inline = None, False
                elif op.data is not None or current is None:
                    data = op.data if op.data is not None else b""
                    if current is not None and not inline:
                        # A reader may hold the old (big) file open: it keeps its inode.
                        files.append(["unlink", data_path, None])
                    files.append(["data", data_path, op.key])
                    inline = True
                if metadata is not current:
                    files.append(["meta", meta_path, op.key])
                view[op.key] = (metadata, row_path, inline)
                final[op.key] = (data if data is not _KEEP else final.get(op.key, (None, ""))[0], text)
                records.append(_Record("update" if current is not None else "set", op.key, metadata, text,
                                       current, data))
            changes = self._record(conn, records, files, now)
            # The commit point has passed: make the files match it. The journal keeps
            # listing them until the next commit.
            self._listed = changes[-1].sequence or 0
            try:
                self._apply_files(files, final)
            except OSError as exc:
                # The change is committed and visible; the next commit (or connect) of any
                # instance finishes its files.
                log.error("the files of change %s in %s are not all written yet (%s); the next "
                          "commit finishes them", self._listed, self.path, exc)
            else:
                self._applied = self._listed
        return changes

    def _record(self, conn: sqlite3.Connection, records: List["_Record"],
                files: List[List[Optional[str]]], now: float) -> List[Change]:
        """Index rows, journal rows and the file operations, then COMMIT (the transaction
        was begun by ``_exclusive``)."""
        changes = []
        if self._listed:  # the previous commit's files are applied by now
            conn.execute("UPDATE journal SET files=NULL WHERE seq=?", (self._listed,))
        last = len(records) - 1
        for i, r in enumerate(records):
            key = r.key
            cur = conn.execute(
                "INSERT INTO journal(key, kind, metadata, origin, timestamp, files) VALUES (?,?,?,?,?,?)",
                (key, r.kind, r.text, self.origin, now, dump_json(files) if i == last else None))
            changes.append(Change(r.kind, key, r.metadata, cur.lastrowid, now, r.text))
            if r.kind == "delete":
                conn.execute("DELETE FROM keys WHERE key=?", (key,))
                if r.old:
                    conn.executemany("DELETE FROM meta WHERE name=? AND value=? AND key=?",
                                     [(n, canonical(v), key) for n, v in r.old.items()])
                continue
            if r.data is _KEEP:
                conn.execute(
                    "INSERT INTO keys(key, metadata, created, modified) VALUES (?,?,?,?) ON CONFLICT(key) "
                    "DO UPDATE SET metadata=excluded.metadata, modified=excluded.modified",
                    (key, r.text, now, now))
            else:
                conn.execute(
                    "INSERT INTO keys(key, metadata, created, modified, data) VALUES (?,?,?,?,?) "
                    "ON CONFLICT(key) DO UPDATE SET metadata=excluded.metadata, "
                    "modified=excluded.modified, data=excluded.data",
                    (key, r.text, now, now, r.data))
            if r.metadata is r.old:
                continue  # the data changed, not the metadata
            # Only the names whose value changed touch the meta index.
            new = {n: canonical(v) for n, v in r.metadata.items()}
            was = {n: canonical(v) for n, v in r.old.items()} if r.old else {}
            gone = [(n, c, key) for n, c in was.items() if new.get(n) != c]
            if gone:
                conn.executemany("DELETE FROM meta WHERE name=? AND value=? AND key=?", gone)
            added = [(n, c, key) for n, c in new.items() if was.get(n) != c]
            if added:
                conn.executemany("INSERT INTO meta(name, value, key) VALUES (?,?,?)", added)
        # Trim when this commit's sequence numbers cross a multiple of the interval, so
        # that short-lived writers trim too.
        first, newest = changes[0].sequence or 0, changes[-1].sequence or 0
        if (first - 1) // _JOURNAL_TRIM_EVERY != newest // _JOURNAL_TRIM_EVERY:
            self._trim_journal(conn, newest)
        conn.execute("COMMIT")
        self._after_commit()
        return changes

    def _trim_journal(self, conn: sqlite3.Connection, last: int) -> None:
        floor = last - _JOURNAL_KEEP
        if floor > 0:
            conn.execute("DELETE FROM journal WHERE seq <= ?", (floor,))
            conn.execute("INSERT INTO settings(name, value) VALUES ('journal_floor', ?) "
                         "ON CONFLICT(name) DO UPDATE SET value=excluded.value "
                         "WHERE CAST(excluded.value AS INTEGER) > CAST(settings.value AS INTEGER)",
                         (str(floor),))

    def _apply_files(self, files: Iterable[List[Optional[str]]],
                     final: Optional[Dict[str, Tuple[Optional[bytes], str]]] = None,
                     conn: Optional[sqlite3.Connection] = None) -> None:
        """Carry out a commit's file operations; ``final`` holds the contents its "data"
        and "meta" operations write, else (a replay) they are read from the index."""
        dirs = set()
        for op, path, arg in files:
            assert path is not None
            if op == "rename":
                assert arg is not None
                try:
                    os.replace(path, arg)
                except FileNotFoundError:
                    if os.path.exists(path):  # the target's directory is missing
                        os.makedirs(os.path.dirname(arg), exist_ok=True)
                        os.replace(path, arg)
                    # else: already applied by an earlier replay
                dirs.add(os.path.dirname(arg))
            elif op == "unlink":
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
                self._prune_dirs(os.path.dirname(path))
            else:
                assert arg is not None
                if final is not None:
                    data, text = final[arg]
                else:
                    assert conn is not None
                    row = conn.execute("SELECT data, metadata FROM keys WHERE key=?", (arg,)).fetchone()
                    if row is None:  # deleted later in the same commit
                        continue
                    data, text = row
                payload = data if op == "data" else text.encode("utf-8")
                if payload is None:  # replaced by a big value later in the same commit
                    continue
                _put_file(path, payload, self.durable)
                if self.durable:
                    dirs.add(os.path.dirname(path))
        if self.durable:
            dirs.add(self._tmpdir)
            for d in dirs:
                _fsync_dir(d)

    def _prune_dirs(self, directory: str) -> None:
        # Remove directories left empty by a delete, up to (not including) the root.
        while len(directory) > len(self.path) and directory.startswith(self.path + os.sep):
            try:
                os.rmdir(directory)
            except OSError:
                return
            directory = os.path.dirname(directory)

    def _replay_pending(self, conn: sqlite3.Connection) -> None:
        # The newest journal row lists its commit's file operations until the next commit.
        # Unless this instance applied them itself, their writer may have died half-way:
        # apply them again (every operation is idempotent).
        row = conn.execute("SELECT seq, files FROM journal ORDER BY seq DESC LIMIT 1").fetchone()
        if row is None or row[1] is None:
            self._listed = 0
            return
        self._listed = row[0]
        if row[0] != self._applied:
            log.info("finishing the file operations of change %s in %s", row[0], self.path)
            self._apply_files(json.loads(row[1]), conn=conn)
            self._applied = row[0]

    def _clean_tmp(self) -> None:
        """Remove temporary files left by processes that died before committing."""
        for name in os.listdir(self._tmpdir):
            pid_text = name.split("-", 1)[0]
            if pid_text.isdigit() and int(pid_text) != os.getpid() and not _pid_alive(int(pid_text)):
                _unlink(os.path.join(self._tmpdir, name))

    # ------------------------------------------------------------ transactions

    def _begin(self) -> _Staging:
        return _Staging()

    def _commit(self, staging: _Staging) -> List[Change]:
        if not staging.ops:
            return []
        return self._commit_ops(staging.ops)

    def _rollback(self, staging: _Staging) -> None:
        for op in staging.ops:
            _unlink(op.data_tmp)

    # ------------------------------------------------------------ queries

    def _iter_keys(self, prefix: str) -> Iterable[str]:
        conn = self._conn()
        # Under the shared lock, as for get(): no listed key is still waiting for its files.
        with self._shared():
            if prefix:
                rows = conn.execute("SELECT key FROM keys WHERE key >= ? AND key < ? ORDER BY key",
                                    (prefix, _prefix_end(prefix))).fetchall()
            else:
                rows = conn.execute("SELECT key FROM keys ORDER BY key").fetchall()
        keys = [r[0] for r in rows]
        staging = self._tx_state()
        if staging is None or not staging.view:
            return keys
        result = set(keys)
        for key, entry in staging.view.items():
            if key.startswith(prefix):
                (result.add if entry is not None else result.discard)(key)
        return sorted(result)

    def _query(self, criteria: Dict[str, Criterion]) -> Iterable[Tuple[str, Dict[str, Any]]]:
        conn = self._conn()
        sql = "SELECT k.key, k.metadata FROM keys k"
        params: List[str] = []
        clauses = []
        # TODO(issue 17): index. Only plain equalities (eq, with their canonical text) are
        # answered by SQL; operators are checked by matches() on each row below.
        for name, text in _equalities(criteria):
            clauses.append("EXISTS (SELECT 1 FROM meta m WHERE m.name=? AND m.value=? AND m.key=k.key)")
            params += [name, text]
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        with self._shared():
            rows = conn.execute(sql + " ORDER BY k.key", params).fetchall()
        staging = self._tx_state()
        out = []
        for key, text in rows:
            if staging is not None and key in staging.view:
                continue
            metadata = json.loads(text)
            if matches(metadata, criteria):
                out.append((key, metadata))
        if staging is not None:
            for key, entry in staging.view.items():
                if entry is not None and matches(entry[1], criteria):
                    out.append((key, json.loads(json.dumps(entry[1]))))
            out.sort()
        return out

    def _query_keys(self, criteria: Dict[str, Criterion]) -> Iterable[str]:
        # TODO(issue 17): index. Any operator goes through _query's SQL + matches() for now.
        equalities = _equalities(criteria)
        if self._tx_state() is not None or not criteria or len(equalities) < len(criteria):
            return [k for k, _ in self._query(criteria)]
        conn = self._conn()
        first, *rest = equalities
        sql = "SELECT m.key FROM meta m WHERE m.name=? AND m.value=?"
        params = list(first)
        for name, text in rest:
            sql += " AND EXISTS (SELECT 1 FROM meta x WHERE x.name=? AND x.value=? AND x.key=m.key)"
            params += [name, text]
        with self._shared():
            return [r[0] for r in conn.execute(sql + " ORDER BY m.key", params).fetchall()]

    # ------------------------------------------------------------ index and journal

    def reindex(self) -> int:
        """Rebuild the index from the files (the source of truth); return the number of keys.

        Files whose names are not a key's canonical name (see the README's layout) are
        skipped with a warning. The change journal is kept.
        """
        self._ready()
        return self._reindex()

    def _reindex(self) -> int:
        with self._exclusive() as conn:
            rows = self._scan()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("DELETE FROM keys")
                conn.execute("DELETE FROM meta")
                for key, metadata, created, modified, path, data in rows:
                    conn.execute("INSERT INTO keys(key, metadata, created, modified, path, data) "
                                 "VALUES (?,?,?,?,?,?)",
                                 (key, dump_json(metadata), created, modified, path, data))
                    conn.executemany("INSERT INTO meta(name, value, key) VALUES (?,?,?)",
                                     [(n, canonical(v), key) for n, v in metadata.items()])
                conn.execute("INSERT INTO settings(name, value) VALUES ('indexed', ?) "
                             "ON CONFLICT(name) DO UPDATE SET value=excluded.value", (_SCHEMA_VERSION,))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return len(rows)

    def _scan(self) -> List[Tuple[str, Dict[str, Any], float, float, Optional[str], Optional[bytes]]]:
        """(key, metadata, created, modified, path, inline data) of every key's files.

        A file whose name is not a key's canonical name was written by another tool
        (encore names files after raw keys): its key is its name, and the index records
        the path so the key is read and written where it is.
        """
        found: Dict[str, Tuple[str, Dict[str, Any], float, float, Optional[str], Optional[bytes]]] = {}
        legacy = []
        for dirpath, dirnames, filenames in os.walk(self.path):
            if dirpath == self.path:
                dirnames[:] = [d for d in dirnames if d != INTERNAL_DIR]
            for name in filenames:
                stem, suffix = split_suffix(name)
                if suffix != DATA_SUFFIX:
                    continue
                full = os.path.join(dirpath, name)
                rel = os.path.relpath(os.path.join(dirpath, stem), self.path).replace(os.sep, "/")
                try:
                    metadata = _read_json(full[: -len(DATA_SUFFIX)] + METADATA_SUFFIX)
                except FileNotFoundError:
                    metadata = {}
                except ValueError:
                    log.warning("%s has invalid JSON metadata; indexing it as {}", full)
                    metadata = {}
                if not isinstance(metadata, dict):
                    metadata = {}
                st = os.stat(full)
                data = None
                if st.st_size <= _INLINE_MAX:
                    with open(full, "rb") as f:
                        data = f.read()
                key = relpath_to_key(rel)
                if key is not None:
                    found[key] = (key, metadata, st.st_mtime, st.st_mtime, None, data)
                else:
                    legacy.append((rel, metadata, st.st_mtime, st.st_mtime, rel, data))
        for entry in legacy:
            try:
                check_key(entry[0])
            except InvalidKeyError:
                log.warning("skipping %s: its name is not a valid key", entry[0])
                continue
            if entry[0] in found:
                log.warning("skipping %s: the key is also stored under its canonical name", entry[0])
                continue
            found[entry[0]] = entry
        return list(found.values())

    def last_sequence(self) -> int:
        """The sequence number of the newest change in the journal (0 when none)."""
        self._ready()
        row = self._conn().execute("SELECT max(seq) FROM journal").fetchone()
        return max(int(row[0] or 0), self.journal_floor())

    def journal_floor(self) -> int:
        """Changes with a sequence at or below this number are no longer in the journal."""
        self._ready()
        row = self._conn().execute("SELECT value FROM settings WHERE name='journal_floor'").fetchone()
        return int(row[0]) if row else 0

    def changes_since(self, sequence: int, limit: int = 1000) -> List[JournalEntry]:
        """Journal entries with a sequence greater than ``sequence``, oldest first."""
        self._ready()
        rows = self._conn().execute(
            "SELECT seq, key, kind, metadata, origin, timestamp FROM journal WHERE seq > ? "
            "ORDER BY seq LIMIT ?", (int(sequence), int(limit))).fetchall()
        return [JournalEntry(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5]) for r in rows]


def _ensure_schema(conn: sqlite3.Connection) -> None:
    """Create the index tables. An index of another schema version is dropped and rebuilt
    from the files on connect; the change journal's rows and sequence numbers are kept."""
    conn.executescript(_SCHEMA)
    conn.execute("BEGIN IMMEDIATE")
    try:
        row = conn.execute("SELECT value FROM settings WHERE name='schema'").fetchone()
        if row is None or row[0] != _SCHEMA_VERSION:
            if row is not None or conn.execute("SELECT count(*) FROM keys").fetchone()[0]:
                log.warning("rebuilding an index of schema %s as schema %s", row and row[0], _SCHEMA_VERSION)
            for table in ("keys", "meta", "pending"):
                conn.execute(f"DROP TABLE IF EXISTS {table}")
            columns = [r[1] for r in conn.execute("PRAGMA table_info(journal)")]
            if "files" not in columns:
                conn.execute("ALTER TABLE journal RENAME TO journal_old")
            conn.execute("DELETE FROM settings WHERE name='indexed'")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            if "files" not in columns:
                conn.execute("INSERT INTO journal(seq, key, kind, metadata, origin, timestamp) "
                             "SELECT seq, key, kind, metadata, origin, timestamp FROM journal_old")
                conn.execute("DROP TABLE journal_old")
            conn.execute("INSERT OR REPLACE INTO settings(name, value) VALUES ('schema', ?)", (_SCHEMA_VERSION,))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _equalities(criteria: Dict[str, Criterion]) -> List[Tuple[str, str]]:
    """(name, canonical JSON text) of the plain-equality criteria, which the index answers."""
    return [(name, c.text) for name, c in criteria.items() if c.text is not None]


def _prefix_end(prefix: str) -> str:
    """The smallest string greater than every string that starts with ``prefix``."""
    while prefix:
        last = ord(prefix[-1])
        if last < 0x10FFFF:
            nxt = last + 1
            if 0xD800 <= nxt <= 0xDFFF:
                nxt = 0xE000
            return prefix[:-1] + chr(nxt)
        prefix = prefix[:-1]
    return "\U0010ffff" * 256


_KEEP: Any = object()  # a record that leaves the key's data as it is


@dataclass
class _Record:
    """One change as the index and journal record it."""

    kind: str
    key: str
    metadata: Dict[str, Any]
    text: str  # metadata as JSON
    old: Optional[Dict[str, Any]]  # metadata before the change
    data: Any  # new inline bytes, None (a big value, in its file only) or _KEEP


def _put_file(path: str, payload: bytes, durable: bool) -> None:
    """Write ``payload`` over the file at ``path`` in place (made if missing)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        _write_all(fd, payload)
        os.ftruncate(fd, len(payload))
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _unlink(path: Optional[str]) -> None:
    if path:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError as exc:
        return exc.errno != errno.ESRCH
    return True
