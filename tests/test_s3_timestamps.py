"""The S3 store's own client parses timestamps without dateutil, to the same datetimes."""

from __future__ import annotations

import datetime
import io
import threading

import pytest

pytest.importorskip("boto3")

from botocore.utils import parse_timestamp as botocore_parse  # noqa: E402

from kvstore import S3Store  # noqa: E402
from kvstore.stores.s3.timestamps import parse_timestamp  # noqa: E402

FORMS = [
    "2026-12-02T01:00:00.000Z",
    "2026-12-02T01:00:00Z",
    "2026-12-02T01:00:00.123456Z",
    "2026-12-02T01:00:00.5Z",
    "Wed, 02 Dec 2026 01:00:00 GMT",
    "Sun, 06 Nov 1994 08:49:37 GMT",
    "2026-12-02T01:00:00+01:00",
    "1700000000",
    "2026-12-02 01:00:00",
]


@pytest.mark.parametrize("text", FORMS)
def test_same_instant_and_zone_as_botocore(text: str) -> None:
    ours, theirs = parse_timestamp(text), botocore_parse(text)
    assert ours == theirs
    assert ours.utcoffset() == theirs.utcoffset()


def test_bad_text_fails_as_in_botocore() -> None:
    with pytest.raises(ValueError):
        botocore_parse("not a time")
    with pytest.raises(ValueError):
        parse_timestamp("not a time")


def test_the_store_client_uses_it_and_a_given_client_is_left_alone(s3_endpoint, s3_bucket, s3_client,
                                                                  monkeypatch) -> None:
    import dateutil.parser

    general = dateutil.parser.parse
    calls = []
    here = threading.get_ident()  # moto's server, in this process, parses with it too

    def counted(*args, **kwargs):
        if threading.get_ident() == here:
            calls.append(args[0])
        return general(*args, **kwargs)

    monkeypatch.setattr(dateutil.parser, "parse", counted)
    store = S3Store(s3_bucket, endpoint_url=s3_endpoint, aws_access_key_id="testing",
                    aws_secret_access_key="testing", region="us-east-1")
    store.connect()
    try:
        store.set("k", (io.BytesIO(b"x"), {}))
        listed = store._client.list_objects_v2(Bucket=s3_bucket)["Contents"]
        head = store._client.head_object(Bucket=s3_bucket, Key=listed[0]["Key"])
        assert calls == []  # neither the listing's ISO 8601 nor the header's RFC 7231 form
        for stamp in (listed[0]["LastModified"], head["LastModified"]):
            assert isinstance(stamp, datetime.datetime) and stamp.utcoffset() == datetime.timedelta(0)
        # a client of the caller's own parses with botocore's parser, to the same instants
        plain = s3_client.list_objects_v2(Bucket=s3_bucket)["Contents"]
        assert len(calls) == len(plain) == 2
        assert [o["LastModified"] for o in plain] == [o["LastModified"] for o in listed]
        given = S3Store(s3_bucket, client=s3_client)
        given.connect()
        calls.clear()
        assert given.get("k").modified == store.get("k").modified
        assert calls  # its GET's Last-Modified header, through botocore's parser
        given.disconnect()
    finally:
        store.disconnect()
