"""``kvstore demo``: the guided tour."""

from __future__ import annotations

import argparse
import io
from typing import Any, Dict, List, Tuple

from .opening import _open, _store_url, _where
from .output import DEFAULT_STORE, _json, _say

# ---------------------------------------------------------------- demo

_DEMO_VALUES: List[Tuple[str, bytes, Dict[str, Any]]] = [
    ("demo/eggs.txt", b"green eggs\n", {"type": "food", "colour": "green", "n": 12}),
    ("demo/ham.txt", b"and ham\n", {"type": "food", "colour": "pink", "n": 1}),
    ("demo/spam.bin", bytes(range(16)), {"type": "tin", "n": 3, "tags": ["canned", "pink"]}),
]


def cmd_demo(args: argparse.Namespace) -> int:
    """A guided tour: writes, events, queries, a read and a transaction on the store."""
    with _open(args) as store:
        _say(f"kvstore demo on {_where(store)}")
        _say("Listening: store.subscribe(print_event, 'demo/*') prints every change below as '~ event'.")

        def print_event(event: Any) -> None:
            seq = "" if event.sequence is None else f" #{event.sequence}"
            _say(f"      ~ event {event.action:<6} {event.key}{seq} {_json(event.metadata)}")

        with store.subscribe(print_event, "demo/*"):
            _say("")
            _say("1. Store three values with metadata: store.set(key, (stream, metadata))")
            for key, data, metadata in _DEMO_VALUES:
                _say(f"   set {key} ({len(data)} bytes) {_json(metadata)}")
                store.set(key, (io.BytesIO(data), metadata))

            _say("")
            _say("2. Merge into the metadata: store.update_metadata('demo/eggs.txt', {'eaten': False})")
            store.update_metadata("demo/eggs.txt", {"eaten": False})

            _say("")
            _say("3. Query by metadata: store.query(type='food')")
            for key, metadata in sorted(store.query(type="food")):
                _say(f"   {key} {_json(metadata)}")
            _say("   ... and store.query_keys(tags=['canned', 'pink'])")
            for key in sorted(store.query_keys(tags=["canned", "pink"])):
                _say(f"   {key}")

            _say("")
            _say("4. List by glob: store.glob('demo/*.txt')")
            for key in sorted(store.glob("demo/*.txt")):
                _say(f"   {key}")

            _say("")
            _say("5. Read one back: value = store.get('demo/eggs.txt')")
            value = store.get("demo/eggs.txt")
            with value.data as stream:
                data = stream.read()
            _say(f"   value.data.read() = {data!r} ({value.size} bytes)")
            _say(f"   value.metadata = {_json(value.metadata)}")

            _say("")
            _say("6. A transaction: its events are sent only when it commits")
            with store.transaction("demo"):
                _say("   with store.transaction('demo'): set demo/scratch.txt, update demo/ham.txt")
                store.set("demo/scratch.txt", (io.BytesIO(b"scratch\n"), {"type": "scratch"}))
                store.update_metadata("demo/ham.txt", {"sliced": True})
                _say("   (still inside the block: no event yet)")
            _say("   committed")

            _say("")
            _say("7. Delete: store.delete('demo/scratch.txt')")
            store.delete("demo/scratch.txt")

    url = _store_url(args)
    prefix = "kvstore" if url == DEFAULT_STORE and not args.store else f"kvstore --store {url}"
    _say("")
    _say("Done: the demo/* keys stay in the store (run the demo again at will). Next, try:")
    _say(f"   {prefix} ls 'demo/*'")
    _say(f"   {prefix} query type=food")
    _say(f"   {prefix} get demo/eggs.txt")
    _say(f"   {prefix} watch        # in another terminal, then run the demo again here")
    return 0
