"""Pull events with a for loop: store.events() on a FileSystemStore sees every process's commits.

Run: python examples/stream.py [STORE_DIR]
"""

import io
import subprocess
import sys
import tempfile

import kvstore


def other_process(path: str) -> None:
    with kvstore.FileSystemStore(path) as store:
        store.set("jobs/0001", (io.BytesIO(b"job"), {"state": "new"}))


def main(path: str) -> None:
    with kvstore.FileSystemStore(path, create=True) as store:
        with store.events("jobs/*") as stream:
            # Another process writes, then this one: both come through the journal, in order.
            subprocess.run([sys.executable, __file__, path, "--other"], check=True)
            store.set("jobs/0002", (io.BytesIO(b"job"), {"state": "new"}))
            for event in stream:  # blocks until the next event
                print(f"{event.action} {event.key} remote={event.remote}")
                if event.key == "jobs/0002":
                    break
            saved = stream.sequence  # where to resume

        # Later (or after a restart): everything since `saved`, then live changes.
        store.update_metadata("jobs/0001", {"state": "done"})
        with store.events("jobs/*", since=saved) as stream:
            event = stream.get(timeout=5.0)  # the next event, or None after the timeout
            print(f"resumed: {event.action} {event.key} {event.metadata}")
    print("done")


if __name__ == "__main__":
    if sys.argv[2:] == ["--other"]:
        other_process(sys.argv[1])
    else:
        main(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp() + "/store")
