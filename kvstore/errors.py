"""Exceptions raised by kvstore stores.

Every store error is a :class:`StoreError`; a bad key is also a :class:`ValueError`
so code written against encore.storage, which raised ``ValueError``, keeps working.
"""

from __future__ import annotations

__all__ = [
    "StoreError",
    "AuthorizationError",
    "InvalidKeyError",
    "NotConnectedError",
    "ChecksumError",
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
