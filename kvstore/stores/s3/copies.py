"""Server-side copies of data objects: ``CopyObject`` up to ``copy_max`` bytes, a multipart
copy (``UploadPartCopy`` of byte ranges) above it. No byte of the data passes through the
client; the copy carries a fresh write id and the source's CRC32 and size, like an upload.

The source is pinned: its ``VersionId`` in a versioned bucket, else its ETag
(``CopySourceIfMatch``), so a write of the source meanwhile fails the copy (``_Conflict``)
instead of mixing two values. The destination may be conditional too (``IfMatch`` /
``IfNoneMatch`` on CopyObject or on the multipart copy's completion; S3 checks them, moto
5.2 does not): a failed condition on either side raises ``_Conflict``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .errors import ErrorMap, _Conflict, _Missing
from .format import H_WRITE, DataRef, version_of

__all__ = ["CopySource", "Copies"]

#: S3's largest CopyObject (and part): 5 GiB
COPY_MAX = 5 * 1024 ** 3
#: S3's most parts in one multipart upload
MAX_PARTS = 10_000


@dataclass(frozen=True)
class CopySource:
    """The data object to copy, pinned (``version`` or ``etag``), with what it holds."""

    bucket: str
    name: str
    etag: str
    size: int
    crc32: int | None
    version: str | None = None

    def spec(self) -> dict[str, Any]:
        out = {"Bucket": self.bucket, "Key": self.name}
        if self.version is not None:
            out["VersionId"] = self.version
        return out

    def condition(self) -> dict[str, Any]:
        return {} if self.version is not None else {"CopySourceIfMatch": self.etag}


class Copies:
    """Copies into ``bucket`` through ``client`` (the destination store's).

    ``copy_max``: objects above this size are copied in parts of at least ``part_size``
    bytes, ``workers`` at once (each part request is answered by the server alone).
    """

    def __init__(self, client: Any, bucket: str, errors: ErrorMap, part_size: int, workers: int,
                 copy_max: int = COPY_MAX) -> None:
        self._client = client
        self._bucket = bucket
        self._errors = errors
        self.part_size = part_size
        self.workers = workers
        self.copy_max = copy_max

    def copy(self, source: CopySource, name: str, condition: dict[str, str] | None = None) -> DataRef:
        """Copy ``source`` to the data object ``name`` (on ``condition`` on that object:
        ``IfMatch`` / ``IfNoneMatch``); the DataRef its commit names."""
        ref = DataRef(write=uuid.uuid4().hex, crc32=source.crc32, size=source.size)
        if source.size > self.copy_max:
            return self._multipart(source, name, ref, condition or {})
        with self._conditional(condition):
            response = self._client.copy_object(
                Bucket=self._bucket, Key=name, CopySource=source.spec(), MetadataDirective="REPLACE",
                Metadata=ref.headers(), ContentType="application/octet-stream", **source.condition(),
                **(condition or {}))
        return DataRef(ref.write, ref.crc32, ref.size, version_of(response),
                       (response.get("CopyObjectResult") or {}).get("ETag"))

    def ranges(self, size: int) -> list[tuple[int, int]]:
        """The inclusive byte ranges of a multipart copy of ``size`` bytes."""
        part = max(self.part_size, -(-size // MAX_PARTS))
        part = min(part, self.copy_max) if self.copy_max >= self.part_size else part
        return [(start, min(start + part, size) - 1) for start in range(0, size, part)]

    def _conditional(self, condition: dict[str, str] | None) -> Any:
        """The error map; under a destination condition an If-Match on a data object
        deleted meanwhile (404) is a failed condition (a missing source stays an error)."""
        if not condition or "IfMatch" not in condition:
            return self._errors()
        return _missing_is_conflict(self._errors)

    def _multipart(self, source: CopySource, name: str, ref: DataRef, condition: dict[str, str]) -> DataRef:
        with self._errors():
            upload_id = self._client.create_multipart_upload(
                Bucket=self._bucket, Key=name, Metadata=ref.headers(),
                ContentType="application/octet-stream")["UploadId"]
        try:
            with concurrent.futures.ThreadPoolExecutor(max_workers=self.workers,
                                                       thread_name_prefix="kvstore-s3-copy") as pool:
                futures = [pool.submit(self._copy_part, source, name, upload_id, number, span)
                           for number, span in enumerate(self.ranges(source.size), start=1)]
                parts = [f.result() for f in futures]
            with self._conditional(condition):
                response = self._client.complete_multipart_upload(
                    Bucket=self._bucket, Key=name, UploadId=upload_id, MultipartUpload={"Parts": parts},
                    **condition)
        except BaseException:
            self._abort(name, upload_id)
            raise
        return DataRef(ref.write, ref.crc32, ref.size, version_of(response), response.get("ETag"))

    def _copy_part(self, source: CopySource, name: str, upload_id: str, number: int,
                   span: tuple[int, int]) -> dict[str, Any]:
        with self._errors():
            response = self._client.upload_part_copy(
                Bucket=self._bucket, Key=name, UploadId=upload_id, PartNumber=number,
                CopySource=source.spec(), CopySourceRange=f"bytes={span[0]}-{span[1]}", **source.condition())
        return {"PartNumber": number, "ETag": response["CopyPartResult"]["ETag"]}

    def _abort(self, name: str, upload_id: str) -> None:
        try:
            with self._errors():
                self._client.abort_multipart_upload(Bucket=self._bucket, Key=name, UploadId=upload_id)
        except Exception:  # best effort: the copy's own error is the one to report
            pass


@contextlib.contextmanager
def _missing_is_conflict(errors: ErrorMap) -> Iterator[None]:
    try:
        with errors(missing=True):
            yield
    except _Missing as exc:
        raise _Conflict(str(exc)) from exc


def written_by(head: dict[str, Any]) -> str | None:
    """The write id of a data object's HEAD (None: not written by kvstore)."""
    return (head.get("Metadata") or {}).get(H_WRITE) or None
