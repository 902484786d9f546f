"""open_store finds backends in a registry: each backend parses its own URL, every documented
option is honoured, an unknown one is a ValueError, third parties register their own."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

import kvstore
from kvstore import _registry
from kvstore.errors import StoreError


@pytest.fixture
def clean_registry() -> Iterator[None]:
    saved = dict(_registry.known_backends)
    yield
    _registry.known_backends.clear()
    _registry.known_backends.update(saved)


def test_file_url_options_are_honoured(tmp_path: Path) -> None:
    store = kvstore.open_store(f"file://{tmp_path}/a?durable=1&name=mine")
    try:
        assert store.durable is True and store.name == "mine"
    finally:
        store.disconnect()
    store = kvstore.open_store(f"file:{tmp_path}/a?durable=no")
    try:
        assert store.durable is False
    finally:
        store.disconnect()
    with pytest.raises(StoreError):
        kvstore.open_store(f"file://{tmp_path}/missing?create=0")
    assert not (tmp_path / "missing").exists()


@pytest.mark.parametrize("url", ["file:///tmp/x?durable=1&bogus=2", "memory://?size=3",
                                 "s3://bucket/prefix?no_such_option=1", "file:///tmp/x?durable=maybe"])
def test_unknown_or_bad_option_is_a_value_error(url: str) -> None:
    with pytest.raises(ValueError):
        kvstore.open_store(url)


def test_memory_url(tmp_path: Path) -> None:
    store = kvstore.open_store("memory://?name=cache")
    assert isinstance(store, kvstore.MemoryStore) and store.name == "cache" and store.is_connected()
    with pytest.raises(ValueError):
        kvstore.open_store("memory://somewhere/else")


def test_unknown_scheme_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="memory://"):
        kvstore.open_store("ftp://host/x")


class _Custom(kvstore.MemoryStore):
    @classmethod
    def from_url(cls, url: str, parts: Any, query: Any, **options: Any) -> _Custom:
        store = cls(name=parts.netloc)
        store.query_seen = dict(query)
        return store


def test_register_backend(clean_registry: None) -> None:
    kvstore.register_backend("custom", f"{__name__}:_Custom")
    store = kvstore.open_store("custom://here?a=1")
    assert isinstance(store, _Custom) and store.name == "here" and store.query_seen == {"a": "1"}
    assert store.is_connected()
    with pytest.raises(ValueError, match="already registered"):
        kvstore.register_backend("custom", f"{__name__}:_Custom")
    kvstore.register_backend("custom", "kvstore.stores.memory:MemoryStore", replace=True)
    assert type(kvstore.open_store("custom://")) is kvstore.MemoryStore
    for scheme, target in (("x", "a:B"), ("ok", "no_colon"), ("ok", ":B"), ("with space", "a:B")):
        with pytest.raises(ValueError):
            kvstore.register_backend(scheme, target)


def test_missing_dependency_names_the_extra(clean_registry: None, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "kv_needs_extra.py").write_text("import kv_dependency_not_installed\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    kvstore.register_backend("needy", "kv_needs_extra:Store", extra="needy")
    with pytest.raises(ImportError, match=r"pip install 'kvstore\[needy\]'"):
        kvstore.open_store("needy://x")
    sys.modules.pop("kv_needs_extra", None)


def test_a_target_that_is_not_a_store(clean_registry: None) -> None:
    kvstore.register_backend("notastore", "kvstore.errors:StoreError")
    with pytest.raises(TypeError):
        kvstore.open_store("notastore://")
