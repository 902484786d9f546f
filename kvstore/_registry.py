"""open_store(url): find the backend for a URL scheme, importing it only when used."""

from __future__ import annotations

import importlib
import os
from typing import Any, Dict, Tuple
from urllib.parse import parse_qsl, unquote, urlsplit

from .base import AbstractStore
from .errors import StoreError

__all__ = ["open_store", "known_backends"]

# scheme -> (module, class, extra that installs its dependencies)
known_backends: Dict[str, Tuple[str, str, str]] = {
    "memory": ("kvstore.stores.memory", "MemoryStore", ""),
    "file": ("kvstore.stores.filesystem", "FileSystemStore", ""),
    "s3": ("kvstore.stores.s3", "S3Store", "s3"),
}


def _load(scheme: str) -> Any:
    module, cls, extra = known_backends[scheme]
    try:
        return getattr(importlib.import_module(module), cls)
    except ImportError as exc:
        hint = f"; install it with: pip install 'kvstore[{extra}]'" if extra else ""
        raise ImportError(f"the {scheme}:// backend needs {exc.name}{hint}") from exc


def open_store(url: str, **options: Any) -> AbstractStore:
    """Open and connect the store that ``url`` names.

    ``memory://``; ``file:///abs/path`` or ``file:rel/path`` (created when missing; a bare
    path means the same); ``s3://bucket/prefix?endpoint_url=...&region=...`` (query
    parameters become S3Store options). ``options`` go to the store's constructor.

    Raises
    ------
    ValueError : the URL has an unknown scheme or lacks a needed part.
    StoreError : a ``file:`` URL names a non-empty directory that is not a store.
    ImportError : the backend's optional dependency is missing (names the extra).
    """
    if not isinstance(url, str) or not url:
        raise ValueError("a store URL must be a non-empty str")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if len(scheme) == 1 or not scheme:  # a bare path (or a Windows drive letter)
        scheme, path = "file", url
    elif scheme == "file":
        path = unquote(parts.netloc + parts.path) if not parts.netloc else unquote("//" + parts.netloc + parts.path)
        if parts.netloc and parts.netloc != "localhost":
            raise ValueError(f"file URLs name a local path: {url!r}")
        if parts.netloc == "localhost":
            path = unquote(parts.path)
    elif scheme not in known_backends:
        raise ValueError(f"unknown store URL scheme {parts.scheme!r} in {url!r}; "
                         f"known: {', '.join(s + '://' for s in known_backends)}")
    query = dict(parse_qsl(parts.query))
    cls = _load(scheme)
    if scheme == "memory":
        store = cls(**options)
    elif scheme == "file":
        if not path:
            raise ValueError(f"no path in {url!r}")
        path = os.path.expanduser(path)
        magic = os.path.join(path, options.get("magic_fname", ".FSStore"))
        if os.path.isdir(path) and os.listdir(path) and not os.path.exists(magic):
            # A typo such as --store ~ must not turn a home directory into a store.
            raise StoreError(f"{path} is not a store (no {os.path.basename(magic)} file) and is "
                             f"not empty: refusing to make it one")
        options.setdefault("create", True)
        store = cls(path, **options)
    else:
        bucket = parts.netloc
        if not bucket:
            raise ValueError(f"no bucket in {url!r}")
        store = cls(bucket, unquote(parts.path.lstrip("/")), **{**query, **options})
    store.connect()
    return store
