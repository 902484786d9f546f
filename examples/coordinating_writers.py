"""Coordinating writers with revisions: a counter that no increment is lost from, and a lease.

Run: python examples/coordinating_writers.py [STORE_DIR]
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time

import kvstore
from kvstore.errors import ConflictError


def increment(store: kvstore.AbstractStore, key: str) -> None:
    while True:
        value = store.get(key)
        try:
            store.update_metadata(key, {"n": value.metadata["n"] + 1}, if_revision=value.revision)
            return
        except ConflictError:
            continue  # another writer came first: read again


def take_lease(store: kvstore.AbstractStore, key: str, owner: str, ttl: float) -> bool:
    """Take the lease if nobody holds it (or it expired): one conditional write."""
    try:
        value = store.get(key)
    except KeyError:
        expected, holder = 0, None
    else:
        expected, holder = value.revision, value.metadata
    if holder and holder["until"] > time.time() and holder["owner"] != owner:
        return False
    try:
        store.set_metadata(key, {"owner": owner, "until": time.time() + ttl}, if_revision=expected)
        return True
    except ConflictError:
        return False


def main(path: str) -> None:
    with kvstore.FileSystemStore(path, create=True) as store:
        store.set_metadata("counter", {"n": 0})
        threads = [threading.Thread(target=lambda: [increment(store, "counter") for _ in range(25)])
                   for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print("counter:", store.get_metadata("counter")["n"])  # always 100
        print("a takes the lease:", take_lease(store, "lease", "a", ttl=30))
        print("b takes the lease:", take_lease(store, "lease", "b", ttl=30))
        print("history of the lease:", [(e.action, e.revision) for e in store.history("lease")])


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp())
