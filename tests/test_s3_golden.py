"""Golden tests of S3Store's on-bucket format, on moto's S3 server over HTTP.

They pin, with literal names and bytes, what a store writes (object names, the metadata
object's body and headers, the data object's headers) for a short key, a key with unicode
and long keys (the hashed-name path), and that a bucket laid out by hand in that format is
read back: so a refactoring of the S3 backend cannot change the format unnoticed.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import time
import uuid
import zlib
from collections.abc import Iterator
from typing import Any

import pytest

boto3 = pytest.importorskip("boto3")
pytest.importorskip("moto")


from kvstore.stores.s3 import S3Store  # noqa: E402

CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
MiB = 1024 * 1024
EURO = "%E2%82%AC"  # "€" escaped
HEX32 = re.compile(r"[0-9a-f]{32}")
BLANKS = re.compile(rb"\n[ \t]{32}")  # the line of blanks after the JSON text



@pytest.fixture
def client(s3_endpoint: str) -> Iterator[Any]:
    c = boto3.session.Session(region_name="us-east-1", **CREDENTIALS).client("s3", endpoint_url=s3_endpoint)
    yield c
    c.close()


@pytest.fixture
def bucket(client: Any) -> str:
    name = f"golden-{uuid.uuid4().hex[:16]}"
    client.create_bucket(Bucket=name)
    return name


def _names(client: Any, bucket: str) -> list[str]:
    return sorted(o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
                  for o in page.get("Contents", ()))


def _object(client: Any, bucket: str, name: str) -> dict[str, Any]:
    response = client.get_object(Bucket=bucket, Key=name)
    return {"body": response["Body"].read(), "headers": response["Metadata"],
            "content_type": response["ContentType"]}


def _check_metadata_object(obj: dict[str, Any], json_text: str, data: bytes, t0: float, t1: float,
                           extra: dict[str, str], revision: str = "1") -> str:
    """The metadata object's body and headers as S3Store writes them; returns its write id.

    Issue 18 added ``kvstore-revision`` (the key's per-key revision counter) deliberately.
    """
    assert obj["content_type"] == "application/json"
    body = obj["body"]
    assert body.startswith(json_text.encode("utf-8"))
    assert BLANKS.fullmatch(body[len(json_text.encode("utf-8")):]), body
    headers = dict(obj["headers"])
    write = headers.pop("kvstore-write")
    assert HEX32.fullmatch(write)
    created, modified = headers.pop("kvstore-created"), headers.pop("kvstore-modified")
    assert headers.pop("kvstore-revision") == revision
    for stamp in (created, modified):
        assert repr(float(stamp)) == stamp and t0 <= float(stamp) <= t1
    assert headers == {"kvstore-crc32": f"{zlib.crc32(data):08x}", "kvstore-size": str(len(data)), **extra}
    return write


def _check_data_object(obj: dict[str, Any], data: bytes, write: str) -> None:
    assert obj["content_type"] == "application/octet-stream"
    assert obj["body"] == data
    assert obj["headers"] == {"kvstore-write": write, "kvstore-crc32": f"{zlib.crc32(data):08x}",
                              "kvstore-size": str(len(data))}


def _write_and_check(client: Any, bucket: str, prefix: str, key: str, base: str,
                     extra: dict[str, str]) -> None:
    data = "données €".encode()
    metadata = {"b": 1, "a": "é", "n": [1.5, None], "t": True}
    json_text = '{"b": 1, "a": "é", "n": [1.5, null], "t": true}'
    with S3Store(bucket, prefix, client=client) as store:
        t0 = time.time()
        store.set(key, (data, metadata))
        t1 = time.time()
        assert _names(client, bucket) == [base + ".data", base + ".metadata"]
        meta = _object(client, bucket, base + ".metadata")
        write = _check_metadata_object(meta, json_text, data, t0, t1, extra)
        _check_data_object(_object(client, bucket, base + ".data"), data, write)
        assert list(store.glob("*")) == [key]
        store.delete(key)
        assert _names(client, bucket) == []


def test_short_key(client: Any, bucket: str) -> None:
    _write_and_check(client, bucket, "golden", "images/cat.png", "golden/images/cat.png", {})


def test_unicode_key(client: Any, bucket: str) -> None:
    _write_and_check(client, bucket, "golden/", "été/ünï €.txt",
                     "golden/%%C3%A9t%C3%A9/%%C3%BCn%C3%AF%20%E2%82%AC%2Etxt", {})


def _long_headers(key: str) -> dict[str, str]:
    return {"kvstore-key": base64.urlsafe_b64encode(key.encode("utf-8")).decode("ascii")}


def test_long_key_is_hashed(client: Any, bucket: str) -> None:
    key = "€" * 255  # 2300 characters escaped
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
    _write_and_check(client, bucket, "golden", key, f"golden/.kvstore/long/{digest}", _long_headers(key))


def test_long_key_boundary(client: Any, bucket: str) -> None:
    # "€" * 100 escapes to 909 characters in five segments; the metadata object's name is
    # prefix + that + ".metadata": with a 106-byte prefix exactly 1024 bytes (S3's limit,
    # kept), with a 107-byte one 1025 (hashed).
    key = "€" * 100
    rel = "/".join(["~" + EURO * 22] * 4 + ["%" + EURO * 12])
    fits = "p" * 105 + "/"
    assert len((fits + rel + ".metadata").encode()) == 1024
    _write_and_check(client, bucket, fits, key, fits + rel, {})
    over = "p" * 106 + "/"
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
    _write_and_check(client, bucket, over, key, over + ".kvstore/long/" + digest, _long_headers(key))


def test_new_key_without_data_gets_empty_data(client: Any, bucket: str) -> None:
    with S3Store(bucket, "golden", client=client) as store:
        t0 = time.time()
        store.set_metadata("k", {"z": 1})
        t1 = time.time()
        assert _names(client, bucket) == ["golden/k.data", "golden/k.metadata"]
        write = _check_metadata_object(_object(client, bucket, "golden/k.metadata"), '{"z": 1}', b"", t0, t1, {})
        _check_data_object(_object(client, bucket, "golden/k.data"), b"", write)


def test_update_keeps_data_and_created(client: Any, bucket: str) -> None:
    with S3Store(bucket, "golden", client=client) as store:
        store.set("k", (b"v", {"a": 1}))
        before = _object(client, bucket, "golden/k.metadata")["headers"]
        t0 = time.time()
        store.update_metadata("k", {"b": 2})
        t1 = time.time()
        meta = _object(client, bucket, "golden/k.metadata")
        assert meta["body"].startswith(b'{"a": 1, "b": 2}\n')
        headers = meta["headers"]
        assert headers["kvstore-write"] == before["kvstore-write"]  # it still names the same data
        assert headers["kvstore-created"] == before["kvstore-created"]
        assert (before["kvstore-revision"], headers["kvstore-revision"]) == ("1", "2")
        assert t0 <= float(headers["kvstore-modified"]) <= t1
        _check_data_object(_object(client, bucket, "golden/k.data"), b"v", headers["kvstore-write"])


def test_multipart_data_object(client: Any, bucket: str) -> None:
    data = b"m" * (5 * MiB + 1)
    with S3Store(bucket, "golden", client=client, part_size=5 * MiB) as store:
        t0 = time.time()
        store.set("big", (io.BytesIO(data), {}))
        t1 = time.time()
    write = _check_metadata_object(_object(client, bucket, "golden/big.metadata"), "{}", data, t0, t1, {})
    head = client.head_object(Bucket=bucket, Key="golden/big.data")
    assert head["ETag"].strip('"').endswith("-2")
    assert head["ContentType"] == "application/octet-stream"
    assert head["Metadata"] == {"kvstore-write": write}  # a multipart upload names only its write


def test_versioned_bucket_names_the_data_version(client: Any, bucket: str) -> None:
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    with S3Store(bucket, "golden", client=client) as store:
        t0 = time.time()
        store.set("k", (b"v1", {}))
        t1 = time.time()
    version = client.head_object(Bucket=bucket, Key="golden/k.data")["VersionId"]
    assert version and version != "null"
    _check_metadata_object(_object(client, bucket, "golden/k.metadata"), "{}", b"v1", t0, t1,
                           {"kvstore-data-version": version})


def test_bucket_written_by_hand_is_read(client: Any, bucket: str) -> None:
    """The reading side of the format: objects put by hand, as the golden tests above say
    the store writes them, are read back (and so are objects without kvstore headers)."""
    long_key = "€" * 255
    long_base = "golden/.kvstore/long/" + hashlib.sha256(long_key.encode()).hexdigest()
    for base, data, md, extra in [("golden/%%C3%A9t%C3%A9", b"u", '{"u": "é"}', {}),
                                  (long_base, b"long", '{"l": 1}', _long_headers(long_key))]:
        ref = {"kvstore-write": "0" * 32, "kvstore-crc32": f"{zlib.crc32(data):08x}", "kvstore-size": str(len(data))}
        client.put_object(Bucket=bucket, Key=base + ".data", Body=data, Metadata=ref)
        client.put_object(Bucket=bucket, Key=base + ".metadata", Body=(md + "\n" + " \t" * 16).encode(),
                          Metadata={**ref, "kvstore-created": "1700000000.25", "kvstore-modified": "1700000001.5",
                                    **extra})
    client.put_object(Bucket=bucket, Key="golden/plain.data", Body=b"synced")  # as from a filesystem store
    client.put_object(Bucket=bucket, Key="golden/plain.metadata", Body=json.dumps({"p": 1}).encode())
    with S3Store(bucket, "golden", client=client) as store:
        assert sorted(store.glob("*")) == sorted(["été", long_key, "plain"])
        value = store.get("été")
        assert (value.data.read(), value.metadata) == (b"u", {"u": "é"})
        assert (value.created, value.modified) == (1700000000.25, 1700000001.5)
        assert value.revision == 1  # no kvstore-revision header (written before issue 18): 1
        store.update_metadata("été", {"v": 2}, if_revision=1)
        assert store.get("été").revision == 2
        assert (store.to_bytes(long_key), store.get_metadata(long_key)) == (b"long", {"l": 1})
        assert (store.to_bytes("plain"), store.get_metadata("plain")) == (b"synced", {"p": 1})
