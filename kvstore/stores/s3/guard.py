"""Conditional uploads: how a write on ``if_revision`` replaces a key's data object on an
unversioned bucket without destroying data that another write owns.

There the data object is overwritten in place, before the metadata commit. A write whose
commit then fails on its condition (another host committed first) would leave the winner's
metadata naming data that is gone. So a conditional write:

1. looks at the data object (:meth:`DataGuard.condition`): if it holds the data that the
   metadata just read names, the upload is ``If-Match`` on its ETag (``If-None-Match: *``
   when there is none), and of two racing writers only one replaces it (a failed condition:
   :meth:`DataGuard.lost`, a ``ConflictError`` with nothing written). A data object the
   metadata does not name is another write's between its upload and its commit: wait for
   that commit (the metadata changes: ``ConflictError`` unless the condition still holds)
   up to ``pair_timeout`` while nothing changes, then take it as abandoned (its writer
   died) and replace it. A value up to ``keep_max`` bytes is read whole here (a GET instead
   of the HEAD), to be put back by step 3;
2. uploads on that condition, then commits as any write;
3. if the commit fails after the upload (:meth:`DataGuard.undo`), the metadata is read
   again: when it still names the data the upload replaced (a commit of metadata alone
   came first, or the metadata PUT failed), those bytes are put back (``If-Match`` on the
   upload's ETag, so a later upload is never undone); when the key is gone, the uploaded
   data object is deleted, so that no orphan makes the next writer wait.

A versioned bucket needs none of this (the metadata names a version that no upload
changes): :meth:`DataGuard.condition` answers ``{}`` when the metadata or the data object
shows a version. Writes without a condition never come here (last writer wins).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from ...errors import ConflictError, StoreError
from .errors import ErrorMap, Unreadable, _Conflict, _Missing
from .format import DataRef, Meta, version_of
from .naming import ObjectNames
from .reads import OTHER, Patience, Reads, pairing

__all__ = ["Guard", "DataGuard"]

log = logging.getLogger("kvstore.s3")


@dataclasses.dataclass(frozen=True)
class Guard:
    """The condition of one conditional upload and what it replaces.

    ``replaced``: the committed data the upload replaces (None: no data object, or an
    abandoned upload); ``body``, ``headers``, ``content_type``: that data object's bytes
    (None: more than ``keep_max``), user headers and type, to put it back.
    """

    condition: dict[str, str]
    replaced: DataRef | None = None
    body: bytes | None = dataclasses.field(default=None, repr=False)
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    content_type: str | None = None


class DataGuard:
    """Conditional uploads of one store's data objects (see the module docstring).

    Parameters
    ----------
    client, bucket, errors, reads : the store's boto3 client, bucket, error map and reads.
    """

    def __init__(self, client: Any, bucket: str, errors: ErrorMap, reads: Reads) -> None:
        self._client = client
        self._bucket = bucket
        self._errors = errors
        self._reads = reads

    def read(self, key: str, names: ObjectNames) -> tuple[Meta | None, bool]:
        """The key's metadata object, and whether it was readable (an unreadable one is
        what could be read of it: its ETag, revision and data)."""
        try:
            return self._reads.meta(key, names.metadata), True
        except Unreadable as exc:
            return exc.meta, False

    def condition(self, key: str, names: ObjectNames, current: Meta | None,
                  check: Callable[[Meta | None], None], pair_timeout: float, keep_max: int) -> Guard:
        """The condition under which this write may replace the data object, ``current``
        being the metadata it has read and checked. ``check`` raises ConflictError when the
        metadata read again no longer meets the write's condition."""
        if current is not None and current.ref.version is not None:
            return Guard({})
        patience = Patience(pair_timeout)
        last: str | None = None
        while True:
            keep = current is not None and current.ref.size is not None and current.ref.size <= keep_max
            found = self._reads.data_object(names.data, keep_max if keep else -1)
            if found is None:
                return Guard({"IfNoneMatch": "*"})
            head, body = found
            if version_of(head) is not None:
                return Guard({})  # a versioned bucket (a key new to it, or written before versioning)
            headers = dict(head.get("Metadata") or {})
            if current is not None and pairing(current.ref, headers) != OTHER:
                return Guard({"IfMatch": head["ETag"]}, current.ref, body, headers, head.get("ContentType"))
            if head["ETag"] != last:  # another upload came meanwhile: that writer is alive
                last = head["ETag"]
                patience.reset()
            if not patience.wait():
                log.warning("%r: replacing a data object that no metadata names, unchanged for %ss "
                            "(a writer died between its upload and its commit)", key, pair_timeout)
                return Guard({"IfMatch": head["ETag"]})
            again, _ = self.read(key, names)
            if _etag(again) != _etag(current):
                check(again)  # the other write committed: ConflictError, unless ours still holds
                current = again
                patience.reset()

    def lost(self, key: str, names: ObjectNames, current: Meta | None, expected: int,
             pair_timeout: float) -> ConflictError:
        """The ConflictError of a write whose conditional upload failed: another writer
        replaced the data object first and commits it (waited for, up to ``pair_timeout``,
        so that ``actual`` is the revision it commits)."""
        patience = Patience(pair_timeout)
        while True:
            again, _ = self.read(key, names)
            if _etag(again) != _etag(current) or not patience.wait():
                return ConflictError(key, expected, again.revision if again is not None else None)

    def undo(self, key: str, names: ObjectNames, guard: Guard, ours: DataRef) -> None:
        """After a failed commit of the upload ``ours``, made on ``guard``: put back the data
        it replaced if the metadata still names that, or delete it if the key is gone
        (best effort; an upload that came since is left alone)."""
        try:
            now, _ = self.read(key, names)
        except StoreError as exc:
            log.warning("%r: could not check the key after a failed write: %s", key, exc)
            return
        if ours.etag is None or (now is not None and now.ref.write == ours.write):
            return  # committed after all (the response was lost)
        try:
            if now is None:
                with self._errors(missing=True):
                    self._client.delete_object(Bucket=self._bucket, Key=names.data, IfMatch=ours.etag)
            elif guard.replaced is not None and now.ref == guard.replaced:
                if guard.body is None:
                    log.warning("%r: a failed conditional write replaced data larger than keep_max that "
                                "its metadata still names; write the key again", key)
                    return
                with self._errors(missing=True):
                    self._client.put_object(Bucket=self._bucket, Key=names.data, Body=guard.body,
                                            Metadata=guard.headers, IfMatch=ours.etag,
                                            ContentType=guard.content_type or "application/octet-stream")
        except (_Conflict, _Missing):
            pass  # replaced or deleted since: another write's now
        except StoreError as exc:
            log.warning("%r: could not undo the upload of a failed write: %s", key, exc)


def _etag(meta: Meta | None) -> str | None:
    return meta.etag if meta is not None else None
