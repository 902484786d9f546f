"""FileSystemStore: the shared conformance suite plus what only a directory store does."""

from __future__ import annotations

import io
import os

import pytest

import kvstore
from kvstore.errors import StoreError
from kvstore.testing import ODD_KEYS, StoreConformance


class TestFileSystemStore(StoreConformance):
    has_journal = True

    @pytest.fixture
    def store(self, tmp_path):
        with kvstore.FileSystemStore(tmp_path / "store", create=True, name="test") as store:
            yield store


class TestDurableFileSystemStore(TestFileSystemStore):
    @pytest.fixture
    def store(self, tmp_path):
        with kvstore.FileSystemStore(tmp_path / "store", create=True, durable=True) as store:
            yield store
