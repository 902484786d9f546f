"""S3Store's glob and query read again only the metadata objects changed since they last
read them (MetadataCache, validated by the listing's ETags), against moto's server."""

from __future__ import annotations

import io
import logging
from typing import Any, Iterator

import pytest

pytest.importorskip("boto3")

from kvstore import S3Store  # noqa: E402
from s3_moto import Requests  # noqa: E402

N = 20


def _store(client: Any, bucket: str, **options: Any) -> S3Store:
    store = S3Store(bucket, "c", client=client, **options)
    store.connect()
    return store


@pytest.fixture
def filled(s3_client: Any, s3_bucket: str) -> Iterator[S3Store]:
    store = _store(s3_client, s3_bucket)
    for i in range(N):
        store.set(f"k{i:02d}", (io.BytesIO(b"x"), {"i": i, "even": i % 2 == 0}))
    yield store
    store.disconnect()


def _metadata_gets(requests: Requests) -> list:
    return [name for name in requests.of("GetObject") if name.endswith(".metadata")]


def test_a_repeated_query_reads_only_what_changed(filled: S3Store, s3_client: Any) -> None:
    requests = Requests(s3_client)
    assert sorted(filled.query_keys(even=True)) == [f"k{i:02d}" for i in range(0, N, 2)]
    assert len(_metadata_gets(requests)) == N
    requests.clear()
    assert sorted(filled.query_keys(even=True)) == [f"k{i:02d}" for i in range(0, N, 2)]
    assert _metadata_gets(requests) == [] and requests.operations() == {"ListObjectsV2"}

    for i in (1, 3, 5):  # odd keys become even, one by a whole set
        filled.set_metadata(f"k{i:02d}", {"i": i, "even": True})
    filled.set("k00", (io.BytesIO(b"y"), {"i": 0, "even": False}))
    requests.clear()
    got = sorted(filled.query_keys(even=True))
    assert got == sorted([f"k{i:02d}" for i in range(2, N, 2)] + ["k01", "k03", "k05"])
    assert sorted(_metadata_gets(requests)) == ["c/k00.metadata", "c/k01.metadata", "c/k03.metadata",
                                               "c/k05.metadata"]
    filled.delete("k02")
    assert "k02" not in list(filled.query_keys(even=True)) and "k02" not in list(filled.glob("k*"))


def test_glob_shares_it_and_what_a_caller_changes_stays_its_own(filled: S3Store, s3_client: Any) -> None:
    assert len(list(filled.glob("k*"))) == N
    requests = Requests(s3_client)
    results = dict(filled.query(even=True))
    assert _metadata_gets(requests) == []
    results["k00"]["i"] = "changed"
    results["k00"]["added"] = [1]
    assert dict(filled.query(even=True))["k00"] == {"i": 0, "even": True}


def test_another_instance_reads_for_itself(filled: S3Store, s3_client: Any, s3_bucket: str) -> None:
    list(filled.query_keys(even=True))
    other = _store(s3_client, s3_bucket)
    requests = Requests(s3_client)
    assert len(list(other.query_keys(even=True))) == N // 2
    assert len(_metadata_gets(requests)) == N
    other.disconnect()


def test_a_change_made_through_another_instance_is_seen(filled: S3Store, s3_client: Any, s3_bucket: str) -> None:
    assert list(filled.query_keys(i=7)) == ["k07"]
    other = _store(s3_client, s3_bucket)
    other.set_metadata("k07", {"i": 70})
    other.disconnect()
    assert list(filled.query_keys(i=7)) == [] and list(filled.query_keys(i=70)) == ["k07"]


def test_an_object_turned_unreadable_is_skipped_again(filled: S3Store, s3_client: Any, s3_bucket: str,
                                                      caplog: Any) -> None:
    assert len(list(filled.query_keys())) == N
    s3_client.put_object(Bucket=s3_bucket, Key="c/k04.metadata", Body=b"{not json")
    with caplog.at_level(logging.WARNING, logger="kvstore.s3"):
        assert "k04" not in list(filled.query_keys())
    assert any("k04" in r.getMessage() for r in caplog.records)


def test_the_cache_is_bounded(s3_client: Any, s3_bucket: str) -> None:
    class Small(S3Store):
        metadata_cache_size = 5

    store = Small(s3_bucket, "c", client=s3_client)
    store.connect()
    for i in range(N):
        store.set(f"k{i:02d}", (io.BytesIO(b"x"), {"i": i}))
    list(store.query_keys())
    assert len(store._metadata_cache) == 5
    requests = Requests(s3_client)
    assert len(list(store.query_keys())) == N
    assert len(_metadata_gets(requests)) >= N - 5
    store.disconnect()
