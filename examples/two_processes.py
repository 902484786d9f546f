"""Two processes, one store: this process prints, as events, what another process writes.

Run it with ``python examples/two_processes.py [STORE_DIR]`` (a temporary directory by
default; needs ``pip install 'kvstore[watch]'``). The parent opens the store, starts a
:class:`~kvstore.watch.FileSystemWatcher` and runs this same file again as a child with
``--child``; the child writes a few keys through its own store instance and exits. The
parent prints every event the watcher delivers and stops once the child's last change
(the key ``done``) has arrived.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
import threading

import kvstore
from kvstore.watch import FileSystemWatcher


def child(path: str) -> None:
    """Write a few changes to the store at ``path``, as another process would."""
    with kvstore.FileSystemStore(path) as store:
        store.set("greeting", (io.BytesIO(b"hello"), {"lang": "en"}))
        store.update_metadata("greeting", {"lang": "fr", "polite": True})
        store.set("reports/2024/q1.csv", (io.BytesIO(b"a,b\n1,2\n"), {"rows": 1}))
        store.delete("greeting")
        store.set("done", (io.BytesIO(b""), {}))


def parent(path: str) -> None:
    """Watch the store at ``path`` while a child process writes to it."""
    done = threading.Event()
    with kvstore.FileSystemStore(path, create=True) as store:

        def show(event: kvstore.events.StoreModificationEvent) -> None:
            print(f"{event.action:<6} {event.key!r} {json.dumps(event.metadata, sort_keys=True)} "
                  f"remote={event.remote}", flush=True)
            if event.key == "done":
                done.set()

        with store.subscribe(show), FileSystemWatcher(store):
            print(f"watching {path}", flush=True)
            subprocess.run([sys.executable, __file__, "--child", path], check=True)
            if not done.wait(timeout=30):
                raise SystemExit("the child's changes did not arrive within 30 s")
    print("done", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", help="the store's directory (default: a temporary one)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.path)
    elif args.path:
        parent(args.path)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            parent(tmp)


if __name__ == "__main__":
    main()
