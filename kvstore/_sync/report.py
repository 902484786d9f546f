"""The :class:`SyncReport` of a :func:`kvstore.sync` run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List

__all__ = ["SyncReport"]


@dataclass
class SyncReport:
    """What a :func:`sync` run did (a dry run: what a real run would do).

    Attributes
    ----------
    done : keys written to the destination (data and metadata, or metadata only).
    skipped : keys left alone: unchanged, done by an earlier run (state file), or vanished
        from the source during the run.
    failed : keys that still failed after their retries; ``errors`` says why.
    deleted : destination keys deleted because the source lacks them (``delete=True``).
    bytes : data bytes written to the destination.
    errors : key -> message of its last failure.
    hashed : keys whose data had to be read only to compute a checksum that a store keeps
        none of (see the module docstring); empty where both stores keep checksums.
    total_bytes : data bytes the run had to send (a dry run: would send).
    elapsed : seconds the run took.
    """

    done: List[str] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)
    failed: List[str] = field(default_factory=list)
    deleted: List[str] = field(default_factory=list)
    bytes: int = 0
    errors: Dict[str, str] = field(default_factory=dict)
    hashed: List[str] = field(default_factory=list)
    total_bytes: int = 0
    elapsed: float = 0.0
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        """True when no key failed."""
        return not self.failed

    def summary(self) -> str:
        """One line: ``done 3, skipped 2, failed 0, deleted 1; 1.5 MiB in 0.4 s``."""
        verb = "would copy" if self.dry_run else "done"
        amount = _human(self.total_bytes if self.dry_run else self.bytes)
        return (f"{verb} {len(self.done)}, skipped {len(self.skipped)}, failed {len(self.failed)}, "
                f"{'would delete' if self.dry_run else 'deleted'} {len(self.deleted)}; "
                f"{amount} in {self.elapsed:.1f} s")


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover
