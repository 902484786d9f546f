"""The comparison of one key in the two stores, and the plan it makes: which keys are sent
(data and metadata), which get their metadata only, which are skipped."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from .._checksum import KeyStat
from .._keys import canonical
from .workers import Vanished, crc_checksum

__all__ = ["Plan", "verdict"]


@dataclass
class Plan:
    """What a run does with one key: ``kind`` is ``"send"`` (data and metadata) or
    ``"metadata"``; ``stat`` the source's as compared."""

    key: str
    kind: str
    stat: KeyStat
    #: the destination's listing showed no such key: its first write is hinted as a new key's
    fresh: bool = False


def verdict(ours: KeyStat, theirs: Optional[KeyStat], hash_source: Callable[[], str],
            hash_destination: Callable[[], str], dry_run: bool) -> str:
    """``"send"``, ``"metadata"`` or ``"skip"`` for a key whose source stat is ``ours`` and
    destination stat ``theirs`` (None: missing). Where a side keeps no CRC-32 its data is
    hashed (``hash_*``, KeyError when the key is gone meanwhile); a dry run never reads
    data and counts such a key as one to send."""
    if theirs is None or ours.size != theirs.size:
        return "send"
    mine, other = crc_checksum(ours.checksum), crc_checksum(theirs.checksum)
    if mine is None or other is None:
        if dry_run:
            return "send"  # cannot tell without reading the data
        try:
            mine = mine or hash_source()
        except KeyError:
            raise Vanished() from None
        try:
            other = other or hash_destination()
        except KeyError:
            return "send"
    if mine != other:
        return "send"
    return "skip" if canonical(ours.metadata) == canonical(theirs.metadata) else "metadata"
