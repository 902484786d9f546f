"""Query operators: criteria besides plain equality for ``query`` and ``query_keys``.

::

    from kvstore.query import gt, ge, lt, le, between, one_of, contains, prefix, exists, not_
    store.query_keys(kind="scan", size=gt(1000), tags=contains("raw"), owner=exists())

Every keyword of a query is a criterion on one top-level metadata name, and all of them must
hold. A plain JSON value means JSON equality (:class:`eq`); the operators below mean more.
The rules, the same on every backend:

- JSON equality: numbers by value (``1`` equals ``1.0``), booleans only equal booleans
  (``True`` is not ``1``), strings, null, lists and objects by structure.
- ``gt``, ``ge``, ``lt``, ``le``, ``between`` (inclusive at both ends) compare numbers with
  numbers (booleans are not numbers) and strings with strings (by code point). A stored value
  of another type, or a missing name, does not match.
- ``one_of(values)``: JSON-equal to one of them; ``contains(v)``: a list with an element
  JSON-equal to ``v``; ``prefix(s)``: a string starting with ``s``.
- ``exists()`` / ``exists(False)``: the name is present / absent, whatever its value.
- ``not_(c)``: ``c`` (a value or an operator) does not hold. Only ``exists(False)`` holds for a
  missing name, so ``not_(c)`` holds for a missing name unless ``c`` is ``exists(False)``.

An operator checks its argument when it is made and raises :class:`TypeError` for the wrong
kind (``gt([1])``, ``gt(True)``, ``prefix(3)``, ``one_of(3)``, NaN...). Operators are
immutable and hashable; two of them are equal when they mean the same (``gt(1) == gt(1.0)``).
Each has ``holds(present, value)``, the rule above for one name: ``present`` says whether the
name is in the metadata and ``value`` is its value then.
"""

from __future__ import annotations

import json
import math
from typing import Any, FrozenSet, List, Optional, Tuple, Union

from ._keys import _check_names, _dump_strict, canonical

__all__ = [
    "Criterion",
    "eq",
    "gt",
    "ge",
    "lt",
    "le",
    "between",
    "one_of",
    "contains",
    "prefix",
    "exists",
    "not_",
    "criterion",
]

Comparable = Union[int, float, str]


class Criterion:
    """A condition on one metadata name; the base of :class:`eq` and of every operator.

    Instances are immutable and hashable. Subclasses other than this module's own are refused
    by queries (``TypeError``): a backend must know what every criterion means.
    """

    __slots__ = ()

    #: For :class:`eq`, the canonical JSON text of its value (two values are JSON-equal
    #: exactly when their texts are equal, see ``kvstore._keys.canonical``); None otherwise.
    text: Optional[str] = None

    def holds(self, present: bool, value: Any = None) -> bool:
        """Whether the criterion holds for a name that is ``present`` with ``value``.

        ``value`` is ignored when ``present`` is False (the name is missing).
        """
        raise NotImplementedError

    def _args(self) -> Tuple[Any, ...]:
        """The constructor arguments that make this criterion again."""
        return ()

    def _identity(self) -> Tuple[Any, ...]:
        """What equality and hashing compare: JSON-equal arguments give equal identities."""
        return (id(self),)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._identity() == other._identity()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._identity()))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(map(repr, self._args()))})"

    def __reduce__(self) -> Tuple[Any, ...]:
        return type(self), self._args()

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")


def _init(obj: Criterion, **fields: Any) -> None:
    for name, value in fields.items():
        object.__setattr__(obj, name, value)


def _json_text(value: Any) -> str:
    """Canonical text of a JSON value; TypeError or ValueError (NaN, a cycle) otherwise."""
    _dump_strict(value)  # TypeError: not JSON; ValueError: NaN, infinity, a cycle
    _check_names(value, "")
    return canonical(value)


def _operand(op: str, value: Any) -> str:
    """Canonical text of an operator's JSON argument; TypeError when it is not one."""
    try:
        return _json_text(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise TypeError(f"{op}() takes JSON values, not this one: {exc}") from None


def _kind(value: Any) -> Optional[str]:
    """'number' or 'str' for the values the ordering operators compare, else None."""
    if isinstance(value, str):
        return "str"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "number"
    return None


def _comparable(op: str, value: Any) -> str:
    kind = _kind(value)
    if kind is None:
        raise TypeError(f"{op}() takes a number or a str, not {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):  # an int of any size is fine
        raise TypeError(f"{op}() takes a finite number (JSON has no NaN or infinity), not {value!r}")
    return kind


class eq(Criterion):
    """JSON-equal to ``value``: what a plain value in a query means.

    ``value`` is validated like metadata: ``TypeError`` when it is not JSON, ``ValueError`` for
    NaN, infinity or a cycle.
    """

    __slots__ = ("text",)
    text: str

    def __init__(self, value: Any) -> None:
        _init(self, text=_json_text(value))

    @property
    def value(self) -> Any:
        """The value (a fresh copy, JSON-equal to the one given)."""
        return json.loads(self.text)

    def holds(self, present: bool, value: Any = None) -> bool:
        return present and canonical(value) == self.text

    def _args(self) -> Tuple[Any, ...]:
        return (self.value,)

    def _identity(self) -> Tuple[Any, ...]:
        return (self.text,)


class _Ordering(Criterion):
    """Compare with one bound: numbers with numbers, strings with strings."""

    __slots__ = ("bound", "_bound_kind")
    bound: Comparable
    _bound_kind: str

    def __init__(self, bound: Comparable) -> None:
        _init(self, _bound_kind=_comparable(type(self).__name__, bound), bound=bound)

    def _test(self, value: Any) -> bool:
        raise NotImplementedError

    def holds(self, present: bool, value: Any = None) -> bool:
        return present and _kind(value) == self._bound_kind and self._test(value)

    def _args(self) -> Tuple[Any, ...]:
        return (self.bound,)

    def _identity(self) -> Tuple[Any, ...]:
        return (self._bound_kind, self.bound)  # 1 == 1.0 and hash(1) == hash(1.0)


class gt(_Ordering):
    """Greater than ``bound`` (a number or a str)."""

    __slots__ = ()

    def _test(self, value: Any) -> bool:
        return bool(value > self.bound)


class ge(_Ordering):
    """Greater than or equal to ``bound`` (a number or a str)."""

    __slots__ = ()

    def _test(self, value: Any) -> bool:
        return bool(value >= self.bound)


class lt(_Ordering):
    """Less than ``bound`` (a number or a str)."""

    __slots__ = ()

    def _test(self, value: Any) -> bool:
        return bool(value < self.bound)


class le(_Ordering):
    """Less than or equal to ``bound`` (a number or a str)."""

    __slots__ = ()

    def _test(self, value: Any) -> bool:
        return bool(value <= self.bound)


class between(Criterion):
    """From ``low`` to ``high``, both included: two numbers or two strings.

    ``between(5, 1)`` is allowed and matches nothing.
    """

    __slots__ = ("low", "high", "_bound_kind")
    low: Comparable
    high: Comparable
    _bound_kind: str

    def __init__(self, low: Comparable, high: Comparable) -> None:
        kind = _comparable("between", low)
        if _comparable("between", high) != kind:
            raise TypeError(f"between() takes two numbers or two strs, not {type(low).__name__} "
                            f"and {type(high).__name__}")
        _init(self, low=low, high=high, _bound_kind=kind)

    def holds(self, present: bool, value: Any = None) -> bool:
        return present and _kind(value) == self._bound_kind and bool(self.low <= value <= self.high)

    def _args(self) -> Tuple[Any, ...]:
        return (self.low, self.high)

    def _identity(self) -> Tuple[Any, ...]:
        return (self._bound_kind, self.low, self.high)


class one_of(Criterion):
    """JSON-equal to one of ``values`` (a list or tuple of JSON values; empty matches nothing)."""

    __slots__ = ("texts", "_set")
    texts: Tuple[str, ...]
    _set: FrozenSet[str]

    def __init__(self, values: Any) -> None:
        if not isinstance(values, (list, tuple)):
            raise TypeError(f"one_of() takes a list or tuple of values, not {type(values).__name__}")
        texts = tuple(_operand("one_of", v) for v in values)
        _init(self, texts=texts, _set=frozenset(texts))

    @property
    def values(self) -> List[Any]:
        """The values (a fresh list, JSON-equal to the ones given)."""
        return [json.loads(t) for t in self.texts]

    def holds(self, present: bool, value: Any = None) -> bool:
        return present and canonical(value) in self._set

    def _args(self) -> Tuple[Any, ...]:
        return (self.values,)

    def _identity(self) -> Tuple[Any, ...]:
        return (self._set,)


class contains(Criterion):
    """A list with an element JSON-equal to ``element`` (any JSON value)."""

    __slots__ = ("element_text",)
    element_text: str

    def __init__(self, element: Any) -> None:
        _init(self, element_text=_operand("contains", element))

    @property
    def element(self) -> Any:
        """The element (a fresh copy, JSON-equal to the one given)."""
        return json.loads(self.element_text)

    def holds(self, present: bool, value: Any = None) -> bool:
        if not present or not isinstance(value, list):
            return False
        text = self.element_text
        return any(canonical(item) == text for item in value)

    def _args(self) -> Tuple[Any, ...]:
        return (self.element,)

    def _identity(self) -> Tuple[Any, ...]:
        return (self.element_text,)


class prefix(Criterion):
    """A string that starts with ``start`` (a str; ``prefix("")`` matches every string)."""

    __slots__ = ("start",)
    start: str

    def __init__(self, start: str) -> None:
        if not isinstance(start, str):
            raise TypeError(f"prefix() takes a str, not {type(start).__name__}")
        _init(self, start=start)

    def holds(self, present: bool, value: Any = None) -> bool:
        return present and isinstance(value, str) and value.startswith(self.start)

    def _args(self) -> Tuple[Any, ...]:
        return (self.start,)

    def _identity(self) -> Tuple[Any, ...]:
        return (self.start,)


class exists(Criterion):
    """The name is present (``exists()``), or absent (``exists(False)``), whatever its value."""

    __slots__ = ("present",)
    present: bool

    def __init__(self, present: bool = True) -> None:
        if not isinstance(present, bool):
            raise TypeError(f"exists() takes a bool, not {type(present).__name__}")
        _init(self, present=present)

    def holds(self, present: bool, value: Any = None) -> bool:
        return bool(present) is self.present

    def _args(self) -> Tuple[Any, ...]:
        return () if self.present else (False,)

    def _identity(self) -> Tuple[Any, ...]:
        return (self.present,)


class not_(Criterion):
    """``criterion`` (a JSON value, meaning equality, or an operator) does not hold.

    A missing name makes every criterion but ``exists(False)`` fail, so ``not_`` of it holds:
    ``not_("done")`` matches keys without the name too; ``not_(exists())`` is ``exists(False)``.
    """

    __slots__ = ("criterion",)
    criterion: Criterion

    def __init__(self, criterion: Any) -> None:
        if isinstance(criterion, Criterion):
            _check_known(criterion)
        else:
            criterion = eq(_plain("not_", criterion))
        _init(self, criterion=criterion)

    def holds(self, present: bool, value: Any = None) -> bool:
        return not self.criterion.holds(present, value)

    def _args(self) -> Tuple[Any, ...]:
        inner = self.criterion
        return (inner.value,) if type(inner) is eq else (inner,)

    def _identity(self) -> Tuple[Any, ...]:
        return (self.criterion,)


_KNOWN = frozenset({eq, gt, ge, lt, le, between, one_of, contains, prefix, exists, not_})


def _check_known(value: Criterion) -> None:
    if type(value) not in _KNOWN:
        kind = type(value)
        raise TypeError(f"unknown query operator {kind.__module__}.{kind.__qualname__}: "
                        f"use those of kvstore.query")


def _plain(op: str, value: Any) -> Any:
    """``value`` if it is a JSON value, else TypeError (operators take no NaN either)."""
    _operand(op, value)
    return value


def criterion(value: Any) -> Criterion:
    """The criterion a query keyword's value stands for: an operator itself, a value :class:`eq`.

    Raises
    ------
    TypeError
        An operator of unknown type, or a value JSON cannot hold.
    ValueError
        A NaN, an infinity or a cycle in a plain value.
    """
    if isinstance(value, Criterion):
        _check_known(value)
        return value
    return eq(value)
