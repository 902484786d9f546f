"""S3Store's faults (API.md, "Faults"), against moto's S3 server over HTTP on 127.0.0.1: an
unreadable metadata object, readers among busy writers, a vanished data object, bad
credentials at connect, and a delete racing a write."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from typing import Any, Dict, Iterator, List, Tuple

import pytest

boto3 = pytest.importorskip("boto3")
pytest.importorskip("moto")

from test_s3 import (  # noqa: E402  (the moto server and clients of test_s3.py)
    CREDENTIALS,
    _free_port,
    _objects,
    bucket,
    client,
    s3_session,
    second_client,
)

from kvstore.errors import AuthorizationError, StoreError  # noqa: E402
from kvstore.stores.s3 import S3Store  # noqa: E402
from kvstore.testing import EventRecorder  # noqa: E402

__all__ = ["bucket", "client", "s3_session", "second_client"]  # fixtures, used by name


# ---------------------------------------------------------------- an unreadable metadata object


def test_corrupt_metadata_object(client: Any, bucket: str, caplog: pytest.LogCaptureFixture) -> None:
    with S3Store(bucket, "corrupt", client=client) as store:
        store.set("good", (b"g", {"kind": "x"}))
        store.set("bad", (b"b", {"kind": "x"}))
        long_key = "long/" + "€" * 250
        store.set(long_key, (b"l", {"kind": "x"}))
        names = store._naming.names("bad")
        client.put_object(Bucket=bucket, Key=names.metadata, Body=b'{"kind": "x", broken',
                          Metadata=client.head_object(Bucket=bucket, Key=names.metadata)["Metadata"])
        long_names = store._naming.names(long_key)
        head = client.head_object(Bucket=bucket, Key=long_names.metadata)["Metadata"]
        client.put_object(Bucket=bucket, Key=long_names.metadata, Body=b"[1, 2]", Metadata=head)
        for read in (store.get, store.get_metadata, store.to_bytes):
            for key in ("bad", long_key):
                with pytest.raises(StoreError, match="metadata") as info:
                    read(key)
                assert not isinstance(info.value, KeyError)
        with caplog.at_level(logging.WARNING, logger="kvstore.s3"):
            assert list(store.query(kind="x")) == [("good", {"kind": "x"})]
            assert list(store.query_keys()) == ["good"]
        warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any("'bad'" in m and "skipped" in m for m in warned), warned
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="kvstore.s3"):
            assert list(store.glob("*")) == ["good"]
            assert list(store.glob("b*")) == []
            assert list(store.glob("long/*")) == []
            assert list(store.glob("g*")) == ["good"]
        warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any("'bad'" in m and "glob skipped" in m for m in warned), warned
        assert any(long_key[:20] in m or "long" in m for m in warned if "glob skipped" in m), warned
        assert not [t for t in threading.enumerate() if t.name.startswith("kvstore-s3")]
        assert store.exists("bad")
        for keep in (lambda: store.set_data("bad", b"x"), lambda: store.update_metadata("bad", {"a": 1})):
            with pytest.raises(StoreError, match="metadata"):
                keep()  # they would keep or merge the unreadable metadata
        store.set("bad", (b"again", {"kind": "y"}))  # a write of the whole value repairs it
        assert store.to_bytes("bad") == b"again"
        assert list(store.query_keys(kind="y")) == ["bad"]
        assert list(store.glob("*")) == ["bad", "good"]  # the long key is still unreadable
        store.delete(long_key)  # so does a delete
        assert not store.exists(long_key)


# ---------------------------------------------------------------- readers among busy writers


@pytest.mark.parametrize("versioned", [False, True], ids=["unversioned", "versioned"])
def test_readers_are_not_starved_by_writers(client: Any, second_client: Any, s3_session: Any,
                                            s3_endpoint: str, bucket: str, versioned: bool) -> None:
    if versioned:
        client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    reader_client = s3_session.client("s3", endpoint_url=s3_endpoint)
    writers = [S3Store(bucket, "busy", client=c) for c in (client, second_client)]
    reader = S3Store(bucket, "busy", client=reader_client)
    stop = threading.Event()
    writes = [0, 0]
    reads: List[int] = [0, 0]
    bad: List[Tuple[bytes, Dict[str, Any]]] = []
    errors: List[BaseException] = []

    def write(n: int) -> None:
        try:
            while not stop.is_set():
                tag = f"w{n}-{writes[n]}"
                writers[n].set("k", (tag.encode() * 50, {"tag": tag}))
                writes[n] += 1
        except BaseException as exc:  # noqa: BLE001  (reported by the test)
            errors.append(exc)

    def read(n: int) -> None:
        try:
            while not stop.is_set():
                value = reader.get("k")
                data = value.data.read()
                if data != value.metadata["tag"].encode() * 50:
                    bad.append((data, value.metadata))
                reads[n] += 1
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    try:
        for store in (*writers, reader):
            store.connect()
        writers[0].set("k", (b"w0-start" * 50, {"tag": "w0-start"}))
        threads = [threading.Thread(target=write, args=(n,)) for n in (0, 1)]
        threads += [threading.Thread(target=read, args=(n,)) for n in (0, 1)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        # Run until each reader has done 10 reads and each writer 10 writes (the previous
        # release managed 2 reads in 2 s against 62 writes); fail at the deadline.
        while time.monotonic() < deadline and not errors and min(reads + writes) < 10:
            time.sleep(0.05)
        stop.set()
        for t in threads:
            t.join(30)
    finally:
        stop.set()
        for store in (*writers, reader):
            store.disconnect()
        reader_client.close()
    assert not errors, errors
    assert not bad
    assert min(reads) >= 10, (reads, writes)
    assert min(writes) >= 10, (reads, writes)  # the writers did keep writing


# ---------------------------------------------------------------- a vanished data object


def test_vanished_data_object_is_an_immediate_error(client: Any, bucket: str) -> None:
    with S3Store(bucket, "vanished", client=client) as store:
        store.set("small", (b"s", {"a": 1}))
        store.set("large", (b"L" * (2 * 1024 * 1024), {"a": 2}))
        for key in ("small", "large"):
            client.delete_object(Bucket=bucket, Key=store._naming.names(key).data)
            start = time.monotonic()
            with pytest.raises(StoreError, match=f"data object of {key!r}.*missing") as info:
                store.get(key)
            assert time.monotonic() - start < 1.0  # pair_timeout (5 s) is for writers between steps
            assert not isinstance(info.value, KeyError)
            assert store.get_metadata(key)  # the metadata is still there
        store.set("small", (b"again", {}))
        assert store.to_bytes("small") == b"again"


# ---------------------------------------------------------------- bad credentials


@contextlib.contextmanager
def _moto_with_auth(free_actions: int) -> Iterator[str]:
    """A moto server of its own that authenticates every request after ``free_actions``."""
    port = _free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(free_actions)}
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            assert proc.poll() is None and time.monotonic() < deadline, "moto server did not start"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def _user(iam: Any, name: str, actions: List[str]) -> Dict[str, str]:
    """An IAM user allowed ``actions`` on every S3 resource, and its key (3 actions)."""
    iam.create_user(UserName=name)
    policy = {"Version": "2012-10-17",
              "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]}
    iam.put_user_policy(UserName=name, PolicyName="s3", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return {"aws_access_key_id": key["AccessKeyId"], "aws_secret_access_key": key["SecretAccessKey"]}


def test_bad_credentials_fail_at_connect() -> None:
    with _moto_with_auth(free_actions=7) as endpoint:
        admin = boto3.session.Session(region_name="us-east-1", **CREDENTIALS)
        iam = admin.client("iam", endpoint_url=endpoint)
        s3 = admin.client("s3", endpoint_url=endpoint)
        try:
            good = _user(iam, "kv", ["s3:*"])
            objects_only = _user(iam, "objects", ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"])
            s3.create_bucket(Bucket="auth")  # the 7th and last free action
        finally:
            iam.close()
            s3.close()

        def store(bucket: str, credentials: Dict[str, str]) -> S3Store:
            return S3Store(bucket, "p", endpoint_url=endpoint, region="us-east-1", max_attempts=1,
                           **credentials)

        with store("auth", good) as s:
            s.set("k", (b"v", {"a": 1}))
            assert s.to_bytes("k") == b"v"
        unknown = {"aws_access_key_id": "AKIA" + "X" * 16, "aws_secret_access_key": "nope"}
        wrong_secret = {**good, "aws_secret_access_key": "wrong" + good["aws_secret_access_key"][5:]}
        for bucket, credentials in (("auth", unknown), ("auth", wrong_secret),
                                    (f"missing-{uuid.uuid4().hex[:8]}", unknown)):
            s = store(bucket, credentials)
            with pytest.raises(AuthorizationError):
                s.connect()
            assert not s.is_connected()
        # A key that may use objects but not list the bucket still connects (HeadBucket needs
        # s3:ListBucket); what it may not do raises AuthorizationError when it is tried.
        with store("auth", objects_only) as s:
            assert s.get_metadata("k") == {"a": 1}
            with pytest.raises(AuthorizationError):
                list(s.glob("*"))


# ---------------------------------------------------------------- a delete racing a write


def _before(client: Any, operation: str, suffix: str, action: Any) -> Any:
    """Run ``action()`` once, just before ``client``'s first ``operation`` on a ``suffix`` object."""
    fired: List[bool] = []

    def hook(params: Dict[str, Any], **_: Any) -> None:
        if params["Key"].endswith(suffix) and not fired:
            fired.append(True)
            action()

    client.meta.events.register(f"before-parameter-build.s3.{operation}", hook)
    return fired


def test_a_write_committed_before_a_delete_commits_is_the_one_deleted(
        client: Any, second_client: Any, bucket: str) -> None:
    a, b = S3Store(bucket, "race", client=client), S3Store(bucket, "race", client=second_client)
    with a, b:
        a.set("k", (b"old", {"v": "old"}))
        recorder = EventRecorder(a)
        try:
            fired = _before(client, "DeleteObject", ".metadata", lambda: b.set("k", (b"new", {"v": "new"})))
            a.delete("k")
        finally:
            recorder.close()
        assert fired
        # the delete removed the value it reports, the one b committed meanwhile
        assert recorder.modifications() == [("store_delete", "k", {"v": "new"})]
        assert not a.exists("k")
        assert _objects(client, bucket, "race/") == []


def test_a_write_committing_after_a_delete_keeps_its_data(client: Any, second_client: Any,
                                                          bucket: str) -> None:
    a, b = S3Store(bucket, "race2", client=client), S3Store(bucket, "race2", client=second_client)
    with a, b:
        a.set("k", (b"old", {"v": "old"}))
        # b has uploaded its data; before its metadata PUT, a deletes the key
        fired = _before(second_client, "PutObject", ".metadata", lambda: a.delete("k"))
        b.set("k", (b"new", {"v": "new"}))
        assert fired and a.exists("k")
        value = a.get("k")
        assert (value.data.read(), value.metadata) == (b"new", {"v": "new"})



# ---------------------------------------------------------------- metadata fetch concurrency


def test_fetches_never_outnumber_the_clients_connections(s3_session: Any, s3_endpoint: str,
                                                         bucket: str) -> None:
    """A client given with a pool of 3 connections: query and glob fetch with 3 threads, not
    max_workers (more would open a connection each and have urllib3 drop it)."""
    from botocore.config import Config

    small = s3_session.client("s3", endpoint_url=s3_endpoint,
                              config=Config(max_pool_connections=3))
    names: set = set()
    lock = threading.Lock()

    def seen(**_: Any) -> None:
        with lock:
            names.add(threading.current_thread().name)

    try:
        with S3Store(bucket, "pool", client=small, max_workers=16) as store:
            for i in range(40):
                store.set_metadata(f"k{i:02d}", {"i": i})
            small.meta.events.register("before-call.s3.GetObject", seen)
            assert len(list(store.query_keys())) == 40
            assert len(list(store.glob("k*"))) == 40
            fetchers = {n for n in names if n.startswith("kvstore-s3-")}
            assert fetchers and len({n for n in fetchers if "query" in n}) <= 3, fetchers
            assert len({n for n in fetchers if "glob" in n}) <= 3, fetchers
        with S3Store(bucket, "pool", client=small, max_workers=2) as store:
            assert store._fetch_workers() == 2  # fewer workers than connections: as asked
    finally:
        small.close()
