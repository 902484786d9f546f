"""Find values by metadata with the operators of kvstore.query.

Run: python examples/find_things.py [STORE_DIR]   (default: a temporary directory)
"""

import sys
import tempfile

import kvstore
from kvstore.query import between, contains, exists, ge, not_, one_of, prefix


def main(path: str) -> None:
    with kvstore.FileSystemStore(path, create=True) as store:
        runs = [
            ("runs/001", {"size": 120, "tags": ["raw"], "state": "done", "owner": "ann"}),
            ("runs/002", {"size": 4500.5, "tags": ["raw", "dark"], "state": "failed"}),
            ("runs/003", {"size": 9000, "tags": ["calibrated"], "state": "done", "owner": None}),
            ("notes/readme", {"size": "small", "title": "img_ is for images"}),
        ]
        for key, metadata in runs:
            store.set_metadata(key, metadata)  # a new key gets empty data

        print("big:", sorted(store.query_keys(size=ge(1000))))
        print("raw and big:", sorted(store.query_keys(tags=contains("raw"), size=ge(1000))))
        print("medium:", sorted(store.query_keys(size=between(100, 5000))))
        print("owned (even by null):", sorted(store.query_keys(owner=exists())))
        print("nobody's:", sorted(store.query_keys(owner=exists(False))))
        print("not done:", sorted(store.query_keys(state=not_("done"))))
        print("finished:", dict(store.query(select=["state"], state=one_of(["done", "failed"]),
                                            size=not_(ge(9000)))))
        print("titled img_:", sorted(store.query_keys(title=prefix("img_"))))
        try:
            store.query_keys(size=ge([1000]))  # ge() refuses a list as it is made
        except TypeError as exc:
            print("bad query:", exc)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(tmp + "/store")
