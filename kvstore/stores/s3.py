"""S3Store: the store in an S3 bucket (or any S3-compatible service), through boto3.

Needs the ``s3`` extra (``pip install 'kvstore[s3]'``); boto3 is imported when a store is
made, so ``import kvstore`` works without it.

Layout
------
The layout of :class:`~kvstore.FileSystemStore`, with its key escaping (``_keys``)::

    <prefix><key_to_relpath(key)>.data       the bytes
    <prefix><key_to_relpath(key)>.metadata   the metadata, as a JSON object and nothing else
                                             (then a line of blanks: see Commit point)

so ``aws s3 sync`` of a filesystem store's directory gives a valid S3 store, and a sync the
other way gives a valid filesystem store (``reindex()`` it). A ``prefix`` that does not end
in ``/`` gets one: ``S3Store(b, "team/a")`` uses ``team/a/``, so the stores on ``team/a``
and ``team/ab`` never see each other's keys. Escaped names never contain ``..`` or empty
segments, so no key reaches outside its prefix. S3 object names are limited to 1024 bytes;
a key whose name would be longer (255 x "€" is 2300 characters escaped) is stored as
``<prefix>.kvstore/long/<sha256 of the key>.data`` / ``.metadata`` with the key itself in
the metadata object's ``x-amz-meta-kvstore-key`` header (base64). No escaped name starts
with ``.``, so ``<prefix>.kvstore/`` never holds a key's own objects.

Commit point
------------
A key exists when its ``.metadata`` object exists, and a write is committed when its
metadata object is PUT. Data goes first: a value smaller than ``part_size`` with one
``put_object``, a larger one with a multipart upload whose parts are sent while the source
is read (at most ``upload_workers`` parts of ``part_size`` bytes in memory). The data object
carries a fresh write id (``x-amz-meta-kvstore-write``). The metadata object is then PUT
with ``If-Match`` (the ETag read before) or ``If-None-Match: *`` (a new key), its user
headers naming the data it belongs to: ``kvstore-write``, ``kvstore-crc32``,
``kvstore-size`` and, in a versioned bucket, ``kvstore-data-version``. If-Match compares
ETags, the MD5 of the body alone, so the JSON text is followed by a line of spaces and tabs
drawn at random for each commit: two commits of equal metadata naming different data never
share an ETag (JSON ignores the blanks). A conditional PUT that fails means another writer
committed meanwhile: the metadata is read again and the write retried (so
``update_metadata`` loses no concurrent update), unless a later upload has already replaced
our data, in which case our write has been overtaken (last writer wins). This relies on the
service applying a conditional PUT atomically, as S3 does; moto's server checks and writes
in two steps, so under heavy contention between instances it can let a lost update through
(threads of one instance also take turns per key, so they never do).

A reader GETs the metadata object, then the data, and uses the data only if its write id is
the one the metadata names (in a versioned bucket it reads the named ``VersionId``, which no
later write can change). Between a writer's data upload and its metadata PUT the ids
differ; the reader retries until they agree, so it never pairs new data with old metadata.
Values up to 1 MiB are read whole by ``get()`` (a snapshot); larger ones are streamed on
demand with ``If-Match`` on the data's ETag (or by version), so reading a large Value whose
key has been overwritten since ``get()`` raises :class:`~kvstore.errors.StoreError` on an
unversioned bucket rather than mixing writes.

A stream that fails mid-way aborts the multipart upload (no parts are left behind) before
anything is visible: the key keeps its old value. On an unversioned bucket, however, the
data object is overwritten in place, so a writer killed (or a metadata PUT failing) in the
instant between the two steps leaves new data under old metadata; reads of that key then
raise ``StoreError`` until it is written again. With bucket versioning enabled there is no
such window: the metadata names the data version, and a failed commit deletes the version
it uploaded. Enable versioning where that matters (and a lifecycle rule for old versions).

Integrity
---------
The CRC32 of the whole value is kept in the metadata object's ``kvstore-crc32`` header
(S3's own checksums are recomputed by whoever overwrites an object, so they prove nothing).
Whole reads verify it (and the size) when the last byte has been read; a mismatch raises
:class:`~kvstore.errors.ChecksumError`. Range reads of the data kvstore wrote are checked
by write id; a range of a data object replaced outside kvstore raises ``ChecksumError``.
Objects synced in from a filesystem store carry no checksum until they are written again.

Transactions
------------
S3 cannot roll back. Inside ``with store.transaction():`` every write is applied at once and
readers anywhere see it; the base class holds the events until the block ends. If the block
raises, the writes made so far stay, and their events are sent after
``transaction_end(state="failed")`` so observers still hear of them. Events carry
``sequence=None``: S3 keeps no change journal.

Listing
-------
``glob`` lists ``list_objects_v2`` pages under the escaped form of the pattern's literal
prefix; ``query`` lists every key and fetches the metadata objects with a small thread pool
that is joined before it returns.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import dataclasses
import hashlib
import io
import json
import logging
import threading
import time
import uuid
import zlib
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

from .._keys import DATA_SUFFIX, METADATA_SUFFIX, key_to_relpath, matches, relpath_to_key
from ..base import AbstractStore, Change, ProgressReader, Value
from ..errors import AuthorizationError, ChecksumError, StoreError
from ..query import Criterion

__all__ = ["S3Store"]

log = logging.getLogger("kvstore.s3")

_INSTALL_HINT = "pip install 'kvstore[s3]'"

MAX_OBJECT_NAME = 1024  # bytes, S3's limit
_LONG_DIR = ".kvstore/long/"
_MIN_PART = 5 * 1024 * 1024
_MAX_PART = 5 * 1024 * 1024 * 1024
_SNAPSHOT_MAX = 1024 * 1024  # values up to this size are read whole by get()
_COMMIT_ATTEMPTS = 100

# user-metadata headers (x-amz-meta-<name>)
H_WRITE = "kvstore-write"
H_CRC = "kvstore-crc32"
H_SIZE = "kvstore-size"
H_VERSION = "kvstore-data-version"
H_CREATED = "kvstore-created"
H_MODIFIED = "kvstore-modified"
H_KEY = "kvstore-key"

_MISSING = frozenset({"NoSuchKey", "404", "NotFound", "NoSuchVersion"})
_DENIED = frozenset({"AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                     "ExpiredToken", "InvalidToken", "TokenRefreshRequired", "AllAccessDisabled",
                     "AccountProblem", "InvalidClientTokenId", "UnauthorizedAccess"})
_CONFLICT = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict"})


def _boto() -> Tuple[Any, Any]:
    """Import boto3 and botocore, or say which extra installs them."""
    try:
        import boto3
        import botocore.config
        import botocore.exceptions
    except ImportError as exc:
        raise ImportError(f"S3Store needs boto3, which is not installed ({exc}); "
                          f"install it with: {_INSTALL_HINT}", name="boto3") from exc
    return boto3, botocore


class _Conflict(StoreError):
    """A conditional request failed: the object changed since it was read (HTTP 412)."""


@dataclasses.dataclass(frozen=True)
class _DataRef:
    """What a metadata object says about the data committed with it (None: unknown)."""

    write: Optional[str] = None
    crc32: Optional[int] = None
    size: Optional[int] = None
    version: Optional[str] = None

    @classmethod
    def from_headers(cls, headers: Dict[str, str]) -> _DataRef:
        def number(name: str, base: int) -> Optional[int]:
            try:
                return int(headers[name], base)
            except (KeyError, ValueError):
                return None

        return cls(write=headers.get(H_WRITE) or None, crc32=number(H_CRC, 16),
                   size=number(H_SIZE, 10), version=headers.get(H_VERSION) or None)

    def headers(self) -> Dict[str, str]:
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
class _Meta:
    """A metadata object as read: its ETag, the user's metadata and the data it names."""

    etag: str
    metadata: Dict[str, Any]
    ref: _DataRef
    created: float
    modified: float


def _version_of(response: Dict[str, Any]) -> Optional[str]:
    version = response.get("VersionId")
    return version if version and version != "null" else None


def _read_part(source: ProgressReader, size: int) -> bytearray:
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


def _metadata_body(metadata: Dict[str, Any]) -> bytes:
    """The metadata object's body: the JSON text, then a line of blanks random per commit.

    If-Match compares ETags, which are the MD5 of the body alone: two commits of equal
    metadata naming different data (``set_data`` keeps the metadata) would look the same,
    and a racing ``update_metadata`` would re-commit the older data. The trailing
    whitespace means nothing to JSON and makes every commit's ETag its own.
    """
    bits = uuid.uuid4().int
    tail = "".join(" \t"[(bits >> i) & 1] for i in range(32))
    return (json.dumps(metadata, ensure_ascii=False) + "\n" + tail).encode("utf-8")


def _read_first(source: ProgressReader, size: int) -> bytes:
    """Like :func:`_read_part`, without reserving ``size`` bytes for what may be a small value."""
    chunks = []
    pos = 0
    while pos < size:
        chunk = source.read(min(source.buffer_size, size - pos))
        if not chunk:
            break
        chunks.append(chunk)
        pos += len(chunk)
    return b"".join(chunks)


def _escaped_prefix(text: str) -> str:
    """The escaped form (without the leading '%') that starts every escaped key component
    beginning with ``text``: escaping works character by character, so it is the escaped
    form of ``text`` followed by a character that is always escaped."""
    rel = key_to_relpath(text + "\x00")
    if "/" in rel or not rel.endswith("%00"):  # long enough to be split: no narrower prefix
        return ""
    return rel[1:-3]


def _as_int(name: str, value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"S3Store option {name} must be an integer, not {value!r}") from None


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


class _BodyReader(io.RawIOBase):
    """A GET response body as a raw stream; checks size and CRC32 when the end is reached."""

    def __init__(self, store: S3Store, key: str, body: Any, expected_size: int,
                 crc32: Optional[int]) -> None:
        super().__init__()
        self._store = store
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
        with self._store._errors(self._key):
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


class S3Store(AbstractStore):
    """A store in an S3 bucket, under a prefix (see the module docstring for the layout,
    the commit point, checksums and why transactions do not roll back).

    Parameters
    ----------
    bucket : the bucket name.
    prefix : the object-name prefix of the store; ``"a/b"`` means ``"a/b/"``; ``""`` the
        whole bucket.
    client : a boto3 S3 client to use (the store then never closes it). Without one, the
        store makes its own on ``connect()`` with boto3's ``standard`` retry mode.
    name : optional name shown by ``info()``.
    **options : for the client it makes: ``endpoint_url``, ``region`` (or ``region_name``),
        ``profile`` (or ``profile_name``), ``aws_access_key_id``, ``aws_secret_access_key``,
        ``aws_session_token``, ``verify`` (TLS), ``max_attempts`` (retries, default 5);
        ``create`` (make the bucket on connect when missing); ``part_size`` (multipart
        part size in bytes, 5 MiB to 5 GiB, default 8 MiB); ``upload_workers`` (parts sent
        at once, default 4); ``max_workers`` (metadata fetched at once by ``query``,
        default 8). Values may be strings, as they come from an ``s3://`` URL's query.

    ``connect(credentials)`` accepts a dict of ``aws_access_key_id``,
    ``aws_secret_access_key`` and ``aws_session_token``.

    Raises
    ------
    ImportError : boto3 is missing (the message says ``pip install 'kvstore[s3]'``).
    TypeError : an unknown option.
    ValueError : a bad bucket, prefix or option value.
    """

    def __init__(self, bucket: str, prefix: str = "", *, client: Any = None,
                 name: Optional[str] = None, **options: Any) -> None:
        super().__init__(name=name)
        _, self._botocore = _boto()
        if not isinstance(bucket, str) or not bucket:
            raise ValueError("an S3Store needs a bucket name")
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, not {type(prefix).__name__}")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        if "\x00" in prefix:
            raise ValueError("an S3 prefix must not contain NUL")
        self.bucket = bucket
        self.prefix = prefix
        if len(prefix.encode("utf-8")) + len(_LONG_DIR) + 64 + len(METADATA_SUFFIX) > MAX_OBJECT_NAME:
            raise ValueError(f"the prefix {prefix!r} is too long for S3 object names")

        opts = dict(options)
        self.endpoint_url: Optional[str] = opts.pop("endpoint_url", None) or None
        self.region: Optional[str] = opts.pop("region", None) or opts.pop("region_name", None) or None
        opts.pop("region_name", None)
        profile = opts.pop("profile", None) or opts.pop("profile_name", None)
        opts.pop("profile_name", None)
        self._session_args: Dict[str, Any] = {"profile_name": profile} if profile else {}
        for arg in ("aws_access_key_id", "aws_secret_access_key", "aws_session_token"):
            if opts.get(arg):
                self._session_args[arg] = opts.pop(arg)
            opts.pop(arg, None)
        verify = opts.pop("verify", None)
        if isinstance(verify, str) and verify.strip().lower() in ("0", "1", "true", "false", "yes", "no", "on", "off"):
            verify = _as_bool(verify)
        self._verify = verify
        self._max_attempts = _as_int("max_attempts", opts.pop("max_attempts", 5))
        self._create = _as_bool(opts.pop("create", False))
        self.part_size = _as_int("part_size", opts.pop("part_size", 8 * 1024 * 1024))
        if not _MIN_PART <= self.part_size <= _MAX_PART:
            raise ValueError(f"part_size must be between {_MIN_PART} and {_MAX_PART} bytes (S3's limits)")
        self.upload_workers = max(1, _as_int("upload_workers", opts.pop("upload_workers", 4)))
        self.max_workers = max(1, _as_int("max_workers", opts.pop("max_workers", 8)))
        if opts:
            raise TypeError(f"S3Store got unknown option(s) {sorted(opts)}")

        self._client = client
        self._own_client = client is None
        self._locks = [threading.Lock() for _ in range(64)]
        # how long a reader waits for a writer to finish its metadata PUT before declaring
        # the key's data replaced by an unfinished write
        self._pair_timeout = 5.0

    # ------------------------------------------------------------ errors

    @contextlib.contextmanager
    def _errors(self, key: Optional[str] = None) -> Iterator[None]:
        """Translate botocore errors; the one place where S3 errors become kvstore errors.

        missing object → ``KeyError(key)``; refused → :class:`AuthorizationError`; a failed
        condition → ``_Conflict``; anything else → :class:`StoreError` with S3's message.
        """
        exceptions = self._botocore.exceptions
        try:
            yield
        except exceptions.ClientError as exc:
            error = exc.response.get("Error", {}) or {}
            code = str(error.get("Code") or "")
            status = (exc.response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
            message = error.get("Message") or code or str(exc)
            where = f"S3 {exc.operation_name} on s3://{self.bucket}/{self.prefix}"
            if code in _MISSING and key is not None:
                raise KeyError(key) from None
            if code == "NoSuchBucket":
                raise StoreError(f"{where}: the bucket {self.bucket!r} does not exist ({message})") from exc
            if code in _CONFLICT or status == 412:
                raise _Conflict(f"{where}: {message}") from exc
            if code in _DENIED:
                raise AuthorizationError(f"{where}: access denied ({code}: {message})") from exc
            raise StoreError(f"{where} failed ({code or status}): {message}") from exc
        except (exceptions.NoCredentialsError, exceptions.PartialCredentialsError) as exc:
            raise AuthorizationError(f"S3 s3://{self.bucket}: {exc}") from exc
        except exceptions.FlexibleChecksumError as exc:
            raise ChecksumError(f"S3 s3://{self.bucket}: {exc}") from exc
        except exceptions.BotoCoreError as exc:
            raise StoreError(f"S3 s3://{self.bucket}/{self.prefix}: {exc}") from exc

    # ------------------------------------------------------------ lifecycle

    def _make_client(self, credentials: Any) -> Any:
        boto3, botocore = _boto()
        session_args = dict(self._session_args)
        if isinstance(credentials, dict):
            session_args.update({k: v for k, v in credentials.items()
                                 if k in ("aws_access_key_id", "aws_secret_access_key", "aws_session_token")})
        elif credentials is not None:
            raise TypeError("S3Store credentials must be a dict of aws_access_key_id, "
                            "aws_secret_access_key and aws_session_token")
        session = boto3.session.Session(**session_args)
        config = botocore.config.Config(
            retries={"mode": "standard", "max_attempts": self._max_attempts},
            max_pool_connections=max(10, self.upload_workers, self.max_workers) + 2)
        client_args: Dict[str, Any] = {"config": config}
        if self.endpoint_url:
            client_args["endpoint_url"] = self.endpoint_url
        if self.region:
            client_args["region_name"] = self.region
        if self._verify is not None:
            client_args["verify"] = self._verify
        with self._errors():
            return session.client("s3", **client_args)

    def _connect(self, credentials: Any) -> None:
        if self._own_client and self._client is None:
            self._client = self._make_client(credentials)
        try:
            with self._errors(key=self.bucket):
                self._client.head_bucket(Bucket=self.bucket)
        except KeyError:
            if not self._create:
                self._drop_client()
                raise StoreError(f"the S3 bucket {self.bucket!r} does not exist "
                                 f"(create it, or pass create=True)") from None
            args: Dict[str, Any] = {"Bucket": self.bucket}
            region = self._client.meta.region_name
            if region and region != "us-east-1":
                args["CreateBucketConfiguration"] = {"LocationConstraint": region}
            with self._errors():
                self._client.create_bucket(**args)
        except AuthorizationError:
            # HeadBucket needs s3:ListBucket; object permissions may be enough for the rest.
            log.debug("HeadBucket on %s refused; going on", self.bucket)
        except BaseException:
            self._drop_client()
            raise

    def _drop_client(self) -> None:
        if self._own_client and self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None

    def _disconnect(self) -> None:
        self._drop_client()

    def _info(self) -> Dict[str, Any]:
        endpoint = self.endpoint_url
        if endpoint is None and self._client is not None:
            endpoint = self._client.meta.endpoint_url
        return {"bucket": self.bucket, "prefix": self.prefix, "endpoint_url": endpoint,
                "region": self.region, "part_size": self.part_size}

    def __repr__(self) -> str:
        return f"<S3Store s3://{self.bucket}/{self.prefix} name={self.name!r}>"

    # ------------------------------------------------------------ names

    def _names(self, key: str) -> Tuple[str, str, bool]:
        """(data object, metadata object, is a long key) for ``key``."""
        base = self.prefix + key_to_relpath(key)
        if len(base.encode("utf-8")) + len(METADATA_SUFFIX) > MAX_OBJECT_NAME:
            base = self.prefix + _LONG_DIR + hashlib.sha256(key.encode("utf-8")).hexdigest()
            return base + DATA_SUFFIX, base + METADATA_SUFFIX, True
        return base + DATA_SUFFIX, base + METADATA_SUFFIX, False

    def _lock_for(self, key: str) -> threading.Lock:
        # Threads of this instance take turns to commit one key; other instances and
        # processes are kept apart by the conditional PUTs.
        return self._locks[hash(key) % len(self._locks)]

    # ------------------------------------------------------------ reads

    def _read_meta(self, key: str, name: str) -> Optional[_Meta]:
        """The metadata object ``name`` of ``key``, or None when it does not exist."""
        try:
            with self._errors(key):
                response = self._client.get_object(Bucket=self.bucket, Key=name)
                with contextlib.closing(response["Body"]) as body:
                    raw = body.read()
        except KeyError:
            return None
        try:
            metadata = json.loads(raw or b"{}")
        except ValueError as exc:
            raise StoreError(f"the metadata of {key!r} (s3://{self.bucket}/{name}) is not valid JSON: {exc}") from exc
        if not isinstance(metadata, dict):
            raise StoreError(f"the metadata of {key!r} (s3://{self.bucket}/{name}) is not a JSON object")
        headers = response.get("Metadata") or {}
        last_modified = response.get("LastModified")
        modified = last_modified.timestamp() if last_modified is not None else 0.0
        with contextlib.suppress(KeyError, ValueError):
            modified = float(headers[H_MODIFIED])
        created = modified
        with contextlib.suppress(KeyError, ValueError):
            created = min(float(headers[H_CREATED]), modified)
        return _Meta(etag=response["ETag"], metadata=metadata, ref=_DataRef.from_headers(headers),
                     created=created, modified=modified)

    def _get_metadata(self, key: str) -> Dict[str, Any]:
        current = self._read_meta(key, self._names(key)[1])
        if current is None:
            raise KeyError(key)
        return current.metadata

    def _exists(self, key: str) -> bool:
        try:
            with self._errors(key):
                self._client.head_object(Bucket=self.bucket, Key=self._names(key)[1])
        except KeyError:
            return False
        return True

    def _get(self, key: str) -> Value:
        data_name, meta_name, _ = self._names(key)
        deadline: Optional[float] = None
        delay = 0.005
        while True:
            current = self._read_meta(key, meta_name)
            if current is None:
                raise KeyError(key)
            value = self._read_value(key, data_name, current)
            if value is not None:
                return value
            # The data comes from another write than the metadata: a writer is between
            # its data upload and its metadata PUT. Wait for it, within limits.
            now = time.monotonic()
            if deadline is None:
                deadline = now + self._pair_timeout
            elif now > deadline:
                raise StoreError(
                    f"the data of {key!r} (s3://{self.bucket}/{data_name}) comes from a write "
                    f"whose metadata was never committed (a writer died or failed between its "
                    f"two steps); write the key again")
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    @staticmethod
    def _pairing(ref: _DataRef, data_headers: Dict[str, str]) -> str:
        """"ok" (the data of this metadata), "foreign" (written outside kvstore: only the
        checksum can tell), or "other" (another kvstore write: retry)."""
        if ref.write is None or ref.version is not None:
            return "ok"
        write = data_headers.get(H_WRITE)
        if write == ref.write:
            return "ok"
        return "foreign" if write is None else "other"

    def _read_value(self, key: str, data_name: str, current: _Meta) -> Optional[Value]:
        """A Value of ``current`` and its data, or None when the data is not (yet) its own."""
        ref = current.ref
        where: Dict[str, Any] = {"VersionId": ref.version} if ref.version else {}
        if ref.size is not None and ref.size <= _SNAPSHOT_MAX:
            try:
                with self._errors(key):
                    response = self._client.get_object(Bucket=self.bucket, Key=data_name, **where)
                    with contextlib.closing(response["Body"]) as body:
                        if self._pairing(ref, response.get("Metadata") or {}) == "other":
                            return None
                        data = body.read()
            except KeyError:
                return self._data_missing(key, ref)
            self._verify_whole(key, data, ref)
            return Value.from_bytes(data, current.metadata, current.created, current.modified)
        # Larger (or of unknown size): check the pairing now, stream the bytes on demand.
        try:
            with self._errors(key):
                head = self._client.head_object(Bucket=self.bucket, Key=data_name, **where)
        except KeyError:
            return self._data_missing(key, ref)
        pairing = self._pairing(ref, head.get("Metadata") or {})
        if pairing == "other":
            return None
        size = int(head["ContentLength"])
        if ref.size is not None and size != ref.size:
            raise ChecksumError(f"{key!r}: the data object has {size} bytes, its metadata says {ref.size}")
        etag = head["ETag"]
        foreign = pairing == "foreign"
        if size <= _SNAPSHOT_MAX:  # small, of unknown size until now: read it whole too
            try:
                with self._errors(key):
                    response = self._client.get_object(Bucket=self.bucket, Key=data_name, IfMatch=etag, **where)
                    with contextlib.closing(response["Body"]) as body:
                        data = body.read()
            except (KeyError, _Conflict):
                return None
            self._verify_whole(key, data, ref)
            return Value.from_bytes(data, current.metadata, current.created, current.modified)

        def opener(start: int, end: int) -> Any:
            return self._open(key, data_name, ref, etag, size, foreign, start, end)

        return Value(size=size, metadata=current.metadata, created=current.created,
                     modified=current.modified, opener=opener)

    @staticmethod
    def _data_missing(key: str, ref: _DataRef) -> None:
        # kvstore uploads data before metadata, so a kvstore key without data is being
        # deleted (read again); a metadata file copied in without its data is no key.
        if ref.write is None:
            raise KeyError(key)
        return None

    @staticmethod
    def _verify_whole(key: str, data: bytes, ref: _DataRef) -> None:
        if ref.size is not None and len(data) != ref.size:
            raise ChecksumError(f"{key!r}: read {len(data)} bytes, its metadata says {ref.size}")
        if ref.crc32 is not None and zlib.crc32(data) != ref.crc32:
            raise ChecksumError(f"{key!r}: the data does not match its stored CRC32")

    def _open(self, key: str, data_name: str, ref: _DataRef, etag: str, size: int,
              foreign: bool, start: int, end: int) -> Any:
        """A stream of ``data[start:end]`` of the data object as it was at ``get()``."""
        if end <= start:
            return io.BytesIO(b"")
        whole = start == 0 and end == size
        if foreign and not whole:
            raise ChecksumError(f"{key!r}: its data object was replaced outside kvstore; "
                                f"only a whole read can be checked")
        args: Dict[str, Any] = {"Bucket": self.bucket, "Key": data_name}
        if ref.version:
            args["VersionId"] = ref.version
        else:
            args["IfMatch"] = etag
        if not whole:
            args["Range"] = f"bytes={start}-{end - 1}"
        try:
            with self._errors(key):
                response = self._client.get_object(**args)
        except (KeyError, _Conflict):
            raise StoreError(f"{key!r} was overwritten or deleted since this Value was read; "
                             f"get() it again") from None
        raw = _BodyReader(self, key, response["Body"], end - start, ref.crc32 if whole else None)
        return io.BufferedReader(raw, 256 * 1024)

    # ------------------------------------------------------------ listing

    def _list(self, prefix: str) -> List[str]:
        names: List[str] = []
        with self._errors():
            paginator = self._client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                names.extend(obj["Key"] for obj in page.get("Contents", ()))
        return names

    def _list_prefixes(self, prefix: str) -> List[str]:
        """S3 prefixes under which every key starting with ``prefix`` is stored."""
        cut = prefix.rfind("/") + 1
        head, partial = prefix[:cut], prefix[cut:]
        base = self.prefix + (key_to_relpath(head + "x")[:-1] if head else "")
        if not partial:
            return [base]
        # The component that starts with `partial` is written as it is (plain), escaped
        # behind "%", or escaped and cut into "~" segments.
        escaped = _escaped_prefix(partial)
        prefixes = [base + "%" + escaped, base + "~" + escaped[:190]]
        if key_to_relpath(partial) == partial:
            prefixes.insert(0, base + partial)
        return prefixes

    def _long_key(self, meta_name: str) -> Optional[str]:
        try:
            with self._errors(meta_name):
                head = self._client.head_object(Bucket=self.bucket, Key=meta_name)
        except KeyError:
            return None
        try:
            key = base64.urlsafe_b64decode((head.get("Metadata") or {})[H_KEY]).decode("utf-8")
        except (KeyError, ValueError):
            return None
        return key if self._names(key)[1] == meta_name else None

    def _iter_keys(self, prefix: str) -> Iterable[str]:
        keys = set()
        long_names: List[str] = []
        long_area = self.prefix + _LONG_DIR
        prefixes = self._list_prefixes(prefix)
        for s3_prefix in prefixes:
            for name in self._list(s3_prefix):
                if not name.endswith(METADATA_SUFFIX):
                    continue
                if name.startswith(long_area):
                    long_names.append(name)
                    continue
                key = relpath_to_key(name[len(self.prefix):-len(METADATA_SUFFIX)])
                if key is not None and key.startswith(prefix):
                    keys.add(key)
        if not any(long_area.startswith(p) for p in prefixes):
            long_names.extend(n for n in self._list(long_area) if n.endswith(METADATA_SUFFIX))
        for name in long_names:
            key = self._long_key(name)
            if key is not None and key.startswith(prefix):
                keys.add(key)
        return sorted(keys)

    def _metadata_or_none(self, key: str) -> Optional[Dict[str, Any]]:
        try:
            return self._get_metadata(key)
        except KeyError:  # deleted since it was listed
            return None

    def _query(self, criteria: Dict[str, Criterion]) -> Iterable[Tuple[str, Dict[str, Any]]]:
        keys = list(self._iter_keys(""))
        if not keys:
            return []
        results = []
        pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=min(self.max_workers, len(keys)), thread_name_prefix="kvstore-s3-query")
        try:
            for key, metadata in zip(keys, pool.map(self._metadata_or_none, keys)):
                if metadata is not None and matches(metadata, criteria):
                    results.append((key, metadata))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return results

    # ------------------------------------------------------------ writes

    def _write(self, key: str, source: Optional[ProgressReader], metadata: Optional[Dict[str, Any]],
               update: Optional[Dict[str, Any]]) -> List[Change]:
        data_name, meta_name, is_long = self._names(key)
        uploads: List[_DataRef] = []
        try:
            if source is not None:
                uploads.append(self._upload(key, data_name, source))
            return [self._commit_write(key, data_name, meta_name, is_long, uploads, metadata, update)]
        except BaseException:
            # In a versioned bucket the old data is still the previous version: deleting
            # ours restores the key exactly as it was.
            for ref in uploads:
                if ref.version is not None:
                    self._forget_version(key, data_name, ref.version)
            raise

    def _forget_version(self, key: str, data_name: str, version: str) -> None:
        try:
            with self._errors(key):
                self._client.delete_object(Bucket=self.bucket, Key=data_name, VersionId=version)
        except (KeyError, StoreError) as exc:
            log.warning("could not delete the uncommitted version %s of %s: %s", version, data_name, exc)

    def _commit_write(self, key: str, data_name: str, meta_name: str, is_long: bool,
                      uploads: List[_DataRef], metadata: Optional[Dict[str, Any]],
                      update: Optional[Dict[str, Any]]) -> Change:
        """PUT the metadata object (the commit point), conditionally; retry on conflicts."""
        with self._lock_for(key):
            for _ in range(_COMMIT_ATTEMPTS):
                current = self._read_meta(key, meta_name)
                if current is None and update is not None:
                    raise KeyError(key)
                if current is None and not uploads:
                    uploads.append(self._put_data(key, data_name, b""))  # a new key's empty data
                if update is not None:
                    assert current is not None
                    new = {**current.metadata, **update}
                elif metadata is not None:
                    new = metadata
                else:
                    new = current.metadata if current is not None else {}
                ref = uploads[0] if uploads else current.ref  # type: ignore[union-attr]
                now = time.time()
                headers = ref.headers()
                headers[H_CREATED] = repr(current.created if current is not None else now)
                headers[H_MODIFIED] = repr(now)
                if is_long:
                    headers[H_KEY] = base64.urlsafe_b64encode(key.encode("utf-8")).decode("ascii")
                condition = {"IfMatch": current.etag} if current is not None else {"IfNoneMatch": "*"}
                kind = "update" if current is not None else "set"
                try:
                    with self._errors(key):
                        self._client.put_object(
                            Bucket=self.bucket, Key=meta_name, Metadata=headers,
                            Body=_metadata_body(new),
                            ContentType="application/json", **condition)
                except _Conflict:
                    if uploads and uploads[0].version is None and \
                            self._data_write_id(key, data_name) != uploads[0].write:
                        # A later upload has replaced our data and will commit its own
                        # metadata: ours was overtaken (last writer wins).
                        return Change(kind, key, new, timestamp=now)
                    continue
                return Change(kind, key, new, timestamp=now)
        raise StoreError(f"could not commit {key!r}: its metadata changed {_COMMIT_ATTEMPTS} "
                         f"times while this write was retried")

    def _data_write_id(self, key: str, data_name: str) -> Optional[str]:
        try:
            with self._errors(key):
                head = self._client.head_object(Bucket=self.bucket, Key=data_name)
        except KeyError:
            return None
        return (head.get("Metadata") or {}).get(H_WRITE)

    def _put_data(self, key: str, data_name: str, data: Any, write: Optional[str] = None) -> _DataRef:
        ref = _DataRef(write=write or uuid.uuid4().hex, crc32=zlib.crc32(data), size=len(data))
        with self._errors(key):
            response = self._client.put_object(Bucket=self.bucket, Key=data_name, Body=data,
                                               Metadata=ref.headers(),
                                               ContentType="application/octet-stream")
        return dataclasses.replace(ref, version=_version_of(response))

    def _upload(self, key: str, data_name: str, source: ProgressReader) -> _DataRef:
        """Upload the data as it is read; one PUT when it fits in one part."""
        write = uuid.uuid4().hex
        first = _read_first(source, self.part_size)
        if len(first) < self.part_size:
            return self._put_data(key, data_name, first, write)
        return self._multipart(key, data_name, source, first, write)

    def _upload_part(self, key: str, data_name: str, upload_id: str, number: int,
                     part: Any) -> Dict[str, Any]:
        with self._errors(key):
            response = self._client.upload_part(Bucket=self.bucket, Key=data_name, UploadId=upload_id,
                                                PartNumber=number, Body=part, ChecksumAlgorithm="CRC32")
        done = {"PartNumber": number, "ETag": response["ETag"]}
        for name in ("ChecksumCRC32", "ChecksumCRC32C", "ChecksumCRC64NVME", "ChecksumSHA1", "ChecksumSHA256"):
            if response.get(name):
                done[name] = response[name]
        return done

    def _multipart(self, key: str, data_name: str, source: ProgressReader, first: bytes,
                   write: str) -> _DataRef:
        with self._errors(key):
            # CRC32 per part, as boto3's own transfers do: S3 checks each part on arrival
            # and keeps a composite checksum instead of rereading the whole object.
            upload_id = self._client.create_multipart_upload(
                Bucket=self.bucket, Key=data_name, Metadata={H_WRITE: write},
                ContentType="application/octet-stream", ChecksumAlgorithm="CRC32")["UploadId"]
        crc, size, number = 0, 0, 0
        futures: List[concurrent.futures.Future] = []
        try:
            # At most `upload_workers` parts are in flight and one is being read: memory
            # stays at (upload_workers + 1) * part_size whatever the size of the value.
            with concurrent.futures.ThreadPoolExecutor(
                    max_workers=self.upload_workers, thread_name_prefix="kvstore-s3-upload") as pool:
                pending: set = set()
                part: Optional[Any] = first
                del first
                while part:
                    number += 1
                    crc = zlib.crc32(part, crc)
                    size += len(part)
                    while len(pending) >= self.upload_workers:
                        done, pending = concurrent.futures.wait(
                            pending, return_when=concurrent.futures.FIRST_COMPLETED)
                        for future in done:
                            future.result()  # a failed part stops the upload now
                    future = pool.submit(self._upload_part, key, data_name, upload_id, number, part)
                    pending.add(future)
                    futures.append(future)
                    part = None  # the worker holds the only reference: freed once sent
                    part = _read_part(source, self.part_size)
                parts = [f.result() for f in futures]
            with self._errors(key):
                response = self._client.complete_multipart_upload(
                    Bucket=self.bucket, Key=data_name, UploadId=upload_id,
                    MultipartUpload={"Parts": parts})
        except BaseException:
            self._abort(key, data_name, upload_id)
            raise
        return _DataRef(write=write, crc32=crc, size=size, version=_version_of(response))

    def _abort(self, key: str, data_name: str, upload_id: str) -> None:
        try:
            with self._errors(key):
                self._client.abort_multipart_upload(Bucket=self.bucket, Key=data_name, UploadId=upload_id)
        except (KeyError, StoreError) as exc:
            log.warning("could not abort the multipart upload %s of %s: %s", upload_id, data_name, exc)

    def _delete(self, key: str) -> List[Change]:
        data_name, meta_name, _ = self._names(key)
        with self._lock_for(key):
            current = self._read_meta(key, meta_name)
            if current is None:
                raise KeyError(key)
            # The metadata object goes first: that is the commit point of a delete.
            with self._errors(key):
                self._client.delete_object(Bucket=self.bucket, Key=meta_name)
            now = time.time()
            try:
                with self._errors(key):
                    self._client.delete_object(Bucket=self.bucket, Key=data_name)
            except (KeyError, StoreError) as exc:
                # The key is gone already; an orphan data object is invisible and is
                # replaced by the next write of the key.
                log.warning("deleted %r but not its data object %s: %s", key, data_name, exc)
        return [Change("delete", key, current.metadata, timestamp=now)]

