"""Two stores in two processes exchange events through Redis.

Usage::

    python examples/redis_relay.py [redis://[user:password@]host:port/db]

The URL comes from the command line, else ``KVSTORE_REDIS_URL``, else
``redis://127.0.0.1:6379/0``. The "boss" process starts a "worker" (this same script with
``--worker``); each has its own MemoryStore joined to the channel by a RedisRelay. The boss
writes a job; the worker hears of it as a remote event and writes a result; the boss hears
of that in turn.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import kvstore
from kvstore.relay import RedisRelay

CHANNEL = "kvstore-example"


def worker(url: str) -> int:
    store = kvstore.MemoryStore(name="worker")
    done = threading.Event()

    def on_event(event: kvstore.events.StoreModificationEvent) -> None:
        if event.remote and event.key == "job":  # a change made by the other process
            print(f"worker: got {event.key!r} {event.metadata}", flush=True)
            store.set("result", (b"42", {"answer": 42, "job": event.metadata["n"]}))
            done.set()

    with store, RedisRelay(store, url, channel=CHANNEL) as relay, store.subscribe(on_event):
        if not relay.wait_ready(10):
            print("worker: cannot reach Redis", flush=True)
            return 1
        print("ready", flush=True)
        ok = done.wait(20)
    # Leaving the block stopped the relay, after it had published the result.
    return 0 if ok else 1


def boss(url: str) -> int:
    store = kvstore.MemoryStore(name="boss")
    answered = threading.Event()

    def on_event(event: kvstore.events.StoreModificationEvent) -> None:
        if event.remote and event.key == "result":
            print(f"boss: got {event.key!r} {event.metadata}", flush=True)
            answered.set()

    with store, RedisRelay(store, url, channel=CHANNEL) as relay, store.subscribe(on_event):
        if not relay.wait_ready(10):
            print("boss: cannot reach Redis", flush=True)
            return 1
        child = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", url],
                                 stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None
        try:
            if child.stdout.readline().strip() != "ready":  # the worker is listening
                print("boss: the worker did not start", flush=True)
                return 1
            store.set("job", (b"some work", {"n": 1}))
            ok = answered.wait(10)
            out, _ = child.communicate(timeout=10)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        print(out, end="", flush=True)
    return 0 if ok and child.returncode == 0 else 1


if __name__ == "__main__":
    args = sys.argv[1:]
    role = boss
    if args and args[0] == "--worker":
        role, args = worker, args[1:]
    url = args[0] if args else os.environ.get("KVSTORE_REDIS_URL", "redis://127.0.0.1:6379/0")
    sys.exit(role(url))
