"""Which store a command works on, and opening it: commands that only read never create
one."""

from __future__ import annotations

import argparse
import os
from typing import Any, Dict, Optional
from urllib.parse import unquote, urlsplit

from .._registry import open_store
from ..base import AbstractStore
from ..stores.filesystem import FileSystemStore
from .output import DEFAULT_STORE, CLIError, _describe_exception, _one_line


def _store_url(args: argparse.Namespace) -> str:
    return args.store or os.environ.get("KVSTORE_URL") or DEFAULT_STORE


def _file_path(url: str) -> Optional[str]:
    """The local path a ``file:`` URL or bare path names (None for other schemes)."""
    parts = urlsplit(url)
    if len(parts.scheme) <= 1:
        return os.path.expanduser(url)
    if parts.scheme.lower() != "file" or parts.netloc not in ("", "localhost"):
        return None  # not a local path: open_store says what is wrong with it
    return os.path.expanduser(unquote(parts.path))


def _open(args: argparse.Namespace, *, write: bool = True, readonly: Optional[bool] = None) -> AbstractStore:
    """Open the command's store. A command that only reads (``write=False``) never creates one,
    and opens a filesystem store read-only (unless ``readonly=False``)."""
    return open_url(_store_url(args), write=write, readonly=readonly)


def open_url(url: str, *, write: bool = True, what: str = "store",
             readonly: Optional[bool] = None) -> AbstractStore:
    """Open the store ``url`` names, as ``what`` (said in errors). A filesystem store that does
    not exist is created only for a command that writes; for one that only reads it is opened
    read-only (``readonly`` defaults to ``not write``)."""
    options: Dict[str, Any] = {}
    path = _file_path(url)
    if path is not None:
        if os.path.exists(path) and not os.path.isdir(path):
            raise CLIError(f"cannot open {what} {url!r}: {path} is a file, not a store directory")
        if not write:
            if not os.path.isdir(path):
                hint = ("; the first write creates it (e.g. kvstore put KEY FILE), or name another "
                        "with --store URL") if url == DEFAULT_STORE else ""
                raise CLIError(f"cannot open {what} {url!r}: no store at {path}{hint}")
            options["create"] = False
            if readonly is None or readonly:
                options["readonly"] = True
    try:
        return open_store(url, **options)
    except (ImportError, ValueError) as exc:
        raise CLIError(f"cannot open {what} {url!r}: {_one_line(str(exc))}") from None
    except (FileExistsError, NotADirectoryError) as exc:
        raise CLIError(f"cannot open {what} {url!r}: cannot create directory {exc.filename or url} "
                       f"({exc.strerror})") from None
    except Exception as exc:
        raise CLIError(f"cannot open {what} {url!r}: {_describe_exception(exc)}") from None


def _where(store: AbstractStore) -> str:
    if isinstance(store, FileSystemStore):
        return store.path
    info_name = f" {store.name!r}" if store.name else ""
    return f"{type(store).__name__}{info_name}"


def _no_key(key: str, store: AbstractStore) -> CLIError:
    return CLIError(f"no key {key!r} in {_where(store)}")
