"""The index's answer to a query: the rows of the ``meta`` table, and the SQL planned from criteria.

``meta`` has one row per top-level name of a key (``elem`` 0) with its canonical JSON text in
``value``, the number in ``num`` when it is one (booleans are not numbers), the string in
``txt`` when it is one; and one row per distinct element of a list (``elem`` 1, ``value`` the
element's canonical text). Its primary key ``(key, name, elem, value)`` checks one key's name
at a seek; three partial indexes find keys by name: ``meta_num (name, num)``, ``meta_txt
(name, txt)`` and ``meta_val (name, elem, value)`` for the rest (booleans, null, lists,
objects, list elements). Each row is in exactly one of them.

The plan: every criterion but ``not_`` and ``exists(False)`` can *drive* (a scan of one of
those indexes that yields the keys it matches); every criterion can *filter* (a seek on the
primary key for one key). The driver is the criterion that matches the fewest keys, found by
counting each criterion's matches up to a cap that grows until one stops short of it: so
the cost follows the most selective criterion, not the order of the keywords. The others
filter the driver's keys. A number bound beyond 2**62 is compared in SQL by a float that may
be inexact: such a criterion is widened to a superset in SQL and checked again in Python
(``Plan.recheck``).
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

# (key, name, elem, value, num, txt): one row of the meta table.
MetaRow = tuple[str, str, int, str, Any, Any]

EXACT = 2 ** 62  # number bounds below this compare exactly in SQL (see num_column)
_INT64 = 2 ** 63
_FIRST_CAP = 32  # the first count of each criterion's matches stops here
_CAP_GROWTH = 16


def num_column(value: Any) -> Any:
    """The ``num`` column of a number: an int SQLite holds exactly, else the nearest float.

    SQLite compares an INTEGER with a REAL exactly, so only ints beyond 64 bits (stored as a
    float, ``inf`` past the floats) can compare wrongly, and only with bounds beyond 2**62.
    """
    if type(value) is int and not -_INT64 <= value < _INT64:
        try:
            return float(value)
        except OverflowError:
            return math.inf if value > 0 else -math.inf
    return value


def meta_rows(key: str, name: str, value: Any) -> list[MetaRow]:
    """The meta rows of ``name`` holding ``value`` in ``key``'s metadata."""
    kind = type(value)
    if kind is str:
        return [(key, name, 0, canonical(value), None, value)]
    if kind is int or kind is float:
        return [(key, name, 0, canonical(value), num_column(value), None)]
    rows = [(key, name, 0, canonical(value), None, None)]
    if kind is list:
        rows += [(key, name, 1, text, None, None) for text in {canonical(item) for item in value}]
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
    """A range on ``num`` or ``txt``: (operator, bound) pairs; ``exact`` False when widened."""

    column: str
    terms: list[tuple[str, Any]] = field(default_factory=list)
    exact: bool = True

    def add(self, op: str, bound: Any) -> None:
        if self.column == "num" and isinstance(bound, (int, float)) and abs(bound) >= EXACT:
            # Compare with a float one step beyond: a superset, checked again in Python.
            low = op.startswith(">")
            bound = math.nextafter(float(bound), -math.inf if low else math.inf)
            op = ">=" if low else "<="
            self.exact = False
        self.terms.append((op, bound))

    def sql(self, alias: str) -> Sql:
        where = " AND ".join(f"{alias}{self.column} {op} ?" for op, _ in self.terms)
        return where, [b for _, b in self.terms]


_OPS = {gt: ">", ge: ">=", lt: "<", le: "<="}


def _bounds(c: Criterion) -> _Bounds | None:
    """The range of an ordering criterion or ``prefix``, else None."""
    kind = type(c)
    if kind in _OPS:
        b = _Bounds("num" if c._bound_kind == "number" else "txt")  # type: ignore[attr-defined]
        b.add(_OPS[kind], c.bound)  # type: ignore[attr-defined]
        return b
    if kind is between:
        assert isinstance(c, between)
        b = _Bounds("num" if c._bound_kind == "number" else "txt")
        b.add(">=", c.low)
        b.add("<=", c.high)
        return b
    if kind is prefix:
        assert isinstance(c, prefix)
        b = _Bounds("txt")
        b.add(">=", c.start)
        if c.start:
            b.add("<", prefix_end(c.start))
        return b
    return None


def _eq_drive(name: str, text: str) -> Sql:
    """The keys whose ``name`` is JSON-equal to the value of canonical ``text``."""
    value = json.loads(text)
    if type(value) is str:
        return "SELECT key FROM meta WHERE name=? AND txt=?", [name, value]
    if type(value) in (int, float):
        return "SELECT key FROM meta WHERE name=? AND num=? AND value=?", [name, num_column(value), text]
    return ("SELECT key FROM meta WHERE name=? AND elem=0 AND value=? AND num IS NULL AND txt IS NULL",
            [name, text])


def drive(name: str, c: Criterion) -> list[Sql] | None:
    """The index scans whose union is the keys ``c`` matches (a superset when inexact), or
    None when ``c`` cannot drive (``not_``, ``exists(False)``)."""
    kind = type(c)
    if kind is eq:
        return [_eq_drive(name, c.text or "")]
    if kind is one_of:
        assert isinstance(c, one_of)
        return [_eq_drive(name, text) for text in sorted(c._set)] or [("SELECT key FROM meta WHERE 0", [])]
    if kind is contains:
        assert isinstance(c, contains)
        return [("SELECT key FROM meta WHERE name=? AND elem=1 AND value=? AND num IS NULL AND txt IS NULL",
                 [name, c.element_text])]
    if kind is exists:
        if not c.present:  # type: ignore[attr-defined]
            return None
        return [("SELECT key FROM meta WHERE name=? AND num IS NOT NULL", [name]),
                ("SELECT key FROM meta WHERE name=? AND txt IS NOT NULL", [name]),
                ("SELECT key FROM meta WHERE name=? AND elem=0 AND num IS NULL AND txt IS NULL", [name])]
    bounds = _bounds(c)
    if bounds is None:
        return None
    where, params = bounds.sql("")
    return [(f"SELECT key FROM meta WHERE name=? AND {where}", [name, *params])]


def check(name: str, c: Criterion, key: str) -> tuple[Sql | None, bool]:
    """(an SQL condition true exactly when ``c`` holds for the key whose SQL expression is
    ``key``, or None when SQL cannot tell exactly; whether it is a superset to check again)."""
    kind = type(c)
    seek = f"EXISTS (SELECT 1 FROM meta x WHERE x.key={key} AND x.name=? AND x.elem="
    if kind is eq:
        return (seek + "0 AND x.value=?)", [name, c.text]), False
    if kind is one_of:
        assert isinstance(c, one_of)
        if not c._set:
            return ("0", []), False
        marks = ",".join("?" * len(c._set))
        return (seek + f"0 AND x.value IN ({marks}))", [name, *sorted(c._set)]), False
    if kind is contains:
        return (seek + "1 AND x.value=?)", [name, c.element_text]), False  # type: ignore[attr-defined]
    if kind is exists:
        sql = seek + "0)"
        return (sql if c.present else "NOT " + sql, [name]), False  # type: ignore[attr-defined]
    if kind is not_:
        inner, loose = check(name, c.criterion, key)  # type: ignore[attr-defined]
        if inner is None or loose:
            return None, True
        return ("NOT " + inner[0], inner[1]), False
    bounds = _bounds(c)
    assert bounds is not None, c
    where, params = bounds.sql("x.")
    return (seek + f"0 AND {where})", [name, *params]), not bounds.exact


# ------------------------------------------------------------------ the plan


@dataclass
class Plan:
    """The SQL of a query: ``sql`` selects (key, metadata) or key alone; ``recheck`` means the
    rows are a superset, to be checked again with the criteria in Python."""

    sql: str
    params: list[Any]
    recheck: bool


def _union(parts: list[Sql]) -> Sql:
    return " UNION ALL ".join(p[0] for p in parts), [x for p in parts for x in p[1]]


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


def _parts(criteria: dict[str, Criterion]) -> Iterator[tuple[str, Criterion, list[Sql] | None]]:
    for name, c in criteria.items():
        yield name, c, drive(name, c)


def plan(conn: sqlite3.Connection, criteria: dict[str, Criterion], with_metadata: bool) -> Plan:
    """The plan of a query of ``criteria`` (all must hold) on the index open on ``conn``."""
    parts = list(_parts(criteria))
    drivers = [i for i, (_, _, d) in enumerate(parts) if d is not None]
    source: Sql = ("SELECT key FROM keys", [])
    chosen = -1
    if drivers:
        chosen = drivers[choose(conn, [_union(parts[i][2] or []) for i in drivers])]
        source = _union(parts[chosen][2] or [])
    wheres: list[str] = []
    params = list(source[1])
    recheck = False
    for i, (name, c, _) in enumerate(parts):
        condition, loose = check(name, c, "d.key")
        recheck = recheck or loose
        if i == chosen:
            continue  # the driver's own scan already holds it (a superset when loose)
        if condition is not None:
            wheres.append(condition[0])
            params += condition[1]
    if with_metadata:
        sql = f"SELECT k.key, k.metadata FROM ({source[0]}) d CROSS JOIN keys k ON k.key=d.key"
    else:
        sql = f"SELECT d.key FROM ({source[0]}) d"
    if wheres:
        sql += " WHERE " + " AND ".join(wheres)
    return Plan(sql + " ORDER BY d.key", params, recheck)
