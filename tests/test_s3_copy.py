"""S3Store copy and move are server-side: the client sends no byte of the data (the bodies
of its requests are counted through botocore's ``before-send`` event) and reads none."""

from __future__ import annotations

import os
import uuid
import zlib
from typing import Any, Iterator

import pytest

import kvstore



MiB = 1024 * 1024


class Traffic:
    """The operations a client calls and the bytes of the request bodies it sends."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.body_bytes = 0
        self.calls: list[tuple[str, str]] = []
        client.meta.events.register("before-send.s3", self._sent)
        client.meta.events.register("before-call.s3", self._called)

    def _sent(self, request: Any, **_: Any) -> None:
        body = request.body
        if body is None:
            return
        if hasattr(body, "read"):  # a stream: count what is left of it
            pos = body.tell()
            self.body_bytes += len(body.read())
            body.seek(pos)
        else:
            self.body_bytes += len(body)

    def _called(self, model: Any, params: Any, **_: Any) -> None:
        self.calls.append((model.name, params.get("Key", "")))

    def ops(self) -> list[str]:
        return [name for name, _ in self.calls]

    def close(self) -> None:
        self.client.meta.events.unregister("before-send.s3", self._sent)
        self.client.meta.events.unregister("before-call.s3", self._called)


@pytest.fixture
def traffic(s3_client: Any) -> Iterator[Traffic]:
    t = Traffic(s3_client)
    yield t
    t.close()


def _store(client: Any, bucket: str, **kw: Any) -> kvstore.S3Store:
    return kvstore.S3Store(bucket, f"t-{uuid.uuid4().hex[:8]}", client=client, **kw)


def test_the_counter_counts_an_upload(s3_client: Any, s3_bucket: str, traffic: Traffic) -> None:
    with _store(s3_client, s3_bucket) as store:
        store.set("k", (os.urandom(MiB), {}))
    assert traffic.body_bytes >= MiB  # so a count near zero below means something


def test_copy_sends_no_data(s3_client: Any, s3_bucket: str, traffic: Traffic) -> None:
    data = os.urandom(3 * MiB)
    with _store(s3_client, s3_bucket) as store:
        store.set("src", (data, {"n": 1}))
        before, traffic.calls[:] = traffic.body_bytes, []
        store.copy("src", "dst")
        sent = traffic.body_bytes - before
        assert sent < 4096, f"{sent} bytes of request bodies for a copy"
        assert "CopyObject" in traffic.ops() and "UploadPart" not in traffic.ops()
        assert not [k for op, k in traffic.calls if op == "GetObject" and k.endswith(".data")]
        assert store.to_bytes("dst") == data and store.get_metadata("dst") == {"n": 1}
        assert store.checksum("dst") == f"crc32:{zlib.crc32(data):08x}" == store.checksum("src")


def test_move_sends_no_data_and_deletes_the_source(s3_client: Any, s3_bucket: str, traffic: Traffic) -> None:
    data = os.urandom(2 * MiB)
    with _store(s3_client, s3_bucket) as store:
        store.set("a/src", (data, {"k": "v"}))
        before = traffic.body_bytes
        store.move("a/src", "b/dst")
        assert traffic.body_bytes - before < 4096
        assert not store.exists("a/src") and store.to_bytes("b/dst") == data
        names = [o["Key"] for o in s3_client.list_objects_v2(Bucket=s3_bucket, Prefix=store.prefix)["Contents"]]
        assert sorted(n[len(store.prefix):] for n in names) == ["b/dst.data", "b/dst.metadata"]


def test_a_copy_above_copy_max_is_a_multipart_copy(s3_client: Any, s3_bucket: str, traffic: Traffic) -> None:
    data = os.urandom(12 * MiB)

    class Small(kvstore.S3Store):
        copy_max = 5 * MiB  # S3's 5 GiB, lowered

    with Small(s3_bucket, f"t-{uuid.uuid4().hex[:8]}", client=s3_client, part_size=5 * MiB) as store:
        store.set("big", (data, {"size": "12MiB"}))
        before, traffic.calls[:] = traffic.body_bytes, []
        store.copy("big", "big2")
        assert traffic.body_bytes - before < 8192
        ops = traffic.ops()
        assert ops.count("UploadPartCopy") == 3 and "CopyObject" not in ops and "UploadPart" not in ops
        assert store.to_bytes("big2") == data and store.checksum("big2") == store.checksum("big")


def test_copy_between_two_stores_of_one_service(s3_client: Any, s3_bucket: str, traffic: Traffic) -> None:
    data = os.urandom(MiB)
    other_bucket = f"kvs-{uuid.uuid4().hex[:16]}"
    s3_client.create_bucket(Bucket=other_bucket)
    with _store(s3_client, s3_bucket) as a, _store(s3_client, other_bucket) as b:
        a.set("x", (data, {"from": "a"}))
        assert b._can_copy_from(a) and not b._can_copy_from(kvstore.MemoryStore())
        before = traffic.body_bytes
        b._copy_in(a, "x", "y")
        assert traffic.body_bytes - before < 4096
        assert b.to_bytes("y") == data and b.get_metadata("y") == {"from": "a"}
        with pytest.raises(KeyError):
            b._copy_in(a, "missing", "y")


def test_copy_ranges_respect_the_part_limits() -> None:
    from kvstore.stores.s3.copies import COPY_MAX, MAX_PARTS, Copies

    copies = Copies(None, "b", None, 8 * MiB, 4)  # type: ignore[arg-type]
    spans = copies.ranges(6 * 1024 ** 3)
    assert spans[0] == (0, 8 * MiB - 1) and spans[-1][1] == 6 * 1024 ** 3 - 1
    assert all(b[0] == a[1] + 1 for a, b in zip(spans, spans[1:], strict=False))
    huge = copies.ranges(5 * 1024 ** 4)  # 5 TiB: parts grow to fit S3's 10,000
    assert len(huge) <= MAX_PARTS and max(e - s + 1 for s, e in huge) <= COPY_MAX


def test_sync_between_two_s3_stores_of_one_service_copies_server_side(
        s3_client: Any, s3_bucket: str, traffic: Traffic) -> None:
    with _store(s3_client, s3_bucket) as a, _store(s3_client, s3_bucket) as b:
        values = {f"k{i}": os.urandom(200_000) for i in range(5)}
        for key, data in values.items():
            a.set(key, (data, {"key": key}))
        before, traffic.calls[:] = traffic.body_bytes, []
        report = kvstore.sync(a, b)
        assert report.ok and sorted(report.done) == sorted(values) and report.bytes == 5 * 200_000
        assert traffic.body_bytes - before < 5 * 4096, "the data went through the client"
        assert traffic.ops().count("CopyObject") == 5
        assert not [k for op, k in traffic.calls if op == "GetObject" and k.endswith(".data")]
        assert {k: b.to_bytes(k) for k in b.glob("*")} == values
        again = kvstore.sync(a, b)
        assert again.ok and sorted(again.skipped) == sorted(values) and not again.done
