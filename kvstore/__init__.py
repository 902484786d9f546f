"""kvstore: an event-driven key-value store with pub/sub.

Each key holds a binary data stream and a JSON metadata dict. Stores send blinker signals
(:mod:`kvstore.signals`) carrying events (:mod:`kvstore.events`) for every change, with
progress for streams; :mod:`kvstore.watch` and :mod:`kvstore.relay` carry them to other
processes and hosts.
"""

from __future__ import annotations

from typing import Any

from . import errors, events, signals
from ._registry import open_store, register_backend
from ._sync import SyncReport, sync
from .base import AbstractStore, Value
from .errors import (
    AuthorizationError,
    ChecksumError,
    InvalidKeyError,
    NotConnectedError,
    StoreError,
)
from .stores.filesystem import FileSystemStore, init_shared_store
from .stores.memory import MemoryStore

__version__ = "0.1.0"

__all__ = [
    "AbstractStore",
    "Value",
    "MemoryStore",
    "FileSystemStore",
    "S3Store",
    "init_shared_store",
    "open_store",
    "register_backend",
    "sync",
    "SyncReport",
    "signals",
    "events",
    "errors",
    "StoreError",
    "AuthorizationError",
    "InvalidKeyError",
    "NotConnectedError",
    "ChecksumError",
    "__version__",
]


def __getattr__(name: str) -> Any:
    # The optional backends and bridges load on first use, so `import kvstore` needs
    # blinker alone.
    if name == "S3Store":
        from .stores.s3 import S3Store

        return S3Store
    if name in ("watch", "relay", "testing"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'kvstore' has no attribute {name!r}")
