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
import urllib.parse
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from ..._keys import canonical, dump_json
from ...errors import StoreError
from ...query import Criterion
from .files import ScannedKey
from .query import all_meta_rows, meta_rows, plan, prefix_end

log = logging.getLogger("kvstore.filesystem")

INDEX_NAME = "index.sqlite"
SCHEMA_VERSION = "5"
# keys.path is NULL for a key stored under its canonical file name, else the name another
# tool (encore) gave its files. keys.data holds a copy of a small value (NULL for a bigger
# one): get() serves it from there, and it is what a commit's in-place file writes are
# redone from. keys.crc32 is the CRC-32 of the data (NULL when not known: written by an
# older schema or by encore, and found by reindex as a big value).
SCHEMA = """
CREATE TABLE IF NOT EXISTS settings(name TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS keys(
    key TEXT PRIMARY KEY, metadata TEXT NOT NULL, created REAL, modified REAL,
    path TEXT, data BLOB, crc32 INTEGER) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta(
    key TEXT NOT NULL, name TEXT NOT NULL, elem INTEGER NOT NULL, value TEXT NOT NULL, num, txt TEXT,
    PRIMARY KEY(key, name, elem, value)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS meta_num ON meta(name, num) WHERE num IS NOT NULL;
CREATE INDEX IF NOT EXISTS meta_txt ON meta(name, txt) WHERE txt IS NOT NULL;
CREATE INDEX IF NOT EXISTS meta_val ON meta(name, elem, value) WHERE num IS NULL AND txt IS NULL;
CREATE TABLE IF NOT EXISTS journal(
    seq INTEGER PRIMARY KEY, key TEXT NOT NULL, kind TEXT NOT NULL,
    metadata TEXT NOT NULL, origin TEXT NOT NULL, timestamp REAL NOT NULL, files TEXT);
"""

# A key's committed state as a commit plans from it: (metadata, recorded path, value is inline).
Row = tuple[dict[str, Any], str | None, bool]

INSERT_META = "INSERT INTO meta(key, name, elem, value, num, txt) VALUES (?,?,?,?,?,?)"

KEEP_DATA: Any = object()  # a record that leaves the key's data as it is


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


class Index:
    """The index of the store at ``root`` whose own files are in ``internal_dir``."""

    wal_safety_pages = 4_000  # SQLite checkpoints by itself when the WAL grows past this

    def __init__(self, root: str, internal_dir: str, durable: bool) -> None:
        self.root = root
        self.file = os.path.join(internal_dir, INDEX_NAME)
        self.durable = durable
        self._lock = threading.Lock()
        self._conns: dict[int, sqlite3.Connection] = {}
        self._pid = os.getpid()
        self._schema_ready = False

    def _error(self, exc: sqlite3.Error) -> StoreError:
        return StoreError(f"the index of {self.root} failed: {type(exc).__name__}: {exc}")

    # ------------------------------------------------------------ connections

    def uri(self, mode: str) -> str:
        return "file:" + urllib.parse.quote(self.file) + "?mode=" + mode

    def _open(self, mode: str) -> sqlite3.Connection:
        return sqlite3.connect(self.uri(mode), uri=True, timeout=60, isolation_level=None,
                               check_same_thread=False)

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
        try:
            conn = self._open(mode)
        except sqlite3.OperationalError as exc:
            raise StoreError(f"cannot open the index of {self.root}: {exc}") from exc
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'FULL' if self.durable else 'NORMAL'}")
        conn.execute(f"PRAGMA wal_autocheckpoint={int(self.wal_safety_pages)}")
        with self._lock:
            if not self._schema_ready:
                ensure_schema(conn)
                self._schema_ready = True
            self._conns[threading.get_ident()] = conn
        return conn

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
    def checkpoint(self, conn: sqlite3.Connection) -> None:
        # PASSIVE: copy what the WAL holds into the index file without waiting for any
        # reader or writer (the writers must never wait for a checkpoint).
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

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

    def state(self, conn: sqlite3.Connection, key: str) -> Row | None:
        """The committed state of ``key`` for a commit's plan, or None when missing."""
        try:
            row = conn.execute("SELECT metadata, path, data IS NOT NULL FROM keys WHERE key=?", (key,)).fetchone()
            return None if row is None else (json.loads(row[0]), row[1], bool(row[2]))
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    def contents(self, conn: sqlite3.Connection, key: str) -> tuple[bytes | None, str] | None:
        """(inline data or None, metadata text) of ``key``: what its in-place file writes write."""
        try:
            return conn.execute("SELECT data, metadata FROM keys WHERE key=?", (key,)).fetchone()
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    def located(self, key: str) -> tuple[str, str | None, bytes | None] | None:
        """(metadata text, recorded path, inline data) of ``key``, or None."""
        try:
            return self.conn().execute("SELECT metadata, path, data FROM keys WHERE key=?", (key,)).fetchone()
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    def inline(self, key: str) -> tuple[str, float, float, bytes | None] | None:
        """(metadata text, created, modified, inline data or None) of ``key``, or None."""
        try:
            return self.conn().execute("SELECT metadata, created, modified, data FROM keys WHERE key=?",
                                       (key,)).fetchone()
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    def full(self, key: str) -> tuple[str, float, float, str | None, bytes | None] | None:
        """(metadata text, created, modified, recorded path, inline data) of ``key``, or None."""
        try:
            return self.conn().execute("SELECT metadata, created, modified, path, data FROM keys WHERE key=?",
                                       (key,)).fetchone()
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
        ``with_metadata``; whether they are a superset to check again): see :mod:`.query`."""
        conn = self.conn()
        found = plan(conn, criteria, with_metadata)
        rows = conn.execute(found.sql, found.params).fetchall()
        return (rows if with_metadata else [r[0] for r in rows]), found.recheck

    # ------------------------------------------------------------ commits

    def record(self, conn: sqlite3.Connection, records: list[Record], files: str, origin: str,
               now: float, listed: int) -> list[int]:
        """Write the index and journal rows of ``records`` (the last journal row listing the
        file operations ``files``) in the transaction open on ``conn``; their sequences.
        ``listed`` is the journal row whose file operations are now done (0: none)."""
        try:
            if listed:
                conn.execute("UPDATE journal SET files=NULL WHERE seq=?", (listed,))
            last = len(records) - 1
            sequences = []
            for i, r in enumerate(records):
                cur = conn.execute(
                    "INSERT INTO journal(key, kind, metadata, origin, timestamp, files) VALUES (?,?,?,?,?,?)",
                    (r.key, r.kind, r.text, origin, now, files if i == last else None))
                sequences.append(cur.lastrowid or 0)  # never None after an INSERT
                if r.kind == "delete":
                    self._delete_key(conn, r)
                else:
                    self._write_key(conn, r, now)
            return sequences
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    @staticmethod
    def _delete_key(conn: sqlite3.Connection, r: Record) -> None:
        conn.execute("DELETE FROM keys WHERE key=?", (r.key,))
        if r.old:
            conn.execute("DELETE FROM meta WHERE key=?", (r.key,))

    @staticmethod
    def _write_key(conn: sqlite3.Connection, r: Record, now: float) -> None:
        # An upsert keeps the row's created time; a record that keeps the data leaves
        # keys.data (and keys.path) as they are.
        if r.data is KEEP_DATA:
            conn.execute(
                "INSERT INTO keys(key, metadata, created, modified) VALUES (?,?,?,?) ON CONFLICT(key) "
                "DO UPDATE SET metadata=excluded.metadata, modified=excluded.modified",
                (r.key, r.text, now, now))
        else:
            crc = zlib.crc32(r.data) if r.data is not None else r.crc32
            conn.execute(
                "INSERT INTO keys(key, metadata, created, modified, data, crc32) VALUES (?,?,?,?,?,?) "
                "ON CONFLICT(key) DO UPDATE SET metadata=excluded.metadata, "
                "modified=excluded.modified, data=excluded.data, crc32=excluded.crc32",
                (r.key, r.text, now, now, r.data, crc))
        if r.metadata is r.old:
            return  # the data changed, not the metadata
        # Only the names whose value changed touch the meta index: fewer pages per commit.
        new = {n: canonical(v) for n, v in r.metadata.items()}
        was = {n: canonical(v) for n, v in r.old.items()} if r.old else {}
        gone = [(r.key, n) for n, c in was.items() if new.get(n) != c]
        if gone:
            conn.executemany("DELETE FROM meta WHERE key=? AND name=?", gone)
        added = [row for n, c in new.items() if was.get(n) != c for row in meta_rows(r.key, n, r.metadata[n])]
        if added:
            conn.executemany(INSERT_META, added)

    @_sql
    def trim_journal(self, conn: sqlite3.Connection, floor: int) -> None:
        """Drop the journal rows up to ``floor``, and raise the recorded floor to it."""
        conn.execute("DELETE FROM journal WHERE seq <= ?", (floor,))
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
    def rebuild(self, conn: sqlite3.Connection, rows: Iterable[ScannedKey]) -> None:
        """Replace every key's rows by ``rows`` (the journal is kept), in one transaction."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("DELETE FROM keys")
            conn.execute("DELETE FROM meta")
            for key, metadata, created, modified, path, data in rows:
                conn.execute("INSERT INTO keys(key, metadata, created, modified, path, data, crc32) "
                             "VALUES (?,?,?,?,?,?,?)",
                             (key, dump_json(metadata), created, modified, path, data,
                              None if data is None else zlib.crc32(data)))
                conn.executemany(INSERT_META, all_meta_rows(key, metadata))
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
    def journal_floor(self) -> int:
        row = self.conn().execute("SELECT value FROM settings WHERE name='journal_floor'").fetchone()
        return int(row[0]) if row else 0

    @_sql
    def changes_since(self, sequence: int, limit: int) -> list[tuple[int, str, str, str, str, float]]:
        """(seq, key, kind, metadata text, origin, timestamp) of the journal rows after ``sequence``."""
        return self.conn().execute(
            "SELECT seq, key, kind, metadata, origin, timestamp FROM journal WHERE seq > ? "
            "ORDER BY seq LIMIT ?", (int(sequence), int(limit))).fetchall()


def ensure_schema(conn: sqlite3.Connection) -> None:
    """Create the index tables, or bring an index of an older schema to this one: by the
    steps of :data:`MIGRATIONS` where there are steps from its version, else by dropping it
    to be rebuilt from the files on connect (the change journal's rows and sequence numbers
    are kept either way)."""
    conn.execute("CREATE TABLE IF NOT EXISTS settings(name TEXT PRIMARY KEY, value TEXT)")
    conn.execute("BEGIN IMMEDIATE")
    try:
        row = conn.execute("SELECT value FROM settings WHERE name='schema'").fetchone()
        version = row[0] if row is not None else None
        if version != SCHEMA_VERSION:
            _migrate(conn, version)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _step_4_to_5(conn: sqlite3.Connection) -> None:
    """Schema 4 to 5 (typed query index, issue 17): ``keys`` gains ``crc32`` (NULL for the
    rows there: not known until the data is written again); ``meta`` becomes the typed rows
    of :mod:`.query`, made again from each key's metadata (the files are not read)."""
    conn.execute("ALTER TABLE keys ADD COLUMN crc32 INTEGER")
    conn.execute("DROP TABLE meta")
    conn.execute("CREATE TABLE meta(\n"
                 "    key TEXT NOT NULL, name TEXT NOT NULL, elem INTEGER NOT NULL, value TEXT NOT NULL, "
                 "num, txt TEXT,\n"
                 "    PRIMARY KEY(key, name, elem, value)) WITHOUT ROWID")
    conn.execute("CREATE INDEX meta_num ON meta(name, num) WHERE num IS NOT NULL")
    conn.execute("CREATE INDEX meta_txt ON meta(name, txt) WHERE txt IS NOT NULL")
    conn.execute("CREATE INDEX meta_val ON meta(name, elem, value) WHERE num IS NULL AND txt IS NULL")
    for key, text in conn.execute("SELECT key, metadata FROM keys").fetchall():
        conn.executemany(INSERT_META, all_meta_rows(key, json.loads(text)))


# version -> (the next version, the step that makes an index of that version the next one),
# each step self-contained (its own SQL), run in the transaction of ensure_schema.
MIGRATIONS: dict[str, tuple[str, Callable[[sqlite3.Connection], None]]] = {
    "4": ("5", _step_4_to_5),
}


def _steps(version: str | None) -> list[Callable[[sqlite3.Connection], None]] | None:
    """The steps from ``version`` to SCHEMA_VERSION, or None when there are none."""
    steps = []
    while version != SCHEMA_VERSION:
        if version not in MIGRATIONS:
            return None
        version, step = MIGRATIONS[version]
        steps.append(step)
    return steps


def _migrate(conn: sqlite3.Connection, version: str | None) -> None:
    steps = _steps(version)
    if steps is not None:
        log.info("migrating an index of schema %s to schema %s", version, SCHEMA_VERSION)
        for step in steps:
            step(conn)
        conn.execute("UPDATE settings SET value=? WHERE name IN ('schema', 'indexed')", (SCHEMA_VERSION,))
        return
    _rebuild_schema(conn, version)


def _rebuild_schema(conn: sqlite3.Connection, version: str | None) -> None:
    # Everything but the journal is rebuilt from the files (the next connect sees no
    # 'indexed' setting); a journal of before the files column is copied row by row, so
    # that sequence numbers never go backwards.
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if version is not None or ("keys" in tables and conn.execute("SELECT count(*) FROM keys").fetchone()[0]):
        log.warning("rebuilding an index of schema %s as schema %s", version, SCHEMA_VERSION)
    for table in ("keys", "meta", "pending"):
        conn.execute(f"DROP TABLE IF EXISTS {table}")
    columns = [r[1] for r in conn.execute("PRAGMA table_info(journal)")]
    if columns and "files" not in columns:
        conn.execute("ALTER TABLE journal RENAME TO journal_old")
    conn.execute("DELETE FROM settings WHERE name='indexed'")
    for statement in SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
    if columns and "files" not in columns:
        conn.execute("INSERT INTO journal(seq, key, kind, metadata, origin, timestamp) "
                     "SELECT seq, key, kind, metadata, origin, timestamp FROM journal_old")
        conn.execute("DROP TABLE journal_old")
    conn.execute("INSERT OR REPLACE INTO settings(name, value) VALUES ('schema', ?)", (SCHEMA_VERSION,))
