"""The commands on keys: put, get, meta, rm, ls, query, info, reindex."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from typing import Any, Dict, Iterator, List, Sequence, Tuple

from .._keys import matches
from ..base import AbstractStore
from ..query import Criterion
from .args import _assignments, parse_criterion
from .opening import _no_key, _open, _store_url
from .output import _CHUNK, CLIError, _json, _say
from .progress import _ProgressBars

# ---------------------------------------------------------------- commands


def cmd_put(args: argparse.Namespace) -> int:
    """Store a file (or stdin) and metadata under a key, replacing what was there."""
    metadata = _assignments(args.meta, "--meta")
    source = args.file
    with contextlib.ExitStack() as stack:
        if source == "-":
            stream = sys.stdin.buffer
        else:
            if os.path.isdir(source):
                raise CLIError(f"{source} is a directory, not a file")
            try:
                stream = stack.enter_context(open(source, "rb"))
            except OSError as exc:
                raise CLIError(f"cannot read {source}: {exc.strerror or exc}") from None
        store = stack.enter_context(_open(args))
        stack.enter_context(_ProgressBars(store))
        store.set(args.key, (stream, metadata), if_revision=args.if_revision)
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    """Write a key's data to stdout or to a file."""
    output = args.output
    if output not in (None, "-"):
        if os.path.isdir(output):
            raise CLIError(f"{output} is a directory: give a file name")
        parent = os.path.dirname(os.path.realpath(output))
        if not os.path.isdir(parent):
            raise CLIError(f"cannot write {output}: no such directory {parent}")
    with _open(args, write=False) as store, _ProgressBars(store) as bars:
        try:
            if output not in (None, "-"):
                try:
                    store.to_file(args.key, output)
                except OSError as exc:
                    raise CLIError(f"cannot write {output}: {exc.strerror or exc}") from None
                return 0
            value = store.get(args.key)
        except KeyError:
            raise _no_key(args.key, store) from None
        # stdout is not a path: copy by hand, and feed the bar directly.
        op_id = f"stdout:{id(value)}"
        bars.start(op_id, f"get {args.key}", value.size)
        try:
            sys.stdout.flush()
            out = sys.stdout.buffer
            done = 0
            with value.data as src:
                while True:
                    chunk = src.read(_CHUNK)
                    if not chunk:
                        break
                    out.write(chunk)
                    done += len(chunk)
                    bars.step(op_id, done)
            out.flush()
        finally:
            bars.end(op_id)
    return 0


def cmd_meta(args: argparse.Namespace) -> int:
    """Print a key's metadata as JSON, or change names of it without rewriting the data."""
    updates = _assignments(args.set, "--set")
    unset = list(args.unset or ())
    both = sorted(set(updates) & set(unset))
    if both:
        raise CLIError(f"--set and --unset both name {', '.join(both)}", code=2)
    if args.if_revision is not None and not (updates or unset):
        raise CLIError("--if-revision needs --set or --unset", code=2)
    with _open(args, write=bool(updates or unset)) as store:
        try:
            if unset:
                metadata = store.get_metadata(args.key)
                for name in unset:
                    metadata.pop(name, None)
                metadata.update(updates)
                store.set_metadata(args.key, metadata, if_revision=args.if_revision)
            elif updates:
                store.update_metadata(args.key, updates, if_revision=args.if_revision)
            metadata = store.get_metadata(args.key)
        except KeyError:
            raise _no_key(args.key, store) from None
    _say(_json(metadata, indent=2))
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    """Delete keys."""
    with _open(args) as store:
        for key in args.keys:
            try:
                store.delete(key, if_revision=args.if_revision)
            except KeyError:
                if not args.force:
                    raise _no_key(key, store) from None
    return 0


def _shown_key(key: str) -> str:
    # One key per line: a key that could be misread (a newline or another control
    # character in it, or a leading quote) is printed as a JSON string instead.
    if key.isprintable() and not key.startswith('"'):
        return key
    return _json(key)


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def cmd_ls(args: argparse.Namespace) -> int:
    """List the keys matching a glob pattern, sorted."""
    with _open(args, write=False) as store:
        for key in sorted(store.glob(args.pattern)):
            if not (args.long or args.json):
                _say(_shown_key(key))
                continue
            try:
                value = store.get(key)
            except KeyError:
                continue  # deleted since it was listed
            if args.json:
                _say(_json({"key": key, "size": value.size, "created": value.created,
                            "modified": value.modified, "metadata": value.metadata}))
            else:
                _say(f"{value.size:>12}  {_when(value.modified)}  {_shown_key(key)}")
    return 0


def _query(store: AbstractStore, criteria: Sequence[Tuple[str, Criterion]]) -> Iterator[Tuple[str, Dict[str, Any]]]:
    # The store answers the first criterion on each name; a name given again ("n>1 n<9":
    # all must hold) is checked here, and so is "select": it is query()'s own parameter,
    # so a metadata name "select" cannot be passed as a keyword.
    first: Dict[str, Any] = {}
    again: List[Dict[str, Criterion]] = []
    for name, criterion in criteria:
        if name == "select" or name in first:
            again.append({name: criterion})
        else:
            first[name] = criterion
    for key, metadata in store.query(**first):
        if all(matches(metadata, extra) for extra in again):
            yield key, metadata


def cmd_query(args: argparse.Namespace) -> int:
    """Print the keys whose metadata meets every criterion, with their metadata."""
    criteria = [parse_criterion(text) for text in args.criteria]
    with _open(args, write=False) as store:
        try:
            results = sorted(_query(store, criteria), key=lambda item: item[0])
        except (TypeError, ValueError) as exc:
            raise CLIError(f"bad query: {exc}") from None
    for key, metadata in results:
        _say(key if args.keys else _json({"key": key, "metadata": metadata}))
    return 0


def cmd_log(args: argparse.Namespace) -> int:
    """Print a key's history, oldest change first, one JSON line per change."""
    with _open(args, write=False) as store:
        try:
            events = store.history(args.key)
        except NotImplementedError as exc:
            raise CLIError(str(exc)) from None
    for event in events:
        _say(_json(event.to_dict()))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    """Print what the store says about itself, as JSON."""
    with _open(args, write=False) as store:
        info = store.info()
    info["url"] = _store_url(args)
    _say(_json(info, indent=2))
    return 0


def cmd_reindex(args: argparse.Namespace) -> int:
    """Rebuild a filesystem store's index from its files."""
    with _open(args, write=False, readonly=False) as store:
        reindex = getattr(store, "reindex", None)
        if reindex is None:
            raise CLIError(f"{type(store).__name__} keeps no index to rebuild")
        count = reindex()
    _say(f"reindexed {count} key(s)")
    return 0
