"""The one place where botocore's errors become kvstore's (minimalkv's map_boto3_exceptions).

Every S3 call of the backend runs inside :class:`ErrorMap`'s context manager, so callers see
:class:`~kvstore.errors.StoreError` subclasses with botocore's error chained, never a bare
``ClientError``. "Not found" is the private :class:`_Missing`, raised only where the caller
asked for it (``missing=True``) and turned into ``KeyError(key)`` only by the public hooks
(:func:`missing_is_key_error`): so no bug inside the backend is ever read as a missing key.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from ...errors import AuthorizationError, ChecksumError, StoreError

__all__ = ["ErrorMap", "missing_is_key_error", "Unreadable", "BadCredentials", "NoBucket"]

_MISSING = frozenset({"NoSuchKey", "404", "NotFound", "NoSuchVersion"})
# who is asking is not known (or no longer valid): no permission can help
_BAD_CREDENTIALS = frozenset({"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
                              "TokenRefreshRequired", "InvalidClientTokenId"})
_DENIED = _BAD_CREDENTIALS | {"AccessDenied", "403", "Forbidden", "AllAccessDisabled", "AccountProblem",
                              "UnauthorizedAccess"}
_CONFLICT = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict"})


class _Missing(StoreError):
    """Inside the S3 backend: the object asked for does not exist.

    Only raised under ``ErrorMap(missing=True)``; a public hook turns it into ``KeyError``.
    Should one ever escape, it is still a ``StoreError``, never taken for a missing key.
    """


class _Conflict(StoreError):
    """A conditional request failed: the object changed since it was read (HTTP 412)."""


class Unreadable(StoreError):
    """A metadata object whose body is not a JSON object: its key's reads raise this,
    listings (``query``, ``query_keys``, ``glob``) skip the key with a warning.

    ``meta`` is what could be read of it (the ``Meta`` with ``{}`` as metadata), for the
    writes that need none of the old metadata: ``set`` and ``delete``.
    """

    def __init__(self, message: str, meta: Any = None) -> None:
        super().__init__(message)
        self.meta = meta


class NoBucket(StoreError):
    """The bucket does not exist."""


class BadCredentials(AuthorizationError):
    """S3 does not know the credentials (or they expired), whatever the permissions."""


@contextlib.contextmanager
def missing_is_key_error(key: str) -> Iterator[None]:
    """The public hooks' boundary: the backend's "not found" becomes ``KeyError(key)``."""
    try:
        yield
    except _Missing:
        raise KeyError(key) from None


class ErrorMap:
    """Translates the botocore errors of the calls made inside ``with errors():``.

    Parameters
    ----------
    botocore : the imported ``botocore`` package (imported only once a store is made).
    bucket, prefix : named in the messages.
    """

    def __init__(self, botocore: Any, bucket: str, prefix: str) -> None:
        self._exceptions = botocore.exceptions
        self.bucket = bucket
        self.prefix = prefix

    @contextlib.contextmanager
    def __call__(self, *, missing: bool = False) -> Iterator[None]:
        """Missing object → ``_Missing`` when ``missing`` (else a ``StoreError``); refused →
        :class:`AuthorizationError`; a failed condition → ``_Conflict``; a checksum S3
        rejects → :class:`ChecksumError`; anything else → :class:`StoreError`."""
        exceptions = self._exceptions
        try:
            yield
        except exceptions.ClientError as exc:
            raise self._client_error(exc, missing) from exc
        except (exceptions.NoCredentialsError, exceptions.PartialCredentialsError) as exc:
            raise AuthorizationError(f"S3 s3://{self.bucket}: {exc}") from exc
        except exceptions.FlexibleChecksumError as exc:
            raise ChecksumError(f"S3 s3://{self.bucket}: {exc}") from exc
        except exceptions.BotoCoreError as exc:
            raise StoreError(f"S3 s3://{self.bucket}/{self.prefix}: {exc}") from exc

    def _client_error(self, exc: Any, missing: bool) -> StoreError:
        error = exc.response.get("Error", {}) or {}
        code = str(error.get("Code") or "")
        status = (exc.response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        message = error.get("Message") or code or str(exc)
        where = f"S3 {exc.operation_name} on s3://{self.bucket}/{self.prefix}"
        if code in _MISSING and missing:
            return _Missing(f"{where}: {message}")
        if code == "NoSuchBucket":
            return NoBucket(f"{where}: the bucket {self.bucket!r} does not exist ({message})")
        if code in _CONFLICT or status == 412:
            return _Conflict(f"{where}: {message}")
        if code in _BAD_CREDENTIALS:
            return BadCredentials(f"{where}: the credentials were refused ({code}: {message})")
        if code in _DENIED:
            return AuthorizationError(f"{where}: access denied ({code}: {message})")
        return StoreError(f"{where} failed ({code or status}): {message}")
