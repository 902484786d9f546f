"""A key's history on S3, read from bucket versioning: each version of the key's metadata
object is one write (the metadata PUT is the commit point), each delete marker a delete."""

from __future__ import annotations

import contextlib
from typing import Any

from ..._value import Change
from .errors import ErrorMap
from .format import parse_meta

__all__ = ["read_history"]


def _versioned(client: Any, bucket: str, errors: ErrorMap) -> bool:
    with errors():
        return client.get_bucket_versioning(Bucket=bucket).get("Status") == "Enabled"


def _versions(client: Any, bucket: str, name: str, errors: ErrorMap) -> tuple[list[str], list[Any]]:
    """The version ids of the object ``name`` and the times of its delete markers, each
    oldest first (S3 lists each kind newest first; their listing times are too coarse to
    interleave the two, see :func:`read_history`)."""
    versions: list[str] = []
    markers: list[Any] = []
    with errors():
        for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=name):
            versions += [v["VersionId"] for v in page.get("Versions", []) if v["Key"] == name]
            markers += [d["LastModified"] for d in page.get("DeleteMarkers", []) if d["Key"] == name]
    return versions[::-1], markers[::-1]


def read_history(client: Any, bucket: str, errors: ErrorMap, key: str, name: str) -> list[Change]:
    """The changes of ``key`` whose metadata object is ``name``, oldest first.

    A key's revision counter starts at 1 with each life of the key (after a delete), so a
    version at revision 1 that is not the first one follows a delete: the oldest delete
    marker not yet placed. Markers left after the last version are its delete.

    Raises
    ------
    NotImplementedError : the bucket has no versioning (S3 then keeps no history).
    """
    if not _versioned(client, bucket, errors):
        raise NotImplementedError(f"S3Store keeps no history of its keys without bucket versioning "
                                  f"(s3://{bucket} has none)")
    versions, markers = _versions(client, bucket, name, errors)
    changes: list[Change] = []
    last: Change | None = None

    def deleted(when: Any) -> Change:
        assert last is not None
        return Change("delete", key, last.metadata, timestamp=when.timestamp(), revision=(last.revision or 0) + 1)

    for version in versions:
        with errors():
            response = client.get_object(Bucket=bucket, Key=name, VersionId=version)
            with contextlib.closing(response["Body"]) as body:
                raw = body.read()
        meta = parse_meta(f"{key!r} (s3://{bucket}/{name}, version {version})", response, raw)
        if last is not None and last.kind != "delete" and meta.revision == 1 and markers:
            last = deleted(markers.pop(0))
            changes.append(last)
        kind = "set" if last is None or last.kind == "delete" else "update"
        last = Change(kind, key, meta.metadata, timestamp=meta.modified, revision=meta.revision)
        changes.append(last)
    if last is not None and last.kind != "delete" and markers:
        changes.append(deleted(markers[0]))
    return changes
