"""S3Store against moto's S3 server over HTTP on 127.0.0.1: the conformance suite and
what only S3 has (multipart, paging, prefixes, checksums, conditional commits)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
import zlib
from pathlib import Path
from typing import Any, Dict, Iterator, List
from urllib.parse import quote

import pytest

boto3 = pytest.importorskip("boto3")
pytest.importorskip("moto")

from botocore.exceptions import EndpointConnectionError  # noqa: E402
from botocore.stub import Stubber  # noqa: E402

import kvstore  # noqa: E402
from kvstore import open_store  # noqa: E402
from kvstore.errors import AuthorizationError, ChecksumError, StoreError  # noqa: E402
from kvstore.stores.filesystem import FileSystemStore  # noqa: E402
from kvstore.stores.s3 import S3Store  # noqa: E402
from kvstore.testing import ODD_KEYS, EventRecorder, StoreConformance  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
MiB = 1024 * 1024


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]



@pytest.fixture(scope="session")
def s3_session() -> Any:
    # one botocore session: its loaded service models are shared by every client
    return boto3.session.Session(region_name="us-east-1", **CREDENTIALS)


@pytest.fixture
def client(s3_session: Any, s3_endpoint: str) -> Iterator[Any]:
    """A client per test, closed at its end, so moto's connection threads end with it."""
    c = s3_session.client("s3", endpoint_url=s3_endpoint)
    yield c
    c.close()


@pytest.fixture
def second_client(s3_session: Any, s3_endpoint: str) -> Iterator[Any]:
    """Another client of its own, for a second process's view of the bucket, or a stub."""
    c = s3_session.client("s3", endpoint_url=s3_endpoint)
    yield c
    c.close()


@pytest.fixture
def bucket(client: Any) -> str:
    name = f"kvs-{uuid.uuid4().hex[:16]}"
    client.create_bucket(Bucket=name)
    return name


@pytest.fixture
def store(client: Any, bucket: str) -> Iterator[S3Store]:
    s = S3Store(bucket, f"t-{uuid.uuid4().hex[:8]}", client=client)
    with s:
        yield s


def _objects(client: Any, bucket: str, prefix: str = "") -> List[str]:
    names: List[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        names.extend(o["Key"] for o in page.get("Contents", ()))
    return names


def _uploads(client: Any, bucket: str) -> List[Any]:
    return client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])


class _Boom(Exception):
    pass


class _Failing(io.RawIOBase):
    """``good`` bytes, then an exception."""

    def __init__(self, good: int) -> None:
        super().__init__()
        self.left = good

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if self.left <= 0:
            raise _Boom("source failed")
        n = min(self.left, n if n and n > 0 else MiB)
        self.left -= n
        return b"n" * n


# ---------------------------------------------------------------- conformance


class TestS3Conformance(StoreConformance):
    supports_rollback = False  # S3 cannot undo a write: see kvstore/stores/s3/__init__.py
    has_journal = False

    @pytest.fixture
    def store(self, client: Any, bucket: str) -> Iterator[S3Store]:
        s = S3Store(bucket, "conformance/", client=client)
        with s:
            yield s


# ---------------------------------------------------------------- layout


def test_layout_mirrors_filesystem_store(store: S3Store, client: Any) -> None:
    store.set("images/cat.png", (b"meow", {"kind": "cat", "n": 1}))
    p = store.prefix
    assert p.endswith("/")
    assert sorted(_objects(client, store.bucket, p)) == [p + "images/cat.png.data", p + "images/cat.png.metadata"]
    meta = client.get_object(Bucket=store.bucket, Key=p + "images/cat.png.metadata")
    assert json.loads(meta["Body"].read()) == {"kind": "cat", "n": 1}  # the user's metadata only
    data = client.get_object(Bucket=store.bucket, Key=p + "images/cat.png.data")
    assert data["Body"].read() == b"meow"
    headers = meta["Metadata"]
    assert headers["kvstore-write"] == data["Metadata"]["kvstore-write"]
    assert headers["kvstore-crc32"] == f"{zlib.crc32(b'meow'):08x}"
    assert headers["kvstore-size"] == "4"


def test_filesystem_store_synced_both_ways(tmp_path: Path, client: Any, bucket: str) -> None:
    keys = {"plain": b"1", "dir/sub/file.txt": b"2", "a b/?": b"3", "..": b"4", "x.data/y": b"5"}
    fs = FileSystemStore(tmp_path / "fs", create=True)
    with fs:
        for key, data in keys.items():
            fs.set(key, (data, {"key": key}))
    # `aws s3 sync fs s3://bucket/synced --exclude '.kvstore/*'`
    root = tmp_path / "fs"
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and not rel.startswith(".kvstore/"):
            client.put_object(Bucket=bucket, Key="synced/" + rel, Body=path.read_bytes())
    with S3Store(bucket, "synced", client=client) as s3:
        assert sorted(s3.glob("*")) == sorted(keys)
        for key, data in keys.items():
            assert s3.get_data(key).read() == data
            assert s3.get_metadata(key) == {"key": key}
        s3.set("plain", (b"rewritten", {"new": True}))
        s3.update_metadata("..", {"more": 1})
        s3.set("added/by s3", (b"6", {}))
        s3.delete("x.data/y")
        expected = {k: (s3.get_data(k).read(), s3.get_metadata(k)) for k in s3.glob("*")}
    # and back: `aws s3 sync s3://bucket/synced back`
    back = tmp_path / "back"
    for name in _objects(client, bucket, "synced/"):
        target = back / name[len("synced/"):]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(client.get_object(Bucket=bucket, Key=name)["Body"].read())
    with FileSystemStore(back) as fs2:
        assert {k: (fs2.get_data(k).read(), fs2.get_metadata(k)) for k in fs2.glob("*")} == expected


def test_prefix_without_slash_and_isolation(client: Any, bucket: str) -> None:
    a, ab = S3Store(bucket, "team/a", client=client), S3Store(bucket, "team/ab", client=client)
    with a, ab:
        assert (a.prefix, ab.prefix) == ("team/a/", "team/ab/")
        a.set("k", (b"in a", {"store": "a"}))
        ab.set("k", (b"in ab", {"store": "ab"}))
        ab.set("only-ab", (b"", {"store": "ab"}))
        assert sorted(a.glob("*")) == ["k"]
        assert sorted(ab.glob("*")) == ["k", "only-ab"]
        assert a.get_data("k").read() == b"in a"
        assert list(a.query_keys(store="ab")) == []
        assert not a.exists("only-ab")
        a.delete("k")
        assert ab.get_data("k").read() == b"in ab"
    names = _objects(client, bucket)
    assert all(n.startswith(("team/a/", "team/ab/")) for n in names)


def test_odd_keys_never_escape_the_prefix(client: Any, bucket: str) -> None:
    with S3Store(bucket, "odd/inside", client=client) as inside, \
            S3Store(bucket, "odd/other", client=client) as other:
        for key in ODD_KEYS:
            inside.set(key, (key.encode("utf-8"), {"key": key}))
        assert sorted(inside.glob("*")) == sorted(ODD_KEYS)
        for key in ODD_KEYS:
            assert inside.get_data(key).read() == key.encode("utf-8")
            assert inside.get_metadata(key) == {"key": key}
        assert list(other.glob("*")) == []
        assert sorted(inside.glob("..*")) == sorted(k for k in ODD_KEYS if k.startswith(".."))
        assert sorted(inside.glob("%*")) == ["%*?[]", "%41"]
        assert sorted(inside.glob("\u20ac*")) == ["\u20ac" * 255]
        names = _objects(client, bucket)
        for name in names:
            assert name.startswith("odd/inside/"), name
            assert len(name.encode("utf-8")) <= 1024, name
            segments = name[len("odd/inside/"):].split("/")
            assert all(s not in ("", ".", "..") for s in segments), name
        # the key too long for an S3 object name lives in the long-key area
        assert any(n.startswith("odd/inside/.kvstore/long/") for n in names)
        for key in ODD_KEYS:
            inside.delete(key)
    assert _objects(client, bucket) == []


# ---------------------------------------------------------------- streaming


def test_multipart_upload_40mb_with_progress(store: S3Store, client: Any) -> None:
    data = os.urandom(40 * MiB)
    events = EventRecorder(store)
    try:
        store.set("big", (io.BytesIO(data), {"size": len(data)}), buffer_size=MiB)
    finally:
        events.close()
    start = events.of("progress_start")[0]
    steps = [e.step for e in events.of("progress_step")]
    assert start.steps == len(data)
    assert len(steps) >= 40 and steps == sorted(steps) and steps[-1] == len(data)
    assert all(b - a <= MiB for a, b in zip(steps, steps[1:], strict=False))
    assert events.of("progress_end")[0].exit_state == "normal"
    assert events.modifications() == [("store_set", "big", {"size": len(data)})]
    head = client.head_object(Bucket=store.bucket, Key=store.prefix + "big.data")
    assert head["ETag"].strip('"').endswith("-5")  # five 8 MiB parts
    assert _uploads(client, store.bucket) == []
    value = store.get("big")
    assert value.size == len(data)
    with value.data as f:
        assert hashlib.sha256(f.read()).digest() == hashlib.sha256(data).digest()
    assert store.get_data_range("big", 20 * MiB - 3, 20 * MiB + 5).read() == data[20 * MiB - 3:20 * MiB + 5]
    assert value.range(-7).read() == data[-7:]


@pytest.mark.parametrize("size", [3 * MiB, 20 * MiB])
def test_failed_upload_leaves_old_value_and_no_garbage(store: S3Store, client: Any, size: int) -> None:
    old = os.urandom(9 * MiB)
    store.set("k", (io.BytesIO(old), {"v": "old"}))
    events = EventRecorder(store)
    try:
        with pytest.raises(_Boom):
            store.set("k", (_Failing(size), {"v": "new"}))
        with pytest.raises(_Boom):
            store.set("fresh", (_Failing(size), {}))
    finally:
        events.close()
    assert store.to_bytes("k") == old
    assert store.get_metadata("k") == {"v": "old"}
    assert not store.exists("fresh")
    assert events.modifications() == []
    assert [e.exit_state for e in events.of("progress_end")] == ["exception", "exception"]
    assert _uploads(client, store.bucket) == []
    assert sorted(_objects(client, store.bucket)) == [store.prefix + "k.data", store.prefix + "k.metadata"]


def test_backend_failure_mid_upload_is_aborted(store: S3Store, client: Any) -> None:
    store.set("k", (b"old", {"v": "old"}))
    calls = []

    def fail_third_part(params: Dict[str, Any], **_: Any) -> None:
        calls.append(params["PartNumber"])
        if params["PartNumber"] == 3:
            raise EndpointConnectionError(endpoint_url="http://127.0.0.1:9")

    client.meta.events.register("before-parameter-build.s3.UploadPart", fail_third_part)
    try:
        with pytest.raises(StoreError):
            store.set("k", (io.BytesIO(b"x" * (40 * MiB)), {"v": "new"}))
    finally:
        client.meta.events.unregister("before-parameter-build.s3.UploadPart", fail_third_part)
    assert 3 in calls
    assert store.to_bytes("k") == b"old" and store.get_metadata("k") == {"v": "old"}
    assert _uploads(client, store.bucket) == []


# ---------------------------------------------------------------- listing


def test_more_than_1000_keys_glob_and_query(store: S3Store, client: Any) -> None:
    from concurrent.futures import ThreadPoolExecutor

    # Seeded as `aws s3 sync` of a filesystem store would leave them (moto serves a few
    # hundred requests a second, so the store's own writes are tested elsewhere).
    n = 1100

    def seed(i: int) -> None:
        base = f"{store.prefix}many/{i:04d}"
        client.put_object(Bucket=store.bucket, Key=base + ".data", Body=str(i).encode())
        client.put_object(Bucket=store.bucket, Key=base + ".metadata",
                          Body=json.dumps({"i": i, "even": i % 2 == 0}).encode())

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(seed, range(n)))
    store.set("other", (b"", {"i": -1}))
    prefixes: List[str] = []

    def record(params: Dict[str, Any], **_: Any) -> None:
        prefixes.append(params.get("Prefix", ""))

    client.meta.events.register("before-parameter-build.s3.ListObjectsV2", record)
    try:
        assert len(list(store.glob("many/*"))) == n
        assert prefixes.count(store.prefix + "many/") >= 3  # 2200 objects: three pages
        prefixes.clear()
        assert sorted(store.glob("many/10*")) == [f"many/{i}" for i in range(1000, 1100)]
        assert store.prefix + "many/10" in prefixes
        prefixes.clear()
        assert list(store.glob("oth*")) == ["other"]
        assert all(not p.startswith(store.prefix + "many") for p in prefixes)
        assert sorted(store.query_keys(even=True)) == [f"many/{i:04d}" for i in range(0, n, 2)]
        # the query's pool was joined before it returned
        assert not [t for t in threading.enumerate() if t.name.startswith("kvstore-s3")]
    finally:
        client.meta.events.unregister("before-parameter-build.s3.ListObjectsV2", record)
    assert store.get("many/1099").data.read() == b"1099"


# ---------------------------------------------------------------- integrity


def test_tampering_is_detected(store: S3Store, client: Any) -> None:
    b, p = store.bucket, store.prefix
    store.set("small", (b"genuine", {}))
    client.put_object(Bucket=b, Key=p + "small.data", Body=b"forged!")  # no kvstore headers
    with pytest.raises(ChecksumError):
        store.get("small")
    with pytest.raises(ChecksumError):
        store.to_bytes("small")
    assert issubclass(ChecksumError, StoreError)

    store.set("copied", (b"genuine", {}))  # forged bytes under the genuine headers
    headers = client.head_object(Bucket=b, Key=p + "copied.data")["Metadata"]
    client.put_object(Bucket=b, Key=p + "copied.data", Body=b"forged!", Metadata=headers)
    with pytest.raises(ChecksumError):
        store.get_data("copied")

    big = os.urandom(3 * MiB)
    store.set("big", (io.BytesIO(big), {}))
    headers = client.head_object(Bucket=b, Key=p + "big.data")["Metadata"]
    forged = bytearray(big)
    forged[MiB] ^= 0xFF
    client.put_object(Bucket=b, Key=p + "big.data", Body=bytes(forged), Metadata=headers)
    with pytest.raises(ChecksumError):
        store.get("big").data.read()
    with pytest.raises(ChecksumError):
        store.to_bytes("big")

    client.put_object(Bucket=b, Key=p + "big.data", Body=bytes(forged))  # foreign
    with pytest.raises(ChecksumError):
        store.get_data_range("big", 0, 10)
    client.put_object(Bucket=b, Key=p + "big.data", Body=big[:-1], Metadata=headers)
    with pytest.raises(ChecksumError):
        store.get("big")
    store.set("big", (io.BytesIO(big), {}))  # rewriting heals the key
    assert store.to_bytes("big") == big


# ---------------------------------------------------------------- commit point


def _delay_metadata_put(client: Any, seconds: float, fail: bool = False) -> Any:
    def hook(params: Dict[str, Any], **_: Any) -> None:
        if params["Key"].endswith(".metadata"):
            time.sleep(seconds)
            if fail:
                raise EndpointConnectionError(endpoint_url="http://127.0.0.1:9")

    client.meta.events.register("before-parameter-build.s3.PutObject", hook)
    return hook


def test_reader_never_pairs_new_data_with_old_metadata(client: Any, second_client: Any,
                                                       bucket: str) -> None:
    writer_client = second_client
    with S3Store(bucket, "pair", client=writer_client) as writer, \
            S3Store(bucket, "pair", client=client) as reader:
        writer.set("k", (b"old", {"v": "old"}))
        _delay_metadata_put(writer_client, 0.4)
        thread = threading.Thread(target=writer.set, args=("k", (b"new!", {"v": "new"})))
        thread.start()
        seen = set()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            value = reader.get("k")
            seen.add((value.data.read(), value.metadata["v"]))
            if (b"new!", "new") in seen:
                break
        thread.join()
        assert seen <= {(b"old", "old"), (b"new!", "new")}
        assert (b"new!", "new") in seen


def test_unfinished_write_unversioned_is_reported(client: Any, second_client: Any,
                                                  bucket: str) -> None:
    writer_client = second_client
    writer, reader = S3Store(bucket, "dead", client=writer_client), S3Store(bucket, "dead", client=client)
    with writer, reader:
        writer.set("k", (b"old", {"v": "old"}))
        hook = _delay_metadata_put(writer_client, 0, fail=True)
        with pytest.raises(StoreError):
            writer.set("k", (b"new", {"v": "new"}))
        writer_client.meta.events.unregister("before-parameter-build.s3.PutObject", hook)
        reader.pair_timeout = 0.3
        with pytest.raises(StoreError, match="never committed"):
            reader.get("k")
        assert reader.get_metadata("k") == {"v": "old"}
        reader.set("k", (b"again", {"v": "again"}))
        assert reader.to_bytes("k") == b"again"


def test_versioned_bucket_failed_commit_and_snapshots(client: Any, bucket: str) -> None:
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    with S3Store(bucket, "v", client=client) as store:
        old = os.urandom(2 * MiB)
        store.set("k", (io.BytesIO(old), {"v": "old"}))
        hook = _delay_metadata_put(client, 0, fail=True)
        with pytest.raises(StoreError):
            store.set("k", (b"new", {"v": "new"}))
        client.meta.events.unregister("before-parameter-build.s3.PutObject", hook)
        assert store.to_bytes("k") == old and store.get_metadata("k") == {"v": "old"}
        value = store.get("k")  # larger than the snapshot size: streamed by version id
        store.set("k", (io.BytesIO(b"x" * (2 * MiB)), {"v": "newer"}))
        assert value.data.read() == old and value.metadata == {"v": "old"}
        assert store.get_data_range("k", 0, 3).read() == b"xxx"


def test_large_value_overwritten_since_get_unversioned(store: S3Store) -> None:
    store.set("k", (io.BytesIO(b"a" * (2 * MiB)), {}))
    value = store.get("k")
    store.set("k", (io.BytesIO(b"b" * (2 * MiB)), {}))
    with pytest.raises(StoreError, match="since"):
        value.data.read()
    small = store.get("k").range(0, 2)  # a fresh get is fine
    assert small.read() == b"bb"


def test_concurrent_update_metadata_across_instances(client: Any, second_client: Any,
                                                     bucket: str) -> None:
    other_client = second_client
    with S3Store(bucket, "cas", client=client) as a, S3Store(bucket, "cas", client=other_client) as b:
        a.set("k", (b"data", {"start": 0}))
        fired: List[bool] = []

        def interleave(params: Dict[str, Any], **_: Any) -> None:
            # just before a's conditional PUT, b commits its own update
            if params["Key"].endswith(".metadata") and not fired:
                fired.append(True)
                b.update_metadata("k", {"from_b": 1})

        client.meta.events.register("before-parameter-build.s3.PutObject", interleave)
        try:
            a.update_metadata("k", {"from_a": 1})
        finally:
            client.meta.events.unregister("before-parameter-build.s3.PutObject", interleave)
        assert fired
        assert a.get_metadata("k") == {"start": 0, "from_a": 1, "from_b": 1}
        assert a.to_bytes("k") == b"data"


def test_update_racing_a_data_write_with_equal_metadata(client: Any, second_client: Any,
                                                        bucket: str) -> None:
    # set_data keeps the metadata, so its commit has the same JSON body, hence the same
    # ETag, as the one update_metadata read: If-Match alone would not see the change.
    other_client = second_client
    a, b = S3Store(bucket, "aba", client=client), S3Store(bucket, "aba", client=other_client)
    with a, b:
        a.set("k", (b"old data", {"n": 1}))
        fired: List[bool] = []

        def interleave(params: Dict[str, Any], **_: Any) -> None:
            if params["Key"].endswith(".metadata") and not fired:
                fired.append(True)
                b.set_data("k", io.BytesIO(b"new data"))

        client.meta.events.register("before-parameter-build.s3.PutObject", interleave)
        try:
            a.update_metadata("k", {"m": 2})
        finally:
            client.meta.events.unregister("before-parameter-build.s3.PutObject", interleave)
        a.pair_timeout = 0.5
        value = a.get("k")
        assert (value.data.read(), value.metadata) == (b"new data", {"n": 1, "m": 2})


# ---------------------------------------------------------------- errors and options


def test_error_translation(client: Any, second_client: Any, bucket: str) -> None:
    stubbed = second_client
    with Stubber(stubbed) as stubber:
        stubber.add_response("head_bucket", {})
        store = S3Store(bucket, "err", client=stubbed)
        store.connect()
        stubber.add_client_error("get_object", "NoSuchKey", "The specified key does not exist.", 404)
        with pytest.raises(KeyError):
            store.get_metadata("k")
        stubber.add_client_error("get_object", "AccessDenied", "Access Denied", 403)
        with pytest.raises(AuthorizationError, match="Access Denied"):
            store.get_metadata("k")
        stubber.add_client_error("get_object", "InvalidObjectState",
                                 "The operation is not valid for the object's storage class", 403)
        with pytest.raises(StoreError, match="not valid for the object's storage class") as info:
            store.get("k")
        assert not isinstance(info.value, AuthorizationError)
        stubber.add_client_error("head_object", "403", "Forbidden", 403)
        with pytest.raises(AuthorizationError):
            store.exists("k")
        store.disconnect()
    with pytest.raises(StoreError, match="does not exist"):
        S3Store(f"missing-{uuid.uuid4().hex[:8]}", client=client).connect()
    created = f"created-{uuid.uuid4().hex[:8]}"
    with S3Store(created, client=client, create=True) as s:
        s.set("k", (b"v", {}))
    unreachable = S3Store("bkt", endpoint_url="http://127.0.0.1:9", max_attempts=1, **CREDENTIALS)
    with pytest.raises(StoreError):
        unreachable.connect()


def test_open_store_url(s3_endpoint: str, bucket: str) -> None:
    url = (f"s3://{bucket}/via/url?endpoint_url={quote(s3_endpoint, safe='')}"
           f"&region=us-east-1&part_size=6291456&upload_workers=2")
    store = open_store(url, **CREDENTIALS)
    try:
        assert isinstance(store, S3Store) and store.is_connected()
        assert (store.bucket, store.prefix, store.part_size, store.upload_workers) == (bucket, "via/url/", 6 * MiB, 2)
        store.set("k", (io.BytesIO(b"z" * (13 * MiB)), {"u": 1}))
        assert store.to_bytes("k") == b"z" * (13 * MiB)
        info = store.info()
        json.dumps(info)
        assert info["bucket"] == bucket and info["endpoint_url"] == s3_endpoint
    finally:
        store.disconnect()
    assert kvstore.S3Store is S3Store


def test_bad_options() -> None:
    with pytest.raises(TypeError, match="unknown"):
        S3Store("bkt", bogus=1)
    with pytest.raises(ValueError):
        S3Store("bkt", part_size=1024)
    with pytest.raises(ValueError):
        S3Store("")


def test_missing_boto3_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)
    with pytest.raises(ImportError, match=r"pip install 'kvstore\[s3\]'"):
        S3Store("bkt")


# ---------------------------------------------------------------- the example


def test_example_runs(s3_endpoint: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL_S3": s3_endpoint,
                "PYTHONPATH": str(ROOT)})
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "s3_store.py")], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "report" in done.stdout
    del env["AWS_ENDPOINT_URL_S3"]
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "s3_store.py")], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "AWS_ENDPOINT_URL_S3" in done.stdout
