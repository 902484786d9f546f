"""The index: ``.kvstore/index.sqlite``, every SQL statement of the store.

Tables: ``keys`` (metadata per key, the bytes of a small value, the CRC-32 of the data),
``meta`` (the typed rows of each top-level name and list element, for indexed queries: see
:mod:`.query`), ``journal`` (the change
journal; the newest row lists its commit's file operations until the next commit) and
``settings``. WAL mode; one connection per thread, fresh ones in a child after a fork.

Errors of SQLite leave this module as :class:`~kvstore.errors.StoreError` with the
``sqlite3`` error as their cause.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sqlite3
import threading
import time
import urllib.parse
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar, cast

from ..._keys import canonical, dump_json
from ...errors import DiskFullError, StoreError
from ...query import Criterion
from . import walfiles
from .files import ScannedKey
from .query import all_meta_rows, meta_rows, plan, prefix_end
from .schema import DELETE_META, INSERT_META, SCHEMA_VERSION, assign_revisions, ensure_schema

log = logging.getLogger("kvstore.filesystem")

INDEX_NAME = "index.sqlite"

# A key's committed state as a commit plans from it: (metadata, recorded path, value is inline).
Row = tuple[dict[str, Any], str | None, bool]


KEEP_DATA: Any = object()  # a record that leaves the key's data as it is


class Committed(NamedTuple):
    """A key's committed state, read by a commit in one query."""

    row: Row
    held: tuple[bytes | None, str]  # what its files hold: (inline data or None, metadata text)
    revision: int | None
    crc32: int | None  # of its data (None: not known)


@dataclass
class Record:
    """One change as the index and journal record it."""

    kind: str
    key: str
    metadata: dict[str, Any]
    text: str  # metadata as JSON
    old: dict[str, Any] | None  # metadata before the change
    data: Any  # new inline bytes, None (a big value, in its file only) or KEEP_DATA
    crc32: int | None = None  # the CRC-32 of a big value's data (of inline bytes: computed here)


F = TypeVar("F", bound=Callable[..., Any])

_SQLITE_FULL = 13
_DAMAGE_CODES = (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB


def is_damage(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or the sqlite3 error it was raised from) says the index file is
    damaged (corrupt pages, not a database), as opposed to locked, full or unreadable."""
    while exc is not None and not isinstance(exc, sqlite3.Error):
        exc = exc.__cause__
    if exc is None:
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in _DAMAGE_CODES
    text = str(exc)
    return "malformed" in text or "not a database" in text


def _sql(func: F) -> F:
    """Translate the sqlite3 errors of an :class:`Index` method into StoreError (the methods
    on the hot paths do it inline: a wrapper is a call more per read)."""
    @functools.wraps(func)
    def wrapper(self: Index, *args: Any, **kwargs: Any) -> Any:
        try:
            return func(self, *args, **kwargs)
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
    return cast(F, wrapper)


PAGE_SIZE = 1024


class Index:
    """The index of the store at ``root`` whose own files are in ``internal_dir``."""

    wal_safety_pages = 4_000  # SQLite checkpoints by itself when the WAL grows past this

    def __init__(self, root: str, internal_dir: str, durable: bool, readonly: bool = False) -> None:
        self.root = root
        self.file = os.path.join(internal_dir, INDEX_NAME)
        self.durable = durable
        self.readonly = readonly
        self._immutable = False  # read-only media with no -shm: opened immutable
        #: read-only with no usable index file: an index built in memory from the files
        self.in_memory = False
        self._lock = threading.Lock()
        self._conns: dict[int, sqlite3.Connection] = {}
        self._pid = os.getpid()
        self._schema_ready = False

    def _error(self, exc: sqlite3.Error) -> StoreError:
        message = f"the index of {self.root} failed: {type(exc).__name__}: {exc}"
        if getattr(exc, "sqlite_errorcode", 0) & 0xFF == _SQLITE_FULL:
            return DiskFullError(message + " (the disk is full)")
        return StoreError(message)

    # ------------------------------------------------------------ connections

    def uri(self, mode: str) -> str:
        if self.in_memory:
            return f"file:kvstore-{id(self)}-{self._pid}?mode=memory&cache=shared"
        if self.readonly:
            return "file:" + urllib.parse.quote(self.file) + "?mode=ro" + ("&immutable=1" if self._immutable else "")
        return "file:" + urllib.parse.quote(self.file) + "?mode=" + mode

    def _open(self, mode: str) -> sqlite3.Connection:
        conn = sqlite3.connect(self.uri(mode), uri=True, timeout=60, isolation_level=None,
                               check_same_thread=False, factory=walfiles.Connection)
        conn.index_file = self.file
        return conn

    def conn(self) -> sqlite3.Connection:
        """This thread's connection (made on first use)."""
        if self._pid != os.getpid():
            # A child after a fork: the parent's connections are not to be used (nor closed).
            with self._lock:
                self._conns = {}
                self._pid = os.getpid()
        conn = self._conns.get(threading.get_ident())
        return conn if conn is not None else self._connect()

    @_sql
    def _connect(self) -> sqlite3.Connection:
        # Only the first connection may create the index: a later one finding it gone
        # (the directory was removed) must fail, not start an empty index.
        mode = "rw" if self._schema_ready else "rwc"
        if self.readonly:
            return self._connect_readonly()
        try:
            conn = self._open(mode)
        except sqlite3.OperationalError as exc:
            raise StoreError(f"cannot open the index of {self.root}: {exc}") from exc
        # A new index gets pages of 1 KiB (an existing one keeps its own): a small write
        # changes a few rows in a few pages, each copied whole into the log, and 4 KiB pages
        # wrote three times the bytes for it (27 KB against 8.5 KB a set, bench/bench_store.py).
        conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'FULL' if self.durable else 'NORMAL'}")
        conn.execute(f"PRAGMA wal_autocheckpoint={int(self.wal_safety_pages)}")
        return self._adopt(conn)

    def _adopt(self, conn: sqlite3.Connection) -> sqlite3.Connection:
        """Make ``conn`` this thread's connection, the schema ensured by the first one."""
        with self._lock:
            if not self._schema_ready:
                ensure_schema(conn)
                self._schema_ready = True
            self._conns[threading.get_ident()] = conn
        return conn

    def _connect_readonly(self) -> sqlite3.Connection:
        # Nothing is created or migrated. On read-only media without the -shm file SQLite
        # cannot open a WAL index at all: open it immutable then (nobody can change it).
        if self.in_memory:
            return self._adopt(self._open("memory"))
        if not os.path.exists(self.file):
            raise StoreError(f"the store at {self.root} has no index yet: open it once writable "
                             f"(or call reindex()) to build it")
        try:
            conn = self._open("ro")
            conn.execute("SELECT value FROM settings WHERE name='schema'").fetchone()
        except sqlite3.OperationalError:
            if self._immutable:
                raise
            self._immutable = True
            conn = self._open("ro")
        with self._lock:
            if not self._schema_ready:
                row = conn.execute("SELECT value FROM settings WHERE name='schema'").fetchone()
                if row is None or row[0] != SCHEMA_VERSION:
                    conn.close()
                    raise StoreError(f"the index of {self.root} is of another schema "
                                     f"({row[0] if row else None}): open the store once writable "
                                     f"to rebuild it")
                self._schema_ready = True
            self._conns[threading.get_ident()] = conn
        return conn

    # ------------------------------------------------------------ damage and recovery

    @_sql
    def check(self) -> None:
        """Read every page of the index (SQLite's ``quick_check``); StoreError if damaged."""
        rows = self.conn().execute("PRAGMA quick_check").fetchall()
        if rows != [("ok",)]:
            raise StoreError(f"the index of {self.root} is damaged: {rows[0][0]}")

    def set_aside(self) -> str:
        """Move the index file and its -wal/-shm out of the way (closed first); the new name."""
        self.close()
        aside = f"{self.file}.damaged-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
        for suffix in ("", "-wal", "-shm"):
            try:
                os.replace(self.file + suffix, aside + suffix)
            except FileNotFoundError:
                pass
        return aside

    def close(self) -> None:
        with self._lock:
            for conn in self._conns.values():
                try:
                    conn.close()
                except sqlite3.Error:
                    pass
            self._conns.clear()
            self._schema_ready = False

    @_sql
    def checkpoint_connection(self) -> sqlite3.Connection:
        """A connection of its own for the checkpointer thread."""
        return self._open("rw")

    @_sql
    def checkpoint(self, conn: sqlite3.Connection, mode: str = "PASSIVE") -> None:
        # PASSIVE: copy what the WAL holds into the index file without waiting for any
        # reader or writer (the writers must never wait for a checkpoint). TRUNCATE (on a
        # full disk, under the exclusive lock) also empties the WAL file, giving its space back.
        if mode not in ("PASSIVE", "TRUNCATE"):
            raise ValueError(f"checkpoint mode {mode!r}")
        conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchall()

    # ------------------------------------------------------------ write transactions

    def begin(self, conn: sqlite3.Connection) -> None:
        try:
            # IMMEDIATE: take SQLite's write lock now, so the rows read for the plan are the
            # ones the writes apply to (one snapshot for the checks and the writes).
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    def commit(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    @_sql
    def rollback(self, conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            conn.execute("ROLLBACK")

    # ------------------------------------------------------------ keys

    @_sql
    def count(self) -> int:
        return int(self.conn().execute("SELECT count(*) FROM keys").fetchone()[0])

    def committed(self, conn: sqlite3.Connection, key: str) -> Committed | None:
        """The committed state of ``key`` for a commit's plan and conditions (None: missing)."""
        try:
            row = conn.execute("SELECT metadata, path, data, revision, crc32 FROM keys WHERE key=?",
                               (key,)).fetchone()
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        if row is None:
            return None
        text, path, data, revision, crc = row
        return Committed((json.loads(text), path, data is not None), (data, text), revision, crc)

    def next_sequence(self, conn: sqlite3.Connection) -> int:
        """The sequence the next journal row gets: above every row, the journal's floor and
        the revisions given to keys the journal did not know (``revision_floor``)."""
        try:
            return int(conn.execute(
                "SELECT max(coalesce((SELECT max(seq) FROM journal), 0), coalesce((SELECT "
                "max(CAST(value AS INTEGER)) FROM settings WHERE name IN ('journal_floor', "
                "'revision_floor')), 0)) + 1").fetchone()[0])
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    def contents(self, conn: sqlite3.Connection, key: str) -> tuple[bytes | None, str] | None:
        """(inline data or None, metadata text) of ``key``: what its in-place file writes write."""
        try:
            return conn.execute("SELECT data, metadata FROM keys WHERE key=?", (key,)).fetchone()
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    def located(self, key: str) -> tuple[str, str | None, bytes | None, int | None] | None:
        """(metadata text, recorded path, inline data, revision) of ``key``, or None."""
        try:
            return self.conn().execute("SELECT metadata, path, data, revision FROM keys WHERE key=?",
                                       (key,)).fetchone()
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    def inline(self, key: str) -> tuple[str, float, float, bytes | None, int | None] | None:
        """(metadata text, created, modified, inline data or None, revision) of ``key``, or None."""
        try:
            return self.conn().execute("SELECT metadata, created, modified, data, revision FROM keys "
                                       "WHERE key=?", (key,)).fetchone()
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    def full(self, key: str) -> tuple[str, float, float, str | None, bytes | None, int | None] | None:
        """(metadata text, created, modified, recorded path, inline data, revision) of ``key``, or None."""
        try:
            return self.conn().execute("SELECT metadata, created, modified, path, data, revision FROM keys "
                                       "WHERE key=?", (key,)).fetchone()
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    def metadata(self, key: str) -> str | None:
        try:
            row = self.conn().execute("SELECT metadata FROM keys WHERE key=?", (key,)).fetchone()
            return None if row is None else row[0]
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    def exists(self, key: str) -> bool:
        try:
            return self.conn().execute("SELECT 1 FROM keys WHERE key=?", (key,)).fetchone() is not None
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    @_sql
    def keys(self, prefix: str) -> list[str]:
        conn = self.conn()
        if prefix:
            rows = conn.execute("SELECT key FROM keys WHERE key >= ? AND key < ? ORDER BY key",
                                (prefix, prefix_end(prefix))).fetchall()
        else:
            rows = conn.execute("SELECT key FROM keys ORDER BY key").fetchall()
        return [r[0] for r in rows]

    def stat(self, key: str) -> tuple[str, float, str | None, int | None, int | None] | None:
        """(metadata text, modified, recorded path, size of inline data or None, crc32 or
        None) of ``key``, or None."""
        try:
            return self.conn().execute("SELECT metadata, modified, path, length(data), crc32 FROM keys "
                                       "WHERE key=?", (key,)).fetchone()
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    @_sql
    def query(self, criteria: dict[str, Criterion], with_metadata: bool) -> tuple[list[Any], bool]:
        """((key, metadata text) of the keys matching ``criteria``, or only the keys when not
        ``with_metadata`` and they match exactly; whether they are a superset to check again
        with the criteria, in which case the rows always have the metadata): see :mod:`.query`."""
        conn = self.conn()
        found = plan(conn, criteria, with_metadata)
        rows = conn.execute(found.sql, found.params).fetchall()
        return (rows if with_metadata or found.recheck else [r[0] for r in rows]), found.recheck

    # ------------------------------------------------------------ commits

    def record(self, conn: sqlite3.Connection, records: list[Record], files: str, origin: str,
               now: float, listed: int, first: int) -> list[int]:
        """Write the index and journal rows of ``records`` (the last journal row listing the
        file operations ``files``) in the transaction open on ``conn``, numbered from
        ``first`` (:meth:`next_sequence`); their sequences, which are also the keys' new
        revisions. ``listed`` is the journal row whose file operations are now done (0: none)."""
        try:
            if listed:
                self.files_done(conn, listed)
            last = len(records) - 1
            sequences = []
            for i, r in enumerate(records):
                seq = first + i
                conn.execute(
                    "INSERT INTO journal(seq, key, kind, metadata, origin, timestamp, files) VALUES (?,?,?,?,?,?,?)",
                    (seq, r.key, r.kind, r.text, origin, now, files if i == last else None))
                sequences.append(seq)
                if r.kind == "delete":
                    self._delete_key(conn, r)
                else:
                    self._write_key(conn, r, now, seq)
            return sequences
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    @staticmethod
    def files_done(conn: sqlite3.Connection, seq: int) -> None:
        """Record that the file operations listed by journal row ``seq`` are all done."""
        conn.execute("UPDATE journal SET files=NULL WHERE seq=?", (seq,))

    @staticmethod
    def _delete_key(conn: sqlite3.Connection, r: Record) -> None:
        conn.execute("DELETE FROM keys WHERE key=?", (r.key,))
        if r.old:
            conn.executemany(DELETE_META, all_meta_rows(r.key, r.old))

    @staticmethod
    def _write_key(conn: sqlite3.Connection, r: Record, now: float, seq: int) -> None:
        # An upsert keeps the row's created time; a record that keeps the data leaves
        # keys.data (and keys.path) as they are.
        if r.data is KEEP_DATA:
            conn.execute(
                "INSERT INTO keys(key, metadata, created, modified, revision) VALUES (?,?,?,?,?) "
                "ON CONFLICT(key) DO UPDATE SET metadata=excluded.metadata, modified=excluded.modified, "
                "revision=excluded.revision",
                (r.key, r.text, now, now, seq))
        else:
            crc = zlib.crc32(r.data) if r.data is not None else r.crc32
            conn.execute(
                "INSERT INTO keys(key, metadata, created, modified, data, revision, crc32) "
                "VALUES (?,?,?,?,?,?,?) ON CONFLICT(key) DO UPDATE SET metadata=excluded.metadata, "
                "modified=excluded.modified, data=excluded.data, revision=excluded.revision, "
                "crc32=excluded.crc32",
                (r.key, r.text, now, now, r.data, seq, crc))
        if r.metadata is r.old:
            return  # the data changed, not the metadata
        # Only the names whose value changed touch the meta index: fewer pages per commit.
        old = r.old or {}
        new = {n: canonical(v) for n, v in r.metadata.items()}
        was = {n: canonical(v) for n, v in old.items()}
        gone = [row for n, c in was.items() if new.get(n) != c for row in meta_rows(r.key, n, old[n])]
        if gone:
            conn.executemany(DELETE_META, gone)
        added = [row for n, c in new.items() if was.get(n) != c for row in meta_rows(r.key, n, r.metadata[n])]
        if added:
            conn.executemany(INSERT_META, added)

    @_sql
    def trim_journal(self, conn: sqlite3.Connection, floor: int) -> None:
        """Drop the journal rows up to ``floor``, and raise the recorded floor to it."""
        conn.execute("DELETE FROM journal WHERE seq <= ?", (floor,))
        self.raise_floor(conn, floor)

    @_sql
    def raise_floor(self, conn: sqlite3.Connection, floor: int) -> None:
        """Raise the recorded journal floor to ``floor`` (never lowers it)."""
        # The floor only ever rises, whichever writer trims (as text: compare as numbers).
        conn.execute("INSERT INTO settings(name, value) VALUES ('journal_floor', ?) "
                     "ON CONFLICT(name) DO UPDATE SET value=excluded.value "
                     "WHERE CAST(excluded.value AS INTEGER) > CAST(settings.value AS INTEGER)",
                     (str(floor),))

    def pending(self, conn: sqlite3.Connection) -> tuple[int, str | None] | None:
        """(sequence, file operations or None) of the newest journal row, or None."""
        try:
            return conn.execute("SELECT seq, files FROM journal ORDER BY seq DESC LIMIT 1").fetchone()
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    @_sql
    def is_indexed(self, conn: sqlite3.Connection) -> bool:
        return conn.execute("SELECT value FROM settings WHERE name='indexed'").fetchone() is not None

    @_sql
    def rebuild(self, conn: sqlite3.Connection, rows: Iterable[ScannedKey], floor: int = 0) -> None:
        """Replace every key's rows by ``rows`` (the journal is kept), in one transaction;
        raise the journal's floor to ``floor``."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            if floor:
                self.raise_floor(conn, floor)
            conn.execute("DELETE FROM keys")
            conn.execute("DELETE FROM meta")
            for key, metadata, created, modified, path, data in rows:
                conn.execute("INSERT INTO keys(key, metadata, created, modified, path, data, crc32) "
                             "VALUES (?,?,?,?,?,?,?)",
                             (key, dump_json(metadata), created, modified, path, data,
                              None if data is None else zlib.crc32(data)))
                conn.executemany(INSERT_META, all_meta_rows(key, metadata))
            assign_revisions(conn)
            conn.execute("INSERT INTO settings(name, value) VALUES ('indexed', ?) "
                         "ON CONFLICT(name) DO UPDATE SET value=excluded.value", (SCHEMA_VERSION,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    # ------------------------------------------------------------ the journal

    @_sql
    def last_sequence(self) -> int:
        row = self.conn().execute("SELECT max(seq) FROM journal").fetchone()
        return int(row[0] or 0)

    @_sql
    def journal_floor_on(self, conn: sqlite3.Connection) -> int:
        row = conn.execute("SELECT value FROM settings WHERE name='journal_floor'").fetchone()
        return int(row[0]) if row else 0

    @_sql
    def journal_floor(self) -> int:
        row = self.conn().execute("SELECT value FROM settings WHERE name='journal_floor'").fetchone()
        return int(row[0]) if row else 0

    @_sql
    def history(self, key: str) -> list[tuple[int, str, str, str, float]]:
        """(seq, kind, metadata text, origin, timestamp) of the journal rows of ``key``, oldest
        first (a scan of the journal, which keeps at most ``journal_keep`` rows)."""
        return self.conn().execute(
            "SELECT seq, kind, metadata, origin, timestamp FROM journal WHERE key=? ORDER BY seq",
            (key,)).fetchall()

    @_sql
    def changes_since(self, sequence: int, limit: int) -> list[tuple[int, str, str, str, str, float]]:
        """(seq, key, kind, metadata text, origin, timestamp) of the journal rows after ``sequence``."""
        return self.conn().execute(
            "SELECT seq, key, kind, metadata, origin, timestamp FROM journal WHERE seq > ? "
            "ORDER BY seq LIMIT ?", (int(sequence), int(limit))).fetchall()
