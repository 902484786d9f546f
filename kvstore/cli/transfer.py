"""``kvstore cp``, ``mv`` and ``sync``."""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Any

from ..errors import InvalidKeyError
from .opening import _no_key, _open, open_url
from .output import CLIError, _error, _say, _write_text
from .progress import _ProgressBars

# ---------------------------------------------------------------- copy, move, sync


def _copy_or_move(args: argparse.Namespace, move: bool) -> int:
    with _open(args) as store, _ProgressBars(store):
        try:
            (store.move if move else store.copy)(args.src, args.dst)
        except KeyError:
            raise _no_key(args.src, store) from None
        except InvalidKeyError:
            raise
        except ValueError as exc:  # the same key twice
            raise CLIError(str(exc)) from None
    return 0


def cmd_cp(args: argparse.Namespace) -> int:
    """Copy a key's data and metadata to another key of the store."""
    return _copy_or_move(args, move=False)


def cmd_mv(args: argparse.Namespace) -> int:
    """Move a key to another key of the store (atomic on memory and filesystem stores)."""
    return _copy_or_move(args, move=True)


class _SyncBars(_ProgressBars):
    """The one bar of a sync over all its bytes (not one per key)."""

    def _on_start(self, sender: Any, event: Any = None, **_: Any) -> None:
        if event.message == "sync":
            self.start(event.operation_id, f"sync {event.key}", event.steps)


def cmd_sync(args: argparse.Namespace) -> int:
    """Copy to DST_URL the keys of SRC_URL matching PATTERN whose data or metadata differ."""
    from .._sync import sync

    with contextlib.ExitStack() as stack:
        source = stack.enter_context(open_url(args.source, write=False, what="source"))
        destination = stack.enter_context(open_url(args.destination, what="destination"))
        stack.enter_context(_SyncBars(destination, threshold=0))
        try:
            report = sync(source, destination, args.pattern, delete=args.delete, workers=args.workers,
                          retries=args.retries, state=args.state, dry_run=args.dry_run)
        except KeyboardInterrupt:
            if args.state:
                _write_text(sys.stderr, f"kvstore: the state is in {args.state}: run the same command "
                                        f"to resume\n")
            raise
        except ValueError as exc:
            raise CLIError(str(exc)) from None
    if args.dry_run:
        for key in report.done:
            _say(f"would copy {key}")
        for key in report.deleted:
            _say(f"would delete {key}")
    for key in report.failed:
        _error(f"{key!r} failed: {report.errors.get(key, 'failed')}")
    _say(report.summary())
    return 0 if report.ok else 1
