"""``store.events()``: event streams you pull, with ``for``, ``get(timeout=)`` and ``async for``.

Filesystem tests run a real second process writing the same directory; every wait has a
deadline.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, Iterator, List

import pytest

import kvstore
from kvstore import testing
from kvstore.errors import EventsOverflowError, JournalGapError, NotConnectedError, StoreError
from kvstore.events import StoreSetEvent
from kvstore.streams import EventStream, JournalSource

ROOT = Path(__file__).resolve().parent.parent

# The writer: sets PREFIX0000 .. PREFIX{N-1} ({"n": i}); with a GO file, it stops after
# FIRST writes, creates GO + ".ready" and waits for GO before writing the rest.
WRITER = textwrap.dedent(
    """
    import io, json, os, sys, time
    import kvstore

    path, prefix, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    go, first = (sys.argv[4], int(sys.argv[5])) if len(sys.argv) > 4 else (None, n)
    store = kvstore.FileSystemStore(path)
    store.connect()
    for i in range(n):
        if i == first:
            open(go + ".ready", "w").close()
            deadline = time.monotonic() + 60
            while not os.path.exists(go):
                if time.monotonic() > deadline:
                    raise SystemExit("nobody said go")
                time.sleep(0.005)
        store.set(f"{prefix}{i:04d}", (io.BytesIO(b"x"), {"n": i}))
    print(json.dumps({"origin": store.origin, "last": store.last_sequence()}))
    store.disconnect()
    """
)


@pytest.fixture
def fs_store(tmp_path: Path) -> Iterator[kvstore.FileSystemStore]:
    s = kvstore.FileSystemStore(tmp_path / "store", create=True)
    s.connect()
    yield s
    s.disconnect()


@pytest.fixture
def memory_store() -> Iterator[kvstore.MemoryStore]:
    s = kvstore.MemoryStore()
    s.connect()
    yield s
    s.disconnect()


@pytest.fixture(params=["memory", "filesystem"])
def any_store(request: Any, tmp_path: Path) -> Iterator[Any]:
    if request.param == "memory":
        s: Any = kvstore.MemoryStore()
    else:
        s = kvstore.FileSystemStore(tmp_path / "any", create=True)
    s.connect()
    yield s
    s.disconnect()


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[Any]:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    started: List[subprocess.Popen] = []

    def start(path: str, *args: Any) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, str(script), path, *map(str, args)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def finish(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, f"the writer failed:\n{err}"
    return json.loads(out.strip().splitlines()[-1])


def put(store: Any, key: str, **metadata: Any) -> None:
    store.set(key, (io.BytesIO(b"v"), metadata))


def take(stream: EventStream, count: int, timeout: float = 30.0) -> List[Any]:
    """``count`` events from ``stream`` within ``timeout`` seconds, or fail saying what came."""
    deadline = time.monotonic() + timeout
    out: List[Any] = []
    while len(out) < count:
        event = stream.get(timeout=max(0.0, deadline - time.monotonic()))
        if event is None:
            raise AssertionError(f"{len(out)} of {count} events after {timeout} s "
                                 f"(closed={stream.closed}); last {[e.key for e in out[-3:]]}")
        out.append(event)
    return out


# ---------------------------------------------------------------- the filesystem: the journal


def test_own_and_another_process_writes_arrive_once_in_order(fs_store, writer):
    with fs_store.events() as stream:
        put(fs_store, "mine/1", n=1)
        result = finish(writer(fs_store.path, "theirs/", 2))
        put(fs_store, "mine/2", n=2)
        events = take(stream, 4)
        assert stream.get(timeout=0.3) is None  # nothing twice
    assert [(e.key, e.remote) for e in events] == [
        ("mine/1", False), ("theirs/0000", True), ("theirs/0001", True), ("mine/2", False)]
    assert [e.origin for e in events] == [fs_store.origin, result["origin"], result["origin"], fs_store.origin]
    assert [e.sequence for e in events] == [1, 2, 3, 4]
    assert stream.sequence == 4 and stream.closed


def test_since_replays_then_goes_live_across_a_running_writer(fs_store, writer, tmp_path):
    go = tmp_path / "go"
    proc = writer(fs_store.path, "k/", 1200, go, 600)
    testing.wait_for(lambda: (tmp_path / "go.ready").exists(), 60, "the writer's first half")
    # A batch smaller than the backlog: the replay takes several reads, the live part more.
    with fs_store.events(since=0) as stream:
        stream._source._follower.batch_size = 97
        first = take(stream, 100)
        assert proc.poll() is None
        go.touch()  # the writer goes on while the stream is still replaying
        rest = take(stream, 1100, timeout=120)
        assert stream.get(timeout=0.3) is None
    finish(proc)
    events = first + rest
    assert [e.sequence for e in events] == list(range(1, 1201))
    assert [(e.key, e.metadata["n"]) for e in events] == [(f"k/{i:04d}", i) for i in range(1200)]
    assert all(e.remote for e in events)


def test_pattern_and_kinds_filter(fs_store):
    with fs_store.events("a/*", kinds=("set", "delete")) as stream:
        put(fs_store, "b/1")
        put(fs_store, "a/1")
        fs_store.update_metadata("a/1", {"x": 1})
        fs_store.delete("a/1")
        events = take(stream, 2)
    assert [(e.action, e.key) for e in events] == [("set", "a/1"), ("delete", "a/1")]


def test_the_reader_moves_past_rows_that_do_not_match(fs_store):
    with fs_store.events("a/*") as stream:
        put(fs_store, "a/1")
        put(fs_store, "b/1")
        put(fs_store, "b/2")
        assert [e.key for e in take(stream, 1)] == ["a/1"]
        assert stream.get(timeout=0.3) is None
        # Past the rows it skipped, not reading them again and again.
        assert stream._source.position == fs_store.last_sequence() == 3
        put(fs_store, "a/2")
        assert [(e.key, e.sequence) for e in take(stream, 1)] == [("a/2", 4)]


def test_a_commit_published_after_its_wake_up_arrives_without_another(tmp_path, monkeypatch):
    # inotify reports the write of SQLite's log, which comes a moment before the commit is
    # visible to readers (much later when the writer is descheduled in between): here the
    # journal shows nothing for 50 ms after the commit. The reader must look again by
    # itself, sooner and sooner, not wait for its 30 s poll (or for the checkpoint, which
    # writes in the directory again, a minute later here).
    monkeypatch.setattr(JournalSource, "poll_interval", 30.0)
    fs_store = kvstore.FileSystemStore(tmp_path / "store", create=True)
    fs_store.checkpoint_idle = 60.0
    fs_store.connect()
    hidden_until = [0.0]
    changes_since = fs_store.changes_since

    def late(sequence: int, limit: int = 1000) -> List[Any]:
        return [] if time.monotonic() < hidden_until[0] else changes_since(sequence, limit)

    monkeypatch.setattr(fs_store, "changes_since", late)
    try:
        with fs_store.events() as stream:
            assert stream.get(timeout=0.2) is None  # the reader waits, live
            hidden_until[0] = time.monotonic() + 0.05
            put(fs_store, "k")
            t0 = time.monotonic()
            event = stream.get(timeout=10)
            elapsed = time.monotonic() - t0
    finally:
        fs_store.disconnect()
    assert event is not None and event.key == "k"
    assert elapsed < 5


def test_fifty_unread_writes_all_arrive_whatever_maxsize(fs_store):
    with fs_store.events(maxsize=10) as stream:
        for i in range(50):
            put(fs_store, f"k/{i:02d}", n=i)
        events = take(stream, 50)
    assert [e.metadata["n"] for e in events] == list(range(50))


def test_since_older_than_the_journal_raises(fs_store):
    fs_store.journal_keep = 10
    fs_store.journal_trim_every = 20
    for i in range(45):
        put(fs_store, f"k/{i}")
    floor = fs_store.journal_floor()
    assert floor > 0
    with pytest.raises(JournalGapError) as info:
        fs_store.events(since=floor - 1)
    assert isinstance(info.value, StoreError) and info.value.floor == floor
    assert kvstore.watch.JournalGapError is JournalGapError
    with fs_store.events(since=floor) as stream:  # accepting the gap
        assert take(stream, 45 - floor)[0].sequence == floor + 1


def test_a_reader_fallen_behind_the_floor_gets_journal_gap_error(fs_store):
    fs_store.journal_keep = 10
    fs_store.journal_trim_every = 20
    stream = fs_store.events()
    for i in range(45):
        put(fs_store, f"k/{i}")
    with pytest.raises(JournalGapError):
        stream.get(timeout=5)
    assert stream.closed
    with pytest.raises(JournalGapError):  # kept: never taken for an end
        stream.get(timeout=0)


def test_since_ahead_of_the_journal_and_bad_arguments(fs_store, memory_store):
    with pytest.raises(ValueError, match="ahead of the journal"):
        fs_store.events(since=5)
    for bad in (-1, True, "3"):
        with pytest.raises(ValueError, match="since"):
            fs_store.events(since=bad)
    with pytest.raises(ValueError, match="change journal"):
        memory_store.events(since=0)
    with pytest.raises(ValueError, match="maxsize"):
        memory_store.events(maxsize=0)
    with pytest.raises(ValueError, match="kinds"):
        memory_store.events(kinds=("set", "rename"))
    with pytest.raises(NotConnectedError):
        kvstore.MemoryStore().events()


def test_polling_when_watchdog_is_missing(fs_store, writer, monkeypatch):
    monkeypatch.setitem(sys.modules, "watchdog.observers", None)
    with fs_store.events() as stream:
        assert stream._source._follower._observer is None
        finish(writer(fs_store.path, "p/", 3))
        assert [e.key for e in take(stream, 3, timeout=10)] == ["p/0000", "p/0001", "p/0002"]


def test_a_vanished_directory_is_an_error(fs_store):
    import shutil

    with fs_store.events() as stream:
        shutil.rmtree(fs_store.path)
        with pytest.raises(StoreError, match="disappeared"):
            stream.get(timeout=10)


# ---------------------------------------------------------------- other backends: the signals


def test_memory_stream_has_own_and_bridge_delivered_events(memory_store):
    with memory_store.events("k*") as stream:
        put(memory_store, "k1")
        memory_store.dispatch(StoreSetEvent(store=memory_store, origin="elsewhere", timestamp=1.0,
                                            remote=True, key="k2", metadata={"via": "relay"}))
        put(memory_store, "other")
        events = take(stream, 2)
        assert stream.get(timeout=0.05) is None
    assert [(e.key, e.remote) for e in events] == [("k1", False), ("k2", True)]


def test_memory_overflow_is_raised_never_silent(memory_store):
    with memory_store.events(maxsize=10) as stream:
        for i in range(10):
            put(memory_store, f"k/{i}")
        assert len(take(stream, 10)) == 10  # maxsize unread is fine
        for i in range(11):
            put(memory_store, f"k/{i}")
        with pytest.raises(EventsOverflowError, match="maxsize=10"):
            stream.get(timeout=1)
        with pytest.raises(EventsOverflowError):
            next(stream)


# ---------------------------------------------------------------- ending: close, disconnect


def _iterate_in_thread(stream: EventStream) -> Any:
    seen: List[Any] = []
    thread = threading.Thread(target=lambda: seen.extend(stream), name="test-iterate")
    thread.start()
    return thread, seen


def test_close_from_another_thread_ends_a_blocked_iteration(any_store):
    stream = any_store.events()
    thread, seen = _iterate_in_thread(stream)
    put(any_store, "one")
    testing.wait_for(lambda: len(seen) == 1, 10, "the first event")
    assert thread.is_alive()  # blocked waiting for the next one
    stream.close()
    thread.join(10)
    assert not thread.is_alive() and [e.key for e in seen] == ["one"]
    assert stream.get() is None and stream.closed
    stream.close()  # again: nothing to do


def test_the_store_disconnecting_ends_iteration(any_store):
    stream = any_store.events()
    thread, seen = _iterate_in_thread(stream)
    put(any_store, "one")
    testing.wait_for(lambda: len(seen) == 1, 10, "the first event")
    any_store.disconnect()
    thread.join(10)
    assert not thread.is_alive() and stream.closed


# ---------------------------------------------------------------- asyncio


def test_async_for_never_blocks_the_loop_and_cancelling_ends_it(any_store):
    async def main() -> None:
        stream = any_store.events()
        got: List[Any] = []

        async def consume() -> None:
            async for event in stream:
                got.append(event)

        task = asyncio.create_task(consume())
        ticks = 0
        deadline = time.monotonic() + 10
        while ticks < 50:  # the loop runs while the stream waits
            await asyncio.sleep(0.005)
            ticks += 1
            assert time.monotonic() < deadline and not task.done()
        put(any_store, "a")
        put(any_store, "b")
        while len(got) < 2:
            assert time.monotonic() < deadline, got
            await asyncio.sleep(0.005)
        assert [e.key for e in got] == ["a", "b"]
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)
        assert stream.closed

    asyncio.run(main())


def test_async_for_ends_when_closed(memory_store):
    async def main() -> List[str]:
        async with memory_store.events() as stream:
            loop = asyncio.get_running_loop()
            loop.call_later(0.05, put, memory_store, "x")
            loop.call_later(0.1, stream.close)
            return [e.key async for e in stream]

    assert asyncio.run(main()) == ["x"]


# ---------------------------------------------------------------- the examples


@pytest.mark.parametrize("name", ["stream.py", "async_stream.py"])
def test_stream_examples_run(name, tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / name), str(tmp_path / "s")],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "set jobs/0001 remote=True" in lines
    assert "set jobs/0002 remote=False" in lines
    assert lines[-1] == "done"
