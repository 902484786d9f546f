"""open_store(url): find the backend for a URL scheme, importing it only when used.

Each scheme names a ``module:Class`` and the extra that installs its dependencies. The
class parses its own URL (``Class.from_url``): the registry knows no backend's options.
Third-party backends add themselves with :func:`register_backend`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Dict, Type
from urllib.parse import SplitResult, parse_qsl, quote, urlsplit

from ._optional import install_hint
from .base import AbstractStore

__all__ = ["open_store", "register_backend", "known_backends", "Backend"]


@dataclass(frozen=True)
class Backend:
    """A URL scheme's store class, as ``"package.module:Class"``, and the extra its
    dependencies come with (``""``: none)."""

    scheme: str
    target: str
    extra: str = ""

    def load(self) -> Type[AbstractStore]:
        module, _, name = self.target.partition(":")
        try:
            cls = getattr(importlib.import_module(module), name)
        except ImportError as exc:
            if exc.name == module or not self.extra:
                raise
            raise ImportError(f"the {self.scheme}:// backend needs {exc.name}: {install_hint(self.extra)}",
                              name=exc.name) from exc
        if not (isinstance(cls, type) and issubclass(cls, AbstractStore)):
            raise TypeError(f"{self.target} (the {self.scheme}:// backend) is not a store class")
        return cls


#: scheme -> Backend. Read it to list what is known; add with register_backend.
known_backends: Dict[str, Backend] = {}


def register_backend(scheme: str, target: str, *, extra: str = "", replace: bool = False) -> None:
    """Make ``open_store`` open ``scheme://...`` URLs with ``target`` (``"module:Class"``,
    imported on first use; the class's ``from_url`` parses the URL).

    Raises
    ------
    ValueError : a malformed scheme or target, or a scheme already known (unless ``replace``).
    """
    if not isinstance(scheme, str) or not scheme.isascii() or not scheme.isalnum() or len(scheme) < 2:
        raise ValueError(f"a backend scheme is two or more ASCII letters or digits, not {scheme!r}")
    if not isinstance(target, str) or target.count(":") != 1 or not all(target.split(":")):
        raise ValueError(f"a backend target is 'package.module:Class', not {target!r}")
    scheme = scheme.lower()
    if scheme in known_backends and not replace:
        raise ValueError(f"the {scheme}:// backend is already registered ({known_backends[scheme].target})")
    known_backends[scheme] = Backend(scheme, target, extra)


register_backend("memory", "kvstore.stores.memory:MemoryStore")
register_backend("file", "kvstore.stores.filesystem:FileSystemStore")
register_backend("s3", "kvstore.stores.s3:S3Store", extra="s3")


def open_store(url: str, **options: Any) -> AbstractStore:
    """Open and connect the store that ``url`` names.

    ``memory://``; ``file:///abs/path`` or ``file:rel/path`` (created when missing; a bare
    path means the same); ``s3://bucket/prefix?endpoint_url=...&region=...``. Query
    parameters are the store's options (``file:///x?durable=1``); keyword ``options`` go to
    the store's constructor too and win over the URL's.

    Raises
    ------
    ValueError : an unknown scheme or option, or a URL that lacks a needed part.
    StoreError : a ``file:`` URL names a non-empty directory that is not a store.
    ImportError : the backend's optional dependency is missing (names the extra).
    """
    if not isinstance(url, str) or not url:
        raise ValueError("a store URL must be a non-empty str")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if len(scheme) <= 1:  # a bare path (or a Windows drive letter): a file store, no options
        scheme, parts = "file", SplitResult("file", "", quote(url, safe="/~"), "", "")
    backend = known_backends.get(scheme)
    if backend is None:
        raise ValueError(f"unknown store URL scheme {parts.scheme!r} in {url!r}; "
                         f"known: {', '.join(s + '://' for s in known_backends)}")
    query: Dict[str, str] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in query:
            raise ValueError(f"option {name!r} given twice in {url!r}")
        query[name] = value
    store = backend.load().from_url(url, parts, query, **options)
    store.connect()
    return store
