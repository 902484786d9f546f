"""The commit protocol: plan a commit, record it in the index, then make the files match.

* :func:`plan_commit` is pure: the staged writes and the keys' committed rows in, the
  index records and the file operations out (no file, no SQLite).
* The file operations (:class:`Rename`, :class:`Unlink`, :class:`WriteData`,
  :class:`WriteMeta`) are listed in the commit's last journal row, encoded by
  :func:`encode_files` and decoded by :func:`decode_files`; :func:`apply_files` does them,
  after the COMMIT or again in a replay. Each is idempotent: temporary names are never
  reused and in-place writes are whole and redone from the index rows.
* :class:`Committer` runs the sequence under the store lock and replays a commit whose
  writer died before its files were all done.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..._keys import DATA_SUFFIX, METADATA_SUFFIX, dump_json, key_to_relpath
from ..._rules import EMPTY, NEW, plan_delete, plan_write
from ...base import Change
from ...errors import StoreError
from . import files
from .checkpoint import Checkpointer
from .index import KEEP_DATA, Committed, Index, Record, Row
from .lock import StoreLock
from .sequence import HighWater

log = logging.getLogger("kvstore.filesystem")

__all__ = ["WriteOp", "Rename", "Unlink", "WriteData", "WriteMeta", "FileOp", "Plan", "plan_commit", "resolve_move",
           "encode_files", "decode_files", "apply_files", "Committer"]


# ------------------------------------------------------------------ staged writes


@dataclass
class WriteOp:
    """A staged write: kind ``"write"`` or ``"delete"``. New data is either ``data`` (a small
    value, in memory) or ``data_tmp`` (a temporary file written before the commit);
    ``metadata`` replaces, ``update`` merges.

    A move's write names its source in ``move_from`` and nothing else: under the commit's
    lock :func:`resolve_move` gives it the source's committed metadata and data (its bytes,
    or its data file in ``data_file``, which the commit renames over this key's)."""

    kind: str
    key: str
    data_tmp: str | None = None
    data: bytes | None = None
    metadata: dict[str, Any] | None = None
    update: dict[str, Any] | None = None
    meta_text: str | None = None  # JSON of ``metadata``, made once
    if_revision: int | None = None  # the write's condition (see kvstore._rules.check_revision)
    move_from: str | None = None
    data_file: str | None = None  # another key's data file, renamed (never removed on failure)
    data_crc32: int | None = None  # the CRC-32 of ``data_tmp``'s bytes, taken while staging

    @property
    def has_data(self) -> bool:
        return self.data_tmp is not None or self.data is not None or self.data_file is not None


# ------------------------------------------------------------------ file operations


class Rename(NamedTuple):
    """Rename the file ``tmp`` over ``target`` (a big value's data file): a temporary file,
    or the data file of the key a move takes it from. Done once: a replay that finds ``tmp``
    gone takes it as done."""

    tmp: str
    target: str

    def row(self) -> list[str | None]:
        return ["rename", self.tmp, self.target]


class Unlink(NamedTuple):
    """Remove the file ``path`` (a deleted key's, or a big value's replaced by a small one)."""

    path: str

    def row(self) -> list[str | None]:
        return ["unlink", self.path, None]


class WriteData(NamedTuple):
    """Write ``key``'s small value, as its index row holds it, over ``path`` in place."""

    path: str
    key: str

    def row(self) -> list[str | None]:
        return ["data", self.path, self.key]


class WriteMeta(NamedTuple):
    """Write ``key``'s metadata, as its index row holds it, over ``path`` in place."""

    path: str
    key: str

    def row(self) -> list[str | None]:
        return ["meta", self.path, self.key]


FileOp = Rename | Unlink | WriteData | WriteMeta


def encode_files(ops: list[FileOp]) -> str:
    """The JSON text of ``ops`` in ``journal.files``: ``[[op, path, key or target], ...]``."""
    return dump_json([op.row() for op in ops])


def decode_files(text: str) -> list[FileOp]:
    """Inverse of :func:`encode_files`."""
    out: list[FileOp] = []
    for kind, path, arg in json.loads(text):
        if kind == "rename":
            out.append(Rename(path, arg))
        elif kind == "unlink":
            out.append(Unlink(path))
        elif kind == "data":
            out.append(WriteData(path, arg))
        elif kind == "meta":
            out.append(WriteMeta(path, arg))
        else:
            raise ValueError(f"unknown file operation {kind!r} in the journal")
    return out


# ------------------------------------------------------------------ the planner


def _paths(root: str, relpath: str) -> tuple[str, str]:
    base = os.path.join(root, relpath)
    return base + DATA_SUFFIX, base + METADATA_SUFFIX


@functools.lru_cache(maxsize=4096)
def _canonical_paths(root: str, key: str) -> tuple[str, str]:
    # worked out on every write and big read: remembered for the keys in use
    return _paths(root, key_to_relpath(key))


def key_paths(root: str, key: str, row_path: str | None) -> tuple[str, str]:
    """Data and metadata paths of ``key``: its canonical name, or the file name an older
    writer (encore) gave it, as recorded in the index."""
    return _canonical_paths(root, key) if row_path is None else _paths(root, row_path)


# What a commit's in-place writes write: key -> (inline data or None, metadata text).
Contents = dict[str, tuple[bytes | None, str]]


@dataclass
class Plan:
    """What a commit records (``records``) and the file operations that realise it."""

    records: list[Record] = field(default_factory=list)
    files: list[FileOp] = field(default_factory=list)
    contents: Contents = field(default_factory=dict)


def resolve_move(op: WriteOp, row: Row | None, contents: tuple[bytes | None, str] | None,
                 root: str, crc32: int | None = None) -> WriteOp:
    """The write a move's ``op`` stands for, given the committed ``row``, ``contents``
    (inline data, metadata text) and data ``crc32`` (None: unknown) of its source
    ``op.move_from``. Pure.

    Raises
    ------
    KeyError : the source is missing.
    """
    src = op.move_from
    assert src is not None
    if row is None or contents is None:
        raise KeyError(src)
    data, text = contents
    out = WriteOp("write", op.key, metadata=row[0], meta_text=text, if_revision=op.if_revision)
    if row[2]:  # a small value: copied in the index row
        out.data = data if data is not None else b""
    else:
        out.data_file = key_paths(root, src, row[1])[0]
        out.data_crc32 = crc32  # the file is renamed: its checksum goes with it
    return out


def plan_commit(ops: list[WriteOp], rows: Mapping[str, Row | None], root: str,
                revisions: Mapping[str, int | None] | None = None, first: int = 0,
                held: Mapping[str, tuple[bytes | None, str]] | None = None) -> Plan:
    """Plan the commit of ``ops`` in order, on top of the keys' committed ``rows`` (None:
    missing; one for each key of ``ops``) and ``revisions``, in the store at ``root``; the
    commit's changes are to be numbered from ``first`` (one per op). ``held``: what the
    files of (some of) the keys hold, (inline data or None, metadata text), as their index
    rows say: a first write of a key leaves alone a file whose content it would not change.
    Pure.

    Raises
    ------
    ConflictError : an op's condition does not hold by then (the whole commit fails).
    KeyError : an op needs a key that is missing by then (the whole commit fails).
    """
    plan = Plan()
    view = dict(rows)  # key -> its row as the ops so far leave it
    revision = dict(revisions or {})  # key -> its revision as the ops so far leave it
    for i, op in enumerate(ops):
        row = view[op.key]
        actual = revision.get(op.key)
        if op.kind == "delete":
            _plan_delete(plan, op, row, root, actual)
            view[op.key] = None
        else:
            # what the files hold is known before the commit's first write of the key only
            files = (held or {}).get(op.key) if op.key not in plan.contents else None
            view[op.key] = _plan_write(plan, op, row, root, actual, files)
        revision[op.key] = first + i
    return plan


def _plan_delete(plan: Plan, op: WriteOp, row: Row | None, root: str, revision: int | None) -> None:
    current = plan_delete(op.key, row[0] if row is not None else None, expected=op.if_revision,
                          revision=revision).metadata
    assert row is not None
    data_path, meta_path = key_paths(root, op.key, row[1])
    plan.files.append(Unlink(data_path))
    plan.files.append(Unlink(meta_path))
    plan.records.append(Record("delete", op.key, current, dump_json(current), current, KEEP_DATA))


def _plan_write(plan: Plan, op: WriteOp, row: Row | None, root: str, revision: int | None,
                files: tuple[bytes | None, str] | None) -> Row:
    current, row_path, inline = row if row is not None else (None, None, False)
    outcome = plan_write(op.key, current, has_data=op.has_data, metadata=op.metadata, update=op.update,
                         expected=op.if_revision, revision=revision)
    metadata = outcome.metadata
    text = op.meta_text if op.update is None and op.meta_text is not None else dump_json(metadata)
    data_path, meta_path = key_paths(root, op.key, row_path)
    data: Any = KEEP_DATA
    moved = op.data_tmp if op.data_tmp is not None else op.data_file
    if outcome.data == NEW and moved is not None:
        plan.files.append(Rename(moved, data_path))
        data, inline = None, False
    elif outcome.data in (NEW, EMPTY):
        data = op.data if op.data is not None else b""
        if current is not None and not inline:
            # A reader may hold the old (big) file open: it keeps its inode.
            plan.files.append(Unlink(data_path))
        if not (inline and files is not None and files[0] == data):  # else: the same bytes
            plan.files.append(WriteData(data_path, op.key))
        inline = True
    if metadata is not current and not (files is not None and files[1] == text):
        plan.files.append(WriteMeta(meta_path, op.key))
    kept = plan.contents[op.key][0] if op.key in plan.contents else None
    plan.contents[op.key] = (kept if data is KEEP_DATA else data, text)
    plan.records.append(Record(outcome.kind, op.key, metadata, text, current, data,
                               op.data_crc32 if data is None else None))
    return metadata, row_path, inline


# ------------------------------------------------------------------ doing the file operations


def apply_files(ops: list[FileOp], contents: Callable[[str], tuple[bytes | None, str] | None],
                root: str, tmpdir: str, durable: bool) -> None:
    """Carry out a commit's file operations; ``contents(key)`` gives what the in-place
    writes write (None: nothing, the key is deleted later in the same commit)."""
    dirs = set()
    for op in ops:
        if isinstance(op, Rename):
            _rename(op)
            dirs.add(os.path.dirname(op.target))
            continue
        if isinstance(op, Unlink):
            files.unlink(op.path)
            files.prune_dirs(root, os.path.dirname(op.path))
            continue
        found = contents(op.key)
        if found is None:  # deleted later in the same commit
            continue
        payload = found[0] if isinstance(op, WriteData) else found[1].encode("utf-8")
        if payload is None:  # replaced by a big value later in the same commit
            continue
        files.put_file(op.path, payload, durable)  # looked up at call time: tests interpose on it
        if durable:
            dirs.add(os.path.dirname(op.path))
    if durable:
        dirs.add(tmpdir)
        for d in dirs:
            files.fsync_dir(d)


def _rename(op: Rename) -> None:
    try:
        os.replace(op.tmp, op.target)
    except FileNotFoundError:
        if os.path.exists(op.tmp):  # the target's directory is missing
            os.makedirs(os.path.dirname(op.target), exist_ok=True)
            os.replace(op.tmp, op.target)
        # else: already applied by an earlier replay


# ------------------------------------------------------------------ the sequence


# A commit listing at least this many file operations records, once they are done, that
# they are (see Committer._mark_done); a smaller one leaves them to be redone, cheaply.
MARK_DONE_AT = 32


class Committer:
    """Commits of one store instance, and the replay of another's unfinished one.

    ``checkpointer`` is told of each COMMIT, under the lock.
    """

    def __init__(self, index: Index, lock: StoreLock, root: str, tmpdir: str, durable: bool,
                 checkpointer: Checkpointer, high_water: HighWater) -> None:
        self._index = index
        self._high_water = high_water
        #: (st_dev, st_ino) of the store's directory when connected: a commit checks it
        self.root_id: tuple[int, int] | None = None
        self._lock = lock
        self._root = root
        self._tmpdir = tmpdir
        self._durable = durable
        self._checkpointer = checkpointer
        # sequence of the last commit whose file operations this instance applied, so
        # that it does not replay them, and of the journal row still listing files
        # (cleared by the next commit); see replay_pending
        self._applied = 0
        self._listed = 0
        # file operations of an earlier commit that could not be done (a full disk): the
        # next commit lists them again before its own, so they are finished later
        self._carried: list[FileOp] = []
        # sequence of the newest journal row (None: the journal is empty), read under the lock
        self._newest: int | None = None

    @contextmanager
    def exclusive(self, begin: bool = False) -> Iterator[sqlite3.Connection]:
        """Hold the store lock exclusively, with every earlier commit fully applied.

        With ``begin`` an SQLite write transaction is open from the start (one snapshot
        for the checks and the writes; the caller commits), and rolled back on error.
        """
        conn = self._index.conn()
        with self._lock.exclusive:
            if begin:
                self.check_root()
                self._index.begin(conn)
            try:
                self.replay_pending(conn)
                yield conn
            except BaseException:
                if begin:
                    self._index.rollback(conn)
                raise

    def replay_pending(self, conn: sqlite3.Connection) -> None:
        # The newest journal row lists its commit's file operations until the next commit.
        # Unless this instance applied them itself, their writer may have died half-way:
        # apply them again (every operation is idempotent).
        row = self._index.pending(conn)
        self._carried = []
        self._newest = None if row is None else row[0]
        if row is None or row[1] is None:
            self._listed = 0
            return
        self._listed = row[0]
        if row[0] != self._applied:
            log.info("finishing the file operations of change %s in %s", row[0], self._root)
            ops = decode_files(row[1])
            try:
                apply_files(ops, lambda key: self._index.contents(conn, key), self._root, self._tmpdir,
                            self._durable)
            except OSError as exc:
                # Readers are not locked out by it (a full disk): the next commit lists
                # these operations again, before its own, and tries them again.
                log.warning("the file operations of change %s in %s cannot be finished yet (%s)",
                            row[0], self._root, exc)
                self._carried = ops
                return
            self._applied = row[0]
            if len(ops) >= MARK_DONE_AT and not conn.in_transaction:  # not within a commit
                self._mark_done(conn)

    def _mark_done(self, conn: sqlite3.Connection) -> None:
        # A commit of many file operations (a transaction, a reindex's worth) records that
        # they are done, in a small transaction of its own: else every instance's next
        # connect or commit would do them all again, not knowing whether its writer died.
        try:
            self._index.begin(conn)
            try:
                self._index.files_done(conn, self._listed)
                self._index.commit(conn)
            except BaseException:
                self._index.rollback(conn)
                raise
        except (StoreError, sqlite3.Error) as exc:
            log.debug("cannot record the file operations of change %s as done: %s", self._listed, exc)
            return
        self._listed = 0

    def check_root(self) -> None:
        """StoreError unless the store's directory is still the one connected to (removed,
        or replaced by another directory of the same name)."""
        if self.root_id is None:
            return
        try:
            st = os.stat(self._root)
        except OSError as exc:
            raise StoreError(f"the store's directory {self._root} is gone ({exc.strerror}): "
                             f"nothing was written") from exc
        if (st.st_dev, st.st_ino) != self.root_id:
            raise StoreError(f"the store's directory {self._root} was replaced by another one: "
                             f"nothing was written")

    def commit(self, ops: list[WriteOp], origin: str, journal_keep: int, trim_every: int,
               checkpoint_every: int) -> list[Change]:
        """Apply ``ops`` as one commit (see the package docstring). All or nothing.

        The journal is trimmed to its last ``journal_keep`` rows when this commit's
        sequences cross a multiple of ``trim_every``; a checkpoint is asked for every
        ``checkpoint_every`` commits.
        """
        with self.exclusive(begin=True) as conn:
            now = time.time()
            # Under the exclusive lock, with earlier commits fully applied, the index says
            # exactly what the files hold: plan from it.
            # The conditions are checked here, in the same SQLite transaction as the writes.
            found: dict[str, Committed | None] = {}
            for op in ops:
                for key in (op.key, op.move_from):
                    if key is not None and key not in found:
                        found[key] = self._index.committed(conn, key)
            rows = {key: None if c is None else c.row for key, c in found.items()}
            held = {key: c.held for key, c in found.items() if c is not None}
            revisions: dict[str, int | None] = {}
            resolved = []
            for op in ops:
                state = found[op.key]
                if op.if_revision is not None:
                    revisions[op.key] = None if state is None else state.revision
                if op.move_from is not None:
                    src = found[op.move_from]
                    op = resolve_move(op, rows[op.move_from], held.get(op.move_from), self._root,
                                      None if src is None else src.crc32)
                resolved.append(op)
            ops = resolved
            # Above every journal row and the journal's floor (raised to the sequence mark
            # when a rebuild started an empty journal), so sequences never go backwards. The
            # floors are below the newest row whenever there is one: no query then.
            first = self._newest + 1 if self._newest is not None else self._index.next_sequence(conn)
            plan = plan_commit(ops, rows, self._root, revisions, first, held)
            # The sequence mark must cover the newest sequence before it is committed.
            self._high_water.cover(first + len(plan.records) - 1)
            todo = self._carried + plan.files
            sequences = self._index.record(conn, plan.records, encode_files(todo), origin, now,
                                           self._listed, first)
            # Trim when this commit's sequence numbers cross a multiple of the interval, so
            # that short-lived writers trim too.
            first, newest = sequences[0], sequences[-1]
            if (first - 1) // trim_every != newest // trim_every and newest - journal_keep > 0:
                self._index.trim_journal(conn, newest - journal_keep)
            self._index.commit(conn)
            self._checkpointer.after_commit(checkpoint_every)
            # The commit point has passed: make the files match it. The journal keeps
            # listing them until the next commit.
            self._listed = newest
            contents: Callable[[str], tuple[bytes | None, str] | None] = plan.contents.get
            if self._carried:
                def carried(key: str) -> tuple[bytes | None, str] | None:
                    found = plan.contents.get(key)
                    return found if found is not None else self._index.contents(conn, key)
                contents = carried
            try:
                apply_files(todo, contents, self._root, self._tmpdir, self._durable)
            except OSError as exc:
                # The change is committed and visible; the next commit (or connect) of any
                # instance finishes its files.
                log.error("the files of change %s in %s are not all written yet (%s); the next "
                          "commit finishes them", self._listed, self._root, exc)
            else:
                self._applied = self._listed
                if len(todo) >= MARK_DONE_AT:
                    self._mark_done(conn)
            self._carried = []
        return [Change(r.kind, r.key, r.metadata, seq, now, r.text, revision=seq)
                for r, seq in zip(plan.records, sequences, strict=True)]
