"""Figures for the Redis relay, measured against raw redis-py in the same run.

Usage::

    python bench/bench_relay.py [--burst N] [--paced N] [--sets N] [--rounds N] [--pairs-only]

Starts its own redis-server on 127.0.0.1 (tests/redis_server.py) and prints:

1. events/s and p50/p99 latency between two processes: a store + relay writing
   ``set_metadata`` in this process, a store + relay receiving in a child process, next to
   the same relay fed events through the signal bus (``store.dispatch`` of the event
   ``set_metadata`` would send: what the relay costs without the store's write), next to
   ``set_metadata`` alone with a no-op receiver (what producing the events costs), next to
   raw redis-py ``PUBLISH`` -> pub/sub receive of a message of the same size, and next to
   pipelined redis-py (the burst sent ``PIPELINE`` messages per round trip, what a
   batching sender can reach; its paced sends are single PUBLISHes). Throughput comes from
   a burst (as fast as the sender goes); latency from paced sends (one per ms), measured
   from the write (the event's timestamp) to the remote receiver being called. With
   ``--rounds N`` they are run N times, interleaved, on one server. ``tx cpu`` / ``rx cpu``
   are the CPU time of the sending / receiving process (every thread) over the burst, per
   event.
2. the cost of an attached relay on ``MemoryStore.set`` of a 100-byte value, as a ratio to
   the same loop without a relay (and with a no-op subscriber, the price of having
   events at all).
3. the same on ``FileSystemStore.set`` (the embedded default), in steady state: two store
   instances on one directory take turns, one with a relay attached (``overhead_fs``).

Goals (issue 5): relay >= 50% of raw throughput, p50 < 2 ms on loopback, set overhead < 20%.
Goal (issue 16): relay >= 50k events/s between two processes, p50 < 2 ms at one event per ms.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import kvstore  # noqa: E402
from kvstore import signals  # noqa: E402
from kvstore.events import StoreSetEvent  # noqa: E402
from kvstore.relay import RedisRelay  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

CHANNEL = "bench"
PAD = "x" * 160  # raw messages as long as the relay's JSON for the same event
PIPELINE = 256  # messages per round trip of the pipelined redis-py burst
MODES = ("raw", "pipelined", "relay_bus", "relay")
RELAY_MODES = ("relay_bus", "relay")


# ----------------------------------------------------------------- child side

class Collector:
    """Per phase: count, latencies (s), first send and last receive times, and the CPU
    time of the whole process (every thread) from ``ready`` to the phase's last event."""

    def __init__(self, counts: Dict[str, int]) -> None:
        self.counts = counts
        self.lat: Dict[str, List[float]] = {p: [] for p in counts}
        self.first_sent: Dict[str, float] = {}
        self.last_rx: Dict[str, float] = {}
        self.cpu: Dict[str, float] = {}
        self.cpu_start = time.process_time()
        self.done = {p: threading.Event() for p in counts}

    def ready(self) -> None:
        self.cpu_start = time.process_time()
        print("ready", flush=True)

    def add(self, phase: str, sent: float) -> None:
        now = time.time()
        self.lat[phase].append(now - sent)
        self.first_sent.setdefault(phase, sent)
        self.last_rx[phase] = now
        if len(self.lat[phase]) == self.counts[phase]:
            self.cpu[phase] = time.process_time() - self.cpu_start
            print(f"done {phase}", flush=True)
            self.done[phase].set()

    def result(self) -> Dict[str, Any]:
        out = {}
        for phase, lat in self.lat.items():
            span = self.last_rx.get(phase, 0) - self.first_sent.get(phase, 0)
            out[phase] = {"count": len(lat), "span": span, "lat": sorted(lat),
                          "cpu": self.cpu.get(phase, 0.0)}
        return out


def child(mode: str, url: str, burst: int, paced: int) -> None:
    collector = Collector({"burst": burst, "paced": paced})
    if mode not in RELAY_MODES:
        import redis

        client = redis.Redis.from_url(url)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(CHANNEL)
        while pubsub.get_message(timeout=1.0) is None and not pubsub.subscribed:
            pass
        collector.ready()
        while not collector.done["paced"].is_set():
            message = pubsub.get_message(timeout=5.0)
            if message is None:
                break
            data = json.loads(message["data"])
            collector.add(data["phase"], data["t"])
        pubsub.close()
        client.close()
    else:
        store = kvstore.MemoryStore(name="child")

        def on_event(event: Any) -> None:
            if event.remote:
                collector.add(event.metadata["phase"], event.timestamp)

        with store, RedisRelay(store, url, channel=CHANNEL) as relay, store.subscribe(on_event):
            relay.wait_ready(10)
            collector.ready()
            collector.done["burst"].wait(60)
            collector.done["paced"].wait(60)
    print(json.dumps(collector.result()), flush=True)


# ---------------------------------------------------------------- parent side

def spawn(mode: str, url: str, burst: int, paced: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--child", mode, url,
                             str(burst), str(paced)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != "ready":
        proc.kill()
        raise RuntimeError(f"child {mode} did not start: {line!r}")
    return proc


def expect(proc: subprocess.Popen, line: str) -> None:
    assert proc.stdout is not None
    got = proc.stdout.readline().strip()
    if got != line:
        raise RuntimeError(f"child said {got!r}, expected {line!r}")


def run_pair(mode: str, url: str, burst: int, paced: int) -> Dict[str, Any]:
    proc = spawn(mode, url, burst, paced)
    try:
        if mode not in RELAY_MODES:
            import redis

            client = redis.Redis.from_url(url)
            pipe = client.pipeline(transaction=False)

            def send(phase: str, i: int) -> None:
                payload = json.dumps({"phase": phase, "i": i, "t": time.time(), "pad": PAD})
                if mode == "raw" or phase == "paced":
                    client.publish(CHANNEL, payload)
                    return
                pipe.publish(CHANNEL, payload)
                if len(pipe) >= PIPELINE or i == burst - 1:
                    pipe.execute()
        else:
            store = kvstore.MemoryStore(name="parent")
            store.connect()
            # "block": measure what the relay sustains, rather than what it drops
            relay = RedisRelay(store, url, channel=CHANNEL, on_full="block").start()
            relay.wait_ready(10)

            if mode == "relay":
                def send(phase: str, i: int) -> None:
                    store.set_metadata(f"key/{i}", {"phase": phase, "i": i})
            else:
                origin = store.origin

                # The event set_metadata would send, made and sent on the store's signal
                # without the store's write: what the relay alone costs.
                def send(phase: str, i: int) -> None:
                    store.dispatch(StoreSetEvent(store=store, origin=origin, key=f"key/{i}",
                                                 metadata={"phase": phase, "i": i}))

        cpu = time.process_time()
        for i in range(burst):
            send("burst", i)
        expect(proc, "done burst")
        cpu = time.process_time() - cpu
        next_at = time.perf_counter()
        for i in range(paced):
            next_at += 0.001
            # pace the workload (sleeping, so other threads run, as in a real program)
            time.sleep(max(0.0, next_at - time.perf_counter()))
            send("paced", i)
        expect(proc, "done paced")
        assert proc.stdout is not None
        result = json.loads(proc.stdout.readline())
        result["burst"]["sender_cpu"] = cpu
        proc.wait(30)
    finally:
        if mode not in RELAY_MODES:
            client.close()
        else:
            relay.stop()
            store.disconnect()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return result


def pct(sorted_values: List[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def time_sets(store: Any, n: int) -> float:
    value = b"x" * 100
    t = time.perf_counter()
    for i in range(n):
        store.set(f"key/{i % 100}", (value, {"i": i}))
    return time.perf_counter() - t


def _noop(sender: Any, **kwargs: Any) -> None:
    pass


def overhead(url: str, n: int, rounds: int = 5) -> Dict[str, Any]:
    """Best-of-``rounds`` seconds for ``n`` sets per configuration, rounds interleaved."""
    configs: Dict[str, Any] = {
        "bare": None,
        "subscriber": "subscriber",
        "relay": {},
        "relay_block": {"on_full": "block"},
        "relay_allprogress": {"on_full": "block", "progress_min_bytes": 0},
        "relay_noprogress": {"progress": False, "on_full": "block"},
    }
    best = {name: float("inf") for name in configs}
    dropped = {name: 0 for name in configs}
    store = kvstore.MemoryStore()
    store.connect()
    time_sets(store, n // 10)  # warm up
    for _ in range(rounds):
        for name, config in configs.items():
            if config is None:
                best[name] = min(best[name], time_sets(store, n))
            elif config == "subscriber":
                with signals.store_set.connected_to(_noop, sender=store), \
                        signals.store_update.connected_to(_noop, sender=store):
                    best[name] = min(best[name], time_sets(store, n))
            else:
                relay = RedisRelay(store, url, channel="bench-set", flush_timeout=30, **config)
                with relay:
                    relay.wait_ready(10)
                    best[name] = min(best[name], time_sets(store, n))
                dropped[name] += relay.stats["dropped"]
    store.disconnect()
    return {"best": best, "dropped": dropped}


def settle(relay: RedisRelay, published: int, timeout: float = 10.0) -> None:
    """Wait until the relay has published ``published`` events and read its own messages
    back, so none of its work spills into the next timed block."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = relay.stats
        if stats["published"] >= published and stats["received"] >= stats["messages"]:
            return
        time.sleep(0.001)
    raise RuntimeError(f"relay did not settle: {relay.stats}")


def overhead_fs(url: str, n: int = 1000, pairs: int = 30, **options: Any) -> Dict[str, Any]:
    """Seconds per set on a FileSystemStore, bare and with a relay attached (``options``).

    The disk of a shared machine has slow spells, so two store instances on one directory
    take turns in blocks of ``n`` sets: one bare, one with a relay that stays started (so
    its figure is the steady state). Which goes first alternates; the figure is the median
    of the ratios of the ``pairs`` neighbouring blocks, in wall time and in CPU time of the
    whole process (every thread). The relay's work left after a block (the last batch,
    up to ``max_linger``) is waited for (:func:`settle`): outside the wall time, so it
    does not spill into the next bare block, but inside the CPU time, which so counts
    everything the relay did for the block's events.
    """
    import statistics
    import tempfile

    best = {"bare": float("inf"), "relay": float("inf")}
    ratios, cpu_ratios = [], []
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        path = os.path.join(tmp, "s")
        with kvstore.FileSystemStore(path, create=True) as bare, \
                kvstore.FileSystemStore(path) as attached, \
                RedisRelay(attached, url, channel="bench-fs", flush_timeout=30,
                           **options) as relay:
            relay.wait_ready(10)
            stores = {"bare": bare, "relay": attached}
            for store in stores.values():
                time_sets(store, n)
            sent = n
            settle(relay, sent)
            for i in range(pairs):
                took: Dict[str, float] = {}
                cpu: Dict[str, float] = {}
                for name in (("bare", "relay") if i % 2 == 0 else ("relay", "bare")):
                    c = time.process_time()
                    took[name] = time_sets(stores[name], n) / n
                    end = time.monotonic()
                    best[name] = min(best[name], took[name])
                    if name == "relay":
                        settle(relay, sent + n)
                        sent += n
                    cpu[name] = time.process_time() - c
                    # Every block follows the same pause, whichever went before it.
                    time.sleep(max(0.0, end + 0.05 - time.monotonic()))
                ratios.append(took["relay"] / took["bare"])
                cpu_ratios.append(cpu["relay"] / cpu["bare"])
    return {**best, "ratio": statistics.median(ratios), "spread": (min(ratios), max(ratios)),
            "cpu_ratio": statistics.median(cpu_ratios)}


def store_alone(n: int) -> Dict[str, float]:
    """What producing the events costs without a relay: ``n`` ``set_metadata`` (as the
    relay rows write them) on a MemoryStore with a no-op receiver, so events are built."""
    store = kvstore.MemoryStore(name="alone")
    store.connect()
    with signals.store_set.connected_to(_noop, sender=store), \
            signals.store_update.connected_to(_noop, sender=store):
        wall, cpu = time.perf_counter(), time.process_time()
        for i in range(n):
            store.set_metadata(f"key/{i}", {"phase": "burst", "i": i})
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    store.disconnect()
    return {"rate": n / wall, "cpu_us": cpu / n * 1e6}


def pairs(url: str, burst: int, paced: int, rounds: int) -> None:
    """Raw, pipelined, relay fed through the bus, relay fed by store writes, and the store
    writes alone, ``rounds`` times interleaved; a table per round and the medians."""
    import statistics

    labels = {"raw": "raw redis-py PUBLISH", "pipelined": f"redis-py pipelined x{PIPELINE}",
              "relay_bus": "RedisRelay, events via bus", "relay": "RedisRelay set_metadata"}
    runs: Dict[str, List[Dict[str, float]]] = {mode: [] for mode in MODES + ("alone",)}
    for n in range(rounds):
        rows = {}
        for mode in MODES:
            r = run_pair(mode, url, burst, paced)
            b, p = r["burst"], r["paced"]
            rows[mode] = {
                "rate": b["count"] / b["span"],
                "p50": pct(p["lat"], 0.50) * 1e3,
                "p99": pct(p["lat"], 0.99) * 1e3,
                "burst_p50": pct(b["lat"], 0.50) * 1e3,
                "lost": burst + paced - b["count"] - p["count"],
                "tx_cpu": b["sender_cpu"] / burst * 1e6,
                "rx_cpu": b["cpu"] / burst * 1e6,
            }
            runs[mode].append(rows[mode])
        alone = store_alone(burst)
        runs["alone"].append(alone)
        print(f"round {n + 1}/{rounds}:")
        print(f"  {'':29}{'events/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'burst p50':>11}{'lost':>6}"
              f"{'tx cpu us':>11}{'rx cpu us':>11}")
        for mode in MODES:
            row = rows[mode]
            print(f"  {labels[mode]:29}{row['rate']:10.0f}{row['p50']:9.3f}{row['p99']:9.3f}"
                  f"{row['burst_p50']:11.2f}{row['lost']:6d}{row['tx_cpu']:11.1f}"
                  f"{row['rx_cpu']:11.1f}")
        print(f"  {'set_metadata alone (no relay)':29}{alone['rate']:10.0f}{'':44}"
              f"{alone['cpu_us']:11.1f}")
        print(f"  relay via bus / pipelined {rows['relay_bus']['rate'] / rows['pipelined']['rate']:.2f}"
              f", relay set_metadata / pipelined {rows['relay']['rate'] / rows['pipelined']['rate']:.2f}"
              f", relay set_metadata / raw {rows['relay']['rate'] / rows['raw']['rate']:.2f}")
    med = {mode: {k: statistics.median(r[k] for r in runs[mode]) for k in runs[mode][0]}
           for mode in runs}
    print(f"medians of {rounds} (goal: >= 50000 events/s, p50 < 2 ms at one event per ms):")
    for mode in MODES:
        m = med[mode]
        print(f"  {labels[mode]:29}{m['rate']:8.0f} events/s  p50 {m['p50']:.3f} ms  "
              f"CPU per event: sender {m['tx_cpu']:.1f} us, receiver {m['rx_cpu']:.1f} us")
    a, bus, full = med["alone"], med["relay_bus"], med["relay"]
    print(f"  {'set_metadata alone':29}{a['rate']:8.0f} events/s  CPU {a['cpu_us']:.1f} us/event")
    print(f"  the relay alone costs the sender {bus['tx_cpu']:.1f} us/event (fed through the bus;"
          f" making each event included) and the receiver {bus['rx_cpu']:.1f}; fed by store "
          f"writes, the sender spends {full['tx_cpu']:.1f}, of which the store's "
          f"set_metadata alone is {a['cpu_us']:.1f}")
    print("  tx/rx cpu: CPU time of the whole sending / receiving process (every thread) over "
          "the burst, per event")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burst", type=int, default=20000)
    parser.add_argument("--paced", type=int, default=2000)
    parser.add_argument("--sets", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--pairs-only", action="store_true",
                        help="only the two-process figures (not the set overhead)")
    args = parser.parse_args()
    # The relay logs each burst of drops; the counts are printed below instead.
    logging.getLogger("kvstore.relay").setLevel(logging.ERROR)
    with RedisServer() as server:
        print(f"redis-server on {server.host}:{server.port}; burst={args.burst} "
              f"paced={args.paced} sets={args.sets}")
        pairs(server.url, args.burst, args.paced, args.rounds)
        if args.pairs_only:
            return

        o = overhead(server.url, args.sets)
        best, dropped = o["best"], o["dropped"]
        print(f"MemoryStore.set of 100 B, {args.sets} sets, best of 5 interleaved rounds:")
        labels = {
            "bare": "no receiver",
            "subscriber": "a no-op subscriber",
            "relay": "relay, defaults (drop_oldest)",
            "relay_block": "relay, on_full='block'",
            "relay_allprogress": "relay, progress_min_bytes=0",
            "relay_noprogress": "relay, progress=False, block",
        }
        for name, label in labels.items():
            print(f"  {label:32}{best[name] / args.sets * 1e6:8.1f} us/set"
                  f"   x{best[name] / best['bare']:.2f} bare"
                  f"   x{best[name] / best['subscriber']:.2f} subscriber"
                  + (f"   ({dropped[name]} events dropped)" if name.startswith("relay") else ""))
        # Each message costs the writer GIL hand-offs to the relay's threads: under a
        # sustained stream the relay waits up to max_linger to batch events (that much
        # latency under load, see "burst p50" above); max_linger=linger turns that off.
        for label, options in (("defaults", {}), ("max_linger=0.001", {"max_linger": 0.001})):
            fs = overhead_fs(server.url, **options)
            print(f"FileSystemStore.set of 100 B (the embedded default), relay {label}: "
                  f"x{fs['ratio']:.2f} wall, x{fs['cpu_ratio']:.2f} CPU (medians of 30 "
                  f"alternating pairs of blocks; wall {fs['spread'][0]:.2f}..{fs['spread'][1]:.2f});"
                  f" best block {fs['bare'] * 1e6:.1f} us/set bare, {fs['relay'] * 1e6:.1f} "
                  "with the relay")
        print("goal: relay overhead on set < 20% (x1.20)")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    else:
        main()
