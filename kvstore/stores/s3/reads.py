"""Reads: a key's metadata object, then its data, used only if they belong together.

The data is the metadata's own when its write id is the one the metadata names (in a
versioned bucket the named ``VersionId`` is read, which no later write can change). Values up
to ``snapshot_max`` bytes are read whole (a snapshot); larger ones are streamed on demand with
``If-Match`` on the data's ETag (or by version). Whole reads check the size and CRC32 the
metadata names; a mismatch raises :class:`~kvstore.errors.ChecksumError`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import time
import zlib
from typing import Any

from ...base import Value
from ...errors import ChecksumError, StoreError
from .errors import ErrorMap, _Conflict, _Missing
from .format import H_WRITE, DataRef, Meta, parse_meta, version_of
from .naming import ObjectNames

__all__ = ["Reads", "Patience", "pairing"]

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


@dataclasses.dataclass(frozen=True)
class _Look:
    """One look at a data object: what its GET or HEAD said, and its bytes if read whole."""

    write: str | None
    etag: str
    size: int
    version: str | None
    data: bytes | None = dataclasses.field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, response: dict[str, Any], data: bytes | None) -> _Look:
        return cls(write=(response.get("Metadata") or {}).get(H_WRITE), etag=response["ETag"],
                   size=int(response["ContentLength"]), version=version_of(response), data=data)

    def belongs_to(self, ref: DataRef) -> bool:
        """Whether this is the data that ``ref`` (a metadata object's) names."""
        if ref.version is not None:
            return self.version == ref.version
        return pairing(ref, {H_WRITE: self.write} if self.write is not None else {}) != OTHER


class Patience:
    """How long a reader waits while nothing changes: a writer between its data upload and
    its metadata PUT (sleeps of 5 ms doubling up to 100 ms, for ``timeout`` seconds)."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.reset()

    def reset(self) -> None:
        self._deadline: float | None = None
        self._delay = 0.005

    def wait(self) -> bool:
        """Sleep a little; False (and no sleep) once ``timeout`` has passed since the reset."""
        now = time.monotonic()
        if self._deadline is None:
            self._deadline = now + self.timeout
        elif now > self._deadline:
            return False
        time.sleep(self._delay)
        self._delay = min(self._delay * 2, 0.1)
        return True


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

    def data_object(self, name: str, read_up_to: int) -> tuple[dict[str, Any], bytes | None] | None:
        """The object ``name``: its response (a HEAD's fields) and, if it has at most
        ``read_up_to`` bytes, its bytes (one GET; ``read_up_to < 0``: a HEAD only). None
        when it does not exist."""
        if read_up_to < 0:
            head = self.head(name)
            return None if head is None else (head, None)
        try:
            with self._errors(missing=True):
                response = self._client.get_object(Bucket=self._bucket, Key=name)
                with contextlib.closing(response.pop("Body")) as body:
                    small = int(response["ContentLength"]) <= read_up_to
                    return response, body.read() if small else None
        except _Missing:
            return None

    def headers(self, name: str) -> dict[str, str] | None:
        """The user headers of the object ``name``, or None when it does not exist."""
        head = self.head(name)
        return None if head is None else head.get("Metadata") or {}

    def meta_of(self, key: str, name: str) -> Meta:
        """Like :meth:`meta`, but a missing metadata object raises ``_Missing`` (no such key)."""
        current = self.meta(key, name)
        if current is None:
            raise _Missing(key)
        return current

    def value(self, key: str, names: ObjectNames, pair_timeout: float, read_attempts: int) -> Value:
        """A Value of ``key``: its metadata and the data that metadata names.

        The metadata is read, then the data; when the data comes from another write, the
        metadata is read again, which may name that data by now (a writer committed it),
        and so on, each new look at either object being paired with the latest look at the
        other. While the objects keep changing the reader goes on at once (writers cannot
        starve it); when nothing changes, a writer is between its two steps and the reader
        waits for it, up to ``pair_timeout`` seconds. After ``read_attempts`` changes it
        gives up.

        Raises
        ------
        _Missing : no such key (or a metadata object copied in without its data).
        StoreError : the data object is missing while the metadata still names it; or the
            data stayed another write's for ``pair_timeout`` s, or changed ``read_attempts``
            times.
        """
        current = self.meta_of(key, names.metadata)
        previous: _Look | None = None
        patience = Patience(pair_timeout)
        changes = 0
        while changes < read_attempts:
            look = self._look(names.data, current)
            if look is None:
                again = self._data_missing(key, names, current)
            else:
                value = self._value_if_paired(key, names.data, current, look)
                if value is not None:
                    return value
                again = self.meta_of(key, names.metadata)
                value = self._value_if_paired(key, names.data, again, look)
                if value is not None:
                    return value
            changed = again.etag != current.etag or None in (look, previous) or look != previous
            current, previous = again, look
            if changed:
                changes += 1
                patience.reset()
            elif not patience.wait():
                raise StoreError(
                    f"the data of {key!r} (s3://{self._bucket}/{names.data}) comes from a write "
                    f"whose metadata was never committed (a writer died or failed between its "
                    f"two steps); write the key again")
        raise StoreError(f"could not read {key!r}: it was overwritten {changes} times while "
                         f"being read; try again")

    def _data_missing(self, key: str, names: ObjectNames, current: Meta) -> Meta:
        """The data object that ``current`` names is missing: the metadata read again, if it
        changed meanwhile (a delete or a new write)."""
        # kvstore uploads data before metadata and deletes metadata before data, so data
        # missing under unchanged metadata has vanished outside kvstore: waiting cannot help.
        if current.ref.write is None:  # a metadata file copied in without its data is no key
            raise _Missing("a metadata object without its data object")
        again = self.meta_of(key, names.metadata)
        if again.etag == current.etag:
            raise StoreError(f"the data object of {key!r} (s3://{self._bucket}/{names.data}) is "
                             f"missing although its metadata names it; write or delete the key")
        return again

    def _look(self, data_name: str, current: Meta) -> _Look | None:
        """The data object that ``current`` probably names: read whole (GET) when the
        metadata says it is small, else its HEAD; None when it is missing."""
        ref = current.ref
        args: dict[str, Any] = {"Bucket": self._bucket, "Key": data_name}
        if ref.version:
            args["VersionId"] = ref.version
        try:
            with self._errors(missing=True):
                if ref.size is None or ref.size > self.snapshot_max:
                    return _Look.of(self._client.head_object(**args), None)
                response = self._client.get_object(**args)
                with contextlib.closing(response["Body"]) as body:
                    # another write's bytes are read too if small: the metadata read next
                    # may name them
                    small = int(response["ContentLength"]) <= self.snapshot_max
                    return _Look.of(response, body.read() if small else None)
        except _Missing:
            return None

    def _value_if_paired(self, key: str, data_name: str, current: Meta, look: _Look) -> Value | None:
        """The Value of ``current`` with the data of ``look``, or None if they do not belong
        together (or the data changed since ``look`` and must be looked at again)."""
        if not look.belongs_to(current.ref):
            return None
        ref = current.ref
        if look.data is not None:
            verify_whole(key, look.data, ref)
            return Value.from_bytes(look.data, current.metadata, current.created, current.modified, current.revision)
        if ref.size is not None and look.size != ref.size:
            raise ChecksumError(f"{key!r}: the data object has {look.size} bytes, its metadata says {ref.size}")
        if look.size <= self.snapshot_max:  # small, of unknown size until now: read it whole too
            return self._snapshot_of(key, data_name, current, look)
        foreign = look.write is None and ref.write is not None and ref.version is None

        def opener(start: int, end: int) -> Any:
            return self._open(key, data_name, ref, look.etag, look.size, foreign, start, end)

        return Value(size=look.size, metadata=current.metadata, created=current.created,
                     modified=current.modified, opener=opener, revision=current.revision)

    def _snapshot_of(self, key: str, data_name: str, current: Meta, look: _Look) -> Value | None:
        """The whole value of the data object of ``look``, if it is still that (``IfMatch``)."""
        where = {"VersionId": look.version} if look.version else {}
        try:
            with self._errors(missing=True):
                response = self._client.get_object(Bucket=self._bucket, Key=data_name,
                                                   IfMatch=look.etag, **where)
                with contextlib.closing(response["Body"]) as body:
                    data = body.read()
        except (_Missing, _Conflict):
            return None
        verify_whole(key, data, current.ref)
        return Value.from_bytes(data, current.metadata, current.created, current.modified, current.revision)

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
