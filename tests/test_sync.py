"""kvstore.sync between memory, filesystem and S3 (moto) stores: what it copies, skips
and deletes, what it reads, retries, verification, dry runs, the state file and resuming
after an interrupt; and the cp / mv / sync commands."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest

import kvstore
from kvstore import cli
from kvstore._retry import Backoff, is_transient
from kvstore._sync import STATE_FORMAT, decode_state, encode_state
from kvstore.errors import AuthorizationError, ChecksumError, InvalidKeyError, StoreError
from kvstore.testing import EventRecorder

from s3_moto import DataReads, Requests

# moto's S3 server and clients (fixtures shared with other modules)

ROOT = Path(__file__).resolve().parent.parent
FAST = Backoff(base=0.001, cap=0.01)


def populate(store: Any, n: int = 12, prefix: str = "data/") -> Dict[str, Tuple[bytes, Dict[str, Any]]]:
    values = {}
    for i in range(n):
        key = f"{prefix}{i:02d}" if i % 3 else f"{prefix}sub dir/é {i}"
        values[key] = (bytes([i % 251]) * (i * 997), {"i": i, "tags": ["t", i]})
        store.set(key, (values[key][0], values[key][1]))
    return values


def contents(store: Any, pattern: str = "*") -> Dict[str, Tuple[bytes, Dict[str, Any]]]:
    return {k: (store.to_bytes(k), store.get_metadata(k)) for k in store.glob(pattern)}


def keeps_checksums(store: Any) -> bool:
    keys = list(store.glob("*"))
    return bool(keys) and all(store.checksum(k) for k in keys[:3])


class CountingMemoryStore(kvstore.MemoryStore):
    """Counts the public reads of data (get, get_data, get_data_range, to_bytes...) and writes."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.reads: List[str] = []
        self.writes: List[str] = []

    def get(self, key: str) -> Any:
        self.reads.append(key)
        return super().get(key)

    def get_data(self, key: str) -> Any:
        self.reads.append(key)
        return super().get_data(key)

    def get_data_range(self, key: str, start: Any = None, end: Any = None) -> Any:
        self.reads.append(key)
        return super().get_data_range(key, start, end)

    def set(self, key: str, value: Any, buffer_size: int = 1048576) -> None:
        self.writes.append(key)
        super().set(key, value, buffer_size)

    def set_metadata(self, key: str, metadata: Any) -> None:
        self.writes.append(key)
        super().set_metadata(key, metadata)


@pytest.fixture
def s3_pair(s3_client: Any, s3_bucket: str) -> Iterator[Tuple[kvstore.S3Store, kvstore.S3Store]]:
    a = kvstore.S3Store(s3_bucket, f"a-{uuid.uuid4().hex[:6]}", client=s3_client)
    b = kvstore.S3Store(s3_bucket, f"b-{uuid.uuid4().hex[:6]}", client=s3_client)
    with a, b:
        yield a, b


# ---------------------------------------------------------------- copying and skipping


def test_memory_to_memory_then_nothing_to_do_without_reading_data() -> None:
    with CountingMemoryStore() as src, CountingMemoryStore() as dst:
        values = populate(src)
        report = kvstore.sync(src, dst)
        assert report.ok and report.failed == [] and report.errors == {}
        assert report.done == sorted(values) and report.skipped == [] and report.deleted == []
        assert report.bytes == report.total_bytes == sum(len(d) for d, _ in values.values())
        assert contents(dst) == values
        src.reads.clear()
        dst.reads.clear()
        dst.writes.clear()
        again = kvstore.sync(src, dst)
        assert again.skipped == sorted(values) and again.done == [] and again.bytes == 0
        assert again.hashed == [] and src.reads == [] and dst.reads == [] and dst.writes == []


def test_changed_data_of_the_same_size_is_sent_again() -> None:
    with kvstore.MemoryStore() as src, kvstore.MemoryStore() as dst:
        src.set("k", (b"aaaa", {"m": 1}))
        src.set("other", (b"zz", {}))
        kvstore.sync(src, dst)
        src.set_data("k", b"aaab")  # same size and metadata, other bytes
        report = kvstore.sync(src, dst)
        assert report.done == ["k"] and report.skipped == ["other"] and report.bytes == 4
        assert dst.to_bytes("k") == b"aaab"


def test_changed_metadata_is_sent_without_the_data() -> None:
    with kvstore.MemoryStore() as src, CountingMemoryStore() as dst:
        src.set("k", (b"x" * 5000, {"m": 1}))
        kvstore.sync(src, dst)
        src.update_metadata("k", {"checked": True})
        events = EventRecorder(dst)
        try:
            report = kvstore.sync(src, dst)
        finally:
            events.close()
        assert report.done == ["k"] and report.bytes == 0
        assert dst.get_metadata("k") == {"m": 1, "checked": True} and dst.to_bytes("k") == b"x" * 5000
        assert events.modifications() == [("store_update", "k", {"m": 1, "checked": True})]


def test_metadata_compared_as_json() -> None:
    with kvstore.MemoryStore() as src, kvstore.MemoryStore() as dst:
        src.set("k", (b"x", {"n": 1, "a": {"y": 1, "x": 2}}))
        dst.set("k", (b"x", {"a": {"x": 2, "y": 1}, "n": 1.0}))
        assert kvstore.sync(src, dst).skipped == ["k"]


def test_pattern_and_delete() -> None:
    with kvstore.MemoryStore() as src, kvstore.MemoryStore() as dst:
        src.set("img/a", (b"a", {}))
        src.set("doc/b", (b"b", {}))
        dst.set("img/stale", (b"s", {}))
        dst.set("doc/keep", (b"k", {}))
        report = kvstore.sync(src, dst, "img/*")
        assert report.done == ["img/a"] and report.deleted == []
        assert sorted(dst.glob("*")) == ["doc/keep", "img/a", "img/stale"]
        events = EventRecorder(dst)
        try:
            report = kvstore.sync(src, dst, "img/*", delete=True)
        finally:
            events.close()
        assert report.deleted == ["img/stale"] and report.skipped == ["img/a"]
        assert sorted(dst.glob("*")) == ["doc/keep", "img/a"]
        assert events.modifications() == [("store_delete", "img/stale", {})]


def test_dry_run_changes_nothing_and_reads_no_data(tmp_path: Path) -> None:
    with CountingMemoryStore() as src, kvstore.FileSystemStore(tmp_path / "dst", create=True) as dst:
        populate(src, 6)
        kvstore.sync(src, dst, "data/0*")
        src.set_data("data/01", b"changed")
        src.update_metadata("data/02", {"more": 1})
        dst.set("data/zombie", (b"z", {}))
        before = contents(dst)
        src.reads.clear()
        events = EventRecorder(dst)
        state = tmp_path / "state.json"
        try:
            report = kvstore.sync(src, dst, delete=True, dry_run=True, state=state)
        finally:
            events.close()
        assert contents(dst) == before and events.events == [] and src.reads == []
        assert not state.exists() and report.bytes == 0 and report.hashed == []
        # The filesystem store keeps no checksum yet: a dry run cannot tell a key with
        # equal size and metadata is unchanged without reading it, so it lists it as to copy.
        fs_has = keeps_checksums(dst)
        assert {"data/01", "data/02", "data/sub dir/é 0", "data/sub dir/é 3"} <= set(report.done)
        if fs_has:
            assert set(report.done) == {"data/01", "data/02", "data/sub dir/é 0", "data/sub dir/é 3"}
        assert report.deleted == ["data/zombie"] and report.failed == []
        assert sorted(report.done + report.skipped) == sorted(src.glob("*"))


def test_one_progress_operation_over_the_bytes_to_send() -> None:
    with kvstore.MemoryStore() as src, kvstore.MemoryStore() as dst:
        values = populate(src, 8)
        dst.set(next(iter(values)), values[next(iter(values))])  # already there: not counted
        events = EventRecorder(dst)
        try:
            report = kvstore.sync(src, dst, workers=3, buffer_size=1000)
        finally:
            events.close()
        ops = [e for e in events.of("progress_start") if e.message == "sync"]
        assert len(ops) == 1
        op = ops[0].operation_id
        steps = [e.step for e in events.of("progress_step") if e.operation_id == op]
        end = [e for e in events.of("progress_end") if e.operation_id == op]
        assert ops[0].steps == report.total_bytes == report.bytes > 0
        assert steps == sorted(steps) and steps[-1] == report.total_bytes
        assert len(end) == 1 and end[0].exit_state == "normal"


# ---------------------------------------------------------------- between backends


def test_filesystem_to_s3_and_back(tmp_path: Path, s3_client: Any, s3_bucket: str) -> None:
    fs = kvstore.FileSystemStore(tmp_path / "fs", create=True)
    s3 = kvstore.S3Store(s3_bucket, "mirror", client=s3_client)
    back = kvstore.FileSystemStore(tmp_path / "back", create=True)
    with fs, s3, back:
        values = populate(fs, 9)
        values["big"] = (os.urandom(3 * 1024 * 1024), {"big": True})
        fs.set("big", values["big"])
        up = kvstore.sync(fs, s3)
        assert up.ok and up.done == sorted(values) and contents(s3) == values
        down = kvstore.sync(s3, back)
        assert down.ok and down.done == sorted(values) and contents(back) == values
        # Nothing changed: S3's CRC header answers for its side; the filesystem side is
        # read and hashed until its index keeps a checksum (then hashed must be []).
        reads = DataReads(s3_client)
        try:
            again = kvstore.sync(fs, s3)
        finally:
            reads.close()
        assert again.skipped == sorted(values) and again.done == [] and reads.keys == []
        assert again.hashed == ([] if keeps_checksums(fs) else sorted(values))


def test_s3_to_s3_and_to_memory_skip_without_reading_data(s3_pair: Any, s3_client: Any) -> None:
    a, b = s3_pair
    values = populate(a, 7)
    assert kvstore.sync(a, b, workers=2).done == sorted(values)
    assert contents(b) == values
    with CountingMemoryStore() as mem:
        assert kvstore.sync(b, mem).done == sorted(values)
        reads = DataReads(s3_client)
        try:
            s3_s3 = kvstore.sync(a, b)
            s3_mem = kvstore.sync(b, mem)
            mem_s3 = kvstore.sync(mem, a)
        finally:
            reads.close()
        for report in (s3_s3, s3_mem, mem_s3):
            assert report.skipped == sorted(values) and report.done == [] and report.hashed == []
        assert reads.keys == [] and mem.reads == []
    a.set_data("data/01", b"new")
    b.update_metadata("data/02", {"changed": "in b"})
    report = kvstore.sync(a, b)
    assert report.done == ["data/01", "data/02"] and contents(b) == contents(a)


def test_memory_filesystem_both_ways(tmp_path: Path) -> None:
    with kvstore.MemoryStore() as mem, kvstore.FileSystemStore(tmp_path / "fs", create=True) as fs:
        values = populate(mem)
        assert kvstore.sync(mem, fs).done == sorted(values)
        with kvstore.MemoryStore() as mem2:
            assert kvstore.sync(fs, mem2).done == sorted(values)
            assert contents(mem2) == values
            again = kvstore.sync(fs, mem2)
        assert again.skipped == sorted(values)
        # The cost of a store without checksums, counted: phase 2 makes this [].
        assert again.hashed == ([] if keeps_checksums(fs) else sorted(values))


# ---------------------------------------------------------------- the requests a sync makes to S3


@pytest.fixture
def s3_requests(s3_client: Any) -> Iterator[Requests]:
    requests = Requests(s3_client)
    yield requests
    requests.close()


def test_a_first_sync_to_s3_puts_two_objects_per_key_and_a_rerun_with_its_state_file_only_lists(
        tmp_path: Path, s3_client: Any, s3_bucket: str, s3_requests: Requests) -> None:
    state = tmp_path / "state.json"
    with kvstore.FileSystemStore(tmp_path / "fs", create=True) as fs, \
            kvstore.S3Store(s3_bucket, "mirror", client=s3_client) as s3:
        values = populate(fs, 12)
        s3_requests.clear()
        first = kvstore.sync(fs, s3, workers=3, state=state)
        made = list(s3_requests.made)
        assert first.ok and first.done == sorted(values) and contents(s3) == values
        # Per key its data object and its metadata object (If-None-Match, unread); the
        # comparison, and the check of what was written, are one listing each for all keys.
        names = [s3._naming.names(k) for k in values]
        assert sorted(s3_requests.of("PutObject")) == sorted([n.data for n in names] + [n.metadata for n in names])
        assert sorted(op for op, _ in made) == ["ListObjectsV2"] * 2 + ["PutObject"] * 2 * len(values)
        recorded = decode_state(state.read_bytes())["keys"]
        assert {k: v["destination"] for k, v in recorded.items()} == {k: s3.stat(k).token for k in values}
        s3_requests.clear()
        again = kvstore.sync(fs, s3, workers=3, state=state)
        assert again.ok and again.skipped == sorted(values) and again.done == [] and again.hashed == []
        assert s3_requests.made == [("ListObjectsV2", "")]  # no request per key


def test_a_rerun_with_a_state_file_notices_a_destination_changed_behind_it(
        tmp_path: Path, s3_client: Any, s3_bucket: str) -> None:
    state = tmp_path / "state.json"
    with kvstore.FileSystemStore(tmp_path / "fs", create=True) as fs, \
            kvstore.S3Store(s3_bucket, "mirror", client=s3_client) as s3, \
            kvstore.S3Store(s3_bucket, "mirror", client=s3_client) as other:
        values = populate(fs, 9)
        assert kvstore.sync(fs, s3, state=state).done == sorted(values)
        other.set_data("data/01", b"x" * len(values["data/01"][0]))  # same size, other data
        other.set_data("data/02", b"shorter")
        other.update_metadata("data/04", {"by": "other"})
        other.delete("data/05")
        again = kvstore.sync(fs, s3, state=state)
        assert again.ok and again.done == ["data/01", "data/02", "data/04", "data/05"]
        assert contents(s3) == values


def test_a_write_hinted_as_new_of_a_key_that_exists_is_an_ordinary_overwrite(
        s3_client: Any, s3_bucket: str, s3_requests: Requests) -> None:
    with kvstore.S3Store(s3_bucket, "hint", client=s3_client) as s3:
        s3.set("k", (b"old", {"a": 1}))
        revision = s3.get("k").revision
        recorder = EventRecorder(s3)
        try:
            s3_requests.clear()
            s3._expect_new("k")  # wrong: the key exists
            s3.set("k", (b"new!", {"b": 2}))
            made = list(s3_requests.made)
        finally:
            recorder.close()
        value = s3.get("k")
        assert (s3.to_bytes("k"), value.metadata, value.revision) == (b"new!", {"b": 2}, revision + 1)
        assert recorder.modifications() == [("store_update", "k", {"b": 2})]
        # the hinted PUT was refused (If-None-Match), then the usual read and If-Match PUT
        names = s3._naming.names("k")
        assert made == [("PutObject", names.data), ("PutObject", names.metadata), ("GetObject", names.metadata),
                        ("PutObject", names.metadata)]
        # a hint is for the next write of that key only
        s3._expect_new("other")
        s3.set("k", (b"again", {}))
        s3.set("other", (b"1", {}))
        assert s3.to_bytes("k") == b"again" and s3.to_bytes("other") == b"1"


def _flipped(value: Any) -> Tuple[bytes, Dict[str, Any]]:
    """``value`` (a stream and metadata) with the last byte of its data flipped."""
    stream, metadata = value
    data = bytearray(stream.read())
    if data:
        data[-1] ^= 1
    return bytes(data), metadata


class CorruptingS3Store(kvstore.S3Store):
    """Stores every value with its last byte flipped: what it holds is not what was sent."""

    def set(self, key: str, value: Any, buffer_size: int = 1048576) -> None:
        super().set(key, _flipped(value), buffer_size)


def test_what_an_s3_destination_committed_is_verified(s3_client: Any, s3_bucket: str) -> None:
    with kvstore.MemoryStore() as src, CorruptingS3Store(s3_bucket, "bad", client=s3_client) as dst:
        src.set("k", (b"payload", {}))
        src.set("empty", (b"", {}))
        report = kvstore.sync(src, dst, retries=1, backoff=FAST)
        assert report.failed == ["k"] and report.done == ["empty"]
        assert "ChecksumError" in report.errors["k"] and "does not match" in report.errors["k"]


class OverwrittenS3Store(kvstore.S3Store):
    """A destination whose key ``victim`` another writer overwrites (same size, other
    bytes) right after this store's first write of it."""

    victim = "data/04"
    other: kvstore.S3Store

    def set(self, key: str, value: Any, buffer_size: int = 1048576) -> None:
        super().set(key, value, buffer_size)
        if key == self.victim and not getattr(self, "overwritten", False):
            self.overwritten = True
            size = self.stat(key).size
            self.other.set(key, (b"o" * size, {"by": "other"}))


def test_a_key_overwritten_after_its_write_is_caught_by_the_last_listing_and_sent_again(
        tmp_path: Path, s3_client: Any, s3_bucket: str) -> None:
    state = tmp_path / "state.json"
    with kvstore.MemoryStore() as src, OverwrittenS3Store(s3_bucket, "ow", client=s3_client) as dst, \
            kvstore.S3Store(s3_bucket, "ow", client=s3_client) as other:
        dst.other = other
        values = populate(src, 6)
        report = kvstore.sync(src, dst, retries=2, backoff=FAST, state=state)
        assert report.ok and report.done == sorted(values) and contents(dst) == values
        assert report.bytes == sum(len(v[0]) for v in values.values())
        recorded = decode_state(state.read_bytes())["keys"]
        assert recorded["data/04"]["attempts"] == 2 and recorded["data/04"]["state"] == "done"
        assert {v["attempts"] for k, v in recorded.items() if k != "data/04"} == {1}
        # with no attempt left, the key is failed
        other.set("data/04", (b"o", {}))
        del dst.overwritten
        report = kvstore.sync(src, dst, retries=0, backoff=FAST)
        assert report.failed == ["data/04"] and "does not hold what was written" in report.errors["data/04"]


# ---------------------------------------------------------------- faults


class FlakyStore(kvstore.MemoryStore):
    """A destination whose writes of some keys fail ``times`` times each, then work."""

    def __init__(self, times: int, keys: Any = None, error: Any = None) -> None:
        super().__init__()
        self.times = times
        self.keys = keys
        self.error = error or (lambda key: StoreError(f"the service is busy ({key})"))
        self.calls: Dict[str, int] = {}
        self._count_lock = threading.Lock()

    def set(self, key: str, value: Any, buffer_size: int = 1048576) -> None:
        with self._count_lock:
            self.calls[key] = self.calls.get(key, 0) + 1
            fail = (self.keys is None or key in self.keys) and self.calls[key] <= self.times
        if fail:
            raise self.error(key)
        super().set(key, value, buffer_size)


def test_a_destination_failing_k_times_per_key_is_retried(tmp_path: Path) -> None:
    with kvstore.MemoryStore() as src, FlakyStore(times=2) as dst:
        values = populate(src, 6)
        state = tmp_path / "state.json"
        report = kvstore.sync(src, dst, retries=2, backoff=FAST, state=state)
        assert report.ok and report.done == sorted(values) and contents(dst) == values
        assert all(n == 3 for n in dst.calls.values())
        recorded = decode_state(state.read_bytes())["keys"]
        assert {k: (v["state"], v["attempts"]) for k, v in recorded.items()} == \
            {k: ("done", 3) for k in values}


def test_a_key_still_failing_after_its_retries_is_failed_and_the_others_go_on() -> None:
    with kvstore.MemoryStore() as src, FlakyStore(times=5, keys={"data/01", "data/02"}) as dst:
        values = populate(src, 6)
        report = kvstore.sync(src, dst, retries=2, backoff=FAST)
        assert not report.ok and report.failed == ["data/01", "data/02"]
        assert set(report.errors) == {"data/01", "data/02"}
        assert "the service is busy (data/01)" in report.errors["data/01"]
        assert dst.calls["data/01"] == 3  # one attempt and two retries
        assert sorted(report.done) == sorted(set(values) - {"data/01", "data/02"})
        assert sorted(dst.glob("*")) == report.done


@pytest.mark.parametrize("error", [TypeError("bad"), InvalidKeyError("no"), AuthorizationError("denied")])
def test_errors_that_another_attempt_cannot_cure_fail_at_once(error: Exception) -> None:
    with kvstore.MemoryStore() as src, FlakyStore(times=1, error=lambda key: error) as dst:
        src.set("k", (b"x", {}))
        report = kvstore.sync(src, dst, retries=3, backoff=FAST)
        assert report.failed == ["k"] and dst.calls["k"] == 1
        assert type(error).__name__ in report.errors["k"]


def test_oserror_is_retried() -> None:
    with kvstore.MemoryStore() as src, FlakyStore(times=1, error=lambda key: ConnectionResetError(key)) as dst:
        src.set("k", (b"x", {}))
        assert kvstore.sync(src, dst, retries=1, backoff=FAST).done == ["k"]


class CorruptingStore(kvstore.MemoryStore):
    """Stores every value with its last byte flipped: what it holds is not what was sent."""

    def set(self, key: str, value: Any, buffer_size: int = 1048576) -> None:
        super().set(key, _flipped(value), buffer_size)


def test_what_the_destination_stored_is_verified() -> None:
    with kvstore.MemoryStore() as src, CorruptingStore() as dst:
        src.set("k", (b"payload", {}))
        src.set("empty", (b"", {}))
        report = kvstore.sync(src, dst, retries=1, backoff=FAST)
        assert report.failed == ["k"] and report.done == ["empty"]
        assert "ChecksumError" in report.errors["k"] and "does not match" in report.errors["k"]


class VanishingStore(kvstore.MemoryStore):
    """A source whose key ``gone`` is deleted by someone else just before it is read."""

    def get(self, key: str) -> Any:
        if key == "gone" and self.exists(key):
            self.delete(key)
        return super().get(key)


def test_a_source_key_that_vanishes_mid_sync_is_skipped() -> None:
    with VanishingStore() as src, kvstore.MemoryStore() as dst:
        src.set("gone", (b"1", {}))
        src.set("stays", (b"2", {}))
        report = kvstore.sync(src, dst)
        assert report.ok and report.skipped == ["gone"] and report.done == ["stays"]
        assert sorted(dst.glob("*")) == ["stays"]


class FlakyStatStore(kvstore.MemoryStore):
    """A source whose ``stat`` of each key fails ``times`` times (a busy service), then works."""

    def __init__(self, times: int) -> None:
        super().__init__()
        self.times = times
        self.stats: Dict[str, int] = {}
        self._count_lock = threading.Lock()

    def stat(self, key: str) -> Any:
        with self._count_lock:
            self.stats[key] = self.stats.get(key, 0) + 1
            fail = self.stats[key] <= self.times
        if fail:
            raise StoreError(f"the service is busy ({key})")
        return super().stat(key)


@pytest.mark.parametrize("times, ok", [(1, True), (2, True), (4, False)])
def test_a_source_stat_failing_is_retried_by_the_compare(times: int, ok: bool) -> None:
    # The stats taken while the destination is listed swallow the failure; the compare
    # stats the key again with its retries (2 here: three attempts).
    with FlakyStatStore(times) as src, kvstore.MemoryStore() as dst:
        values = populate(src, 5)
        report = kvstore.sync(src, dst, retries=2, backoff=FAST)
        if ok:
            assert report.ok and report.done == sorted(values) and contents(dst) == values
        else:
            assert report.failed == sorted(values) and not list(dst.glob("*"))
            assert all("the service is busy" in m for m in report.errors.values())
        # the early stat, then the compare's attempts until one works (or all three fail)
        assert all(n == (times + 1 if ok else 1 + 3) for n in src.stats.values())


class ShrinkingStore(kvstore.MemoryStore):
    """A source whose key ``gone`` is deleted by someone else right after its first stat."""

    def stat(self, key: str) -> Any:
        found = super().stat(key)
        if key == "gone":
            self.delete(key)
        return found


def test_a_source_key_deleted_after_its_first_stat_is_skipped() -> None:
    with ShrinkingStore() as src, kvstore.MemoryStore() as dst:
        src.set("gone", (b"1", {}))
        src.set("stays", (b"2", {}))
        report = kvstore.sync(src, dst)
        assert report.ok and report.skipped == ["gone"] and report.done == ["stays"]
        assert sorted(dst.glob("*")) == ["stays"]


class InterruptingStore(kvstore.MemoryStore):
    """A destination whose ``after``-th write is interrupted (Ctrl-C) midway."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after = after
        self.sets: List[str] = []

    def set(self, key: str, value: Any, buffer_size: int = 1048576) -> None:
        self.sets.append(key)
        if len(self.sets) == self.after:
            stream, _ = value
            stream.read(1)
            raise KeyboardInterrupt()
        super().set(key, value, buffer_size)


@pytest.mark.parametrize("workers", [1, 3])
def test_resume_after_an_interrupt(tmp_path: Path, workers: int) -> None:
    state = tmp_path / "sync.json"
    with kvstore.FileSystemStore(tmp_path / "src", create=True) as src, InterruptingStore(after=5) as dst:
        values = populate(src, 10)
        with pytest.raises(KeyboardInterrupt):
            kvstore.sync(src, dst, workers=workers, state=state)
        recorded = decode_state(state.read_bytes())["keys"]  # consistent: it parses
        done_before = sorted(k for k, v in recorded.items() if v["state"] == "done")
        assert 1 <= len(done_before) <= 4
        assert all(dst.exists(k) and dst.to_bytes(k) == values[k][0] for k in done_before)
        assert all(v["state"] in ("done", "pending", "transferring") for v in recorded.values())
        dst.sets.clear()
        dst.after = 0
        report = kvstore.sync(src, dst, workers=workers, state=state)
        assert report.ok and contents(dst) == values
        assert sorted(dst.sets) == sorted(set(values) - set(done_before))  # nothing sent twice
        assert set(done_before) <= set(report.skipped)
        # done keys are trusted from the state file, the others are missing from the
        # destination: no data is read to compare anything
        assert report.hashed == []


def test_the_state_file_is_trusted_only_for_an_unchanged_source(tmp_path: Path) -> None:
    state = tmp_path / "s.json"
    with kvstore.MemoryStore() as src, CountingMemoryStore() as dst:
        src.set("a", (b"1", {}))
        src.set("b", (b"2", {}))
        kvstore.sync(src, dst, state=state)
        src.set_data("b", b"3")
        report = kvstore.sync(src, dst, state=state)
        assert report.done == ["b"] and report.skipped == ["a"] and dst.to_bytes("b") == b"3"


def test_a_state_file_of_another_sync_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "s.json"
    with kvstore.MemoryStore() as a, kvstore.MemoryStore() as b, kvstore.MemoryStore() as c:
        a.set("k", (b"1", {}))
        kvstore.sync(a, b, state=state)
        with pytest.raises(ValueError, match="other stores"):
            kvstore.sync(a, c, state=state)
    state.write_text("not json")
    with kvstore.MemoryStore() as a, kvstore.MemoryStore() as b:
        with pytest.raises(ValueError, match="not a kvstore sync state file"):
            kvstore.sync(a, b, state=state)


def test_bad_arguments() -> None:
    with kvstore.MemoryStore() as a, kvstore.MemoryStore() as b:
        with pytest.raises(ValueError):
            kvstore.sync(a, a)
        with pytest.raises(ValueError):
            kvstore.sync(a, b, workers=0)
        with pytest.raises(ValueError):
            kvstore.sync(a, b, retries=-1)
        with pytest.raises(TypeError):
            kvstore.sync(a, b, pattern=3)  # type: ignore[arg-type]


# ---------------------------------------------------------------- the protocol pieces


def test_state_file_format_is_pinned() -> None:
    document = {"format": STATE_FORMAT, "version": 1, "source": {"type": "MemoryStore", "origin": "o"},
                "destination": {"type": "FileSystemStore", "path": "/d"},
                "keys": {"é": {"state": "done", "attempts": 1, "message": None,
                               "source": {"size": 1, "checksum": "crc32:00000000", "metadata": "ab",
                                          "modified": 1.5}}}}
    data = encode_state(document)
    assert data == (
        b'{\n "destination": {\n  "path": "/d",\n  "type": "FileSystemStore"\n },\n'
        b' "format": "kvstore-sync-state",\n "keys": {\n  "\xc3\xa9": {\n   "attempts": 1,\n'
        b'   "message": null,\n   "source": {\n    "checksum": "crc32:00000000",\n'
        b'    "metadata": "ab",\n    "modified": 1.5,\n    "size": 1\n   },\n   "state": "done"\n'
        b'  }\n },\n "source": {\n  "origin": "o",\n  "type": "MemoryStore"\n },\n "version": 1\n}\n')
    assert decode_state(data) == document
    with pytest.raises(ValueError, match="version"):
        decode_state(encode_state({**document, "version": 2}))


def test_retry_policy() -> None:
    assert is_transient(StoreError("x")) and is_transient(ChecksumError("x")) and is_transient(OSError("x"))
    assert is_transient(TimeoutError()) and is_transient(ConnectionError())
    assert not is_transient(InvalidKeyError("x")) and not is_transient(AuthorizationError("x"))
    assert not is_transient(KeyError("x")) and not is_transient(ValueError("x"))
    read_only = getattr(kvstore.errors, "ReadOnlyError", None)
    if read_only is not None:
        assert not is_transient(read_only("x"))
    backoff = Backoff(base=0.1, cap=1.0, jitter=0.5)
    assert [backoff.delay(n, rand=lambda: 0.0) for n in (1, 2, 3, 4, 5)] == [0.1, 0.2, 0.4, 0.8, 1.0]
    assert backoff.delay(2, rand=lambda: 1.0) == pytest.approx(0.1)
    assert backoff.delay(10_000, rand=lambda: 0.0) == 1.0
    with pytest.raises(ValueError):
        Backoff(jitter=2)


# ---------------------------------------------------------------- command line


def test_cli_cp_and_mv(tmp_path: Path, capsys: Any) -> None:
    url = str(tmp_path / "store")
    with kvstore.open_store(url) as store:
        store.set("a", (b"A", {"n": 1}))
    assert cli.main(["--store", url, "cp", "a", "b"]) == 0
    assert cli.main(["--store", url, "mv", "b", "c"]) == 0
    with kvstore.open_store(url) as store:
        assert sorted(store.glob("*")) == ["a", "c"] and store.get_metadata("c") == {"n": 1}
    capsys.readouterr()
    assert cli.main(["--store", url, "cp", "missing", "x"]) == 1
    assert cli.main(["--store", url, "mv", "a", "a"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [f"kvstore: error: no key 'missing' in {url}",
                   "kvstore: error: source and destination are the same key ('a')"]


def test_cli_sync(tmp_path: Path, capsys: Any) -> None:
    src, dst, state = str(tmp_path / "src"), str(tmp_path / "dst"), str(tmp_path / "state.json")
    with kvstore.open_store(src) as store:
        populate(store, 4)
    with kvstore.open_store(dst) as store:
        store.set("data/extra", (b"x", {}))
    assert cli.main(["sync", src, dst, "data/*", "--delete", "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "would delete data/extra" in out and out[-1].startswith("would copy 4, skipped 0, failed 0, would delete 1;")
    assert cli.main(["sync", src, dst, "--delete", "--state", state, "--workers", "2"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("done 4, skipped 0, failed 0, deleted 1; ") and line.endswith(" s")
    assert cli.main(["sync", src, dst]) == 0
    assert capsys.readouterr().out.startswith("done 0, skipped 4, failed 0, deleted 0;")
    assert cli.main(["sync", str(tmp_path / "nothing"), dst]) == 1
    assert "cannot open source" in capsys.readouterr().err
    assert not (tmp_path / "nothing").exists()


def test_cli_sync_failure_and_interrupt(tmp_path: Path, capsys: Any, monkeypatch: Any) -> None:
    src, dst, state = str(tmp_path / "src"), str(tmp_path / "dst"), str(tmp_path / "state.json")
    with kvstore.open_store(src) as store:
        store.set("good", (b"1", {}))
        store.set("bad", (b"2", {}))
    real_set = kvstore.FileSystemStore.set

    def failing_set(self: Any, key: str, value: Any, buffer_size: int = 1048576) -> None:
        if key == "bad" and self.path == os.path.abspath(dst):
            raise StoreError("disk on fire")
        real_set(self, key, value, buffer_size)

    monkeypatch.setattr(kvstore.FileSystemStore, "set", failing_set)
    assert cli.main(["sync", src, dst, "--retries", "0"]) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith("done 1, skipped 0, failed 1, deleted 0;")
    assert captured.err == "kvstore: error: 'bad' failed: StoreError: disk on fire\n"

    def interrupted_set(self: Any, key: str, value: Any, buffer_size: int = 1048576) -> None:
        raise KeyboardInterrupt()

    monkeypatch.setattr(kvstore.FileSystemStore, "set", interrupted_set)
    assert cli.main(["sync", src, dst, "--state", state]) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.endswith("kvstore: error: interrupted\n") and state in err
    decode_state(Path(state).read_bytes())
    monkeypatch.setattr(kvstore.FileSystemStore, "set", real_set)
    assert cli.main(["sync", src, dst, "--state", state]) == 0
    assert capsys.readouterr().out.startswith("done 1, skipped 1,")


# ---------------------------------------------------------------- the example


def test_sync_example_runs(s3_endpoint: Any, tmp_path: Path) -> None:
    if s3_endpoint is None:
        pytest.skip("needs boto3 and moto")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL_S3": s3_endpoint,
                "PYTHONPATH": str(ROOT)})
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "sync_to_s3.py"), str(tmp_path / "work")],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "to S3: done 3, skipped 0, failed 0, deleted 0" in " ".join(lines)
    assert "again: done 0, skipped 3" in " ".join(lines)
    assert "restored: True" in lines
    del env["AWS_ENDPOINT_URL_S3"]
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "sync_to_s3.py"), str(tmp_path / "w2")],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "AWS_ENDPOINT_URL_S3" in done.stdout
