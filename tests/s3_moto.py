"""moto's S3 server on 127.0.0.1 as pytest fixtures, for test modules that need S3 beside
other stores (``from s3_moto import s3_endpoint, s3_client, s3_bucket``)."""

from __future__ import annotations

import logging
import socket
import threading
import uuid
from typing import Any, Iterator, Optional

import pytest

CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[Optional[str]]:
    """moto's S3 server on loopback, for the session; None when boto3 or moto is missing
    (tests that need S3 then skip, through ``s3_client``).

    Fixtures that choose a backend by parameter depend on this one statically, so that the
    server (and its thread) starts before the first test's thread-leak check.
    """
    try:
        import boto3  # noqa: F401
        from moto.server import ThreadedMotoServer
    except ImportError:
        yield None
        return

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="session")
def _s3_session() -> Any:
    boto3 = pytest.importorskip("boto3")
    return boto3.session.Session(region_name="us-east-1", **CREDENTIALS)


def _client(session: Any, endpoint: Optional[str]) -> Iterator[Any]:
    if endpoint is None:
        pytest.skip("S3 tests need boto3 and moto")
    client = session.client("s3", endpoint_url=endpoint)
    yield client
    client.close()


@pytest.fixture
def s3_client(_s3_session: Any, s3_endpoint: Optional[str]) -> Iterator[Any]:
    """A client per test, closed at its end."""
    yield from _client(_s3_session, s3_endpoint)


@pytest.fixture
def s3_second_client(_s3_session: Any, s3_endpoint: Optional[str]) -> Iterator[Any]:
    """Another client per test: a second host's view of the bucket."""
    yield from _client(_s3_session, s3_endpoint)


def run_threads(work: Any, args: list, timeout: float = 180) -> None:
    """``work(*a)`` for each ``a`` of ``args``, each in a thread of its own, all at once;
    the first exception any of them raised is raised here, and one still running after
    ``timeout`` seconds fails the test."""
    errors: list = []

    def run(*a: Any) -> None:
        try:
            work(*a)
        except BaseException as exc:  # pragma: no cover - raised below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=a) for a in args]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not any(t.is_alive() for t in threads), "a thread is still running"
    if errors:
        raise errors[0]


@pytest.fixture
def s3_bucket(s3_client: Any) -> str:
    name = f"kvs-{uuid.uuid4().hex[:16]}"
    s3_client.create_bucket(Bucket=name)
    return name


class DataReads:
    """Counts the GETs of ``.data`` objects (the values' bytes) a client makes."""

    def __init__(self, client: Any) -> None:
        self.keys: list = []
        self._client = client
        # before-parameter-build sees the call's own parameters (Key, ...); before-call
        # sees the HTTP request, which has no "Key"
        client.meta.events.register("before-parameter-build.s3.GetObject", self._seen)

    def _seen(self, params: Any, **_: Any) -> None:
        if params.get("Key", "").endswith(".data"):
            self.keys.append(params["Key"])

    def close(self) -> None:
        self._client.meta.events.unregister("before-parameter-build.s3.GetObject", self._seen)


class Requests:
    """Counts every S3 request a client makes: ``(operation, object name)`` in order
    (``""`` for a request that names no object, as ListObjectsV2)."""

    def __init__(self, client: Any) -> None:
        self.made: list = []
        self._client = client
        self._lock = threading.Lock()
        client.meta.events.register("before-parameter-build.s3.*", self._seen)

    def _seen(self, params: Any, model: Any, **_: Any) -> None:
        with self._lock:
            self.made.append((model.name, params.get("Key", "")))

    def of(self, operation: str) -> list:
        return [name for op, name in self.made if op == operation]

    def operations(self) -> set:
        return {op for op, _ in self.made}

    def clear(self) -> None:
        with self._lock:
            self.made.clear()

    def close(self) -> None:
        self._client.meta.events.unregister("before-parameter-build.s3.*", self._seen)
