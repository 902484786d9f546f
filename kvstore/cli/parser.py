"""The ``kvstore`` argument parser: the commands, their help and their options."""

from __future__ import annotations

import argparse
from typing import Callable, Dict, List, Tuple

from .. import __version__
from .args import _CommandParser, _Parser

from .commands import cmd_get, cmd_info, cmd_log, cmd_ls, cmd_meta, cmd_put, cmd_query, cmd_reindex, cmd_rm
from .demo import cmd_demo
from .transfer import cmd_cp, cmd_mv, cmd_sync
from .watching import cmd_watch

# ---------------------------------------------------------------- the parser

_EPILOG = """\
examples:
  kvstore put notes/today.txt today.txt --meta type=note --meta n=3
  kvstore get notes/today.txt -o copy.txt
  kvstore query type=note
  kvstore --store file:///srv/data ls 'notes/*'
  KVSTORE_URL=s3://bucket/prefix kvstore info

The store is --store URL, else $KVSTORE_URL, else ./.kvstore (created by the first write;
commands that only read never create a store).
URLs: file:///abs/path, file:rel/path (or a bare path), memory://, s3://bucket/prefix.
"""

_COMMANDS: List[Tuple[str, Callable[[argparse.Namespace], int], str, str]] = [
    ("put", cmd_put, "store a file (or stdin) and metadata under a key", """\
example:
  kvstore put images/cat.png cat.png --meta type=image --meta width=640 --meta tags='["pet"]'
  tar c photos | kvstore put backups/photos.tar - --meta type=backup
  kvstore put notes/a.txt --meta type=note -- a.txt     # -- ends the options

A --meta VALUE is JSON where it parses as JSON (width=640 is a number, tags='["pet"]' a
list, ok=true a boolean), else a string (type=image). put replaces the key's data and
metadata together.
"""),
    ("get", cmd_get, "write a key's data to stdout or a file", """\
example:
  kvstore get images/cat.png -o cat-copy.png
  kvstore get notes/today.txt | less
"""),
    ("meta", cmd_meta, "print a key's metadata as JSON", """\
example:
  kvstore meta images/cat.png
  kvstore meta images/cat.png --set width=640 --unset draft

Prints the metadata as JSON (after the change, with --set or --unset).
"""),
    ("rm", cmd_rm, "delete keys", """\
example:
  kvstore rm images/cat.png
  kvstore rm -f maybe/there another/key
"""),
    ("cp", cmd_cp, "copy a key (data and metadata) to another key", """\
example:
  kvstore cp images/cat.png backup/cat.png
"""),
    ("mv", cmd_mv, "move a key to another key", """\
example:
  kvstore mv inbox/report.csv done/report.csv

The move is atomic on memory and filesystem stores (nobody sees both keys or neither);
on S3 it is a server-side copy, then a delete.
"""),
    ("sync", cmd_sync, "make the keys of one store match another's", """\
example:
  kvstore sync file:///srv/data s3://bucket/backup
  kvstore sync s3://bucket/backup file:restore 'images/*' --dry-run
  kvstore sync file:data s3://bucket/mirror --delete --state sync-state.json

Copies every key matching PATTERN (default *) whose size, checksum or metadata differ,
verifies what it wrote, retries transient failures, and with --delete removes destination
keys the source lacks. --store is not used: the two stores are SRC_URL and DST_URL (a
filesystem DST_URL is created when missing). --state FILE keeps each key's state so an
interrupted run resumes where it stopped. Prints a summary line; exit status 1 if any key
failed.
"""),
    ("ls", cmd_ls, "list keys matching a glob pattern", """\
example:
  kvstore ls
  kvstore ls 'images/*.png'       # * also crosses /
  kvstore ls -l 'images/*'
  kvstore ls --json | jq .size

A key with a newline or another control character is printed as a JSON string, in quotes.
"""),
    ("query", cmd_query, "list keys whose metadata meets every criterion", """\
example:
  kvstore query type=image
  kvstore query type=image width=640 --keys
  kvstore query tags='["pet"]'
  kvstore query 'size>100' 'size<=5000' 'tags~raw' 'name^=img' 'owner?' 'state!=x'

A criterion is NAME=VALUE (equal), NAME!=VALUE (not equal, or no NAME at all),
NAME>VALUE, NAME>=VALUE, NAME<VALUE, NAME<=VALUE (numbers with numbers, strings
with strings), NAME~VALUE (a list holding VALUE), NAME^=PREFIX (a string starting
with PREFIX, as written) or NAME? (NAME is present); all must hold. Quote them
for the shell. Values are parsed as for put --meta, and compared as JSON (640
matches 640.0; true matches only true).

Prints one JSON object per line: {"key": ..., "metadata": {...}}.
"""),
    ("info", cmd_info, "print information about the store as JSON", """\
example:
  kvstore info
  kvstore --store s3://bucket/prefix info
"""),
    ("log", cmd_log, "print a key's history, oldest change first, one JSON line each", """\
example:
  kvstore log jobs/counter

Each line is an event's to_dict(): type, key, metadata, revision, sequence, timestamp, origin.
"""),
    ("reindex", cmd_reindex, "rebuild a filesystem store's index from its files", """\
example:
  kvstore reindex
  kvstore --store /data/store reindex

For files changed behind the store's back. A damaged or missing index is rebuilt at
connect by itself; this also does it on demand. Prints the number of keys indexed.
"""),
    ("watch", cmd_watch, "print one JSON line per change, as it happens", """\
example:
  kvstore watch                       # a filesystem store: changes by other processes
  kvstore watch 'images/*'
  kvstore watch --redis redis://localhost:6379/0    # changes relayed through Redis

Each line is an event's to_dict(), e.g.
  {"type": "StoreSetEvent", "key": "images/cat.png", "metadata": {...}, "remote": true, ...}
Stops cleanly on Ctrl-C (SIGINT) or SIGTERM.
"""),
    ("demo", cmd_demo, "a guided tour of kvstore on the store (idempotent)", """\
example:
  kvstore demo
  kvstore --store memory:// demo

Writes demo/* keys with metadata, prints the events it hears, queries by metadata and glob,
reads a value back and runs a transaction. Run it as often as you like.
"""),
]


def _sequence(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a journal sequence (a whole number >= 0), not {text!r}") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"a journal sequence is >= 0, not {number}")
    return number


def _revision(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a revision (a whole number >= 0), not {text!r}") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"a revision is >= 0, not {number}")
    return number


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``kvstore`` command."""
    common = _CommandParser(add_help=False)  # the options every command takes
    common.add_argument("--store", metavar="URL", default=argparse.SUPPRESS,
                        help="the store (default: $KVSTORE_URL, else ./.kvstore)")
    parser = _Parser(prog="kvstore", description="kvstore: an event-driven key-value store with pub/sub.",
                     epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", metavar="URL", default=None,
                        help="the store (default: $KVSTORE_URL, else ./.kvstore)")
    parser.add_argument("--version", action="version", version=f"kvstore {__version__}")
    commands = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND",
                                     parser_class=_CommandParser)
    subs: Dict[str, argparse.ArgumentParser] = {}
    for name, func, summary, epilog in _COMMANDS:
        sub = commands.add_parser(name, help=summary, description=summary[0].upper() + summary[1:] + ".",
                                  epilog=epilog, parents=[common],
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        sub.set_defaults(func=func)
        subs[name] = sub

    subs["put"].add_argument("key", metavar="KEY")
    subs["put"].add_argument("file", metavar="FILE|-",
                             help="the file to store; - reads standard input")
    subs["put"].add_argument("-m", "--meta", metavar="NAME=VALUE", action="extend", nargs="+",
                             help="a metadata item; repeat or list several")
    subs["get"].add_argument("key", metavar="KEY")
    subs["get"].add_argument("-o", "--output", metavar="FILE",
                             help="write to FILE instead of stdout, as cp does (a file is replaced when "
                                  "complete and keeps its permissions; a symlink, FIFO or device is "
                                  "written through)")
    subs["meta"].add_argument("key", metavar="KEY")
    subs["meta"].add_argument("--set", metavar="NAME=VALUE", action="extend", nargs="+",
                              help="set these names (VALUE parsed as for put --meta); the data stays")
    subs["meta"].add_argument("--unset", metavar="NAME", action="extend", nargs="+",
                              help="remove these names; the data stays")
    for name in ("put", "meta", "rm"):
        subs[name].add_argument("--if-revision", metavar="N", type=_revision, dest="if_revision",
                                help="only if the key is at revision N (0: only if it does not exist)")
    subs["log"].add_argument("key", metavar="KEY")
    subs["rm"].add_argument("keys", metavar="KEY", nargs="+")
    subs["rm"].add_argument("-f", "--force", action="store_true", help="ignore keys that do not exist")
    for name in ("cp", "mv"):
        subs[name].add_argument("src", metavar="SRC", help="the key to copy")
        subs[name].add_argument("dst", metavar="DST", help="the key to write")
    subs["sync"].add_argument("source", metavar="SRC_URL", help="the store to copy from")
    subs["sync"].add_argument("destination", metavar="DST_URL", help="the store to copy to")
    subs["sync"].add_argument("pattern", metavar="PATTERN", nargs="?", default="*",
                              help="only keys matching this glob (default: *)")
    subs["sync"].add_argument("--delete", action="store_true",
                              help="delete destination keys matching PATTERN that the source lacks")
    subs["sync"].add_argument("--dry-run", action="store_true",
                              help="change nothing; print what would be copied and deleted")
    subs["sync"].add_argument("--state", metavar="FILE", help="keep per-key state in FILE, to resume")
    subs["sync"].add_argument("--workers", metavar="N", type=int, default=4,
                              help="keys copied at once (default: 4)")
    subs["sync"].add_argument("--retries", metavar="N", type=int, default=3,
                              help="further attempts of a key after a transient failure (default: 3)")
    subs["ls"].add_argument("pattern", metavar="PATTERN", nargs="?", default="*",
                            help="an fnmatch glob (default: *)")
    subs["ls"].add_argument("-l", "--long", action="store_true",
                            help="also print each key's size and modification time")
    subs["ls"].add_argument("--json", action="store_true",
                            help="one JSON object per key: key, size, created, modified, metadata")
    subs["query"].add_argument("criteria", metavar="CRITERION", nargs="*",
                               help="NAME=VALUE, NAME>VALUE, NAME~VALUE, NAME? ... (none: every key)")
    subs["query"].add_argument("-k", "--keys", action="store_true", help="print only the keys")
    subs["watch"].add_argument("pattern", metavar="PATTERN", nargs="?", default="*",
                               help="only keys matching this glob (default: *)")
    subs["watch"].add_argument("--redis", metavar="URL",
                               help="receive the changes published by other relays through Redis")
    subs["watch"].add_argument("--channel", default="kvstore", help="the Redis channel (default: kvstore)")
    subs["watch"].add_argument("--since", metavar="SEQUENCE", type=_sequence,
                               help="filesystem store: first replay the changes after this journal sequence")
    return parser
