"""Reads: a key's metadata object, then its data, used only if they belong together.

The data is the metadata's own when its write id is the one the metadata names (in a
versioned bucket the named ``VersionId`` is read, which no later write can change). Values up
to ``snapshot_max`` bytes are read whole (a snapshot); larger ones are streamed on demand with
``If-Match`` on the data's ETag (or by version). Whole reads check the size and CRC32 the
metadata names; a mismatch raises :class:`~kvstore.errors.ChecksumError`.
"""

from __future__ import annotations

import contextlib
import io
import zlib
from typing import Any

from ...base import Value
from ...errors import ChecksumError, StoreError
from .errors import ErrorMap, _Conflict, _Missing
from .format import H_WRITE, DataRef, Meta, parse_meta

__all__ = ["Reads"]

OK, FOREIGN, OTHER = "ok", "foreign", "other"


def pairing(ref: DataRef, data_headers: dict[str, str]) -> str:
    """``"ok"`` (the data of this metadata), ``"foreign"`` (written outside kvstore: only
    the checksum can tell), or ``"other"`` (another kvstore write: retry)."""
    if ref.write is None or ref.version is not None:
        return OK
    write = data_headers.get(H_WRITE)
    if write == ref.write:
        return OK
    return FOREIGN if write is None else OTHER


def verify_whole(key: str, data: bytes, ref: DataRef) -> None:
    if ref.size is not None and len(data) != ref.size:
        raise ChecksumError(f"{key!r}: read {len(data)} bytes, its metadata says {ref.size}")
    if ref.crc32 is not None and zlib.crc32(data) != ref.crc32:
        raise ChecksumError(f"{key!r}: the data does not match its stored CRC32")


def _check_data_missing(ref: DataRef) -> None:
    """The data object of ``ref`` is missing: the caller reads again, or the key is none."""
    # kvstore uploads data before metadata, so a kvstore key without data is being
    # deleted (read again); a metadata file copied in without its data is no key.
    if ref.write is None:
        raise _Missing("a metadata object without its data object")


class _BodyReader(io.RawIOBase):
    """A GET response body as a raw stream; checks size and CRC32 when the end is reached."""

    def __init__(self, errors: ErrorMap, key: str, body: Any, expected_size: int,
                 crc32: int | None) -> None:
        super().__init__()
        self._errors = errors
        self._key = key
        self._body = body
        self._expected = expected_size
        self._crc_expected = crc32
        self._crc = 0
        self._seen = 0
        self._checked = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.closed:
            raise ValueError("read of closed file")
        if self._checked:
            return 0
        with self._errors():
            data = self._body.read(len(buffer))
        n = len(data)
        if n:
            buffer[:n] = data
            self._seen += n
            if self._crc_expected is not None:
                self._crc = zlib.crc32(data, self._crc)
            return n
        self._checked = True
        if self._seen != self._expected:
            raise ChecksumError(f"{self._key!r}: read {self._seen} bytes, expected {self._expected}")
        if self._crc_expected is not None and self._crc != self._crc_expected:
            raise ChecksumError(f"{self._key!r}: the data does not match its stored CRC32 "
                                f"({self._crc:08x} != {self._crc_expected:08x})")
        return 0

    def close(self) -> None:
        if not self.closed:
            with contextlib.suppress(Exception):
                self._body.close()
        super().close()


class Reads:
    """Reads of metadata and data objects from ``bucket`` through ``client``.

    Parameters
    ----------
    client, bucket, errors : the boto3 client, the bucket name, the store's error map.
    snapshot_max : values up to this size are read whole by ``value()``.
    stream_buffer : the buffer size of a streamed value's reader.
    """

    def __init__(self, client: Any, bucket: str, errors: ErrorMap, snapshot_max: int,
                 stream_buffer: int) -> None:
        self._client = client
        self._bucket = bucket
        self._errors = errors
        self.snapshot_max = snapshot_max
        self.stream_buffer = stream_buffer

    def meta(self, key: str, name: str) -> Meta | None:
        """The metadata object ``name`` of ``key``, or None when it does not exist."""
        try:
            with self._errors(missing=True):
                response = self._client.get_object(Bucket=self._bucket, Key=name)
                with contextlib.closing(response["Body"]) as body:
                    raw = body.read()
        except _Missing:
            return None
        return parse_meta(f"{key!r} (s3://{self._bucket}/{name})", response, raw)

    def head(self, name: str) -> dict[str, Any] | None:
        """The HEAD of the object ``name``, or None when it does not exist."""
        try:
            with self._errors(missing=True):
                return self._client.head_object(Bucket=self._bucket, Key=name)
        except _Missing:
            return None

    def headers(self, name: str) -> dict[str, str] | None:
        """The user headers of the object ``name``, or None when it does not exist."""
        head = self.head(name)
        return None if head is None else head.get("Metadata") or {}

    def value(self, key: str, data_name: str, current: Meta) -> Value | None:
        """A Value of ``current`` and its data, or None when the data is not (yet) its own.

        Raises
        ------
        _Missing : the metadata names no kvstore write and its data object is missing.
        """
        ref = current.ref
        where: dict[str, Any] = {"VersionId": ref.version} if ref.version else {}
        if ref.size is not None and ref.size <= self.snapshot_max:
            return self._snapshot(key, data_name, current, where)
        # Larger (or of unknown size): check the pairing now, stream the bytes on demand.
        try:
            with self._errors(missing=True):
                head = self._client.head_object(Bucket=self._bucket, Key=data_name, **where)
        except _Missing:
            _check_data_missing(ref)
            return None
        paired = pairing(ref, head.get("Metadata") or {})
        if paired == OTHER:
            return None
        size = int(head["ContentLength"])
        if ref.size is not None and size != ref.size:
            raise ChecksumError(f"{key!r}: the data object has {size} bytes, its metadata says {ref.size}")
        etag = head["ETag"]
        if size <= self.snapshot_max:  # small, of unknown size until now: read it whole too
            return self._snapshot_of(key, data_name, current, {**where, "IfMatch": etag})
        foreign = paired == FOREIGN

        def opener(start: int, end: int) -> Any:
            return self._open(key, data_name, ref, etag, size, foreign, start, end)

        return Value(size=size, metadata=current.metadata, created=current.created,
                     modified=current.modified, opener=opener)

    def _snapshot(self, key: str, data_name: str, current: Meta, where: dict[str, Any]) -> Value | None:
        """The whole value of a size known to be small, unless its data is another write's."""
        ref = current.ref
        try:
            with self._errors(missing=True):
                response = self._client.get_object(Bucket=self._bucket, Key=data_name, **where)
                with contextlib.closing(response["Body"]) as body:
                    if pairing(ref, response.get("Metadata") or {}) == OTHER:
                        return None
                    data = body.read()
        except _Missing:
            _check_data_missing(ref)
            return None
        verify_whole(key, data, ref)
        return Value.from_bytes(data, current.metadata, current.created, current.modified)

    def _snapshot_of(self, key: str, data_name: str, current: Meta, where: dict[str, Any]) -> Value | None:
        """The whole value of the data object whose HEAD was just checked (``IfMatch``)."""
        try:
            with self._errors(missing=True):
                response = self._client.get_object(Bucket=self._bucket, Key=data_name, **where)
                with contextlib.closing(response["Body"]) as body:
                    data = body.read()
        except (_Missing, _Conflict):
            return None
        verify_whole(key, data, current.ref)
        return Value.from_bytes(data, current.metadata, current.created, current.modified)

    def _open(self, key: str, data_name: str, ref: DataRef, etag: str, size: int,
              foreign: bool, start: int, end: int) -> Any:
        """A stream of ``data[start:end]`` of the data object as it was at ``get()``."""
        if end <= start:
            return io.BytesIO(b"")
        whole = start == 0 and end == size
        if foreign and not whole:
            raise ChecksumError(f"{key!r}: its data object was replaced outside kvstore; "
                                f"only a whole read can be checked")
        args: dict[str, Any] = {"Bucket": self._bucket, "Key": data_name}
        if ref.version:
            args["VersionId"] = ref.version
        else:
            args["IfMatch"] = etag
        if not whole:
            args["Range"] = f"bytes={start}-{end - 1}"
        try:
            with self._errors(missing=True):
                response = self._client.get_object(**args)
        except (_Missing, _Conflict):
            raise StoreError(f"{key!r} was overwritten or deleted since this Value was read; "
                             f"get() it again") from None
        raw = _BodyReader(self._errors, key, response["Body"], end - start, ref.crc32 if whole else None)
        return io.BufferedReader(raw, self.stream_buffer)
