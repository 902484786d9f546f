"""S3Store.from_url (the registry's hook) and S3Store's options: every documented option of an
``s3://`` URL is honoured, an unknown one or a value not of its type raises ValueError."""

from __future__ import annotations

import io
import uuid
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import pytest

boto3 = pytest.importorskip("boto3")
pytest.importorskip("moto")


from kvstore.stores.s3 import S3Options, S3Store  # noqa: E402

CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
MiB = 1024 * 1024


def from_url(url: str, **options: Any) -> S3Store:
    """As the registry calls it."""
    parts = urlsplit(url)
    return S3Store.from_url(url, parts, dict(parse_qsl(parts.query)), **options)



def test_every_option_from_the_url() -> None:
    url = ("s3://bkt/a%20b/c?endpoint_url=http%3A%2F%2F127.0.0.1%3A9&region=eu-west-1&profile=prof"
           "&aws_access_key_id=AK&aws_secret_access_key=SK&aws_session_token=TOK&verify=false"
           "&max_attempts=2&create=yes&part_size=6291456&upload_workers=3&max_workers=5&name=mine")
    store = from_url(url)
    assert (store.bucket, store.prefix, store.name) == ("bkt", "a b/c/", "mine")
    assert store.options == S3Options(
        endpoint_url="http://127.0.0.1:9", region="eu-west-1", profile="prof", aws_access_key_id="AK",
        aws_secret_access_key="SK", aws_session_token="TOK", verify=False, max_attempts=2, create=True,
        part_size=6 * MiB, upload_workers=3, max_workers=5)
    assert (store.endpoint_url, store.region, store.part_size, store.upload_workers, store.max_workers) == \
        ("http://127.0.0.1:9", "eu-west-1", 6 * MiB, 3, 5)
    assert store.options.session_args() == {"profile_name": "prof", "aws_access_key_id": "AK",
                                            "aws_secret_access_key": "SK", "aws_session_token": "TOK"}
    assert store.options.client_args() == {"endpoint_url": "http://127.0.0.1:9", "region_name": "eu-west-1",
                                           "verify": False}
    assert not store.is_connected()  # the caller connects


def test_url_option_names_are_the_documented_ones() -> None:
    # A field added to S3Options must be readable from a URL (and documented).
    documented = ["endpoint_url", "region", "region_name", "profile", "profile_name", "aws_access_key_id",
                  "aws_secret_access_key", "aws_session_token", "verify", "max_attempts", "create",
                  "part_size", "upload_workers", "max_workers"]
    assert sorted(S3Options.names()) == sorted(documented)
    for name in documented:
        assert f"``{name}``" in (S3Store.__doc__ or "")


def test_aliases_defaults_and_ca_bundle() -> None:
    store = from_url("s3://bkt?region_name=us-west-2&profile_name=p&verify=%2Fetc%2Fca.pem")
    assert (store.prefix, store.region, store.options.profile, store.options.verify) == \
        ("", "us-west-2", "p", "/etc/ca.pem")
    assert from_url("s3://bkt?region=a&region_name=b").region == "a"
    plain = from_url("s3://bkt/")
    assert plain.options == S3Options() and plain.prefix == ""
    assert plain.options.session_args() == {} and plain.options.client_args() == {}


def test_keyword_options_win_over_the_query() -> None:
    store = from_url("s3://bkt/p?upload_workers=2&name=q", upload_workers=7, name="kw", client=object())
    assert (store.upload_workers, store.name) == (7, "kw")


@pytest.mark.parametrize("url, match", [
    ("s3:///prefix", "no bucket"),
    ("s3://bkt/p?bogus=1", "unknown S3Store option"),
    ("s3://bkt/p?client=x", "unknown S3Store option"),
    ("s3://bkt/p?part_size=big", "integer"),
    ("s3://bkt/p?upload_workers=2.5", "integer"),
    ("s3://bkt/p?create=maybe", "create must be one of"),
    ("s3://bkt/p?part_size=1024", "part_size"),
])
def test_bad_urls(url: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        from_url(url)


def test_constructor_options_unchanged() -> None:
    # keyword options: strings converted, unknown ones a TypeError, as before
    store = S3Store("bkt", "p", create="true", part_size="6291456", upload_workers="0", verify="no")
    assert (store.options.create, store.part_size, store.upload_workers, store.options.verify) == \
        (True, 6 * MiB, 1, False)
    assert S3Store("bkt", create="whatever").options.create is False
    with pytest.raises(TypeError, match="unknown"):
        S3Store("bkt", bogus=1)
    with pytest.raises(ValueError, match="integer"):
        S3Store("bkt", max_workers="many")


def test_from_url_store_works(s3_endpoint: str) -> None:
    bucket = f"url-{uuid.uuid4().hex[:12]}"
    url = (f"s3://{bucket}/via%20url?endpoint_url={quote(s3_endpoint, safe='')}&region=us-east-1"
           f"&create=true&part_size={5 * MiB}&max_attempts=1")
    with from_url(url, **CREDENTIALS) as store:  # create=true: the bucket is made on connect
        store.set("k", (io.BytesIO(b"z" * (11 * MiB)), {"u": 1}))
        client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1", **CREDENTIALS)
        try:
            head = client.head_object(Bucket=bucket, Key="via url/k.data")
        finally:
            client.close()
        assert head["ETag"].strip('"').endswith("-3")  # 5 MiB parts, as the URL said
        assert store.to_bytes("k") == b"z" * (11 * MiB)
        assert store.info()["endpoint_url"] == s3_endpoint
