"""FileSystemStore: a directory of ``<key>.data`` + ``<key>.metadata`` files (encore's layout).

How a commit works
------------------
A value bigger than ``FileSystemStore.inline_max`` is first written to a temporary file in
``.kvstore/tmp`` (outside any lock, so readers never wait for a stream; :mod:`.files`); a
smaller one is kept in memory. Then, holding the store's exclusive lock (``flock`` on
``.kvstore/lock``, plus a thread mutex; :mod:`.lock`), one SQLite transaction in
``.kvstore/index.sqlite`` (WAL mode; :mod:`.index`, its log files :mod:`.walfiles`) records, together:

* the index rows (``keys``: metadata per key, and the bytes of a small value;
  ``meta``: one row per top-level name (and list element) with its typed value, for indexed
  queries),
* the change journal row(s) with their sequence numbers, the last of them also listing the
  file operations that realise the change (``journal.files``): renames of temporary files,
  unlinks, and in-place writes of a small value's data file and of metadata files, whose
  contents are the index rows.

What to record and which file operations to list is planned by a pure function
(:func:`.commit.plan_commit`) from the staged writes and the keys' current index rows,
following the write rules of :mod:`kvstore._rules`.

That COMMIT is the commit point (it writes the WAL; copying the WAL into the index file,
with its fsyncs, is left to a background thread's checkpoints, off the writer's path;
:mod:`.checkpoint`). The file operations are then done, still under the lock.
If the process dies before they are all done (even in the middle of a write), the next
writer (or the next ``connect``) finds the newest journal row still listing its operations
and does them again, from the index rows: every operation is idempotent because temporary
names are never reused and writes are whole. The next commit clears that list. So a key is
always its complete old pair or its complete new pair (:mod:`.commit`).

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

from .files import INTERNAL_DIR
from .store import FileSystemStore, JournalEntry, init_shared_store

__all__ = ["FileSystemStore", "init_shared_store", "JournalEntry", "INTERNAL_DIR"]
