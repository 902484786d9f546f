"""Data uploads: one PUT for a value smaller than a part, else a multipart upload sent while
the source is read; the CRC32 and size of the whole value are computed on the way.

Each upload carries a fresh write id (``kvstore-write``) that the metadata commit names.
A multipart upload that fails is aborted, so no parts are left behind.

An upload may be conditional (``If-Match`` on the data object's ETag, or ``If-None-Match:
*``), on its PUT or on its CompleteMultipartUpload: a condition that fails raises
``_Conflict`` and nothing is written (S3 checks both; moto 5.2 checks a multipart upload's
``If-None-Match`` only).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import logging
import uuid
import zlib
from collections.abc import Iterator
from typing import Any

from ...base import ProgressReader
from ...errors import StoreError
from .errors import ErrorMap, _Conflict, _Missing
from .format import H_WRITE, DataRef, version_of

__all__ = ["Uploads"]

log = logging.getLogger("kvstore.s3")

_PART_CHECKSUMS = ("ChecksumCRC32", "ChecksumCRC32C", "ChecksumCRC64NVME", "ChecksumSHA1", "ChecksumSHA256")


def read_part(source: ProgressReader, size: int) -> bytearray:
    """Up to ``size`` bytes from ``source``, read in ``buffer_size`` chunks into one buffer."""
    buf = bytearray(size)
    view = memoryview(buf)
    pos = 0
    try:
        while pos < size:
            chunk = source.read(min(source.buffer_size, size - pos))
            if not chunk:
                break
            view[pos:pos + len(chunk)] = chunk
            pos += len(chunk)
    finally:
        view.release()
    if pos < size:
        del buf[pos:]
    return buf


def read_first(source: ProgressReader, size: int) -> bytes:
    """Like :func:`read_part`, without reserving ``size`` bytes for what may be a small value."""
    chunks = []
    pos = 0
    while pos < size:
        chunk = source.read(min(source.buffer_size, size - pos))
        if not chunk:
            break
        chunks.append(chunk)
        pos += len(chunk)
    return b"".join(chunks)


class Uploads:
    """Uploads of data objects to ``bucket`` through ``client``.

    Parameters
    ----------
    client : the boto3 S3 client.
    bucket : the bucket name.
    errors : the store's error map.
    part_size : multipart part size in bytes.
    workers : parts sent at once.
    """

    def __init__(self, client: Any, bucket: str, errors: ErrorMap, part_size: int, workers: int) -> None:
        self._client = client
        self._bucket = bucket
        self._errors = errors
        self.part_size = part_size
        self.workers = workers

    def put(self, name: str, data: Any, write: str | None = None,
            condition: dict[str, str] | None = None) -> DataRef:
        """One PUT of the whole value ``data`` (on ``condition``: ``IfMatch`` / ``IfNoneMatch``).

        Raises
        ------
        _Conflict : the condition failed (nothing written).
        """
        ref = DataRef(write=write or uuid.uuid4().hex, crc32=zlib.crc32(data), size=len(data))
        with self._conditional(condition):
            response = self._client.put_object(Bucket=self._bucket, Key=name, Body=data,
                                               Metadata=ref.headers(),
                                               ContentType="application/octet-stream", **(condition or {}))
        return dataclasses.replace(ref, version=version_of(response), etag=response.get("ETag"))

    def upload(self, name: str, source: ProgressReader, condition: dict[str, str] | None = None) -> DataRef:
        """Upload the data as it is read; one PUT when it fits in one part. ``condition``
        as for :meth:`put` (of a multipart upload, checked by its completion)."""
        write = uuid.uuid4().hex
        held = [read_first(source, self.part_size)]  # handed on, so that no frame keeps it
        if len(held[0]) < self.part_size:
            return self.put(name, held.pop(), write, condition)
        return self._multipart(name, source, held, write, condition)

    @contextlib.contextmanager
    def _conditional(self, condition: dict[str, str] | None) -> Iterator[None]:
        """The error map; under a condition, an If-Match on an object deleted meanwhile
        (404) is a failed condition like a 412."""
        if not condition:
            with self._errors():
                yield
            return
        try:
            with self._errors(missing=True):
                yield
        except _Missing as exc:
            raise _Conflict(str(exc)) from exc

    def forget_version(self, name: str, version: str) -> None:
        """Delete the uncommitted ``version`` of the data object ``name`` (best effort)."""
        try:
            with self._errors():
                self._client.delete_object(Bucket=self._bucket, Key=name, VersionId=version)
        except StoreError as exc:
            log.warning("could not delete the uncommitted version %s of %s: %s", version, name, exc)

    def _multipart(self, name: str, source: ProgressReader, held: list[bytes], write: str,
                   condition: dict[str, str] | None = None) -> DataRef:
        with self._errors():
            # CRC32 per part, as boto3's own transfers do: S3 checks each part on arrival
            # and keeps a composite checksum instead of rereading the whole object.
            upload_id = self._client.create_multipart_upload(
                Bucket=self._bucket, Key=name, Metadata={H_WRITE: write},
                ContentType="application/octet-stream", ChecksumAlgorithm="CRC32")["UploadId"]
        try:
            parts, crc, size = self._send_parts(name, upload_id, source, held)
            with self._conditional(condition):
                response = self._client.complete_multipart_upload(
                    Bucket=self._bucket, Key=name, UploadId=upload_id, MultipartUpload={"Parts": parts},
                    **(condition or {}))
        except BaseException:
            self._abort(name, upload_id)
            raise
        return DataRef(write=write, crc32=crc, size=size, version=version_of(response), etag=response.get("ETag"))

    def _send_parts(self, name: str, upload_id: str, source: ProgressReader,
                    held: list[bytes]) -> tuple[list[dict[str, Any]], int, int]:
        """Send ``held``'s part, then the rest of ``source``; the parts, CRC32 and size."""
        crc, size = 0, 0
        futures: list[concurrent.futures.Future] = []
        # At most `workers` parts are in flight and one is being read: memory stays at
        # (workers + 1) * part_size whatever the size of the value.
        with concurrent.futures.ThreadPoolExecutor(
                max_workers=self.workers, thread_name_prefix="kvstore-s3-upload") as pool:
            pending: set = set()
            part: Any = held.pop()
            while part:
                crc = zlib.crc32(part, crc)
                size += len(part)
                pending = self._room(pending)
                future = pool.submit(self._send_part, name, upload_id, len(futures) + 1, part)
                pending.add(future)
                futures.append(future)
                part = None  # the worker holds the only reference: freed once sent
                part = read_part(source, self.part_size)
            return [f.result() for f in futures], crc, size

    def _room(self, pending: set) -> set:
        """Wait until fewer than ``workers`` parts are in flight; a failed part raises now."""
        while len(pending) >= self.workers:
            done, pending = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                future.result()
        return pending

    def _send_part(self, name: str, upload_id: str, number: int, part: Any) -> dict[str, Any]:
        with self._errors():
            response = self._client.upload_part(Bucket=self._bucket, Key=name, UploadId=upload_id,
                                                PartNumber=number, Body=part, ChecksumAlgorithm="CRC32")
        done = {"PartNumber": number, "ETag": response["ETag"]}
        for checksum in _PART_CHECKSUMS:
            if response.get(checksum):
                done[checksum] = response[checksum]
        return done

    def _abort(self, name: str, upload_id: str) -> None:
        try:
            with self._errors():
                self._client.abort_multipart_upload(Bucket=self._bucket, Key=name, UploadId=upload_id)
        except StoreError as exc:
            log.warning("could not abort the multipart upload %s of %s: %s", upload_id, name, exc)
