"""Exceptions raised by kvstore stores.

Every store error is a :class:`StoreError`; a bad key is also a :class:`ValueError`
so code written against encore.storage, which raised ``ValueError``, keeps working.
"""

from __future__ import annotations

import errno

__all__ = [
    "StoreError",
    "AuthorizationError",
    "InvalidKeyError",
    "NotConnectedError",
    "ChecksumError",
    "JournalGapError",
    "EventsOverflowError",
    "ConflictError",
    "ReadOnlyError",
    "DiskFullError",
]


class StoreError(Exception):
    """Base class of every error a store raises (besides ``KeyError`` for a missing key)."""


class AuthorizationError(StoreError):
    """The backend refused the operation (bad credentials, access denied)."""


class InvalidKeyError(StoreError, ValueError):
    """A key is not a str of 1 to 255 characters, valid Unicode and free of NUL."""


class NotConnectedError(StoreError):
    """A data or metadata operation was attempted on a store that is not connected."""


class ChecksumError(StoreError):
    """The bytes read back do not match the checksum stored with them."""


class ReadOnlyError(StoreError):
    """A write was attempted on a store opened read-only; nothing was done."""


class DiskFullError(StoreError, OSError):
    """The store's filesystem is full (``ENOSPC``, or SQLite's ``SQLITE_FULL``); the write
    that hit it left the key as it was. Also an :class:`OSError` (``errno`` is ``ENOSPC``),
    with the original error as its ``__cause__``."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.ENOSPC, message)

    def __str__(self) -> str:
        return str(self.strerror)


def _gap_message(path: str, first: int, last: int) -> str:
    return (f"the change journal of {path} no longer holds changes {first} to {last} "
            f"(trimmed, or lost with a rebuilt index): {last - first + 1} change(s) cannot be delivered")


class JournalGapError(StoreError):
    """Changes asked for (``since=``, or a reader fallen behind) are no longer in the journal
    (trimmed, or lost when a damaged index was rebuilt).

    Raised by :meth:`kvstore.watch.FileSystemWatcher.start` and by ``store.events(since=...)``
    or a read of its stream. Nothing of the gap has been delivered; resynchronise from the
    store itself (``query()``) and start again with ``since=error.floor``, or with no ``since``.

    Attributes
    ----------
    first, last : int
        The first and last sequence numbers that were trimmed away.
    floor : int
        ``store.journal_floor()``: the journal holds every change after it.
    """

    def __init__(self, path: str, first: int, last: int) -> None:
        super().__init__(_gap_message(path, first, last)
                         + f"; restart with since={last} to accept the gap")
        self.first = first
        self.last = last
        self.floor = last


class EventsOverflowError(StoreError):
    """More than ``maxsize`` events waited unread in a ``store.events()`` stream.

    Raised at the stream's next read (and every later one): events were lost, never silently.
    """
class ConflictError(StoreError):
    """A write's ``if_revision`` (or ``move``'s ``if_source_revision``) did not hold.

    Attributes
    ----------
    key : the key whose revision was checked.
    expected : the revision the write asked for (``0``: the key must not exist).
    actual : the key's revision when the write was tried (``None``: the key is missing).
    """

    def __init__(self, key: str, expected: int, actual: int | None) -> None:
        if actual is None:
            text = f"{key!r} does not exist (if_revision={expected})"
        elif expected == 0:
            text = f"{key!r} exists (revision {actual}; if_revision=0 wants it missing)"
        else:
            text = f"{key!r} is at revision {actual}, not {expected}"
        super().__init__(text)
        self.key = key
        self.expected = expected
        self.actual = actual

    def __reduce__(self) -> tuple[type, tuple[str, int, int | None]]:
        return (type(self), (self.key, self.expected, self.actual))
