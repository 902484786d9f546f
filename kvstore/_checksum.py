"""Checksums of stored values, and :class:`KeyStat`: what a store can say about a key
without reading its data.

A checksum is text naming its algorithm: ``"crc32:0a1b2c3d"`` (the CRC-32 of the whole
data, as ``zlib.crc32`` computes it, eight lowercase hex digits). Two stores that keep the
same algorithm can be compared without downloading anything; ``None`` means the store
cannot tell without reading the data.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

__all__ = ["KeyStat", "crc32_text", "Crc32", "CHECKSUM_ALGORITHM"]

CHECKSUM_ALGORITHM = "crc32"


def crc32_text(value: int) -> str:
    """The checksum text of a CRC-32 value: ``"crc32:%08x"``."""
    return f"{CHECKSUM_ALGORITHM}:{value & 0xFFFFFFFF:08x}"


@dataclass(frozen=True)
class KeyStat:
    """What a store knows about a key without reading its data.

    Attributes
    ----------
    size : bytes of data.
    checksum : ``"crc32:xxxxxxxx"``, or None when the store keeps none for this key.
    metadata : a fresh copy of the key's metadata.
    modified : seconds since the epoch of the key's last write.
    token : what tells this write of the key from any other in the store's own terms
        (S3Store: the metadata object's ETag, new at every commit), as a listing of the
        store shows it too; None where the store has no such thing.
    """

    size: int
    checksum: Optional[str]
    metadata: Dict[str, Any] = field(repr=False)
    modified: float = 0.0
    token: Optional[str] = None


class Crc32:
    """The running CRC-32 and size of bytes seen so far."""

    __slots__ = ("value", "size")

    def __init__(self) -> None:
        self.value = 0
        self.size = 0

    def update(self, data: bytes) -> None:
        self.value = zlib.crc32(data, self.value)
        self.size += len(data)

    def text(self) -> str:
        """The checksum text of what was seen."""
        return crc32_text(self.value)
