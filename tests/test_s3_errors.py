"""S3Store's error boundary, on a stubbed client: callers see KeyError only for a key that is
missing, and StoreError subclasses with botocore's error chained for everything else."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest

boto3 = pytest.importorskip("boto3")

from botocore.exceptions import ClientError  # noqa: E402
from botocore.response import StreamingBody  # noqa: E402
from botocore.stub import Stubber  # noqa: E402

from kvstore.errors import AuthorizationError, StoreError  # noqa: E402
from kvstore.stores.s3 import S3Store  # noqa: E402


@pytest.fixture
def stubbed() -> Iterator[tuple[S3Store, Stubber]]:
    client = boto3.session.Session(region_name="us-east-1", aws_access_key_id="testing",
                                   aws_secret_access_key="testing").client("s3")
    with Stubber(client) as stubber:
        stubber.add_response("head_bucket", {})
        store = S3Store("bkt", "err", client=client)
        store.connect()
        yield store, stubber
        store.disconnect()
        stubber.assert_no_pending_responses()
    client.close()


def test_missing_key_is_key_error_without_chain(stubbed: Any) -> None:
    store, stubber = stubbed
    stubber.add_client_error("get_object", "NoSuchKey", "The specified key does not exist.", 404)
    with pytest.raises(KeyError) as info:
        store.get("k")
    assert info.value.args == ("k",) and info.value.__suppress_context__
    stubber.add_client_error("head_object", "404", "Not Found", 404)
    assert store.exists("k") is False


def test_not_found_where_nothing_may_be_missing_is_a_store_error(stubbed: Any) -> None:
    # a NoSuchKey answer to a PUT is no missing key: a StoreError, never a KeyError
    store, stubber = stubbed
    stubber.add_client_error("put_object", "NoSuchKey", "The specified key does not exist.", 404)
    with pytest.raises(StoreError, match="NoSuchKey") as info:
        store.set("k", (b"v", {}))
    assert not isinstance(info.value, KeyError)
    assert isinstance(info.value.__cause__, ClientError)


def test_refused_is_authorization_error_with_cause(stubbed: Any) -> None:
    store, stubber = stubbed
    stubber.add_client_error("get_object", "AccessDenied", "Access Denied", 403)
    with pytest.raises(AuthorizationError, match="Access Denied") as info:
        store.get_metadata("k")
    assert isinstance(info.value.__cause__, ClientError)


def test_missing_data_of_a_foreign_key_is_key_error(stubbed: Any) -> None:
    # a metadata object copied in without its data (no kvstore headers) is no key
    store, stubber = stubbed
    body = _body(b'{"a": 1}')
    stubber.add_response("get_object", {"Body": body, "ETag": '"e"', "Metadata": {}})
    stubber.add_client_error("head_object", "404", "Not Found", 404)
    with pytest.raises(KeyError):
        store.get("k")


def _body(data: bytes) -> Any:
    return StreamingBody(io.BytesIO(data), len(data))
