"""The S3 store's own client sends small bodies without waiting for ``100 Continue``."""

from __future__ import annotations

import io
import os
import threading

import pytest

pytest.importorskip("boto3")

from botocore.compat import HTTPHeaders  # noqa: E402

from kvstore import S3Store  # noqa: E402
from kvstore.stores.s3.expect import CONTINUE_MIN, _small_bodies_at_once  # noqa: E402

MiB = 1024 * 1024


def _expect(request) -> str | None:
    value = request.headers.get("Expect")
    return value.decode() if isinstance(value, bytes) else value


class Sent:
    """Each PUT a client sends: (object name, Content-Length, the Expect header botocore
    made, the Expect header sent). Its two handlers of the store's event go before and after
    the store's own one."""

    def __init__(self, client) -> None:
        self.requests: list = []
        self._made: dict = {}
        self._lock = threading.Lock()
        client.meta.events.register_first("before-send.s3", self._before)
        client.meta.events.register_last("before-send.s3", self._after)

    def _before(self, request, **_) -> None:
        with self._lock:
            self._made[id(request)] = _expect(request)

    def _after(self, request, **_) -> None:
        if request.method != "PUT":
            return
        with self._lock:
            self.requests.append((request.url.split("?")[0].rsplit("/", 1)[-1],
                                  int(request.headers.get("Content-Length", -1)),
                                  self._made.pop(id(request)), _expect(request)))

    def puts(self) -> list:
        return list(self.requests)


def _store(bucket, endpoint, **options) -> S3Store:
    return S3Store(bucket, endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                   region="us-east-1", **options)


def test_small_bodies_go_at_once(s3_endpoint, s3_bucket) -> None:
    with _store(s3_bucket, s3_endpoint) as store:
        sent = Sent(store._client)
        store.set("small", (io.BytesIO(b"x" * 1000), {"a": 1}))
        store.set_metadata("small", {"a": 2})
        store.set("empty", (io.BytesIO(b""), {}))
        puts = sent.puts()
        assert {name for name, _, _, _ in puts} == {"small.data", "small.metadata", "empty.data", "empty.metadata"}
        assert [made for name, _, made, _ in puts if name.endswith(".data")] == ["100-continue"] * 2  # botocore's
        assert [sent_as for _, _, _, sent_as in puts] == [None] * len(puts)
        assert store.get("small").data.read() == b"x" * 1000
        assert store.get("small").metadata == {"a": 2}


def test_large_bodies_still_wait_for_continue(s3_endpoint, s3_bucket) -> None:
    single, parted = os.urandom(CONTINUE_MIN + 1), os.urandom(11 * MiB)
    with _store(s3_bucket, s3_endpoint, part_size=5 * MiB) as store:
        sent = Sent(store._client)
        store.set("single", (io.BytesIO(single), {}))
        store.set("parted", (io.BytesIO(parted), {}))
        puts = sent.puts()
        assert ("single.data", len(single), "100-continue", "100-continue") in puts
        assert len([name for name, _, _, _ in puts if name == "parted.data"]) == 3  # its parts
        for name, length, made, sent_as in puts:
            assert sent_as == (made if length >= CONTINUE_MIN else None), (name, length)
        assert store.get("single").data.read() == single
        assert store.get("parted").data.read() == parted


def test_a_body_of_unknown_length_keeps_the_header() -> None:
    class Request:
        def __init__(self, **headers) -> None:
            self.headers = HTTPHeaders()
            for name, value in headers.items():
                self.headers[name.replace("_", "-")] = value

    unknown = Request(Expect="100-continue")
    _small_bodies_at_once(unknown)
    assert unknown.headers["Expect"] == "100-continue"
    odd = Request(Expect="100-continue", Content_Length="many")
    _small_bodies_at_once(odd)
    assert odd.headers["Expect"] == "100-continue"
    edge = Request(Expect="100-continue", Content_Length=str(CONTINUE_MIN))
    _small_bodies_at_once(edge)
    assert edge.headers["Expect"] == "100-continue"
    below = Request(Expect="100-continue", Content_Length=str(CONTINUE_MIN - 1))
    _small_bodies_at_once(below)
    assert "Expect" not in below.headers


def test_a_given_client_is_left_as_it_is(s3_endpoint, s3_bucket, s3_client) -> None:
    sent = Sent(s3_client)
    with S3Store(s3_bucket, client=s3_client) as store:
        store.set("k", (io.BytesIO(b"x" * 1000), {}))
    puts = sent.puts()
    assert len(puts) == 2 and all(sent_as == made == "100-continue" for _, _, made, sent_as in puts)
