"""MemoryStore runs the shared conformance suite."""

import pytest

import kvstore
from kvstore.testing import StoreConformance


class TestMemoryStore(StoreConformance):
    @pytest.fixture
    def store(self):
        with kvstore.MemoryStore(name="test") as store:
            yield store


def test_open_store_memory():
    store = kvstore.open_store("memory://")
    assert isinstance(store, kvstore.MemoryStore) and store.is_connected()
