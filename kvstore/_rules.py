"""The write rules every backend follows, and the transaction overlay, written once.

A write names new data or not, and new metadata (replace), an update (merge) or neither
(keep). What that means for a key in a given current state is decided here, by pure
functions, so that MemoryStore, FileSystemStore (its transaction view and its commit) and
S3Store cannot drift apart:

=====================  ==========================  ===========================
write                  key exists                  key is missing
=====================  ==========================  ===========================
metadata given         replaced                    the given metadata
update given           merged (``{**old, **new}``)   ``KeyError``
neither                kept                        ``{}``
data given             replaced                    the given data
no data                kept                        empty
delete                 removed                     ``KeyError``
=====================  ==========================  ===========================

A write of a key that exists is an ``update`` event, of a missing key a ``set``.

A write may carry a condition on the key's revision (``if_revision``): :func:`check_revision`
is the one place that decides whether it holds, called by every backend's commit in the same
atomic step as the write (:func:`plan_write` and :func:`plan_delete` call it).

=====================  ==========================  ===========================
``if_revision``        key exists (revision r)     key is missing
=====================  ==========================  ===========================
``None``               written                     written (delete: KeyError)
``0``                  ``ConflictError``           written (delete: conflict)
``n > 0``              written if ``n == r``       ``ConflictError``
=====================  ==========================  ===========================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Generic, Iterable, List, Mapping, NamedTuple, Optional, Set, TypeVar

from .errors import ConflictError

__all__ = ["Outcome", "plan_write", "plan_delete", "check_revision", "check_if_revision", "Overlay"]

NEW = "new"      #: the write's own data
KEEP = "keep"    #: the key's current data
EMPTY = "empty"  #: no data (a new key written without data)
NONE = "none"    #: the key is gone (a delete)


def check_if_revision(value: Any, name: str = "if_revision") -> Optional[int]:
    """``value`` as a write's condition: None or an int >= 0.

    Raises
    ------
    TypeError : not an int (a bool is not one either).
    ValueError : a negative int.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= 0 or None, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be an int >= 0 or None, not {value}")
    return int(value)


def check_revision(key: str, expected: Optional[int], actual: Optional[int]) -> None:
    """Raise :class:`~kvstore.errors.ConflictError` unless a write of ``key`` conditioned on
    ``expected`` may go on while the key is at revision ``actual`` (None: missing;
    :data:`UNKNOWN`: written earlier in the same commit).

    ``expected`` None: no condition; ``0``: the key must be missing; ``n``: at revision ``n``.
    """
    if expected is None:
        return
    if expected == 0 and actual is None:
        return
    if expected > 0 and actual == expected:
        return
    raise ConflictError(key, expected, actual)


class Outcome(NamedTuple):
    """What one write or delete does to a key.

    ``kind`` is the event it makes (``"set"``, ``"update"`` or ``"delete"``); ``metadata``
    the key's metadata after it (for a delete, its last metadata: the very object passed as
    ``current`` when kept, so a backend can tell "unchanged" by identity); ``data`` one of
    ``"new"``, ``"keep"``, ``"empty"``, ``"none"``. (A NamedTuple: one is made on every
    write, at a third of a frozen dataclass's cost.)
    """

    kind: str
    metadata: Dict[str, Any]
    data: str

    @property
    def exists_after(self) -> bool:
        return self.kind != "delete"


def plan_write(key: str, current: Optional[Dict[str, Any]], *, has_data: bool,
               metadata: Optional[Dict[str, Any]] = None,
               update: Optional[Mapping[str, Any]] = None,
               expected: Optional[int] = None, revision: Optional[int] = None) -> Outcome:
    """The outcome of writing ``key`` whose current metadata is ``current`` (None: missing)
    and current revision ``revision``, on the condition ``expected`` (see
    :func:`check_revision`).

    Raises
    ------
    ConflictError : the condition does not hold (checked first).
    KeyError : ``update`` given for a missing key.
    """
    check_revision(key, expected, revision if current is not None else None)
    if update is not None:
        if current is None:
            if expected is not None:  # if_revision=0: nothing to update is a conflict too
                raise ConflictError(key, expected, None)
            raise KeyError(key)
        new = {**current, **update}
    elif metadata is not None:
        new = metadata
    else:
        new = current if current is not None else {}
    if has_data:
        data = NEW
    else:
        data = KEEP if current is not None else EMPTY
    return Outcome("update" if current is not None else "set", new, data)


def plan_delete(key: str, current: Optional[Dict[str, Any]], *, expected: Optional[int] = None,
                revision: Optional[int] = None) -> Outcome:
    """The outcome of deleting ``key`` whose current metadata is ``current`` (and revision
    ``revision``), on the condition ``expected``.

    Raises
    ------
    ConflictError : the condition does not hold (a missing key included).
    KeyError : the key is missing (no condition).
    """
    if expected is not None:
        check_revision(key, expected, revision if current is not None else None)
        if current is None:  # if_revision=0 on a missing key: nothing to delete
            raise ConflictError(key, expected, None)
    if current is None:
        raise KeyError(key)
    return Outcome("delete", current, NONE)


E = TypeVar("E")
Op = TypeVar("Op")


@dataclass
class Overlay(Generic[E, Op]):
    """A transaction's pending writes: the ops to replay at the commit, in order, and the
    state of each key they touched as the transaction sees it (``None``: deleted).

    The backend decides what an entry ``E`` holds (bytes and metadata, a file path...);
    the overlay only answers "what does this transaction see".
    """

    ops: List[Op] = field(default_factory=list)
    view: Dict[str, Optional[E]] = field(default_factory=dict)

    def touched(self, key: str) -> bool:
        return key in self.view

    def seen(self, key: str) -> Optional[E]:
        """The key's entry as this transaction left it (only for a ``touched`` key)."""
        return self.view[key]

    def record(self, key: str, entry: Optional[E], op: Op) -> None:
        """Remember ``op`` for the commit and show ``entry`` to this transaction's reads."""
        self.view[key] = entry
        self.ops.append(op)

    def keys(self, committed: Iterable[str], prefix: str = "") -> List[str]:
        """``committed`` keys (those starting with ``prefix``) as this transaction sees
        them: its creations added, its deletions removed; sorted."""
        keys: Set[str] = set(committed)
        for key, entry in self.view.items():
            if key.startswith(prefix):
                if entry is None:
                    keys.discard(key)
                else:
                    keys.add(key)
        return sorted(keys)
