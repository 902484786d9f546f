"""Listening: blinker signals for every change, progress, and glob-filtered subscribe().

Run: python examples/listen.py
"""

import io

import kvstore
from kvstore import signals


def on_set(store, event):
    print(f"set     {event.key!r} {event.metadata}")


def on_progress(store, event):
    if isinstance(event, kvstore.events.StoreProgressStartEvent):
        print(f"start   {event.key!r} {event.steps} bytes")
    elif isinstance(event, kvstore.events.StoreProgressEndEvent):
        print(f"end     {event.key!r} {event.exit_state}")


def main() -> None:
    with kvstore.MemoryStore(name="demo") as store:
        # Hear one store's new keys; blinker holds receivers weakly, so keep references.
        signals.store_set.connect(on_set, sender=store)
        signals.progress_start.connect(on_progress, sender=store)
        signals.progress_end.connect(on_progress, sender=store)

        # "Tell me when anything under images/ changes" is one line:
        with store.subscribe(lambda e: print(f"images/ {e.action:6s} {e.key!r}"), "images/*"):
            store.set("images/a.png", (io.BytesIO(b"x" * 3_000_000), {"w": 640}))
            store.update_metadata("images/a.png", {"h": 480})
            store.set("docs/readme.txt", (io.BytesIO(b"hi"), {}))
            store.delete("images/a.png")

        # Inside a transaction, events are held and sent only after the commit.
        with store.transaction("batch import"):
            for i in range(3):
                store.set(f"batch/{i}", (io.BytesIO(b""), {"i": i}))
            print("inside the transaction: nothing heard yet")
        print("after the commit")


if __name__ == "__main__":
    main()
