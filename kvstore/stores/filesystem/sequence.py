"""The sequence high-water mark: ``.kvstore/sequence``, outside the index.

The journal's sequence numbers are the index's rowids; an index lost or damaged and rebuilt
from the files starts an empty journal. So that sequences never go backwards, even then,
the store keeps beside the index a number no committed sequence exceeds: it is raised by
*block reservation* (to the commit's newest sequence plus :attr:`HighWater.block`) before a
commit whose sequences would pass it, so a commit writes this file once per ``block``
commits, not every time. A rebuilt index starts its journal above the mark, with its
floor at the mark: a ``since=`` from before the rebuild is answered with
``JournalGapError``.

The file holds the number in decimal; it is replaced whole (a temporary file renamed over
it), and read again under the store's exclusive lock before it is raised, since other
processes raise it too.
"""

from __future__ import annotations

import logging
import os

from ...errors import StoreError
from . import files

log = logging.getLogger("kvstore.filesystem")

SEQUENCE_NAME = "sequence"


class HighWater:
    """The high-water mark of the store whose own files are in ``internal_dir``."""

    #: sequences reserved at a time (a commit past the mark writes the file once)
    block = 1000

    def __init__(self, internal_dir: str, durable: bool) -> None:
        self.path = os.path.join(internal_dir, SEQUENCE_NAME)
        self.durable = durable
        self._known = -1  # the mark as last read or written by this instance (-1: not read)

    def read(self) -> int:
        """The mark on disk (0 when there is none yet)."""
        try:
            with open(self.path, "rb") as f:
                text = f.read(64)
        except FileNotFoundError:
            self._known = 0
            return 0
        except OSError as exc:
            raise StoreError(f"cannot read the sequence mark {self.path}: {exc}") from exc
        try:
            value = int(text.strip() or b"0")
        except ValueError:
            log.warning("the sequence mark %s is unreadable (%r); taken as 0", self.path, text[:20])
            value = 0
        self._known = value
        return value

    def cover(self, newest: int) -> None:
        """Make sure the mark is at least ``newest`` (called under the exclusive lock, before
        the commit of sequences up to ``newest``). Raises StoreError (DiskFullError) if
        the file cannot be written: the commit must not happen then."""
        if newest <= self._known:
            return  # the hot path: within the reserved block
        current = self.read()  # another process may have raised it
        if newest <= current:
            return
        target = newest + self.block
        tmp = f"{self.path}.{os.getpid()}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                files.write_all(fd, b"%d\n" % target)
                if self.durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
            if self.durable:
                files.fsync_dir(os.path.dirname(self.path))
        except OSError as exc:
            files.unlink_quietly(tmp)
            raise files.store_error(exc, f"cannot raise the sequence mark {self.path}") from exc
        self._known = target
