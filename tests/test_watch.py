"""FileSystemWatcher: changes made by another process arrive as remote events.

Every test here runs a real second process (``sys.executable`` running the writer script
below) against the same store directory, and waits with deadlines, never bare sleeps.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Tuple

import pytest

import kvstore
from kvstore import signals, testing
from kvstore.errors import NotConnectedError, StoreError
from kvstore.stores.filesystem import FileSystemStore

pytest.importorskip("watchdog")

from kvstore.watch import FileSystemWatcher, JournalGapError, JournalGapWarning

ROOT = Path(__file__).resolve().parent.parent
MB = 1024 * 1024

# The writer: applies a JSON list of operations to the store, each one its own commit
# (except "flash_tx"), then prints its origin and the journal's last sequence.
WRITER = textwrap.dedent(
    """
    import io, json, sys
    import kvstore
    import kvstore.stores.filesystem as fs

    path, ops = sys.argv[1], json.loads(sys.argv[2])
    store = kvstore.FileSystemStore(path)
    store.connect()
    for op, *args in ops:
        if op == "set":
            store.set(args[0], (io.BytesIO(b"x"), args[1]))
        elif op == "update":
            store.update_metadata(args[0], args[1])
        elif op == "delete":
            store.delete(args[0])
        elif op == "big":
            store.set(args[0], (io.BytesIO(bytes(args[1])), {"size": args[1]}))
        elif op == "burst":  # burst PREFIX N NKEYS: N sets of NKEYS keys, metadata {"n": i}
            prefix, n, nkeys = args
            for i in range(n):
                store.set(f"{prefix}{i % nkeys:04d}", (io.BytesIO(b"b"), {"n": i}))
        elif op == "flash_tx":  # set, update, delete of one key in a single commit
            with store.transaction("flash"):
                store.set(args[0], (io.BytesIO(b"1"), {"step": 1}))
                store.update_metadata(args[0], {"step": 2})
                store.delete(args[0])
        elif op == "keep":  # keep only this many journal rows when trimming
            store.journal_keep = args[0]
        else:
            raise SystemExit(f"unknown op {op!r}")
    print(json.dumps({"origin": store.origin, "last": store.last_sequence(),
                      "floor": store.journal_floor()}))
    store.disconnect()
    """
)


# ---------------------------------------------------------------- helpers


def expected_events(ops: List[list]) -> List[Tuple[str, str, dict]]:
    """The (kind, key, metadata) sequence a correct store journals for ``ops``."""
    state: Dict[str, dict] = {}
    out: List[Tuple[str, str, dict]] = []

    def write(key: str, metadata: dict) -> None:
        out.append(("update" if key in state else "set", key, metadata))
        state[key] = metadata

    for op, *args in ops:
        if op == "set":
            write(args[0], args[1])
        elif op == "update":
            write(args[0], {**state[args[0]], **args[1]})
        elif op == "delete":
            out.append(("delete", args[0], state.pop(args[0])))
        elif op == "big":
            write(args[0], {"size": args[1]})
        elif op == "burst":
            prefix, n, nkeys = args
            for i in range(n):
                write(f"{prefix}{i % nkeys:04d}", {"n": i})
        elif op == "flash_tx":
            write(args[0], {"step": 1})
            write(args[0], {"step": 2})
            out.append(("delete", args[0], state.pop(args[0])))
    return out


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "a condition") -> Any:
    return testing.wait_for(predicate, timeout, what)


class Writer:
    """The writer script in a second process."""

    def __init__(self, script: Path, path: str, ops: List[list]) -> None:
        self.proc = subprocess.Popen([sys.executable, str(script), path, json.dumps(ops)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, "PYTHONPATH": str(ROOT)})

    def result(self, timeout: float = 60.0) -> Dict[str, Any]:
        out, err = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, f"the writer failed:\n{err}"
        return json.loads(out.strip().splitlines()[-1])


@pytest.fixture
def writer_script(tmp_path: Path) -> Path:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    return script


@pytest.fixture
def run_writer(writer_script: Path) -> Iterator[Callable[..., Any]]:
    started: List[Writer] = []

    def run(path: str, ops: List[list], wait: bool = True) -> Any:
        writer = Writer(writer_script, path, ops)
        started.append(writer)
        return writer.result() if wait else writer

    yield run
    for writer in started:  # a failed test must not leave a writer behind
        if writer.proc.poll() is None:
            writer.proc.kill()
            writer.proc.communicate()


class Recorder:
    """Records (sender, event) of the modification signals of one store; waits with a deadline."""

    def __init__(self, store: FileSystemStore) -> None:
        self.store = store
        self.calls: List[Tuple[Any, Any]] = []
        self.cond = threading.Condition()
        self._stack = contextlib.ExitStack()
        for signal in signals.MODIFICATION_SIGNALS.values():
            self._stack.enter_context(signal.connected_to(self, sender=store))

    def __call__(self, sender: Any, event: Any = None, **_: Any) -> None:
        with self.cond:
            self.calls.append((sender, event))
            self.cond.notify_all()

    @property
    def events(self) -> List[Any]:
        with self.cond:
            return [e for _, e in self.calls]

    def remote(self) -> List[Any]:
        return [e for e in self.events if e.remote]

    def wait_for(self, predicate: Callable[[List[Any]], bool], timeout: float = 30.0,
                 what: str = "events") -> List[Any]:
        """Wait until ``predicate(events)`` holds; fail with what arrived after ``timeout``."""
        with self.cond:
            ok = self.cond.wait_for(lambda: predicate([e for _, e in self.calls]), timeout)
            events = [e for _, e in self.calls]
        if not ok:
            tail = [(e.action, e.key) for e in events[-5:]]
            raise AssertionError(f"timed out after {timeout} s waiting for {what}; "
                                 f"{len(events)} events, last {tail}")
        return events

    def wait_for_key(self, key: str, timeout: float = 30.0) -> List[Any]:
        return self.wait_for(lambda evs: any(e.key == key and e.remote for e in evs), timeout,
                             f"a remote event for {key!r}")

    def close(self) -> None:
        self._stack.close()


def triples(events: List[Any]) -> List[Tuple[str, str, dict]]:
    return [(e.action, e.key, e.metadata) for e in events]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FileSystemStore]:
    s = FileSystemStore(tmp_path / "store", create=True)
    s.connect()
    yield s
    s.disconnect()


@pytest.fixture
def recorder(store: FileSystemStore) -> Iterator[Recorder]:
    r = Recorder(store)
    yield r
    r.close()


# ---------------------------------------------------------------- the contract

ODD_KEYS = ["a/b/c", "a/b", "..", "€" * 255, "with space", "new\nline", "%*?[]", " lead/trail "]


def test_every_remote_change_arrives_once_in_order(store, recorder, run_writer):
    """set, set again, update_metadata, delete, odd keys, 30 MB, a 10,000-change burst."""
    ops: List[list] = [
        ["set", "plain", {"v": 1}],
        ["set", "plain", {"v": 2}],
        ["update", "plain", {"w": [3, {"deep": None}]}],
        ["delete", "plain"],
    ]
    for i, key in enumerate(ODD_KEYS):
        ops += [["set", key, {"key": key, "i": i}], ["update", key, {"u": "€"}]]
    ops += [["delete", "a/b/c"], ["delete", ".."], ["set", "a/b/c", {"again": True}]]
    ops += [["big", "big", 30 * MB]]
    ops += [["burst", "burst/", 10_000, 250]]
    ops += [["set", "done", {}]]
    want = expected_events(ops)

    big_sizes: List[int] = []
    with store.subscribe(lambda e: big_sizes.append(store.get(e.key).size), pattern="big"), \
            FileSystemWatcher(store, poll_interval=0.2) as watcher:
        first = store.last_sequence()
        result = run_writer(store.path, ops)
        events = recorder.wait_for(lambda evs: len(evs) >= len(want), timeout=60,
                                   what=f"{len(want)} events")
        # Anything extra would arrive right behind: ask the journal, not the clock.
        wait_until(lambda: watcher.sequence == result["last"], timeout=10,
                   what="the watcher to reach the journal's end")
        events = recorder.events

    assert triples(events) == want  # exact kinds, keys and committed metadata, in order
    assert [e.sequence for e in events] == list(range(first + 1, result["last"] + 1))
    assert all(e.remote and e.origin == result["origin"] for e in events)
    assert all(sender is store and e.store is store for sender, e in recorder.calls)
    # per key, the exact history (the burst's 250 keys: one set then 39 updates each)
    for key in ["burst/0007", "€" * 255, "a/b/c", "new\nline"]:
        assert [t for t in triples(events) if t[1] == key] == [t for t in want if t[1] == key]
    burst_7 = [e.metadata["n"] for e in events if e.key == "burst/0007"]
    assert burst_7 == list(range(7, 10_000, 250))
    # the set of the 30 MB value is sent once, after its data is readable
    assert big_sizes == [30 * MB]


def test_own_writes_are_not_echoed(store, recorder, run_writer, tmp_path):
    twin = FileSystemStore(store.path)  # another instance in this process: remote to `store`
    twin.connect()
    try:
        with FileSystemWatcher(store, poll_interval=0.2):
            store.set("mine", (io.BytesIO(b"1"), {"by": "me"}))
            store.update_metadata("mine", {"again": 1})
            twin.set("twin", (io.BytesIO(b"2"), {"by": "twin"}))
            run_writer(store.path, [["set", "theirs", {"by": "them"}], ["update", "mine", {"them": 1}],
                                    ["set", "done", {}]])
            events = recorder.wait_for_key("done")
    finally:
        twin.disconnect()
    assert [(e.action, e.key, e.remote) for e in events] == [
        ("set", "mine", False),
        ("update", "mine", False),
        ("set", "twin", True),
        ("set", "theirs", True),
        ("update", "mine", True),  # another process wrote my key: that one is remote
        ("set", "done", True),
    ]
    assert events[2].origin == twin.origin
    assert events[4].metadata == {"by": "me", "again": 1, "them": 1}


def test_set_update_delete_within_a_millisecond(store, recorder, run_writer):
    ops = [["flash_tx", "flash"],  # one commit: the three share one timestamp
           ["set", "flash2", {"step": 1}], ["update", "flash2", {"step": 2}], ["delete", "flash2"],
           ["set", "done", {}]]
    with FileSystemWatcher(store, poll_interval=0.2):
        run_writer(store.path, ops)
        events = recorder.wait_for_key("done")
    assert triples(events) == [
        ("set", "flash", {"step": 1}),
        ("update", "flash", {"step": 2}),
        ("delete", "flash", {"step": 2}),
        ("set", "flash2", {"step": 1}),
        ("update", "flash2", {"step": 2}),
        ("delete", "flash2", {"step": 2}),
        ("set", "done", {}),
    ]
    flash = events[:3]
    assert max(e.timestamp for e in flash) - min(e.timestamp for e in flash) < 0.001
    assert [e.sequence for e in events] == sorted({e.sequence for e in events})


def test_subscribe_pattern_filters_remote_events(store, recorder, run_writer):
    heard: List[Any] = []
    ops = [["set", "sensors/t1", {"c": 20}], ["set", "other/t1", {}], ["update", "sensors/t1", {"c": 21}],
           ["set", "sensors", {}], ["set", "sensors/a/b", {}], ["delete", "sensors/t1"],
           ["delete", "other/t1"], ["set", "done", {}]]
    with store.subscribe(heard.append, pattern="sensors/*", kinds=("set", "delete")), \
            FileSystemWatcher(store, poll_interval=0.2):
        run_writer(store.path, ops)
        recorder.wait_for_key("done")
    assert [(e.action, e.key, e.remote) for e in heard] == [
        ("set", "sensors/t1", True), ("set", "sensors/a/b", True), ("delete", "sensors/t1", True)]
    assert heard[-1].metadata == {"c": 21}


def test_since_resumes_after_a_restart(tmp_path, run_writer):
    path = str(tmp_path / "store")
    listener = FileSystemStore(path, create=True)
    listener.connect()
    rec = Recorder(listener)
    try:
        with FileSystemWatcher(listener, poll_interval=0.2) as watcher:
            run_writer(path, [["set", "k1", {"v": 1}], ["set", "k2", {"v": 1}]])
            rec.wait_for(lambda evs: len(evs) == 2)
        saved = watcher.sequence
    finally:
        rec.close()
        listener.disconnect()  # the listener "dies"
    assert saved is not None and saved >= 2

    missed = [["update", "k1", {"w": 2}], ["delete", "k2"], ["set", "k3", {"v": 3}]]
    run_writer(path, missed)  # nobody listens

    listener = FileSystemStore(path)  # the restarted listener
    listener.connect()
    rec = Recorder(listener)
    try:
        with FileSystemWatcher(listener, since=saved, poll_interval=0.2) as watcher:
            backlog = rec.wait_for(lambda evs: len(evs) >= 3, what="the missed changes")
            assert triples(backlog) == [("update", "k1", {"v": 1, "w": 2}), ("delete", "k2", {"v": 1}),
                                        ("set", "k3", {"v": 3})]
            run_writer(path, [["set", "k4", {}]])  # then the live ones
            events = rec.wait_for_key("k4")
            # the same watcher, stopped and started again, resumes where it stopped
            watcher.stop()
            run_writer(path, [["delete", "k4"]])
            watcher.start()
            events = rec.wait_for(lambda evs: bool(evs) and evs[-1].action == "delete",
                                  what="the delete of k4")
        assert triples(events) == triples(backlog) + [("set", "k4", {}), ("delete", "k4", {})]
        assert [e.sequence for e in events] == list(range(saved + 1, saved + 6))
        # since=0 replays the whole journal
        with FileSystemWatcher(listener, since=0, poll_interval=0.2):
            events = rec.wait_for(lambda evs: len(evs) == 5 + saved + 5, what="the whole journal")
        assert triples(events[5:]) == [("set", "k1", {"v": 1}), ("set", "k2", {"v": 1})] + triples(events[:5])
    finally:
        rec.close()
        listener.disconnect()


def test_since_older_than_the_journal_raises(store, recorder, run_writer):
    # keep 100 rows: the writer's 1000th commit trims the journal up to sequence 900
    result = run_writer(store.path, [["keep", 100], ["burst", "k", 1000, 10]])
    assert result["floor"] == store.journal_floor() == 900
    watcher = FileSystemWatcher(store, since=5)
    with pytest.raises(JournalGapError, match="changes 6 to 900") as info:
        watcher.start()
    assert (info.value.first, info.value.last, info.value.floor) == (6, 900, 900)
    assert not watcher.running
    with FileSystemWatcher(store, since=info.value.floor, poll_interval=0.2):
        events = recorder.wait_for(lambda evs: len(evs) == 100)
    assert [e.sequence for e in events] == list(range(901, 1001))


def test_a_watcher_that_falls_behind_warns_of_the_gap(store, recorder, run_writer):
    gate = threading.Event()
    first_seen = threading.Event()

    def slow(sender: Any, event: Any = None) -> None:
        if not first_seen.is_set():
            first_seen.set()
            gate.wait(60)  # hold the watcher while the writer runs past the journal's end

    with signals.store_set.connected_to(slow, sender=store):
        watcher = FileSystemWatcher(store, poll_interval=0.2)
        with watcher:
            writer = run_writer(store.path, [["keep", 100], ["burst", "k", 2500, 10]], wait=False)
            assert first_seen.wait(30)
            result = writer.result()
            assert result["floor"] == 1900
            with pytest.warns(JournalGapWarning) as warned:
                gate.set()
                events = recorder.wait_for(lambda evs: evs and evs[-1].sequence == 2500,
                                           what="the end of the burst")
    gap = warned[0].message
    assert isinstance(gap, JournalGapWarning) and gap.last == 1900
    assert f"changes {gap.first} to 1900" in str(gap)
    sequences = [e.sequence for e in events]
    assert sequences == list(range(1, gap.first)) + list(range(1901, 2501))


def test_a_vanished_store_directory_stops_the_watcher_with_an_error(store, caplog):
    watcher = FileSystemWatcher(store, poll_interval=0.1)
    watcher.start()
    with caplog.at_level(logging.ERROR, logger="kvstore.watch"):
        shutil.rmtree(store.path)
        with pytest.raises(StoreError, match="disappeared"):
            watcher.wait(timeout=10)
    assert isinstance(watcher.error, StoreError) and not watcher.running
    assert "disappeared" in caplog.text
    watcher.stop()  # joins the threads; the error was already raised by wait()


def test_stop_raises_an_unreported_error(store):
    watcher = FileSystemWatcher(store, poll_interval=0.05).start()
    shutil.rmtree(store.path)
    wait_until(lambda: watcher.error is not None, what="the watcher to notice the vanished directory")
    assert not watcher.running
    with pytest.raises(StoreError, match="disappeared"):
        watcher.stop()
    watcher.stop()  # raised once
    with pytest.raises(StoreError, match="cannot watch"):
        FileSystemWatcher(store).start()  # nothing left to watch


# ---------------------------------------------------------------- arguments and extras


def test_arguments_are_checked(store):
    with pytest.raises(TypeError, match="FileSystemStore"):
        FileSystemWatcher(kvstore.MemoryStore())
    for bad in (-1, True, "3", 1.5):
        with pytest.raises(ValueError, match="since"):
            FileSystemWatcher(store, since=bad)
    with pytest.raises(ValueError, match="ahead of the journal"):
        FileSystemWatcher(store, since=store.last_sequence() + 10).start()
    other = FileSystemStore(store.path)
    with pytest.raises(NotConnectedError):
        FileSystemWatcher(other).start()
    with FileSystemWatcher(store) as watcher:
        with pytest.raises(RuntimeError, match="already running"):
            watcher.start()
        assert watcher.running
    assert not watcher.running
    watcher.stop()  # again: nothing to do


def test_missing_watchdog_names_the_extra(store, monkeypatch):
    monkeypatch.setitem(sys.modules, "watchdog.observers", None)
    monkeypatch.setitem(sys.modules, "watchdog.events", None)
    with pytest.raises(ImportError, match=r"pip install 'kvstore\[watch\]'"):
        FileSystemWatcher(store)


def test_example_two_processes_runs(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "two_processes.py"), str(tmp_path / "s")],
                         check=False, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("watching ")
    assert lines[1:] == [
        "set    'greeting' {\"lang\": \"en\"} remote=True",
        "update 'greeting' {\"lang\": \"fr\", \"polite\": true} remote=True",
        "set    'reports/2024/q1.csv' {\"rows\": 1} remote=True",
        "delete 'greeting' {\"lang\": \"fr\", \"polite\": true} remote=True",
        "set    'done' {} remote=True",
        "done",
    ]
