"""The records the store API passes around: :class:`Value` (a consistent snapshot of one
key), :class:`Change` (one committed change, as a backend reports it) and a transaction's
bookkeeping."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Callable, Dict, Iterator, List, Mapping, Optional, Tuple, Union

from ._keys import normalize_metadata

__all__ = ["Value", "Change", "Opener", "ValueLike", "DEFAULT_BUFFER_SIZE"]

DEFAULT_BUFFER_SIZE = 1048576

Opener = Callable[[int, int], BinaryIO]


def _copy_metadata(metadata: Dict[str, Any]) -> Dict[str, Any]:
    """A fresh copy of metadata already validated (what ``json.loads(json.dumps(metadata))``
    gives, in one walk)."""
    return normalize_metadata(metadata)


class Value:
    """A consistent snapshot of one key: data and metadata from the same write.

    Parameters
    ----------
    size : number of bytes of data.
    metadata : the metadata (the Value keeps it as JSON text, so nothing is shared).
    created, modified : seconds since the epoch.
    opener : ``opener(start, end)`` returns a readable binary stream of ``data[start:end]``.
    metadata_json : the metadata as JSON text, instead of ``metadata``.
    revision : the key's revision when the snapshot was taken (None: not known, as for a
        value written inside a transaction that has not committed yet).
    """

    __slots__ = ("size", "_metadata_json", "created", "modified", "_opener", "revision", "__weakref__")

    def __init__(
        self,
        *,
        size: int,
        metadata: Optional[Dict[str, Any]] = None,
        created: float,
        modified: float,
        opener: Opener,
        metadata_json: Optional[str] = None,
        revision: Optional[int] = None,
    ) -> None:
        self.size = size
        self.revision = revision
        self._metadata_json = metadata_json if metadata_json is not None else json.dumps(metadata or {})
        self.created = created
        self.modified = modified
        self._opener = opener

    @classmethod
    def from_bytes(
        cls, data: bytes, metadata: Dict[str, Any], created: float = 0.0, modified: float = 0.0,
        revision: Optional[int] = None,
    ) -> Value:
        """A Value holding ``data`` in memory."""
        data = bytes(data)
        return cls(
            size=len(data),
            metadata=metadata,
            created=created,
            modified=modified,
            opener=lambda start, end: io.BytesIO(data[start:end]),
            revision=revision,
        )

    @property
    def data(self) -> BinaryIO:
        """A new readable binary stream of the whole data (a context manager)."""
        return self._opener(0, self.size)

    @property
    def metadata(self) -> Dict[str, Any]:
        """A fresh copy of the metadata."""
        return json.loads(self._metadata_json)

    def range(self, start: Optional[int] = None, end: Optional[int] = None) -> BinaryIO:
        """A stream of ``data[start:end]`` (Python slice meaning, negative indices included)."""
        s, e, _ = slice(start, end).indices(self.size)
        return self._opener(s, max(s, e))

    @property
    def permissions(self) -> Dict[str, Any]:
        """encore.storage compatibility: kvstore keeps no permissions."""
        return {}

    def __iter__(self) -> Iterator[Any]:
        """Unpack as a pair, like encore's Value: ``data, metadata = store.get(key)``.

        The pair is a new data stream (as :attr:`data`) and a fresh copy of the metadata.
        encore deprecated this form but still uses it itself (``AbstractStore.to_file``,
        ``JoinedStore.set``), so encore's wrappers around a kvstore store rely on it.
        """
        return iter((self.data, self.metadata))

    def __repr__(self) -> str:
        return f"<Value size={self.size} revision={self.revision} metadata={self._metadata_json}>"


@dataclass
class Change:
    """One committed change, as a backend reports it: the base class turns it into an event."""

    kind: str  # "set", "update" or "delete"
    key: str
    metadata: Dict[str, Any]
    sequence: Optional[int] = None
    timestamp: Optional[float] = None
    text: Optional[str] = None  # the metadata as JSON, when the backend has it at hand
    revision: Optional[int] = None  # the key's revision after the change (of the delete, for one)
    origin: Optional[str] = None  # the store instance that made it (history); None: this one



@dataclass
class _Transaction:
    notes: Optional[str]
    state: Any
    depth: int = 1
    held: List[Change] = field(default_factory=list)




ValueLike = Union[Value, Tuple[Any, Mapping[str, Any]]]
