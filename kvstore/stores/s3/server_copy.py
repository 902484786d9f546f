"""Server-side ``copy`` of the S3 store: ``CopyObject`` (a multipart copy past
``copy_max``) of the source's data object, then the metadata commit like any write; no data
passes through the client. ``move`` is the base class's copy then delete (not atomic)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ...errors import StoreError
from .copies import CopySource, written_by
from .errors import _Conflict, _Missing, missing_is_key_error

if TYPE_CHECKING:
    from ..._value import Change
    from .copies import Copies
    from .errors import ErrorMap
    from .format import DataRef, Meta
    from .guard import Guard
    from .naming import Naming, ObjectNames
    from .reads import Reads
    from .uploads import Uploads

__all__ = ["ServerSideCopies"]


class ServerSideCopies:
    """The ``_copy`` hooks of :class:`~kvstore.stores.s3.S3Store`."""

    if TYPE_CHECKING:  # provided by S3Store
        bucket: str
        commit_attempts: int
        pair_timeout: float
        _client: Any
        _copies: Copies
        _errors: ErrorMap
        _naming: Naming
        _reads: Reads
        _uploads: Uploads

        def _check_now(self, key: str, names: ObjectNames, expected: int,
                       update: dict[str, Any] | None) -> tuple[Meta | None, bool]: ...

        def _data_guard(self, key: str, names: ObjectNames, current: Meta | None, expected: int,
                        update: dict[str, Any] | None) -> Guard: ...

        def _undo_uploads(self, key: str, names: ObjectNames, uploads: list[DataRef],
                          guard: Guard | None) -> None: ...

        def _commit_write(self, key: str, names: ObjectNames, has_data: bool, uploads: list[DataRef],
                          metadata: dict[str, Any] | None, update: dict[str, Any] | None,
                          expected: int | None = None, seen: tuple[Meta | None] | None = None) -> Change: ...

    # ------------------------------------------------------------ server-side copies (issue 20)
    #
    # move is the base class's: this copy, then a delete; not atomic (S3 stages nothing).
    # ``if_revision`` is _commit_write's condition on ``dst``; move's ``if_source_revision``
    # is the condition of the delete that follows the copy.

    def _copy(self, src: str, dst: str, buffer_size: int, if_revision: int | None = None) -> list[Change]:
        return self._copy_from(self, src, dst, buffer_size, if_revision)

    def _can_copy_from(self, source: Any) -> bool:
        """Whether ``source``'s keys can be copied here server-side: an S3Store of the same
        service (endpoint, region) signing with the same credentials."""
        return isinstance(source, ServerSideCopies) and same_service(self._client, source._client)

    def _copy_from(self, source: ServerSideCopies, src: str, dst: str, buffer_size: int,
                   if_revision: int | None = None) -> list[Change]:
        """CopyObject (or a multipart copy) of ``source``'s data object of ``src`` to the
        data object of ``dst``, then the metadata commit like any write. No data passes
        through the client."""
        names = self._naming.names(dst)
        uploads: list[DataRef] = []
        current: Meta | None = None
        seen: tuple[Meta | None] | None = None
        guard: Guard | None = None
        if if_revision is not None:  # fail early, before the copy (the commit checks again)
            current, readable = self._check_now(dst, names, if_revision, None)
            seen = (current,) if readable else None
        try:
            for _ in range(self.commit_attempts):
                pinned, metadata = source._pinned(src)
                if if_revision is not None:
                    # replace the destination's data only while it is the committed one
                    # (S3Store._data_guard); looked at again after a conflict, which may
                    # have been the destination's
                    guard = self._data_guard(dst, names, current, if_revision, None)
                try:
                    uploads.append(self._copies.copy(pinned, names.data, guard.condition if guard else None))
                except _Conflict:
                    continue  # the source (or the destination) was written meanwhile: again
                return [self._commit_write(dst, names, True, uploads, metadata, None, if_revision, seen)]
        except BaseException:
            self._undo_uploads(dst, names, uploads, guard)
            raise
        raise StoreError(f"could not copy {src!r}: it changed {self.commit_attempts} times while copied")

    def _pinned(self, key: str) -> tuple[CopySource, dict[str, Any]]:
        """The committed data object of ``key``, pinned for a copy, and the key's metadata.
        KeyError when missing."""
        names = self._naming.names(key)
        deadline = time.monotonic() + self.pair_timeout
        with missing_is_key_error(key):
            while True:
                current = self._reads.meta_of(key, names.metadata)
                ref = current.ref
                head = self._data_head(names.data, ref.version)
                if head is not None and (ref.version is not None or ref.write is None
                                         or written_by(head) == ref.write):
                    return CopySource(self.bucket, names.data, head["ETag"], int(head["ContentLength"]),
                                      ref.crc32, ref.version), current.metadata
                # A writer has uploaded new data and not yet committed it: wait for its commit.
                if time.monotonic() > deadline:
                    raise StoreError(f"{key!r} is being written: its data object is not the one its "
                                     f"metadata names after {self.pair_timeout}s")
                time.sleep(0.02)

    def _data_head(self, name: str, version: str | None) -> dict[str, Any] | None:
        if version is None:
            return self._reads.head(name)
        try:
            with self._errors(missing=True):
                return self._client.head_object(Bucket=self.bucket, Key=name, VersionId=version)  # type: ignore[no-any-return]
        except _Missing:
            return None


def same_service(a: Any, b: Any) -> bool:
    """Whether two boto3 clients reach the same S3 service with the same access key."""
    if a is b:
        return True
    if a is None or b is None:
        return False
    if (a.meta.endpoint_url, a.meta.region_name) != (b.meta.endpoint_url, b.meta.region_name):
        return False
    return _access_key(a) == _access_key(b) and _access_key(a) is not None


def _access_key(client: Any) -> str | None:
    try:
        return client._request_signer._credentials.access_key  # type: ignore[no-any-return]
    except AttributeError:
        return None
