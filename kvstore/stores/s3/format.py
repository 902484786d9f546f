"""The metadata object: its body and its headers, encoded by one function and decoded by one.

Body: the user's metadata as a JSON object, then a line of 32 blanks drawn at random for each
commit (see :func:`metadata_body`). User headers (``x-amz-meta-<name>``): the data it names
(``kvstore-write``, ``kvstore-crc32`` in hex, ``kvstore-size``, in a versioned bucket
``kvstore-data-version``), ``kvstore-created`` / ``kvstore-modified`` (``repr`` of epoch
seconds), ``kvstore-revision`` (the key's revision: 1 for a new key, one more at each commit;
an object written before revisions existed has none and reads as revision 1) and, for a
long key, ``kvstore-key``. A data object carries the ``kvstore-write``
of its upload (and, uploaded in one PUT, its CRC32 and size). tests/test_s3_golden.py pins it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import uuid
from typing import Any

from .errors import Unreadable

__all__ = ["H_WRITE", "H_CRC", "H_SIZE", "H_VERSION", "H_CREATED", "H_MODIFIED", "H_KEY", "H_REVISION",
           "DataRef", "Meta", "metadata_body", "parse_meta", "commit_headers", "version_of"]

# user-metadata headers (x-amz-meta-<name>)
H_WRITE = "kvstore-write"
H_CRC = "kvstore-crc32"
H_SIZE = "kvstore-size"
H_VERSION = "kvstore-data-version"
H_CREATED = "kvstore-created"
H_MODIFIED = "kvstore-modified"
H_KEY = "kvstore-key"
H_REVISION = "kvstore-revision"


@dataclasses.dataclass(frozen=True)
class DataRef:
    """What a metadata object says about the data committed with it (None: unknown).

    ``etag``: the data object's ETag as an upload left it (not part of what a metadata
    object says, nor of the comparison)."""

    write: str | None = None
    crc32: int | None = None
    size: int | None = None
    version: str | None = None
    etag: str | None = dataclasses.field(default=None, compare=False)

    @classmethod
    def from_headers(cls, headers: dict[str, str]) -> DataRef:
        def number(name: str, base: int) -> int | None:
            try:
                return int(headers[name], base)
            except (KeyError, ValueError):
                return None

        return cls(write=headers.get(H_WRITE) or None, crc32=number(H_CRC, 16),
                   size=number(H_SIZE, 10), version=headers.get(H_VERSION) or None)

    def headers(self) -> dict[str, str]:
        out = {}
        if self.write is not None:
            out[H_WRITE] = self.write
        if self.crc32 is not None:
            out[H_CRC] = f"{self.crc32:08x}"
        if self.size is not None:
            out[H_SIZE] = str(self.size)
        if self.version is not None:
            out[H_VERSION] = self.version
        return out


@dataclasses.dataclass
class Meta:
    """A metadata object as read: its ETag, the user's metadata, the data it names and all
    its user headers."""

    etag: str
    metadata: dict[str, Any]
    ref: DataRef
    created: float
    modified: float
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    revision: int = 1  # an object of before revisions (no header) is at revision 1


def version_of(response: dict[str, Any]) -> str | None:
    """The VersionId of a PUT or GET response; None for an unversioned bucket."""
    version = response.get("VersionId")
    return version if version and version != "null" else None


def metadata_body(metadata: dict[str, Any]) -> bytes:
    """The metadata object's body: the JSON text, then a line of blanks random per commit.

    If-Match compares ETags, which are the MD5 of the body alone: two commits of equal
    metadata naming different data (``set_data`` keeps the metadata) would look the same,
    and a racing ``update_metadata`` would re-commit the older data. The trailing
    whitespace means nothing to JSON and makes every commit's ETag its own.
    """
    bits = uuid.uuid4().int
    tail = "".join(" \t"[(bits >> i) & 1] for i in range(32))
    return (json.dumps(metadata, ensure_ascii=False) + "\n" + tail).encode("utf-8")


def commit_headers(ref: DataRef, created: float, modified: float, long_key: str | None,
                   revision: int | None = None) -> dict[str, str]:
    """The user headers of a metadata object naming ``ref`` (``long_key``: the encoded
    ``kvstore-key`` of a long key, else None) at ``revision``."""
    headers = ref.headers()
    headers[H_CREATED] = repr(created)
    headers[H_MODIFIED] = repr(modified)
    if revision is not None:
        headers[H_REVISION] = str(revision)
    if long_key is not None:
        headers[H_KEY] = long_key
    return headers


def parse_meta(where: str, response: dict[str, Any], raw: bytes) -> Meta:
    """The metadata object of a GET ``response`` whose body is ``raw``; ``where`` names it.

    Raises
    ------
    Unreadable : (a StoreError) the body is not a JSON object.
    """
    headers = response.get("Metadata") or {}
    last_modified = response.get("LastModified")
    modified = last_modified.timestamp() if last_modified is not None else 0.0
    with contextlib.suppress(KeyError, ValueError):
        modified = float(headers[H_MODIFIED])
    created = modified
    with contextlib.suppress(KeyError, ValueError):
        created = min(float(headers[H_CREATED]), modified)
    revision = 1
    with contextlib.suppress(KeyError, ValueError):
        revision = max(1, int(headers[H_REVISION]))
    meta = Meta(etag=response["ETag"], metadata={}, ref=DataRef.from_headers(headers),
                created=created, modified=modified, headers=dict(headers), revision=revision)
    try:
        metadata = json.loads(raw or b"{}")
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise Unreadable(f"the metadata of {where} is not valid JSON: {exc}", meta) from exc
    if not isinstance(metadata, dict):
        raise Unreadable(f"the metadata of {where} is not a JSON object", meta)
    meta.metadata = metadata
    return meta
