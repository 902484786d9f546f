"""The index's answer to a query: the rows of the ``meta`` table, and the SQL planned from criteria.

``meta`` is one B-tree, ``PRIMARY KEY (name, elem, v, key)`` (WITHOUT ROWID): a row per
top-level name of a key (``elem`` 0) and one per distinct element of a list (``elem`` 1). ``v``
is typed so that SQLite's order of storage classes keeps the kinds apart (numbers < text <
blobs): a number is stored as a number (:func:`num_column`), a string as text, anything else
(booleans, null, lists, objects, list elements) as the bytes of its canonical JSON text. So
a commit touches, for each name whose value changed, the one place its old row was and the
one place its new row goes: no second B-tree per row.

The plan: every criterion but ``not_`` and ``exists(False)`` can *drive* (a range of the
B-tree that yields the keys it matches); the driver is the criterion that matches the fewest
keys, found by counting each criterion's matches up to a cap that grows until one stops short
of it, so the cost follows the most selective criterion, not the order of the keywords.
``eq``, ``one_of`` and ``contains`` (and their ``not_``) filter the driver's keys by a seek on
the whole primary key; the other criteria are checked in Python on the keys' metadata
(``Plan.recheck``), as is a number bound beyond 2**62, which SQL compares by a float that may
be inexact.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..._keys import canonical
from ...query import Criterion, between, contains, eq, exists, ge, gt, le, lt, not_, one_of, prefix

# (name, elem, v, key): one row of the meta table.
MetaRow = tuple[str, int, Any, str]

EXACT = 2 ** 62  # number bounds below this compare exactly in SQL (see num_column)
_INT64 = 2 ** 63
_FIRST_CAP = 32  # the first count of each criterion's matches stops here
_CAP_GROWTH = 16
_NUMBERS_END = ""  # every number sorts before every text in SQLite ...
_TEXTS_END = b""  # ... and every text before every blob


def num_column(value: Any) -> Any:
    """The ``v`` column of a number: an int SQLite holds exactly, else the nearest float.

    SQLite compares an INTEGER with a REAL exactly, so only ints beyond 64 bits (stored as a
    float, ``inf`` past the floats) can compare wrongly, and only with bounds beyond 2**62.
    """
    if type(value) is int and not -_INT64 <= value < _INT64:
        try:
            return float(value)
        except OverflowError:
            return math.inf if value > 0 else -math.inf
    return value


def v_column(value: Any) -> Any:
    """The ``v`` column of a top-level value: a number, a str, or canonical JSON bytes."""
    kind = type(value)
    if kind is str:
        return value
    if kind is int or kind is float:
        return num_column(value)
    return canonical(value).encode("utf-8")


def meta_rows(key: str, name: str, value: Any) -> list[MetaRow]:
    """The meta rows of ``name`` holding ``value`` in ``key``'s metadata."""
    rows: list[MetaRow] = [(name, 0, v_column(value), key)]
    if type(value) is list:
        rows += [(name, 1, text.encode("utf-8"), key) for text in {canonical(item) for item in value}]
    return rows


def prefix_end(prefix: str) -> str:
    """The smallest string greater than every string that starts with ``prefix``."""
    while prefix:
        last = ord(prefix[-1])
        if last < 0x10FFFF:
            nxt = last + 1
            if 0xD800 <= nxt <= 0xDFFF:
                nxt = 0xE000
            return prefix[:-1] + chr(nxt)
        prefix = prefix[:-1]
    return "\U0010ffff" * 256


def all_meta_rows(key: str, metadata: dict[str, Any]) -> list[MetaRow]:
    """The meta rows of every name of ``key``'s metadata."""
    return [row for name, value in metadata.items() for row in meta_rows(key, name, value)]


# ------------------------------------------------------------------ one criterion


Sql = tuple[str, list[Any]]  # a fragment and its parameters


@dataclass
class _Bounds:
    """A range of ``v`` among the numbers or the strings: (operator, bound) pairs;
    ``exact`` False when widened."""

    numbers: bool
    terms: list[tuple[str, Any]] = field(default_factory=list)
    exact: bool = True

    def add(self, op: str, bound: Any) -> None:
        if self.numbers and isinstance(bound, (int, float)) and abs(bound) >= EXACT:
            # Compare with a float one step beyond: a superset, checked again in Python.
            low = op.startswith(">")
            bound = math.nextafter(float(bound), -math.inf if low else math.inf)
            op = ">=" if low else "<="
            self.exact = False
        self.terms.append((op, bound))

    def sql(self) -> Sql:
        # A side without a bound is closed at the edge of the kind (numbers, then strings):
        # the range never reaches the rows of another kind.
        terms = list(self.terms)
        if not any(op.startswith("<") for op, _ in terms):
            terms.append(("<", _NUMBERS_END if self.numbers else _TEXTS_END))
        if not self.numbers and not any(op.startswith(">") for op, _ in terms):
            terms.append((">=", ""))
        return " AND ".join(f"v {op} ?" for op, _ in terms), [b for _, b in terms]


_OPS = {gt: ">", ge: ">=", lt: "<", le: "<="}


def _bounds(c: Criterion) -> _Bounds | None:
    """The range of an ordering criterion or ``prefix``, else None."""
    kind = type(c)
    if kind in _OPS:
        b = _Bounds(c._bound_kind == "number")  # type: ignore[attr-defined]
        b.add(_OPS[kind], c.bound)  # type: ignore[attr-defined]
        return b
    if kind is between:
        assert isinstance(c, between)
        b = _Bounds(c._bound_kind == "number")
        b.add(">=", c.low)
        b.add("<=", c.high)
        return b
    if kind is prefix:
        assert isinstance(c, prefix)
        b = _Bounds(False)
        b.add(">=", c.start)
        if c.start:
            b.add("<", prefix_end(c.start))
        return b
    return None


_SCAN = "SELECT key FROM meta WHERE name=? AND elem="


def _operands(c: Criterion) -> tuple[int, list[Any], bool] | None:
    """(elem, the ``v`` of each value, whether SQL compares them exactly) of the rows an
    ``eq``, ``one_of`` or ``contains`` matches, else None."""
    kind = type(c)
    if kind is eq:
        elem, texts = 0, [c.text or ""]  # type: ignore[attr-defined]
    elif kind is one_of:
        elem, texts = 0, sorted(c._set)  # type: ignore[attr-defined]
    elif kind is contains:
        elem, texts = 1, [c.element_text]  # type: ignore[attr-defined]
    else:
        return None
    values = [json.loads(t) for t in texts]
    exact = not any(type(v) in (int, float) and abs(v) >= EXACT for v in values)
    if elem == 0:
        return elem, [v_column(v) for v in values], exact
    return elem, [t.encode("utf-8") for t in texts], exact


def drive(name: str, c: Criterion) -> tuple[Sql, bool] | None:
    """(the range of the B-tree whose keys are those ``c`` matches, whether exactly so or a
    superset), or None when ``c`` cannot drive (``not_``, ``exists(False)``)."""
    found = _operands(c)
    if found is not None:
        elem, params, exact = found
        if not params:
            return ("SELECT key FROM meta WHERE 0", []), True
        if len(params) == 1:
            return (_SCAN + f"{elem} AND v=?", [name, *params]), exact
        marks = ",".join("?" * len(params))
        return (_SCAN + f"{elem} AND v IN ({marks})", [name, *params]), exact
    if type(c) is exists:
        if not c.present:  # type: ignore[attr-defined]
            return None
        return (_SCAN + "0", [name]), True
    bounds = _bounds(c)
    if bounds is None:
        return None
    where, params = bounds.sql()
    return (_SCAN + f"0 AND {where}", [name, *params]), bounds.exact


def check(name: str, c: Criterion, key: str) -> Sql | None:
    """An SQL condition true exactly when ``c`` holds for the key whose SQL expression is
    ``key`` (a seek on the primary key), or None when Python is to check ``c``."""
    negate = type(c) is not_
    found = _operands(c.criterion if negate else c)  # type: ignore[attr-defined]
    if found is None or not found[2]:
        return None
    elem, params, _ = found
    if not params:
        return ("1" if negate else "0"), []
    marks = ",".join("?" * len(params))
    sql = (f"EXISTS (SELECT 1 FROM meta x WHERE x.name=? AND x.elem={elem} AND x.v IN ({marks}) "
           f"AND x.key={key})")
    return ("NOT " + sql if negate else sql), [name, *params]


# ------------------------------------------------------------------ the plan


@dataclass
class Plan:
    """The SQL of a query: ``sql`` selects (key, metadata) or key alone; ``recheck`` means the
    rows are a superset, to be checked again with the criteria in Python."""

    sql: str
    params: list[Any]
    recheck: bool


def _counts(conn: sqlite3.Connection, drives: list[Sql], cap: int) -> list[int]:
    """How many keys each drive yields, counting each up to ``cap``: one statement."""
    sql = ", ".join(f"(SELECT count(*) FROM ({d[0]} LIMIT {cap}))" for d in drives)
    return list(conn.execute("SELECT " + sql, [x for d in drives for x in d[1]]).fetchone())


def choose(conn: sqlite3.Connection, drives: list[Sql]) -> int:
    """The index in ``drives`` of the one yielding the fewest keys (ties: the first)."""
    if len(drives) == 1:
        return 0
    cap = _FIRST_CAP
    while True:
        counts = _counts(conn, drives, cap)
        least = min(counts)
        if least < cap:
            return counts.index(least)
        cap *= _CAP_GROWTH


def _parts(criteria: dict[str, Criterion]) -> Iterator[tuple[str, Criterion, tuple[Sql, bool] | None]]:
    for name, c in criteria.items():
        yield name, c, drive(name, c)


def plan(conn: sqlite3.Connection, criteria: dict[str, Criterion], with_metadata: bool) -> Plan:
    """The plan of a query of ``criteria`` (all must hold) on the index open on ``conn``."""
    parts = list(_parts(criteria))
    drivers = [i for i, (_, _, d) in enumerate(parts) if d is not None]
    source: Sql = ("SELECT key FROM keys", [])
    chosen = -1
    recheck = False
    if drivers:
        chosen = drivers[choose(conn, [parts[i][2][0] for i in drivers])]  # type: ignore[index]
        source, exact = parts[chosen][2]  # type: ignore[misc]
        recheck = not exact
    wheres: list[str] = []
    params = list(source[1])
    for i, (name, c, _) in enumerate(parts):
        if i == chosen:
            continue  # the driver's own range already holds it (a superset when inexact)
        condition = check(name, c, "d.key")
        if condition is None:
            recheck = True
        else:
            wheres.append(condition[0])
            params += condition[1]
    if with_metadata or recheck:
        sql = f"SELECT k.key, k.metadata FROM ({source[0]}) d CROSS JOIN keys k ON k.key=d.key"
    else:
        sql = f"SELECT d.key FROM ({source[0]}) d"
    if wheres:
        sql += " WHERE " + " AND ".join(wheres)
    return Plan(sql + " ORDER BY d.key", params, recheck)
