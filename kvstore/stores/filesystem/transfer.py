"""``copy`` and ``move`` of the filesystem store: one commit each, the bytes of a copy made by
the kernel, a move a rename listed in the journal (so a replay after a crash finishes it)."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

from ...errors import StoreError
from .commit import WriteOp, key_paths
from .files import kernel_copy, unlink

if TYPE_CHECKING:
    from ..._progress import _Progress
    from ..._value import Change
    from .files import TempFiles
    from .index import Index
    from .lock import StoreLock

__all__ = ["KernelCopies"]


class KernelCopies:
    """The ``_copy``/``_move`` hooks of :class:`~kvstore.stores.filesystem.FileSystemStore`."""

    if TYPE_CHECKING:  # provided by FileSystemStore
        path: str
        _index: Index
        _lock: StoreLock
        _tmp: TempFiles

        def _tx_state(self) -> Any: ...

        def _submit(self, op: WriteOp) -> list[Change]: ...

        def _delete(self, key: str, if_revision: int | None = None) -> list[Change]: ...

        def _commit_ops(self, ops: list[WriteOp]) -> list[Change]: ...

        def _progress(self, key: str, message: str, steps: int) -> _Progress: ...

    #    # ``if_revision`` (on ``dst``) and ``if_source_revision`` (on the delete of ``src``) go
    # on the WriteOps below and are checked by the Committer under its lock, like any
    # conditional write.

    def _copy(self, src: str, dst: str, buffer_size: int, if_revision: int | None = None) -> list[Change]:
        """One commit writing ``dst``; its data file is made by the kernel (copy_file_range,
        a reflink, else a plain copy) into a temporary file before the commit, like any big
        value's; a small value is copied in the index row."""
        staging = self._tx_state()
        if staging is not None and staging.touched(src):  # src as this transaction sees it
            return super()._copy(src, dst, buffer_size, if_revision)  # type: ignore[misc]  # AbstractStore's
        op = WriteOp("write", dst, if_revision=if_revision)
        try:
            op.data, op.data_tmp, op.meta_text, op.data_crc32 = self._snapshot(src, dst, buffer_size)
            op.metadata = json.loads(op.meta_text)
            return self._submit(op)
        except BaseException:
            unlink(op.data_tmp)
            raise

    def _snapshot(self, src: str, dst: str, buffer_size: int) -> tuple[bytes | None, str | None, str, int | None]:
        """(inline data, or None and a temporary copy of the data file; metadata text; the
        CRC-32 the index keeps of that file, None when it has none) of ``src`` as one commit
        left it. KeyError if missing. (The kernel copies the bytes without this process
        seeing them: the copy's checksum is the source's, read under the same lock.)"""
        row = self._index.inline(src)
        if row is None:
            raise KeyError(src)
        if row[3] is not None:
            return row[3], None, row[0], None
        # As in _get: under the shared lock the row and the file opened are of one commit.
        with self._lock.shared:
            full = self._index.full(src)
            if full is None:
                raise KeyError(src)
            text, _, _, row_path, data, _ = full
            if data is not None:
                return data, None, text, None
            stat = self._index.stat(src)
            crc = stat[4] if stat is not None else None
            try:
                fd = os.open(key_paths(self.path, src, row_path)[0], os.O_RDONLY)
            except (FileNotFoundError, NotADirectoryError):
                raise StoreError(f"the data file of {src!r} is missing: the directory was changed "
                                 f"behind the store's back; call reindex()") from None
        try:
            size = os.fstat(fd).st_size
            with self._progress(dst, "copy", size) as progress:
                def fill(out: int) -> None:
                    self._kernel_copy(fd, out, size, progress.advance, buffer_size)

                tmp = self._tmp.new(fill)
        finally:
            os.close(fd)
        return None, tmp, text, crc

    #: how copy() copies a data file (a static method: tests interpose on it)
    _kernel_copy = staticmethod(kernel_copy)

    def _move(self, src: str, dst: str, buffer_size: int, if_revision: int | None = None,
              if_source_revision: int | None = None) -> list[Change]:
        """One commit: ``dst`` gets ``src``'s index row (a small value) or its data file,
        renamed; ``src`` is deleted. The journal lists the rename, so a replay after a crash
        finishes it. Inside a transaction: a copy and a delete, staged there."""
        if self._tx_state() is not None:
            return self._copy(src, dst, buffer_size, if_revision) + self._delete(src, if_source_revision)
        return self._commit_ops([WriteOp("write", dst, move_from=src, if_revision=if_revision),
                                 WriteOp("delete", src, if_revision=if_source_revision)])
