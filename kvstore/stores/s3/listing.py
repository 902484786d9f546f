"""Listing of the S3 store: keys from the listed object names (a long key's from its
metadata object's header), ``glob`` and ``query`` fetching the metadata objects of the
keys they list ``max_workers`` at once and skipping any they cannot read (API.md, Faults),
and ``kvstore.sync``'s listing of sizes and tokens (``_sync_listing``)."""

from __future__ import annotations

import collections
import concurrent.futures
import fnmatch
import json
import logging
import threading
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from ..._keys import DATA_SUFFIX, literal_prefix, matches
from ...query import Criterion
from .errors import Unreadable
from .format import H_KEY

if TYPE_CHECKING:
    from .errors import ErrorMap
    from .naming import Naming
    from .reads import Reads

__all__ = ["Listings", "MetadataCache"]

log = logging.getLogger("kvstore.s3")


class MetadataCache:
    """The metadata objects ``glob`` and ``query`` have read, by object name, each with the
    ETag it had (at most ``size``, the least recently used dropped first).

    An entry is used only for a listing that shows the object with that ETag. The ETag is
    the MD5 of the body, and every kvstore commit writes a body of its own (the random line
    of blanks), so an equal ETag is the same metadata: a repeated ``query`` reads only the
    metadata objects written since. Each hit is decoded anew from the JSON text, so what a
    caller does to the metadata it gets stays its own.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: collections.OrderedDict[str, tuple[str, str, str]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, name: str, etag: str | None) -> tuple[str, dict[str, Any]] | None:
        """(key, metadata) of ``name`` if it was read with ``etag``."""
        if etag is None:
            return None
        with self._lock:
            entry = self._entries.get(name)
            if entry is None or entry[0] != etag:
                return None
            self._entries.move_to_end(name)
        return entry[1], json.loads(entry[2])

    def put(self, name: str, etag: str, key: str, metadata: dict[str, Any]) -> None:
        if self.size <= 0:
            return
        text = json.dumps(metadata)
        with self._lock:
            self._entries[name] = (etag, key, text)
            self._entries.move_to_end(name)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


class Listings:
    """The listing hooks of :class:`~kvstore.stores.s3.S3Store`."""

    #: metadata objects kept by glob and query for the next listing (MetadataCache)
    metadata_cache_size = 100_000

    if TYPE_CHECKING:  # provided by S3Store
        bucket: str
        max_workers: int
        _metadata_cache: MetadataCache
        _client: Any
        _errors: ErrorMap
        _naming: Naming
        _reads: Reads

    def _list(self, prefix: str) -> Iterator[str]:
        """The names of the objects under ``prefix``, page by page as they come."""
        return (obj["Key"] for obj in self._list_objects(prefix))

    def _list_objects(self, prefix: str) -> Iterator[dict[str, Any]]:
        """The listed objects (``Key``, ``Size``, ``ETag``, ...) under ``prefix``."""
        with self._errors():
            paginator = self._client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                yield from page.get("Contents", ())

    def _areas(self, prefix: str) -> list[str]:
        """The S3 prefixes that hold the objects of the keys that may start with ``prefix``:
        those of its escaped forms, then the long-key area (its keys are known only from
        their metadata objects' headers)."""
        naming = self._naming
        prefixes = naming.list_prefixes(prefix)
        if not any(naming.long_area.startswith(p) for p in prefixes):
            prefixes.append(naming.long_area)
        return prefixes

    def _metadata_names(self, prefix: str) -> Iterator[str]:
        """The metadata objects of the keys that may start with ``prefix``."""
        return (name for name, _ in self._metadata_objects(prefix))

    def _metadata_objects(self, prefix: str) -> Iterator[tuple[str, str | None]]:
        """(name, listed ETag) of the metadata objects of the keys that may start with ``prefix``."""
        is_metadata = self._naming.is_metadata
        for s3_prefix in self._areas(prefix):
            for obj in self._list_objects(s3_prefix):
                if is_metadata(obj["Key"]):
                    yield obj["Key"], obj.get("ETag")

    def _long_key(self, meta_name: str) -> str | None:
        headers = self._reads.headers(meta_name)
        return None if headers is None else self._naming.long_key_of(meta_name, headers.get(H_KEY))

    def _sync_listing(self, pattern: str) -> dict[str, tuple[int, str]]:
        """key -> (size of its data object, ETag of its metadata object) from the listing's
        pages alone (a long key's name costs a HEAD of its metadata object, as in glob); a
        key whose data object is not listed gets size -1, which no source size matches."""
        naming = self._naming
        sizes: dict[str, int] = {}
        tokens: dict[str, str] = {}
        for s3_prefix in self._areas(literal_prefix(pattern)):
            for obj in self._list_objects(s3_prefix):
                name = obj["Key"]
                if naming.is_metadata(name):
                    tokens[name] = obj["ETag"]
                elif name.endswith(DATA_SUFFIX):
                    sizes[name] = int(obj["Size"])
        listed = {}
        for name, token in tokens.items():
            key = self._long_key(name) if naming.is_long(name) else naming.key_of(name)
            if key is not None and naming.names(key).metadata == name:
                listed[key] = (sizes.get(naming.names(key).data, -1), token)
        return listed

    def _iter_keys(self, prefix: str) -> Iterable[str]:
        naming = self._naming
        keys = set()
        for name in self._metadata_names(prefix):
            key = self._long_key(name) if naming.is_long(name) else naming.key_of(name)
            if key is not None and key.startswith(prefix):
                keys.add(key)
        return sorted(keys)

    def _listed(self, name: str, what: str = "query", etag: str | None = None) -> tuple[str, dict[str, Any]] | None:
        """The key and metadata of the listed metadata object ``name`` (listed with ``etag``:
        from the cache when it was read so); None when it is no key's, was deleted since
        listed, or is unreadable (a warning naming ``what`` says so: one damaged object
        must not make the whole store unqueryable)."""
        cached = self._metadata_cache.get(name, etag)
        if cached is not None:
            return cached
        naming = self._naming
        key = None if naming.is_long(name) else naming.key_of(name)
        try:
            current = self._reads.meta(key or name, name)
        except Unreadable as exc:
            log.warning("%s skipped %r: %s", what, key or name, exc)
            return None
        if current is None:
            return None
        if key is None:  # a long key: its name is in the object's header
            key = naming.long_key_of(name, current.headers.get(H_KEY))
        if key is None:
            return None
        self._metadata_cache.put(name, current.etag, key, current.metadata)
        return key, current.metadata

    def _fetch(self, objects: Iterable[tuple[str, str | None]], what: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """:meth:`_listed` of each (name, ETag) (those that are None left out), in order.
        The metadata objects are fetched as the listing's pages arrive, max_workers at once."""
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=self._fetch_workers(),
                                                     thread_name_prefix=f"kvstore-s3-{what}")
        try:
            futures = [pool.submit(self._listed, name, what, etag) for name, etag in objects]
            for future in futures:
                listed = future.result()
                if listed is not None:
                    yield listed
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _fetch_workers(self) -> int:
        """max_workers, but no more than the client's pool holds connections: a request
        beyond them opens a TCP connection of its own and urllib3 drops it afterwards (with
        a warning). The store's own client has room for max_workers; one given may not."""
        try:
            pooled = int(self._client.meta.config.max_pool_connections)
        except (AttributeError, TypeError, ValueError):
            return self.max_workers
        return max(1, min(self.max_workers, pooled))

    def _query(self, criteria: dict[str, Criterion]) -> Iterable[tuple[str, dict[str, Any]]]:
        results = [item for item in self._fetch(self._metadata_objects(""), "query")
                   if matches(item[1], criteria)]
        return sorted(results, key=lambda item: item[0])

    def _glob(self, pattern: str) -> Iterable[str]:
        # A key whose metadata object is unreadable is skipped with a warning, as query
        # skips it (API.md, Faults): so the metadata object of every key that matches is
        # read (one GET each, max_workers at once), not only listed. A key is known from
        # its object's name, except a long key's: those are read to find out.
        prefix = literal_prefix(pattern)
        naming = self._naming

        def match(key: str | None) -> bool:
            return key is not None and key.startswith(prefix) and fnmatch.fnmatchcase(key, pattern)

        objects = (item for item in self._metadata_objects(prefix)
                   if naming.is_long(item[0]) or match(naming.key_of(item[0])))
        return sorted({key for key, _ in self._fetch(objects, "glob") if match(key)})
