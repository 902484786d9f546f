"""S3Store compare-and-set with data on an unversioned bucket (issue 18): a conditional write
that loses a race never overwrites the data a committed (or in-flight) write owns.

The races are made deterministic with botocore's events on one store's client: the other
store's whole write runs at a chosen point of the first one's request sequence."""

from __future__ import annotations

import io
import threading
import time
import uuid
from typing import Any, Callable, Dict, Iterator, List

import pytest

boto3 = pytest.importorskip("boto3")
pytest.importorskip("moto")

import s3_moto  # noqa: E402
from botocore.exceptions import EndpointConnectionError  # noqa: E402
from kvstore.errors import ConflictError, StoreError  # noqa: E402
from kvstore.stores.s3 import H_WRITE, S3Store  # noqa: E402

MiB = 1024 * 1024


@pytest.fixture
def pair(s3_client: Any, s3_second_client: Any, s3_bucket: str) -> Iterator[tuple[S3Store, S3Store]]:
    """Two stores on one prefix, each with its own client (two hosts); short pair_timeout
    so that a key left broken fails a read quickly instead of after 5 s."""
    prefix = f"cas-{uuid.uuid4().hex[:8]}"
    a, b = S3Store(s3_bucket, prefix, client=s3_client), S3Store(s3_bucket, prefix, client=s3_second_client)
    for s in (a, b):
        s.pair_timeout = 0.5
    with a, b:
        yield a, b


class Before:
    """Run ``action`` once, just before the first ``operation`` request of ``client`` whose
    object name ends with ``suffix`` (botocore's before-parameter-build event)."""

    def __init__(self, client: Any, operation: str, suffix: str, action: Callable[[], None]) -> None:
        self.fired = 0
        self._client, self._event = client, f"before-parameter-build.s3.{operation}"
        self._suffix, self._action = suffix, action
        client.meta.events.register(self._event, self._hook)

    def _hook(self, params: Dict[str, Any], **_: Any) -> None:
        if params.get("Key", "").endswith(self._suffix) and not self.fired:
            self.fired += 1
            self._action()

    def __enter__(self) -> Before:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._client.meta.events.unregister(self._event, self._hook)


def _whole(store: S3Store, key: str) -> tuple[bytes, dict, int]:
    value = store.get(key)
    return value.data.read(), value.metadata, value.revision


def _data_write(method: str, store: S3Store, key: str, data: bytes, revision: int) -> None:
    """One conditional write with data, by each public method that takes data."""
    if method == "set":
        store.set(key, (data, {"by": data.decode()}), if_revision=revision)
    elif method == "set_data":
        store.set_data(key, io.BytesIO(data), if_revision=revision)
    else:
        store.from_bytes(key, data, if_revision=revision)


# ------------------------------------------------------------------ the lost race

@pytest.mark.parametrize("method", ["set", "set_data", "from_bytes"])
def test_a_cas_write_losing_the_race_leaves_the_winner_whole(pair: tuple[S3Store, S3Store],
                                                              method: str) -> None:
    """B has read revision 1; A's whole CAS write runs just before B's data PUT: B gets a
    ConflictError, and A's committed value reads back whole."""
    a, b = pair
    a.set("k", (b"start", {"by": "start"}))

    def a_wins() -> None:
        _data_write(method, a, "k", b"A", 1)

    with Before(b._client, "PutObject", ".data", a_wins) as hook:
        with pytest.raises(ConflictError) as info:
            _data_write(method, b, "k", b"B", 1)
    assert hook.fired
    assert (info.value.expected, info.value.actual) == (1, 2)
    for store in (a, b):
        data, metadata, revision = _whole(store, "k")
        assert data == b"A" and revision == 2
        assert metadata == ({"by": "A"} if method == "set" else {"by": "start"})


def test_a_cas_create_losing_the_race_leaves_the_winner_whole(pair: tuple[S3Store, S3Store]) -> None:
    """if_revision=0 (a new key): the data PUT is If-None-Match, so of two creators only
    one replaces the data object."""
    a, b = pair
    with Before(b._client, "PutObject", ".data", lambda: a.set("new", (b"A", {}), if_revision=0)):
        with pytest.raises(ConflictError) as info:
            b.set("new", (b"B", {}), if_revision=0)
    assert info.value.actual == 1
    assert _whole(b, "new") == (b"A", {}, 1)


def test_set_metadata_creating_a_key_never_empties_the_winners_data(pair: tuple[S3Store, S3Store]) -> None:
    """set_metadata of a new key uploads empty data: on a condition, not over a key
    another host created meanwhile."""
    a, b = pair
    with Before(b._client, "PutObject", ".data", lambda: a.set("k", (b"A", {"a": 1}), if_revision=0)):
        with pytest.raises(ConflictError):
            b.set_metadata("k", {"b": 1}, if_revision=0)
    assert _whole(b, "k") == (b"A", {"a": 1}, 1)


def test_a_multipart_cas_create_losing_the_race_leaves_the_winner_whole(pair: tuple[S3Store, S3Store],
                                                                        s3_client: Any, s3_bucket: str) -> None:
    """A value of several parts: the condition is on CompleteMultipartUpload (moto checks
    If-None-Match there, not If-Match), and the failed upload is aborted."""
    a, b = pair
    big = b"b" * (b.part_size + MiB)
    with Before(b._client, "CompleteMultipartUpload", ".data", lambda: a.set("big", (b"A", {}), if_revision=0)):
        with pytest.raises(ConflictError):
            b.set("big", (io.BytesIO(big), {}), if_revision=0)
    assert _whole(b, "big") == (b"A", {}, 1)
    assert not s3_client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads")


def test_multipart_and_copy_conditions_are_sent(pair: tuple[S3Store, S3Store]) -> None:
    """moto does not check If-Match on CompleteMultipartUpload nor on CopyObject (S3 does):
    the requests carry it."""
    a, _ = pair
    a.set("k", (b"x", {}))
    a.set("src", (b"copied", {}))
    requests = s3_moto.Requests(a._client)
    try:
        calls: List[Dict[str, Any]] = []
        for op in ("CompleteMultipartUpload", "CopyObject"):
            a._client.meta.events.register(f"before-parameter-build.s3.{op}",
                                           lambda params, **_: calls.append(dict(params)))
        a.set("k", (io.BytesIO(b"m" * (a.part_size + 1)), {}), if_revision=1)
        a.copy("src", "k", if_revision=2)
        a.copy("src", "fresh", if_revision=0)
    finally:
        requests.close()
    assert [("IfMatch" in c, c.get("IfNoneMatch")) for c in calls] == [(True, None), (True, None), (False, "*")]
    assert a.to_bytes("k") == b"copied" and a.get("k").revision == 3
    assert a.to_bytes("fresh") == b"copied"


@pytest.mark.parametrize("other", ["update_metadata", "update_metadata_cas", "set_metadata"])
def test_a_cas_write_losing_to_a_metadata_commit_puts_the_data_back(pair: tuple[S3Store, S3Store],
                                                                    other: str) -> None:
    """The other host commits metadata only (naming the committed data) between B's data
    PUT and B's metadata PUT: B's upload has replaced the data that commit names, so B,
    failing, puts the bytes it replaced back."""
    a, b = pair
    a.set("k", (b"start", {"n": 0}))

    def a_commits() -> None:
        if other == "update_metadata":
            a.update_metadata("k", {"n": 1})
        elif other == "update_metadata_cas":
            a.update_metadata("k", {"n": 1}, if_revision=1)
        else:
            a.set_metadata("k", {"n": 1})

    with Before(b._client, "PutObject", ".metadata", a_commits) as hook:
        with pytest.raises(ConflictError) as info:
            b.set("k", (b"B" * 1000, {"by": "b"}), if_revision=1)
    assert hook.fired and info.value.actual == 2
    for store in (a, b):
        assert _whole(store, "k") == (b"start", {"n": 1}, 2)


def test_a_cas_copy_losing_to_a_metadata_commit_puts_the_data_back(pair: tuple[S3Store, S3Store]) -> None:
    """The same for copy's server-side CopyObject to its destination."""
    a, b = pair
    a.set("k", (b"start", {"n": 0}))
    a.set("src", (b"copied", {}))
    with Before(b._client, "PutObject", ".metadata", lambda: a.update_metadata("k", {"n": 1})):
        with pytest.raises(ConflictError):
            b.copy("src", "k", if_revision=1)
    assert _whole(b, "k") == (b"start", {"n": 1}, 2)


def test_a_cas_write_losing_to_a_delete_leaves_no_data_object(pair: tuple[S3Store, S3Store],
                                                              s3_client: Any, s3_bucket: str) -> None:
    """Deleted between B's data PUT and its commit: B removes the data it uploaded, so no
    orphan makes the next creator wait."""
    a, b = pair
    a.set("k", (b"start", {}))
    with Before(b._client, "PutObject", ".metadata", lambda: a.delete("k")):
        with pytest.raises(ConflictError) as info:
            b.set("k", (b"B", {}), if_revision=1)
    assert info.value.actual is None and not a.exists("k")
    listed = s3_client.list_objects_v2(Bucket=s3_bucket, Prefix=a.prefix).get("Contents", [])
    assert [o["Key"] for o in listed] == []
    started = time.monotonic()
    a.set("k", (b"again", {}), if_revision=0)
    assert time.monotonic() - started < a.pair_timeout


def test_a_cas_write_whose_commit_fails_puts_the_data_back(pair: tuple[S3Store, S3Store]) -> None:
    """The metadata PUT itself fails (the network): the key keeps its value, where a plain
    write leaves new data under the old metadata until it is written again."""
    a, b = pair
    a.set("k", (b"start", {}))

    def cut(params: Dict[str, Any], **_: Any) -> None:
        if params["Key"].endswith(".metadata"):
            raise EndpointConnectionError(endpoint_url="http://127.0.0.1:9")

    b._client.meta.events.register("before-parameter-build.s3.PutObject", cut)
    try:
        with pytest.raises(StoreError):
            b.set("k", (b"B", {}), if_revision=1)
    finally:
        b._client.meta.events.unregister("before-parameter-build.s3.PutObject", cut)
    assert _whole(a, "k") == (b"start", {}, 1)


# ------------------------------------------------------------------ writers between their steps

def test_a_cas_write_waits_for_a_writer_between_its_steps(pair: tuple[S3Store, S3Store]) -> None:
    """A has uploaded its data and not yet PUT its metadata when B looks: B does not
    replace A's data; it waits, sees A commit, and fails with ConflictError."""
    a, b = pair
    a.set("k", (b"start", {}))
    a_uploaded, b_looked = threading.Event(), threading.Event()

    def a_between_steps(params: Dict[str, Any], **_: Any) -> None:
        if params["Key"].endswith(".metadata"):
            a_uploaded.set()
            assert b_looked.wait(10)

    b_asked: List[str] = []

    def b_asks(params: Dict[str, Any], **_: Any) -> None:
        b_asked.append(params["Key"])

    def b_after_look(**_: Any) -> None:
        if b_asked[-1].endswith(".data"):  # B has looked at the data object (A's upload)
            b_looked.set()

    a._client.meta.events.register("before-parameter-build.s3.PutObject", a_between_steps)
    errors: List[BaseException] = []
    writer = threading.Thread(target=lambda: _catch(errors, a.set, "k", (b"A", {}), if_revision=1))
    writer.start()
    try:
        assert a_uploaded.wait(10)
        b._client.meta.events.register("before-parameter-build.s3.GetObject", b_asks)
        b._client.meta.events.register("after-call.s3.GetObject", b_after_look)
        b.pair_timeout = 10  # A commits long before this: B must see it, not give up
        with pytest.raises(ConflictError) as info:
            b.set("k", (b"B", {}), if_revision=1)
    finally:
        b_looked.set()
        writer.join(20)
        a._client.meta.events.unregister("before-parameter-build.s3.PutObject", a_between_steps)
        b._client.meta.events.unregister("before-parameter-build.s3.GetObject", b_asks)
        b._client.meta.events.unregister("after-call.s3.GetObject", b_after_look)
    assert not errors and info.value.actual == 2
    assert _whole(b, "k") == (b"A", {}, 2)


def _catch(errors: List[BaseException], fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    try:
        fn(*args, **kwargs)
    except BaseException as exc:  # pragma: no cover - reported by the test
        errors.append(exc)


def test_an_abandoned_upload_does_not_block_cas_writers(pair: tuple[S3Store, S3Store],
                                                        s3_client: Any, s3_bucket: str) -> None:
    """A data object no metadata names, unchanged for pair_timeout (a writer died between
    its two steps), is taken as abandoned: the CAS write replaces it."""
    a, _ = pair
    a.set("k", (b"start", {}))
    a.set("gone", (b"x", {}))
    a.delete("gone")
    dead = {H_WRITE: uuid.uuid4().hex}
    for key in ("k", "gone"):  # under a committed key, and with no key at all
        s3_client.put_object(Bucket=s3_bucket, Key=f"{a.prefix}{key}.data", Body=b"dead", Metadata=dead)
    a.pair_timeout = 0.3
    for key, revision in (("k", 1), ("gone", 0)):
        started = time.monotonic()
        a.set(key, (b"new", {}), if_revision=revision)
        assert 0.3 <= time.monotonic() - started < 5
        assert _whole(a, key) == (b"new", {}, revision + 1)


# ------------------------------------------------------------------ cost

def test_plain_writes_cost_no_extra_request(s3_client: Any, s3_bucket: str) -> None:
    with S3Store(s3_bucket, f"n-{uuid.uuid4().hex[:8]}", client=s3_client) as store:
        store.set("k", (b"v", {}))
        requests = s3_moto.Requests(s3_client)
        try:
            store.set("k", (b"w", {}))
            plain = [op for op, _ in requests.made]
            requests.clear()
            store.set("k", (b"x", {}), if_revision=2)
            cas = [op for op, _ in requests.made]
            cas_data = [name.endswith(".data") for _, name in requests.made]
            requests.clear()
            store.keep_max = 0  # a value larger than this: only the data object's HEAD
            store.set("k", (b"y", {}), if_revision=3)
            large = [op for op, _ in requests.made]
        finally:
            requests.close()
    assert plain == ["PutObject", "GetObject", "PutObject"]  # data, metadata read, commit
    # the check's read, the data object's (read whole: a small value is kept to be put back
    # if the commit fails), the conditional data PUT, the commit (If-Match on the check's
    # read: no second GET of the metadata). Before issue 18's guard: GET, PUT, GET, PUT.
    assert cas == ["GetObject", "GetObject", "PutObject", "PutObject"]
    assert cas_data == [False, True, True, False]
    assert large == ["GetObject", "HeadObject", "PutObject", "PutObject"]


def test_a_versioned_bucket_needs_no_guard(s3_client: Any, s3_bucket: str) -> None:
    s3_client.put_bucket_versioning(Bucket=s3_bucket, VersioningConfiguration={"Status": "Enabled"})
    with S3Store(s3_bucket, f"v-{uuid.uuid4().hex[:8]}", client=s3_client) as store:
        store.set("k", (b"v", {}))
        requests = s3_moto.Requests(s3_client)
        try:
            store.set("k", (b"w", {}), if_revision=1)
        finally:
            requests.close()
        assert [op for op, _ in requests.made] == ["GetObject", "PutObject", "PutObject"]
        assert store.to_bytes("k") == b"w"


# ------------------------------------------------------------------ two hosts, one counter

def _increment_data(store: S3Store, key: str, seen: List[tuple[int, int]]) -> None:
    """One CAS increment of a counter kept in the data; every read is recorded."""
    while True:
        value = store.get(key)
        n = int(value.data.read())
        seen.append((n, value.revision))
        try:
            store.set(key, (str(n + 1).encode(), {}), if_revision=value.revision)
            return
        except ConflictError:
            pass


def test_a_counter_in_the_data_from_two_clients_is_exact(s3_endpoint: Any, s3_bucket: str) -> None:
    """Two S3Store instances (own clients, as two hosts), two threads each, increment a
    counter stored in the data by CAS on an unversioned bucket: the count is exact and
    every read is whole (data n at revision n + 1)."""
    prefix = f"count-{uuid.uuid4().hex[:8]}"
    stores = [S3Store(s3_bucket, prefix, endpoint_url=s3_endpoint, region="us-east-1",
                      **s3_moto.CREDENTIALS) for _ in range(2)]
    for s in stores:
        s.connect()
    try:
        stores[0].set("counter", (b"0", {}))
        per_thread = 12
        seen: List[tuple[int, int]] = []

        def run(s: S3Store) -> None:
            for _ in range(per_thread):
                _increment_data(s, "counter", seen)

        s3_moto.run_threads(run, [(s,) for s in stores for _ in range(2)])
        total = 4 * per_thread
        assert _whole(stores[1], "counter") == (str(total).encode(), {}, total + 1)
        assert all(revision == n + 1 for n, revision in seen)
    finally:
        for s in stores:
            s.disconnect()


def test_a_broken_key_is_what_these_tests_would_see(pair: tuple[S3Store, S3Store],
                                                    s3_client: Any, s3_bucket: str) -> None:
    """The failure the tests above look for: data under metadata naming another write
    makes reads fail (so a get() returning the winner's bytes proves it whole)."""
    a, _ = pair
    a.set("k", (b"v", {}))
    s3_client.put_object(Bucket=s3_bucket, Key=f"{a.prefix}k.data", Body=b"other",
                         Metadata={H_WRITE: uuid.uuid4().hex})
    a.pair_timeout = 0.2
    with pytest.raises(StoreError, match="never committed"):
        a.get("k")
