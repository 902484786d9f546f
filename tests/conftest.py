"""Shared test fixtures: every test must leave no thread of its own running."""

from __future__ import annotations

import threading
import time

import pytest

# moto's S3 server on loopback, one for the whole session, and its clients and buckets
# (see s3_moto.py); test modules use these fixtures instead of starting servers of their own.
from s3_moto import _s3_session, s3_bucket, s3_client, s3_endpoint, s3_second_client  # noqa: F401


@pytest.fixture(autouse=True)
def no_thread_leak():
    """Fail a test that leaves a thread running (servers of wider scope start before it)."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5.0
    while True:
        leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert not leaked, f"threads left running: {[t.name for t in leaked]}"
