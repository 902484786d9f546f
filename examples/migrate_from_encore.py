"""Open a directory written by encore.storage's FileSystemStore with kvstore, and query it.

kvstore keeps encore's layout: a directory holding the magic file ``.FSStore`` and, for each
key, ``<key>.data`` (the bytes) beside ``<key>.metadata`` (a JSON object). So migrating is
opening the same directory with :class:`kvstore.FileSystemStore`: on its first connection it
indexes the files (in ``.kvstore/`` inside the directory) and from then on queries use the
index; the files stay the source of truth and encore can still read them.

This example makes an encore-era directory — with encore itself when it is installed
(``pip install encore==0.8.0``), else by writing the files by hand — then opens it with
kvstore, queries it by metadata and glob, reads a value, writes one back and (with encore)
shows that encore reads kvstore's write.

Caveat: encore wrote a key's name as the file name unchanged; kvstore escapes keys that are
not plain file names (spaces, non-ASCII, leading dots ...), so an encore file named like that
is not a canonical kvstore key and is skipped by the indexing with a warning. Rename such
files (or copy them through kvstore's API) when migrating.

Run it with ``python examples/migrate_from_encore.py``.
"""

from __future__ import annotations

import io
import json
import os
import tempfile

import kvstore

# key -> (data, metadata): what a user of encore had stored
LEGACY = {
    "run-001.csv": (b"t,x\n0,1.0\n1,2.5\n", {"type": "csv", "experiment": "alpha", "run": 1}),
    "run-002.csv": (b"t,x\n0,1.1\n1,2.4\n", {"type": "csv", "experiment": "alpha", "run": 2}),
    "run-003.csv": (b"t,x\n0,0.9\n1,2.7\n", {"type": "csv", "experiment": "beta", "run": 3}),
    "notes.txt": (b"alpha used the new sensor\n", {"type": "text", "author": "ada"}),
}


def make_encore_directory(path: str) -> str:
    """Fill ``path`` the way encore.storage did; return how it was made."""
    try:
        from encore.storage.filesystem_store import FileSystemStore as EncoreStore
        from encore.storage.filesystem_store import init_shared_store
    except ImportError:
        # encore's layout, written by hand: the magic file, then a .data and a .metadata per key
        with open(os.path.join(path, ".FSStore"), "wb") as f:
            f.write(b"__version__ = 0\n")
        for key, (data, metadata) in LEGACY.items():
            with open(os.path.join(path, key + ".data"), "wb") as f:
                f.write(data)
            with open(os.path.join(path, key + ".metadata"), "w", encoding="utf-8") as f:
                json.dump(metadata, f)
        return "by hand (encore is not installed)"
    init_shared_store(path)
    legacy = EncoreStore(path)
    legacy.connect()
    for key, (data, metadata) in LEGACY.items():
        legacy.set(key, (io.BytesIO(data), metadata))
    legacy.disconnect()
    return "with encore.storage"


def read_with_encore(path: str, key: str) -> None:
    """Show that encore still reads the directory after kvstore wrote to it."""
    try:
        from encore.storage.filesystem_store import FileSystemStore as EncoreStore
    except ImportError:
        print("encore is not installed: skipping the read-back with encore")
        return
    legacy = EncoreStore(path)
    legacy.connect()
    value = legacy.get(key)
    with value.data as stream:
        data = stream.read()
    print(f"encore reads kvstore's write: {key} -> {data!r} {json.dumps(value.metadata, sort_keys=True)}")
    legacy.disconnect()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "legacy-store")
        os.mkdir(path)
        how = make_encore_directory(path)
        print(f"made an encore directory {how}: {sorted(os.listdir(path))}")

        # An existing store: no create=True needed (nor wanted: a typo should fail, not create).
        with kvstore.FileSystemStore(path) as store:
            print(f"kvstore opened it: {store.info()['keys']} keys indexed")

            print("query(experiment='alpha'):")
            for key, metadata in sorted(store.query(experiment="alpha")):
                print(f"  {key} {json.dumps(metadata, sort_keys=True)}")

            print("query_keys(type='text'):", sorted(store.query_keys(type="text")))
            print("glob('run-*.csv'):", sorted(store.glob("run-*.csv")))

            value = store.get("run-003.csv")
            with value.data as stream:
                print(f"get('run-003.csv'): {value.size} bytes, first line {stream.readline()!r}")

            # New writes keep the layout, and are indexed at once.
            store.set("run-004.csv", (io.BytesIO(b"t,x\n0,1.2\n"), {"type": "csv", "experiment": "beta", "run": 4}))
            store.update_metadata("notes.txt", {"reviewed": True})
            print("after two writes, query_keys(experiment='beta'):", sorted(store.query_keys(experiment="beta")))

        read_with_encore(path, "run-004.csv")


if __name__ == "__main__":
    main()
