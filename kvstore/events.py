"""Event classes carried by the signals in :mod:`kvstore.signals`.

The class names are encore.storage's. Events are frozen dataclasses with a JSON form:
``event.to_dict()`` gives a JSON-safe dict (without ``store``) and
``StoreEvent.from_dict(d)`` rebuilds the right subclass, which is how the bridges carry
events between processes.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, Optional, Tuple, Type, TypeVar

__all__ = [
    "StoreEvent",
    "StoreKeyEvent",
    "StoreModificationEvent",
    "StoreSetEvent",
    "StoreUpdateEvent",
    "StoreDeleteEvent",
    "StoreProgressEvent",
    "StoreProgressStartEvent",
    "StoreProgressStepEvent",
    "StoreProgressEndEvent",
    "StoreTransactionEvent",
    "StoreTransactionStartEvent",
    "StoreTransactionEndEvent",
]

_CLASSES: Dict[str, Type[StoreEvent]] = {}
_JSON_FIELDS: Dict[type, Tuple[str, ...]] = {}


def _json_fields(cls: type) -> Tuple[str, ...]:
    """Names of the fields in the JSON form of ``cls`` (all but ``store``), found once:
    ``dataclasses.fields()`` is too slow for every event a bridge carries."""
    names = _JSON_FIELDS.get(cls)
    if names is None:
        names = _JSON_FIELDS[cls] = tuple(
            f.name for f in dataclasses.fields(cls) if f.name != "store")
    return names


_MISSING = object()
# Per class of this module: (name, default, default factory or None, expected types or
# None) for each JSON field, in field order; see StoreEvent.from_dict.
_BUILD_PLANS: Dict[type, Optional[Tuple[Tuple[str, Any, Any, Any], ...]]] = {}


def _build_plan(cls: type) -> Optional[Tuple[Tuple[str, Any, Any, Any], ...]]:
    """How :meth:`StoreEvent.from_dict` fills an instance of ``cls`` directly; None for a
    class defined elsewhere (built through its ``__init__``)."""
    try:
        return _BUILD_PLANS[cls]
    except KeyError:
        pass
    plan: Optional[Tuple[Tuple[str, Any, Any, Any], ...]] = None
    if cls.__module__ == __name__ and not hasattr(cls, "__post_init__"):
        steps = []
        for f in dataclasses.fields(cls):
            if f.name == "store":
                continue
            factory = None if f.default_factory is dataclasses.MISSING else f.default_factory
            if factory is None and f.default is dataclasses.MISSING:
                break  # a required field: its __init__ says what is missing
            # a bool is an int, but only "remote" may be one ("remote" has no type check)
            expected = None if f.name == "remote" else _FIELD_TYPES.get(f.name, object)
            steps.append((f.name, None if factory else f.default, factory, expected))
        else:
            plan = tuple(steps)
    _BUILD_PLANS[cls] = plan
    return plan


@dataclass(frozen=True, kw_only=True)
class StoreEvent:
    """Base of every store event.

    Attributes
    ----------
    store : the local store the event is delivered for (not part of the JSON form).
    source : the same object as ``store`` (encore.storage's name; read-only).
    origin : id of the store instance that made the change.
    timestamp : seconds since the epoch when the change was made.
    remote : True when the change was made by another store instance or process.
    """

    store: Any = field(default=None, repr=False, compare=False)
    origin: str = ""
    timestamp: float = field(default_factory=time.time)
    remote: bool = False

    @property
    def source(self) -> Any:
        """The same object as :attr:`store`, under encore.storage's name for it.

        A read-only alias, not a field: it is not part of :meth:`to_dict`, and
        ``replace(store=...)`` moves both.
        """
        return self.store

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _CLASSES[cls.__name__] = cls

    def to_dict(self) -> Dict[str, Any]:
        """Return a JSON-safe dict of the event, naming its class under ``"type"``."""
        cls = type(self)
        d: Dict[str, Any] = {"type": cls.__name__}
        values = self.__dict__
        plan = _BUILD_PLANS[cls] if cls in _BUILD_PLANS else _build_plan(cls)
        if plan is not None and len(values) == len(plan) + 1:
            # A class of this module: its __dict__ is "store" and the fields, in field
            # order, so one copy makes the same dict as the loop below at half the cost
            # (a bridge turns every event it carries into this).
            d.update(values)
            del d["store"]
            for name in _OMITTED_WHEN_NONE:
                if d.get(name, _MISSING) is None:
                    del d[name]
            return d
        for name in _json_fields(cls):
            value = getattr(self, name)
            if value is None and name in _OMITTED_WHEN_NONE:
                continue
            d[name] = value
        return d

    @staticmethod
    def from_dict(d: Dict[str, Any], store: Any = None, *,
                  remote: Optional[bool] = None) -> StoreEvent:
        """Rebuild an event from :meth:`to_dict` output.

        ``remote``, when given, replaces the dict's ``remote`` (a bridge marks what it
        delivers without copying the dict). Members that are not fields are ignored; a
        missing field takes its default.

        Raises
        ------
        ValueError
            If ``d`` does not describe a known event class with valid fields.
        """
        if not isinstance(d, dict):
            raise ValueError("an event must be a JSON object")
        cls = _CLASSES.get(d.get("type"))  # type: ignore[arg-type]
        if cls is None:
            raise ValueError(f"unknown event type {d.get('type')!r}")
        plan = _build_plan(cls)
        if plan is None:  # a class of another module: its own __init__ decides
            names = _json_fields(cls)
            kwargs = {k: v for k, v in d.items() if k in names}
            if remote is not None:
                kwargs["remote"] = remote
            try:
                event = cls(store=store, **kwargs)
            except TypeError as exc:
                raise ValueError(f"bad fields for {cls.__name__}: {exc}") from None
            event._check_types()
            return event
        # The classes of this module are plain frozen dataclasses (no __post_init__): the
        # instance's __dict__ is filled directly, field by field and checked on the way,
        # which is what their generated __init__ and _check_types do, at a third of the cost
        # (a bridge rebuilds every event it delivers).
        event = object.__new__(cls)
        values = event.__dict__
        values["store"] = store
        for name, default, factory, expected in plan:
            value = d.get(name, _MISSING)
            if value is _MISSING:
                value = default if factory is None else factory()
            elif expected is not None and (not isinstance(value, expected)
                                           or isinstance(value, bool)):
                raise ValueError(f"field {name!r} has the wrong type")
            values[name] = value
        if remote is not None:
            values["remote"] = remote
        return event

    def _check_types(self) -> None:
        for name in _json_fields(type(self)):
            expected = _FIELD_TYPES.get(name)
            value = getattr(self, name)
            if expected is not None and not isinstance(value, expected):
                raise ValueError(f"field {name!r} has the wrong type")
            if isinstance(value, bool) and name != "remote":
                raise ValueError(f"field {name!r} has the wrong type")

    def replace(self, **changes: Any) -> StoreEvent:
        """Return a copy of the event with ``changes`` applied."""
        return dataclasses.replace(self, **changes)


# Fields added after the first release: left out of the JSON form when None, so that the
# bytes of an event without them are those older peers send (and from_dict takes them as
# optional: a missing one is None). Older peers drop fields they do not know.
_OMITTED_WHEN_NONE = frozenset({"revision"})

# Types a decoded event must respect (numbers may arrive as int or float).
_FIELD_TYPES: Dict[str, Any] = {
    "origin": str,
    "timestamp": (int, float),
    "key": str,
    "metadata": dict,
    "sequence": (int, type(None)),
    "revision": (int, type(None)),
    "operation_id": str,
    "message": str,
    "steps": int,
    "step": int,
    "exit_state": str,
    "notes": (str, type(None)),
    "state": str,
}


@dataclass(frozen=True, kw_only=True)
class StoreKeyEvent(StoreEvent):
    """An event about one key.

    Attributes
    ----------
    key : the key as the user wrote it.
    metadata : the key's whole metadata after the change (for a delete, its last metadata).
    sequence : the change's position in the store's journal, or None.
    revision : the key's revision after the change (for a delete, the revision of the
        delete), or None where it is not known (an event of an older peer).
    """

    key: str = ""
    metadata: Dict[str, Any] = field(default_factory=dict)
    sequence: Optional[int] = None
    revision: Optional[int] = None


@dataclass(frozen=True, kw_only=True)
class StoreModificationEvent(StoreKeyEvent):
    """A key was created, written or deleted."""

    action: ClassVar[str] = ""


@dataclass(frozen=True, kw_only=True)
class StoreSetEvent(StoreModificationEvent):
    """A key that did not exist now exists."""

    action: ClassVar[str] = "set"


@dataclass(frozen=True, kw_only=True)
class StoreUpdateEvent(StoreModificationEvent):
    """An existing key was written."""

    action: ClassVar[str] = "update"


@dataclass(frozen=True, kw_only=True)
class StoreDeleteEvent(StoreModificationEvent):
    """A key was deleted; ``metadata`` is its last metadata."""

    action: ClassVar[str] = "delete"


@dataclass(frozen=True, kw_only=True)
class StoreProgressEvent(StoreEvent):
    """Base of the progress events of one streaming operation."""

    operation_id: str = ""
    key: str = ""
    message: str = ""


@dataclass(frozen=True, kw_only=True)
class StoreProgressStartEvent(StoreProgressEvent):
    """A stream operation starts; ``steps`` is the total number of bytes, or -1."""

    steps: int = -1


@dataclass(frozen=True, kw_only=True)
class StoreProgressStepEvent(StoreProgressEvent):
    """``step`` bytes have been moved so far."""

    step: int = 0


@dataclass(frozen=True, kw_only=True)
class StoreProgressEndEvent(StoreProgressEvent):
    """A stream operation ended: ``exit_state`` is normal, warning, error or exception."""

    exit_state: str = "normal"


@dataclass(frozen=True, kw_only=True)
class StoreTransactionEvent(StoreEvent):
    """Base of the transaction events; ``notes`` as given to ``transaction()``."""

    notes: Optional[str] = None


@dataclass(frozen=True, kw_only=True)
class StoreTransactionStartEvent(StoreTransactionEvent):
    """A transaction started."""


@dataclass(frozen=True, kw_only=True)
class StoreTransactionEndEvent(StoreTransactionEvent):
    """A transaction ended; ``state`` is ``"done"`` or ``"failed"``."""

    state: str = "done"


#: Event class for each modification kind.
MODIFICATION_CLASSES: Dict[str, Type[StoreModificationEvent]] = {
    "set": StoreSetEvent,
    "update": StoreUpdateEvent,
    "delete": StoreDeleteEvent,
}

_KeyEventT = TypeVar("_KeyEventT", bound=StoreKeyEvent)
_new = object.__new__
# _key_event fills these, in this order: the fields of StoreKeyEvent and of every class of
# MODIFICATION_CLASSES (checked here, so that a new field cannot be forgotten there).
_KEY_EVENT_FIELDS = ("store", "origin", "timestamp", "remote", "key", "metadata", "sequence", "revision")
_KEY_EVENT_CLASSES: Tuple[Type[StoreKeyEvent], ...] = (StoreKeyEvent, *MODIFICATION_CLASSES.values())
for _cls in _KEY_EVENT_CLASSES:
    if tuple(f.name for f in dataclasses.fields(_cls)) != _KEY_EVENT_FIELDS or hasattr(_cls, "__post_init__"):
        raise AssertionError(f"_key_event does not build {_cls.__name__}: update it")


def _key_event(cls: Type[_KeyEventT], store: Any, origin: str, timestamp: float, remote: bool, key: str,
               metadata: Dict[str, Any], sequence: Optional[int], revision: Optional[int]) -> _KeyEventT:
    """``cls(store=store, origin=origin, ...)`` for :class:`StoreKeyEvent` or a class of
    :data:`MODIFICATION_CLASSES`, at a fifth of the cost (every event a store sends).

    The generated ``__init__`` of a frozen dataclass sets each field through
    ``object.__setattr__``; this fills the instance's ``__dict__`` with the same values in
    the same (field) order, which is all that ``__init__`` leaves behind (no
    ``__post_init__``), so the two events are equal, field by field.
    """
    event = _new(cls)
    values = event.__dict__
    values["store"] = store
    values["origin"] = origin
    values["timestamp"] = timestamp
    values["remote"] = remote
    values["key"] = key
    values["metadata"] = metadata
    values["sequence"] = sequence
    values["revision"] = revision
    return event
