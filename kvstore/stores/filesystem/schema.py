"""The index's schema: its tables, and how an index of an older schema is brought to this
one: by migration steps (each self-contained, run in one transaction) where there are
steps from its version, else by a rebuild from the files (the journal is kept)."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable

from .query import all_meta_rows

__all__ = ["SCHEMA", "SCHEMA_VERSION", "STEPS", "INSERT_META", "DELETE_META", "ensure_schema", "assign_revisions"]

log = logging.getLogger("kvstore.filesystem")

SCHEMA_VERSION = "7"
# keys.path is NULL for a key stored under its canonical file name, else the name another
# tool (encore) gave its files. keys.data holds a copy of a small value (NULL for a bigger
# one): get() serves it from there, and it is what a commit's in-place file writes are
# redone from. keys.revision is the journal sequence of the key's last change (schema 5,
# see step_revisions). keys.crc32 is the CRC-32 of the data (NULL when not known: written by
# an older schema or by encore, and found by reindex as a big value; schema 6). meta is the
# query index, one B-tree (see .query; schema 7).
SCHEMA = """
CREATE TABLE IF NOT EXISTS settings(name TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS keys(
    key TEXT PRIMARY KEY, metadata TEXT NOT NULL, created REAL, modified REAL,
    path TEXT, data BLOB, revision INTEGER, crc32 INTEGER) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta(
    name TEXT NOT NULL, elem INTEGER NOT NULL, v NOT NULL, key TEXT NOT NULL,
    PRIMARY KEY(name, elem, v, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS journal(
    seq INTEGER PRIMARY KEY, key TEXT NOT NULL, kind TEXT NOT NULL,
    metadata TEXT NOT NULL, origin TEXT NOT NULL, timestamp REAL NOT NULL, files TEXT);
"""

INSERT_META = "INSERT INTO meta(name, elem, v, key) VALUES (?,?,?,?)"
DELETE_META = "DELETE FROM meta WHERE name=? AND elem=? AND v=? AND key=?"


def ensure_schema(conn: sqlite3.Connection) -> None:
    """Create the index tables, or bring an index of an older schema to this one: by the
    steps of :data:`STEPS` where there are steps from its version, else by dropping it
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


def assign_revisions(conn: sqlite3.Connection) -> None:
    """Give every key without a revision one: the sequence of its last journal row when the
    journal still has one, else the store's last sequence (at least 1), which is then
    reserved (``revision_floor``) so that no later change is given it again."""
    conn.execute("UPDATE keys SET revision = j.seq FROM (SELECT key, max(seq) AS seq FROM journal "
                 "GROUP BY key) AS j WHERE j.key = keys.key AND keys.revision IS NULL")
    if conn.execute("SELECT 1 FROM keys WHERE revision IS NULL LIMIT 1").fetchone() is None:
        return
    last = conn.execute(
        "SELECT max(1, coalesce((SELECT max(seq) FROM journal), 0), coalesce((SELECT "
        "max(CAST(value AS INTEGER)) FROM settings WHERE name IN ('journal_floor', 'revision_floor')), 0))"
    ).fetchone()[0]
    conn.execute("UPDATE keys SET revision=? WHERE revision IS NULL", (last,))
    conn.execute("INSERT INTO settings(name, value) VALUES ('revision_floor', ?) "
                 "ON CONFLICT(name) DO UPDATE SET value=excluded.value "
                 "WHERE CAST(excluded.value AS INTEGER) > CAST(settings.value AS INTEGER)", (str(last),))


def step_revisions(conn: sqlite3.Connection) -> None:
    """Schema step 4 -> 5 (issue 18): the ``keys.revision`` column, filled for the keys
    there are by :func:`assign_revisions` (positive, never given to a later change)."""
    columns = [r[1] for r in conn.execute("PRAGMA table_info(keys)")]
    if "revision" not in columns:
        conn.execute("ALTER TABLE keys ADD COLUMN revision INTEGER")
    assign_revisions(conn)


def _step_5_to_6(conn: sqlite3.Connection) -> None:
    """Schema 5 to 6 (issue 17): ``keys`` gains ``crc32`` (NULL for the rows there: not known
    until the data is written again). The typed query index of schema 6 is made again by the
    next step."""
    conn.execute("ALTER TABLE keys ADD COLUMN crc32 INTEGER")


def _step_6_to_7(conn: sqlite3.Connection) -> None:
    """Schema 6 to 7: ``meta`` becomes one B-tree (schema 6 had three partial indexes beside
    its primary key: three more pages per commit), made again from each key's metadata (the
    files are not read)."""
    conn.execute("DROP TABLE meta")
    conn.execute("CREATE TABLE meta(\n"
                 "    name TEXT NOT NULL, elem INTEGER NOT NULL, v NOT NULL, key TEXT NOT NULL,\n"
                 "    PRIMARY KEY(name, elem, v, key)) WITHOUT ROWID")
    for key, text in conn.execute("SELECT key, metadata FROM keys").fetchall():
        conn.executemany(INSERT_META, all_meta_rows(key, json.loads(text)))


# Steps that bring an index of one schema to the next without a rebuild from the files:
# version -> (step, the version it makes). Any other version is rebuilt by _migrate.
STEPS: dict[str, tuple[Callable[[sqlite3.Connection], None], str]] = {
    "4": (step_revisions, "5"),
    "5": (_step_5_to_6, "6"),
    "6": (_step_6_to_7, "7"),
}


def _migrate(conn: sqlite3.Connection, version: str | None) -> None:
    while version in STEPS:
        step, version = STEPS[version]
        log.info("upgrading an index to schema %s (%s)", version, step.__name__)
        step(conn)
        conn.execute("INSERT OR REPLACE INTO settings(name, value) VALUES ('schema', ?)", (version,))
    if version == SCHEMA_VERSION:
        conn.execute("UPDATE settings SET value=? WHERE name='indexed'", (SCHEMA_VERSION,))
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
