"""Opening the filesystem store's index: a damaged or stale one (corrupt pages, truncated, a
lost ``-wal``) is kept aside and rebuilt from the files, which stay the source of truth; a
store opened read-only without a usable index file is indexed in memory."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ...errors import StoreError
from . import walfiles
from .files import scan, store_error
from .index import is_damage

if TYPE_CHECKING:
    from .commit import Committer
    from .files import TempFiles
    from .index import Index
    from .lock import StoreLock

__all__ = ["IndexRecovery"]

log = logging.getLogger("kvstore.filesystem")


class IndexRecovery:
    """How :class:`~kvstore.stores.filesystem.FileSystemStore` opens its index."""

    if TYPE_CHECKING:  # provided by FileSystemStore
        path: str
        inline_max: int
        _index: Index
        _lock: StoreLock
        _committer: Committer
        _tmp: TempFiles

        def _reindex(self) -> int: ...

    def _connect_readonly(self) -> None:
        with self._lock.shared:
            try:
                if self._index.is_indexed(self._index.conn()):
                    return
            except StoreError as exc:  # missing, half-made, damaged, of another schema
                log.info("%s: %s", self.path, exc)
            # No usable index file, and none may be written: one in memory, from the files.
            log.info("%s is open read-only without a usable index: indexing it in memory", self.path)
            self._index.close()
            self._index.in_memory = True
            conn = self._index.conn()
            try:
                rows = scan(self.path, self.inline_max)
            except OSError as exc:
                raise store_error(exc, f"cannot read the files of {self.path}") from exc
            self._index.rebuild(conn, rows)

    def _connect_writable(self) -> None:
        damaged: StoreError | None = None
        if walfiles.wal_lost(self._index.file):
            damaged = StoreError("its write-ahead log (-wal) is missing: the index is older than the files")
        else:
            try:
                with self._committer.exclusive() as conn:
                    self._index.check()
                    self._tmp.clean()
                    needs_index = not self._index.is_indexed(conn)
            except StoreError as exc:
                if not is_damage(exc) and "is damaged" not in str(exc):
                    raise
                damaged = exc
        if damaged is not None:
            self._recover(damaged)
        elif needs_index:
            self._reindex()

    def _recover(self, cause: StoreError) -> None:
        """Rebuild a damaged or stale index from the files, keeping the old one aside; the
        journal starts again above the sequence mark (its floor), so sequences never go back."""
        with self._lock.exclusive:
            aside = self._index.set_aside()
        log.warning("the index of %s is damaged (%s): kept as %s and rebuilt from the files",
                    self.path, cause, aside)
        self._reindex()
