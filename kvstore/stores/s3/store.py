"""S3Store: the hooks of AbstractStore on S3, wiring the package's parts together.

Options (``options``), object names (``naming``), the metadata object's format (``format``),
uploads (``uploads``), reads (``reads``), listing, glob and query (``listing``), server-side
copies (``server_copy``) and error translation (``errors``) each have their module; here are
the lifecycle and the commit (see the package docstring).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import SplitResult, unquote

from ..._checksum import KeyStat, crc32_text
from ..._optional import require
from ..._rules import EMPTY, NEW, plan_delete, plan_write
from ...base import AbstractStore, Change, ProgressReader, Value
from ...errors import AuthorizationError, StoreError
from .errors import BadCredentials, ErrorMap, NoBucket, Unreadable, _Conflict, _Missing, missing_is_key_error
from .format import H_WRITE, DataRef, Meta, commit_headers, metadata_body
from .history import read_history
from .listing import Listings, MetadataCache
from .naming import Naming, ObjectNames, encode_long_key
from .options import S3Options
from .guard import DataGuard, Guard
from .reads import Reads
from .copies import COPY_MAX, Copies
from .expect import send_small_bodies_at_once
from .server_copy import ServerSideCopies
from .timestamps import with_fast_timestamps
from .uploads import Uploads

__all__ = ["S3Store"]

log = logging.getLogger("kvstore.s3")

_PROBE = ".kvstore/connect"  # never an object of a key: no escaped name starts with "."


def _boto() -> tuple[Any, Any]:
    """Import boto3 and botocore, or say which extra installs them."""
    boto3 = require("boto3", "s3", needed_by="S3Store")
    for submodule in ("botocore.config", "botocore.exceptions", "botocore.session"):
        require(submodule, "s3", needed_by="S3Store")
    return boto3, sys.modules["botocore"]


class S3Store(Listings, ServerSideCopies, AbstractStore):
    """A store in an S3 bucket, under a prefix (see :mod:`kvstore.stores.s3` for the layout,
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
        at once, default 4); ``max_workers`` (metadata fetched at once by ``query`` and ``glob``,
        default 8). Values may be strings, as they come from an ``s3://`` URL's query.

    ``connect(credentials)`` accepts a dict of ``aws_access_key_id``,
    ``aws_secret_access_key`` and ``aws_session_token``.

    Tuning knobs, class attributes (set them on a subclass, or on an instance before
    ``connect()``; ``lock_stripes`` on a subclass):
    ``commit_attempts`` (conditional metadata PUTs tried before a write gives up),
    ``read_attempts`` (changes of a key a ``get()`` sees before it gives up),
    ``pair_timeout`` (seconds a reader waits for a writer between its data upload and its
    metadata PUT while nothing changes; a conditional write waits as long for one before taking
    its upload as abandoned), ``snapshot_max`` (values up to this size are read whole by ``get()``),
    ``keep_max`` (a conditional write keeps the data it replaces up to this size, to put it back
    if its commit fails),
    ``stream_buffer`` (buffer of a streamed value), ``lock_stripes`` (per-key commit locks).

    Raises
    ------
    ImportError : boto3 is missing (the message says ``pip install 'kvstore[s3]'``).
    TypeError : an unknown option.
    ValueError : a bad bucket, prefix or option value.
    """

    commit_attempts = 100
    read_attempts = 100
    pair_timeout = 5.0
    snapshot_max = 1024 * 1024
    #: a conditional write keeps in memory the committed data it replaces, up to this
    #: size, to put it back if its commit fails (unversioned bucket; see ``guard``)
    keep_max = 1024 * 1024
    stream_buffer = 256 * 1024
    lock_stripes = 64
    #: connections the client it makes keeps at most (never fewer than the store's own
    #: thread pools use, plus 2): enough for kvstore.sync's workers, each sending a part
    max_pool_connections = 32
    #: values above this size are copied server-side in parts (UploadPartCopy), not with
    #: one CopyObject: S3's limit (5 GiB); a test lowers it
    copy_max = COPY_MAX

    def __init__(self, bucket: str, prefix: str = "", *, client: Any = None,
                 name: str | None = None, **options: Any) -> None:
        super().__init__(name=name)
        _, self._botocore = _boto()
        if not isinstance(bucket, str) or not bucket:
            raise ValueError("an S3Store needs a bucket name")
        self._naming = Naming(prefix)
        self.bucket = bucket
        self.prefix = self._naming.prefix
        self.options = S3Options.from_kwargs(options)
        self.endpoint_url = self.options.endpoint_url
        self.region = self.options.region
        self.part_size = self.options.part_size
        self.upload_workers = self.options.upload_workers
        self.max_workers = self.options.max_workers
        self._errors = ErrorMap(self._botocore, bucket, self.prefix)
        self._client = client
        self._own_client = client is None
        self._reads: Reads = None  # type: ignore[assignment]  # made on connect
        self._uploads: Uploads = None  # type: ignore[assignment]
        self._guard: DataGuard = None  # type: ignore[assignment]
        self._locks = [threading.Lock() for _ in range(self.lock_stripes)]
        # per thread: the key kvstore.sync expects to be new, and what the last commit wrote
        self._sync_hints = threading.local()
        self._metadata_cache = MetadataCache(self.metadata_cache_size)

    @classmethod
    def from_url(cls, url: str, parts: SplitResult, query: Mapping[str, str], **options: Any) -> S3Store:
        """The store that ``s3://bucket/prefix?option=value&...`` names (not yet connected).

        The query's options are those of the constructor (``name`` too), given as strings:
        integers and flags are checked and converted here. ``options`` win over the query's.

        Raises
        ------
        ValueError : no bucket, an unknown option or a value that is not of its type.
        """
        bucket = parts.netloc
        if not bucket:
            raise ValueError(f"no bucket in {url!r}")
        query = dict(query)
        named = {"name": query.pop("name")} if "name" in query else {}
        typed = S3Options.from_query(query)  # its errors do not repeat the URL: it may hold secrets
        return cls(bucket, unquote(parts.path.lstrip("/")), **{**named, **typed, **options})

    # ------------------------------------------------------------ lifecycle

    def _make_client(self, credentials: Any) -> Any:
        boto3, botocore = _boto()
        own = with_fast_timestamps(botocore.session.Session())
        session = boto3.session.Session(botocore_session=own, **self.options.session_args(credentials))
        config = botocore.config.Config(
            retries={"mode": "standard", "max_attempts": self.options.max_attempts},
            max_pool_connections=max(self.max_pool_connections, self.upload_workers, self.max_workers) + 2)
        with self._errors():
            return send_small_bodies_at_once(session.client("s3", config=config, **self.options.client_args()))

    def _connect(self, credentials: Any) -> None:
        if self._own_client and self._client is None:
            self._client = self._make_client(credentials)
        self._reads = Reads(self._client, self.bucket, self._errors, self.snapshot_max, self.stream_buffer)
        self._uploads = Uploads(self._client, self.bucket, self._errors, self.part_size, self.upload_workers)
        self._guard = DataGuard(self._client, self.bucket, self._errors, self._reads)
        self._copies = Copies(self._client, self.bucket, self._errors, self.part_size, self.upload_workers,
                              self.copy_max)
        try:
            self._check_bucket()
        except BaseException:
            self._drop_client()
            raise

    def _check_bucket(self) -> None:
        """The bucket exists (or is made, with ``create``) and the credentials are known."""
        try:
            with self._errors(missing=True):
                self._client.head_bucket(Bucket=self.bucket)
            return
        except _Missing:
            self._create_bucket()
            return
        except AuthorizationError:
            pass
        # HeadBucket needs s3:ListBucket, and its 403 has no body to say why. A GET (of an
        # object no key uses) does: unknown or expired credentials fail here, at connect();
        # a key that may only use objects goes on (its refusals come when they happen).
        try:
            with self._errors(missing=True):
                self._client.get_object(Bucket=self.bucket, Key=self.prefix + _PROBE)
        except BadCredentials as exc:
            raise AuthorizationError(f"S3 refused the credentials for s3://{self.bucket}: {exc}") from exc
        except (_Missing, AuthorizationError):
            log.debug("HeadBucket on %s refused; going on", self.bucket)
        except NoBucket:
            self._create_bucket()

    def _create_bucket(self) -> None:
        if not self.options.create:
            self._drop_client()
            raise StoreError(f"the S3 bucket {self.bucket!r} does not exist "
                             f"(create it, or pass create=True)") from None
        args: dict[str, Any] = {"Bucket": self.bucket}
        region = self._client.meta.region_name
        if region and region != "us-east-1":
            args["CreateBucketConfiguration"] = {"LocationConstraint": region}
        with self._errors():
            self._client.create_bucket(**args)

    def _drop_client(self) -> None:
        if self._own_client and self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None

    def _disconnect(self) -> None:
        self._drop_client()

    def _info(self) -> dict[str, Any]:
        endpoint = self.endpoint_url
        if endpoint is None and self._client is not None:
            endpoint = self._client.meta.endpoint_url
        return {"bucket": self.bucket, "prefix": self.prefix, "endpoint_url": endpoint,
                "region": self.region, "part_size": self.part_size}

    def __repr__(self) -> str:
        return f"<S3Store s3://{self.bucket}/{self.prefix} name={self.name!r}>"

    def _lock_for(self, key: str) -> threading.Lock:
        # Threads of this instance take turns to commit one key; other instances and
        # processes are kept apart by the conditional PUTs.
        return self._locks[hash(key) % len(self._locks)]

    # ------------------------------------------------------------ reads

    def _get_metadata(self, key: str) -> dict[str, Any]:
        current = self._reads.meta(key, self._naming.names(key).metadata)
        if current is None:
            raise KeyError(key)
        return current.metadata

    def _stat(self, key: str) -> KeyStat:
        # Size and CRC32 come with the metadata object (its headers name the data it
        # belongs to): no data is read. Data synced in without kvstore's headers has none.
        current = self._reads.meta(key, self._naming.names(key).metadata)
        if current is None:
            raise KeyError(key)
        ref = current.ref
        if ref.write is None or ref.crc32 is None or ref.size is None:
            return dataclasses.replace(super()._stat(key), token=current.etag)
        return KeyStat(size=ref.size, checksum=crc32_text(ref.crc32), metadata=current.metadata,
                       modified=current.modified, token=current.etag)

    def _exists(self, key: str) -> bool:
        return self._reads.head(self._naming.names(key).metadata) is not None

    def _get(self, key: str) -> Value:
        with missing_is_key_error(key):
            return self._reads.value(key, self._naming.names(key), self.pair_timeout, self.read_attempts)

    # ------------------------------------------------------------ sync hints and history

    def _expect_new(self, key: str) -> None:
        self._sync_hints.new = key

    def _written_stat(self, key: str) -> KeyStat | None:
        written = getattr(self._sync_hints, "written", None)
        self._sync_hints.written = None
        if written is None or written[0] != key:
            return None
        _, ref, metadata, modified, token = written
        return KeyStat(size=ref.size, checksum=crc32_text(ref.crc32), metadata=json.loads(metadata),
                       modified=modified, token=token)

    def _history(self, key: str) -> list[Change]:
        return read_history(self._client, self.bucket, self._errors, key, self._naming.names(key).metadata)

    # ------------------------------------------------------------ writes

    def _write(self, key: str, source: ProgressReader | None, metadata: dict[str, Any] | None,
               update: dict[str, Any] | None, if_revision: int | None = None) -> list[Change]:
        names = self._naming.names(key)
        uploads: list[DataRef] = []
        seen: tuple[Meta | None] | None = None
        current: Meta | None = None
        guard: Guard | None = None
        if if_revision is not None:  # fail early, before an upload (the commit checks again)
            current, readable = self._check_now(key, names, if_revision, update)
            if readable:
                seen = (current,)  # the commit's If-Match is on this read: no second GET
            if source is not None or current is None:  # this write uploads data (a new key's empty data)
                guard = self._data_guard(key, names, current, if_revision, update)
        try:
            if guard is not None:
                assert if_revision is not None
                uploads.append(self._upload_on(key, names, source, guard, current, if_revision))
            elif source is not None:
                uploads.append(self._uploads.upload(names.data, source))
            return [self._commit_write(key, names, source is not None, uploads, metadata, update, if_revision,
                                       seen)]
        except BaseException:
            self._undo_uploads(key, names, uploads, guard)
            raise

    def _undo_uploads(self, key: str, names: ObjectNames, uploads: list[DataRef], guard: Guard | None) -> None:
        """After a failed commit: in a versioned bucket the old data is still the previous
        version, and deleting ours restores the key exactly as it was; in an unversioned
        one, a conditional write puts back what its upload replaced (see ``guard``)."""
        for ref in uploads:
            if ref.version is not None:
                self._uploads.forget_version(names.data, ref.version)
            elif guard is not None and guard.condition:
                self._guard.undo(key, names, guard, ref)

    def _upload_on(self, key: str, names: ObjectNames, source: ProgressReader | None, guard: Guard,
                   current: Meta | None, expected: int) -> DataRef:
        """Upload the data (``source``, or a new key's empty data) on ``guard``'s condition;
        a failed condition means another write replaced the data object first: ConflictError."""
        try:
            if source is None:
                return self._uploads.put(names.data, b"", condition=guard.condition)
            return self._uploads.upload(names.data, source, guard.condition)
        except _Conflict:
            raise self._guard.lost(key, names, current, expected, self.pair_timeout) from None

    def _check_now(self, key: str, names: ObjectNames, expected: int,
                   update: dict[str, Any] | None) -> tuple[Meta | None, bool]:
        """Check the condition ``expected`` on the metadata object as it is now (ConflictError);
        the object read and whether it was readable."""
        current, readable = self._guard.read(key, names)
        self._check(key, current, expected, update)
        return current, readable

    @staticmethod
    def _check(key: str, current: Meta | None, expected: int, update: dict[str, Any] | None) -> None:
        actual = current.revision if current is not None else None
        plan_write(key, {} if current is not None else None, has_data=False,
                   update=update, expected=expected, revision=actual)

    def _data_guard(self, key: str, names: ObjectNames, current: Meta | None, expected: int,
                    update: dict[str, Any] | None) -> Guard:
        """The condition of a conditional write's upload (:mod:`kvstore.stores.s3.guard`)."""
        return self._guard.condition(key, names, current, lambda again: self._check(key, again, expected, update),
                                     self.pair_timeout, self.keep_max)

    def _commit_write(self, key: str, names: ObjectNames, has_data: bool, uploads: list[DataRef],
                      metadata: dict[str, Any] | None, update: dict[str, Any] | None,
                      expected: int | None = None, seen: tuple[Meta | None] | None = None) -> Change:
        """PUT the metadata object (the commit point), conditionally; retry on conflicts.

        What the write does is :func:`kvstore._rules.plan_write`'s; ``uploads`` holds the
        data this write put (none yet, or its own, or the empty data of a new key). The
        condition ``expected`` is checked against the metadata object read, and the PUT is
        conditional on that object (If-Match / If-None-Match): across hosts, the check and
        the write are one step. ``seen``: ``(the metadata object,)`` as this write has just
        read it (``(None,)``: missing), for the first attempt instead of reading it again.
        """
        # A key a listing has just shown missing (kvstore.sync's hint) is first tried as a
        # new key without reading its metadata object: If-None-Match keeps that right when
        # it exists after all (the PUT fails and the usual read-and-retry goes on).
        if getattr(self._sync_hints, "new", None) == key and expected is None:
            seen = (None,)
        self._sync_hints.new = None
        self._sync_hints.written = None
        with self._lock_for(key):
            for _ in range(self.commit_attempts):
                change = self._try_commit(key, names, has_data, uploads, metadata, update, expected, seen)
                if change is not None:
                    return change
                seen = None
        raise StoreError(f"could not commit {key!r}: its metadata changed {self.commit_attempts} "
                         f"times while this write was retried")

    def _try_commit(self, key: str, names: ObjectNames, has_data: bool, uploads: list[DataRef],
                    metadata: dict[str, Any] | None, update: dict[str, Any] | None,
                    expected: int | None = None, seen: tuple[Meta | None] | None = None) -> Change | None:
        """One conditional metadata PUT: the change, or None when another writer came first
        (``seen``: the metadata object taken as current without reading it; None when it
        is not current any more)."""
        current = self._current_for_write(key, names, metadata) if seen is None else seen[0]
        outcome = plan_write(key, current.metadata if current is not None else None,
                             has_data=has_data, metadata=metadata, update=update,
                             expected=expected, revision=current.revision if current is not None else None)
        revision = current.revision + 1 if current is not None else 1
        if outcome.data == EMPTY and not uploads:
            uploads.append(self._uploads.put(names.data, b""))
        ref = self._committed_ref(outcome.data, uploads, current)
        now = time.time()
        created = current.created if current is not None else now
        long_key = encode_long_key(key) if names.is_long else None
        condition = {"IfMatch": current.etag} if current is not None else {"IfNoneMatch": "*"}
        change = Change(outcome.kind, key, outcome.metadata, timestamp=now, revision=revision)
        try:
            # missing=True: an If-Match PUT of a metadata object deleted meanwhile is answered
            # 404, a conflict like any other
            with self._errors(missing=True):
                response = self._client.put_object(
                    Bucket=self.bucket, Key=names.metadata,
                    Metadata=commit_headers(ref, created, now, long_key, revision),
                    Body=metadata_body(outcome.metadata), ContentType="application/json", **condition)
        except (_Conflict, _Missing):
            if seen is not None:
                return None  # it changed since it was read (or exists): read it, and go on
            if expected is None and self._overtaken(names, uploads):
                # A later upload has replaced our data and will commit its own metadata:
                # ours was overtaken (last writer wins).
                return change
            return None
        if ref.crc32 is not None and ref.size is not None and response.get("ETag"):
            self._sync_hints.written = (key, ref, json.dumps(outcome.metadata), now, response["ETag"])
        return change

    def _current_for_write(self, key: str, names: ObjectNames, metadata: dict[str, Any] | None) -> Meta | None:
        """The key's metadata object as a write sees it. An unreadable one can be replaced
        whole (``set``, ``set_metadata``), never kept or updated."""
        try:
            return self._reads.meta(key, names.metadata)
        except Unreadable as exc:
            if metadata is None or exc.meta is None:
                raise
            return exc.meta  # type: ignore[no-any-return]

    @staticmethod
    def _committed_ref(data: str, uploads: list[DataRef], current: Meta | None) -> DataRef:
        """The data the metadata names: what this write uploaded, if anything (its own data,
        or a new key's empty data, which in an unversioned bucket now is the data object even
        if another writer created the key meanwhile), else the key's current data."""
        if uploads:
            return uploads[0]
        assert data != NEW and current is not None  # a write with data or a new key uploads
        return current.ref

    def _overtaken(self, names: ObjectNames, uploads: list[DataRef]) -> bool:
        if not uploads or uploads[0].version is not None:
            return False
        headers = self._reads.headers(names.data)
        return (headers or {}).get(H_WRITE) != uploads[0].write

    def _delete(self, key: str, if_revision: int | None = None) -> list[Change]:
        """DELETE the metadata object (the commit point of a delete) if it is still the one
        read (``If-Match``), else read it again; then the data object, if it is still the
        deleted metadata's: a data object a writer has uploaded since is its own."""
        names = self._naming.names(key)
        with self._lock_for(key), missing_is_key_error(key):
            for _ in range(self.commit_attempts):
                try:
                    found = self._reads.meta(key, names.metadata)
                except Unreadable as exc:  # an unreadable key can be deleted: reported as {}
                    if exc.meta is None:
                        raise
                    found = exc.meta
                outcome = plan_delete(key, found.metadata if found is not None else None,
                                      expected=if_revision, revision=found.revision if found else None)
                assert found is not None  # plan_delete raised otherwise
                current = found
                try:
                    with self._errors(missing=True):
                        self._client.delete_object(Bucket=self.bucket, Key=names.metadata, IfMatch=current.etag)
                except (_Conflict, _Missing):
                    continue  # another writer committed (or deleted) meanwhile: read it again
                now = time.time()
                self._delete_data(key, names, current.ref)
                return [Change(outcome.kind, key, outcome.metadata, timestamp=now, revision=current.revision + 1)]
        raise StoreError(f"could not delete {key!r}: its metadata changed {self.commit_attempts} "
                         f"times while the delete was retried")

    def _delete_data(self, key: str, names: ObjectNames, ref: DataRef) -> None:
        """Delete the data object of the deleted metadata (``ref``) unless another write's
        upload has replaced it (best effort: an orphan data object is invisible and is
        replaced by the next write of the key)."""
        condition: dict[str, Any] = {}
        try:
            if ref.version is None:  # in a versioned bucket a new upload is a version of its own
                head = self._reads.head(names.data)
                if head is None or ((head.get("Metadata") or {}).get(H_WRITE) or ref.write) != ref.write:
                    return
                condition = {"IfMatch": head["ETag"]}
            with self._errors(missing=True):
                self._client.delete_object(Bucket=self.bucket, Key=names.data, **condition)
        except (_Conflict, _Missing):
            pass  # replaced or deleted since the HEAD: not ours to delete
        except StoreError as exc:
            log.warning("deleted %r but not its data object %s: %s", key, names.data, exc)
