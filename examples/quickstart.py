"""Quickstart: store values with metadata, read them back, query and glob.

Run: python examples/quickstart.py [STORE_DIR]   (default: a temporary directory)
"""

import io
import sys
import tempfile

import kvstore


def main(path: str) -> None:
    with kvstore.FileSystemStore(path, create=True) as store:
        # A value is a binary stream plus a JSON metadata dict.
        store.set("images/cat.png", (io.BytesIO(b"\x89PNG...cat"), {"animal": "cat", "legs": 4}))
        store.set("images/bird.png", (io.BytesIO(b"\x89PNG...bird"), {"animal": "bird", "legs": 2}))
        store.from_bytes("notes/todo.txt", b"feed the cat")
        store.update_metadata("notes/todo.txt", {"priority": 1})

        value = store.get("images/cat.png")
        with value.data as f:
            print("cat:", f.read(), value.metadata, value.size, "bytes")

        print("four legs:", sorted(store.query_keys(legs=4)))
        print("legs only:", dict(store.query(select=["legs"], animal="bird")))
        print("images:", sorted(store.glob("images/*")))
        print("todo:", store.to_bytes("notes/todo.txt"), store.get_metadata("notes/todo.txt"))

        store.delete("notes/todo.txt")
        print("exists after delete:", store.exists("notes/todo.txt"))


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(tmp + "/store")
