"""Query operators (kvstore.query): construction, bad input, the CLI criteria, and a seeded
randomised cross-check of every backend against a brute-force reading of API.md's rules.

The brute force below is written from API.md ("Queries with operators", "Keys and metadata"),
not from kvstore's code: JSON equality compares numbers as exact fractions, strings by their
code points, and never calls kvstore's own ``holds``.
"""

from __future__ import annotations

import json
import math
import pickle
import random
import socket
import subprocess
import sys
import uuid
from fractions import Fraction
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

from kvstore import FileSystemStore, MemoryStore
from kvstore.cli import main, parse_criterion
from kvstore.query import (
    Criterion,
    between,
    contains,
    eq,
    exists,
    ge,
    gt,
    le,
    lt,
    not_,
    one_of,
    prefix,
)
from kvstore.testing import EventRecorder

Ast = Tuple[Any, ...]

# ---------------------------------------------------------------- the rules, by brute force


def is_number(v: Any) -> bool:
    # Values come back from JSON: exactly int or float for numbers (bool is its own type).
    return type(v) in (int, float)


def json_equal(a: Any, b: Any) -> bool:
    """API.md's JSON equality: numbers by value, booleans only with booleans, structures."""
    if type(a) is bool or type(b) is bool:
        return type(a) is type(b) and a == b
    if is_number(a) or is_number(b):
        return is_number(a) and is_number(b) and Fraction(a) == Fraction(b)
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, str) or isinstance(b, str):
        return isinstance(a, str) and isinstance(b, str) and a == b
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return (isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b)
                and all(json_equal(x, y) for x, y in zip(a, b, strict=True)))
    assert isinstance(a, dict) and isinstance(b, dict), (a, b)
    return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)


def compare(a: Any, b: Any) -> Optional[int]:
    """-1, 0, 1 for numbers with numbers and strings with strings (code points); else None."""
    x: Any
    y: Any
    if is_number(a) and is_number(b):
        x, y = Fraction(a), Fraction(b)
    elif isinstance(a, str) and isinstance(b, str):
        x, y = [ord(c) for c in a], [ord(c) for c in b]
    else:
        return None
    return (x > y) - (x < y)


def brute(ast: Ast, present: bool, value: Any) -> bool:
    op = ast[0]
    if op == "exists":
        return present == ast[1]
    if op == "not":
        return not brute(ast[1], present, value)
    if not present:
        return False
    if op == "eq":
        return json_equal(value, ast[1])
    if op in ("gt", "ge", "lt", "le"):
        c = compare(value, ast[1])
        return c is not None and {"gt": c > 0, "ge": c >= 0, "lt": c < 0, "le": c <= 0}[op]
    if op == "between":
        low, high = compare(value, ast[1]), compare(value, ast[2])
        return low is not None and high is not None and low >= 0 and high <= 0
    if op == "one_of":
        return any(json_equal(value, v) for v in ast[1])
    if op == "contains":
        return isinstance(value, list) and any(json_equal(item, ast[1]) for item in value)
    if op == "prefix":
        return isinstance(value, str) and value[:len(ast[1])] == ast[1]
    raise AssertionError(ast)


def build(ast: Ast) -> Any:
    """The kvstore criterion for ``ast``: plain values for equality, operators otherwise."""
    op = ast[0]
    if op == "eq":
        return ast[1]
    if op == "not":
        return not_(build(ast[1]))
    if op == "exists":
        return exists() if ast[1] and len(ast) == 2 else exists(ast[1])
    return {"gt": gt, "ge": ge, "lt": lt, "le": le, "between": between, "one_of": one_of,
            "contains": contains, "prefix": prefix}[op](*ast[1:])


def expected_keys(stored: Dict[str, Dict[str, Any]], query: Dict[str, Ast]) -> List[str]:
    return sorted(k for k, md in stored.items()
                  if all(brute(ast, name in md, md.get(name)) for name, ast in query.items()))


# ---------------------------------------------------------------- random data and queries

NUMBERS = [0, 1, -1, 2, 3, 10, 0.0, -0.0, 1.0, 2.0, 2.5, -1.5, 1e-9, 3.0000001, 1e20, 2**53, 2**53 + 1,
           float(2**53), 10**30]
STRINGS = ["", "a", "A", "Z", "ab", "abc", "b", "img", "img_1", "img_10", "é", "e\u0301", "\uffff",
           "\U0001F600", "\U0001F600a", "10", "9", "raw", "null", "1"]
OTHERS = [True, False, None]
SCALARS = NUMBERS + STRINGS + OTHERS
PREFIXES = ["", "a", "img", "img_", "é", "e", "\U0001F600", "1", "Z", "raw", "abcd"]
NAMES = ["n", "s", "l", "x"]


def rand_value(rng: random.Random, depth: int = 0) -> Any:
    r = rng.random()
    if r < 0.7 or depth >= 2:
        return rng.choice(SCALARS)
    if r < 0.92:
        return [rand_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(["a", "b"]): rand_value(rng, depth + 1) for _ in range(rng.randint(0, 2))}


def rand_for(rng: random.Random, name: str) -> Any:
    """Values with a bias per name (numbers in n, strings in s, lists in l) so criteria hit."""
    if rng.random() < 0.7:
        if name == "n":
            return rng.choice(NUMBERS + OTHERS)
        if name == "s":
            return rng.choice(STRINGS)
        if name == "l":
            return [rng.choice(SCALARS[::3]) for _ in range(rng.randint(0, 3))]
    return rand_value(rng)


def rand_metadata(rng: random.Random) -> Dict[str, Any]:
    md = {name: rand_for(rng, name) for name in NAMES if rng.random() < 0.75}
    if rng.random() < 0.2:
        md["other"] = rand_value(rng)
    return md


def rand_ast(rng: random.Random, name: str, depth: int = 0) -> Ast:
    ops = ["eq", "gt", "ge", "lt", "le", "between", "one_of", "contains", "prefix", "exists"]
    if depth < 2:
        ops.append("not")
    op = rng.choice(ops)
    if op == "eq":
        return ("eq", rand_for(rng, name))
    if op in ("gt", "ge", "lt", "le"):
        return (op, rng.choice(NUMBERS + STRINGS))
    if op == "between":
        pool = NUMBERS if rng.random() < 0.5 else STRINGS
        return ("between", rng.choice(pool), rng.choice(pool))
    if op == "one_of":
        values = [rand_for(rng, name) for _ in range(rng.randint(0, 3))]
        return ("one_of", tuple(values) if rng.random() < 0.3 else values)
    if op == "contains":
        return ("contains", rng.choice(SCALARS) if rng.random() < 0.85 else rand_value(rng))
    if op == "prefix":
        return ("prefix", rng.choice(PREFIXES))
    if op == "exists":
        present = rng.random() < 0.5
        return ("exists", present, "explicit") if present and rng.random() < 0.3 else ("exists", present)
    return ("not", rand_ast(rng, name, depth + 1))


def rand_query(rng: random.Random) -> Dict[str, Ast]:
    names = rng.sample(NAMES, rng.choice([1, 1, 2, 2, 3, 4]))
    if rng.random() < 0.15:  # plain equalities only: the filesystem index's own path
        return {name: ("eq", rand_for(rng, name)) for name in names}
    return {name: rand_ast(rng, name) for name in names}


def make_data(seed: int, count: int) -> Dict[str, Dict[str, Any]]:
    rng = random.Random(seed)
    return {f"k{i:03d}": rand_metadata(rng) for i in range(count)}


def stored_form(data: Dict[str, Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    return {k: json.loads(json.dumps(md)) for k, md in data.items()}


def check_queries(store: Any, stored: Dict[str, Dict[str, Any]], queries: List[Dict[str, Ast]]) -> int:
    """Every query's answer (query_keys and query) equals the brute force; returns the hits."""
    hits = 0
    for i, query in enumerate(queries):
        kwargs = {name: build(ast) for name, ast in query.items()}
        want = expected_keys(stored, query)
        hits += len(want)
        assert sorted(store.query_keys(**kwargs)) == want, (query, kwargs)
        if i % 3 == 0:
            got = sorted(store.query(**kwargs), key=lambda item: item[0])
            assert [k for k, _ in got] == want, (query, kwargs)
            assert all(md == stored[k] for k, md in got)
        elif i % 3 == 1:
            got = sorted(store.query(select=["n", "l"], **kwargs), key=lambda item: item[0])
            assert got == [(k, {n: stored[k][n] for n in ("n", "l") if n in stored[k]}) for k in want]
    return hits


def test_the_brute_force_itself() -> None:
    # the reference must mean what API.md says, or the cross-check proves nothing
    assert json_equal(1, 1.0) and not json_equal(True, 1) and not json_equal(0, False)
    assert json_equal([1, {"a": 2.0}], [1.0, {"a": 2}]) and not json_equal([1], [True])
    assert not json_equal(2**53 + 1, float(2**53)) and json_equal(-0.0, 0)
    assert not json_equal(None, []) and not json_equal("1", 1)
    assert compare("\uffff", "\U0001F600") == -1 and compare("Z", "a") == -1
    assert compare(True, 1) is None and compare("1", 1) is None and compare(1, 1.0) == 0
    assert brute(("not", ("gt", 1)), False, None) and not brute(("not", ("exists", False)), False, None)
    assert brute(("exists", True), True, None) and not brute(("eq", None), False, None)


def random_workload(seed: int, keys: int, queries: int) -> Tuple[Dict[str, Dict[str, Any]], List[Dict[str, Ast]]]:
    rng = random.Random(seed + 1)
    return make_data(seed, keys), [rand_query(rng) for _ in range(queries)]


def fill(store: Any, data: Dict[str, Dict[str, Any]]) -> None:
    for key, md in data.items():
        store.set_metadata(key, md)


def test_random_cross_check_memory() -> None:
    data, queries = random_workload(17, 300, 400)
    stored = stored_form(data)
    with MemoryStore() as store:
        fill(store, data)
        hits = check_queries(store, stored, queries)
    # a cross-check that matched nothing, or everything, would prove little
    assert 1000 < hits < 0.8 * len(queries) * len(data)


def test_random_cross_check_filesystem(tmp_path: Path) -> None:
    data, queries = random_workload(17, 300, 400)
    stored = stored_form(data)
    with FileSystemStore(str(tmp_path / "s"), create=True) as store:
        with store.transaction("fill"):
            fill(store, data)
        check_queries(store, stored, queries)

        # inside a transaction the store answers from its index plus the staged writes
        rng = random.Random(99)
        with store.transaction("changes"):
            for key in rng.sample(sorted(stored), 30):
                if rng.random() < 0.3:
                    store.delete(key)
                    del stored[key]
                else:
                    store.set_metadata(key, rand_metadata(rng))
                    stored[key] = json.loads(json.dumps(store.get_metadata(key)))
            for i in range(10):
                store.set_metadata(f"new{i}", rand_metadata(rng))
                stored[f"new{i}"] = store.get_metadata(f"new{i}")
            check_queries(store, stored, queries[:80])
        check_queries(store, stored, queries[80:160])

    # and a fresh instance, from the index alone
    with FileSystemStore(str(tmp_path / "s")) as again:
        check_queries(again, stored, queries[160:240])


# ---------------------------------------------------------------- S3 on moto's server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]



@pytest.fixture
def s3_client(s3_endpoint: str) -> Iterator[Any]:
    """A client per test, closed at its end, so moto's connection threads end with it."""
    import boto3

    session = boto3.session.Session(region_name="us-east-1", aws_access_key_id="testing",
                                    aws_secret_access_key="testing")
    client = session.client("s3", endpoint_url=s3_endpoint)
    yield client
    client.close()


def test_random_cross_check_s3(s3_client: Any) -> None:
    from kvstore import S3Store

    bucket = f"kvq-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=bucket)
    # smaller than the others (each S3 query reads every key's metadata object): a few keys
    # and a few queries of several criteria, enough to see S3 answer like the others
    data, queries = random_workload(17, 40, 400)
    stored = stored_form(data)
    several = [q for q in queries if len(q) >= 2 and any(ast[0] != "eq" for ast in q.values())][:5]
    several.append({"n": ("ge", 0), "l": ("not", ("contains", "a")), "s": ("not", ("exists", False))})
    with S3Store(bucket, "q/", client=s3_client) as store:
        fill(store, data)
        assert check_queries(store, stored, several) > 0


# ---------------------------------------------------------------- operators themselves


def test_operators_repr_equality_hash_pickle() -> None:
    made = [gt(1), ge(2.5), lt("b"), le("é"), between(1, 2.5), between("a", "b"), one_of([1, "a", [1]]),
            contains({"a": 1}), prefix("img_"), exists(), exists(False), not_("x"), not_(gt(3)),
            not_(not_(exists())), eq([1, {"b": None}])]
    assert [repr(c) for c in made] == [
        "gt(1)", "ge(2.5)", "lt('b')", "le('é')", "between(1, 2.5)", "between('a', 'b')",
        "one_of([1, 'a', [1]])", "contains({'a': 1})", "prefix('img_')", "exists()", "exists(False)",
        "not_('x')", "not_(gt(3))", "not_(not_(exists()))", "eq([1, {'b': None}])"]
    for c in made:
        assert isinstance(c, Criterion)
        assert pickle.loads(pickle.dumps(c)) == c
        assert hash(pickle.loads(pickle.dumps(c))) == hash(c)
        with pytest.raises(AttributeError):
            c.anything = 1  # type: ignore[attr-defined]
    assert len(set(made)) == len(made)
    # equal when they mean the same
    assert gt(1) == gt(1.0) and hash(gt(1)) == hash(gt(1.0))
    assert one_of([1, 2]) == one_of((2.0, 1)) and eq({"a": 1, "b": 2}) == eq({"b": 2.0, "a": 1})
    assert not_(1) == not_(eq(1.0))
    assert gt(1) != ge(1) and gt(1) != gt("1") and eq(1) != eq(True) and exists() != exists(False)
    with pytest.raises(AttributeError):
        del gt(1).bound


def test_operators_copy_their_arguments() -> None:
    values: List[Any] = [1, [2]]
    op = one_of(values)
    values.append(3)
    values[1].append(4)
    assert op == one_of([1, [2]]) and op.holds(True, [2]) and not op.holds(True, 3)
    op.values.append(5)  # a fresh list each time
    assert op.values == [1, [2]]
    element = {"a": [1]}
    c = contains(element)
    element["a"].append(2)
    assert c.element == {"a": [1]}


@pytest.mark.parametrize("make", [
    lambda: gt([1]), lambda: gt(True), lambda: gt(None), lambda: ge({}), lambda: lt(b"x"), lambda: le(False),
    lambda: gt(math.nan), lambda: gt(math.inf), lambda: between(1, "a"), lambda: between(True, 1),
    lambda: between("a", None), lambda: prefix(3), lambda: prefix(None), lambda: prefix(["a"]),
    lambda: one_of(3), lambda: one_of("ab"), lambda: one_of({1: 2}), lambda: one_of([object()]),
    lambda: one_of([math.nan]), lambda: contains({1}), lambda: contains(math.inf), lambda: exists(1),
    lambda: exists("yes"), lambda: exists(None), lambda: not_(object()), lambda: not_(math.nan),
    lambda: not_({1: "a"}), lambda: contains({2: 1}),
], ids=lambda f: "")
def test_operator_with_the_wrong_argument_is_a_type_error(make: Any) -> None:
    with pytest.raises(TypeError):
        make()


def test_operators_accept_what_api_md_allows() -> None:
    assert between(5, 1).holds(True, 3) is False              # empty, and no error
    assert between(1, 2.5).holds(True, 2) and between(-1, 1).holds(True, 1.0)
    assert gt(2**64).holds(True, 2**64 + 1) and not gt(2**53).holds(True, float(2**53))
    assert gt(10**400).holds(True, 10**400 + 1) and not ge(10**400).holds(True, 1e308)  # ints of any size
    assert lt(10**400).holds(True, 1e308) and between(-10**400, 10**400).holds(True, 0.5)
    assert one_of(()).holds(True, 1) is False
    assert one_of([None]).holds(True, None) and not one_of([None]).holds(False)
    assert prefix("").holds(True, "") and not prefix("").holds(True, 1)
    assert exists().holds(True, None) and exists(False).holds(False) and exists(True).holds(True, 0)
    assert not_(None).holds(True, 0) and not not_(None).holds(True, None) and not_(None).holds(False)
    assert contains([1]).holds(True, [[1.0], 2]) and not contains(1).holds(True, "1")
    assert not contains(1).holds(True, {"1": 1}) and not contains(True).holds(True, [1])


class _Mine(Criterion):
    def holds(self, present: bool, value: Any = None) -> bool:
        return True


@pytest.fixture(params=["memory", "filesystem"])
def store(request: Any, tmp_path: Path) -> Iterator[Any]:
    s = MemoryStore() if request.param == "memory" else FileSystemStore(str(tmp_path / "s"), create=True)
    with s:
        s.set_metadata("a", {"n": 1, "s": "x"})
        yield s


@pytest.mark.parametrize("kwargs, error", [
    ({"n": _Mine()}, TypeError),
    ({"n": gt(0), "s": _Mine()}, TypeError),
    ({"n": object()}, TypeError),
    ({"n": {1: "a"}}, TypeError),
    ({"n": math.nan}, (TypeError, ValueError)),
    ({"n": [1, math.inf]}, (TypeError, ValueError)),
    ({"n": {"a": gt(1)}}, TypeError),   # operators are top-level criteria, not JSON
    ({"n": [one_of([1])]}, TypeError),
    ({"n": b"1"}, TypeError),
], ids=lambda v: repr(v) if isinstance(v, dict) else "")
def test_bad_criterion_raises_at_the_call_and_writes_nothing(store: Any, kwargs: Dict[str, Any],
                                                             error: Any) -> None:
    recorder = EventRecorder(store)
    try:
        with pytest.raises(error) as info:
            store.query_keys(**kwargs)     # at the call, not at the first next()
        assert "query criterion 'n'" in str(info.value) or "query criterion 's'" in str(info.value)
        with pytest.raises(error):
            store.query(select=["n"], **kwargs)
        assert recorder.events == []
    finally:
        recorder.close()
    assert store.get_metadata("a") == {"n": 1, "s": "x"} and list(store.glob("*")) == ["a"]


def test_unknown_operator_error_names_it(store: Any) -> None:
    with pytest.raises(TypeError, match="unknown query operator .*_Mine"):
        store.query_keys(n=_Mine())
    with pytest.raises(TypeError, match="unknown query operator"):
        not_(_Mine())


# ---------------------------------------------------------------- the command line


@pytest.mark.parametrize("text, expected", [
    ("size>100", ("size", gt(100))),
    ("size>=100", ("size", ge(100))),
    ("size<1.5", ("size", lt(1.5))),
    ("size<=-3", ("size", le(-3))),
    ("name>m", ("name", gt("m"))),
    ('name<"10"', ("name", lt("10"))),
    ("tags~raw", ("tags", contains("raw"))),
    ("tags~3", ("tags", contains(3))),
    ('tags~["a"]', ("tags", contains(["a"]))),
    ("name^=img", ("name", prefix("img"))),
    ("name^=3", ("name", prefix("3"))),              # a PREFIX is taken as written
    ("name^=", ("name", prefix(""))),
    ("owner?", ("owner", exists())),
    ("why??", ("why?", exists())),
    ("state!=x", ("state", not_("x"))),
    ("state!=null", ("state", not_(None))),
    ("n=3", ("n", eq(3))),
    ("type=egg", ("type", eq("egg"))),
    ("e=", ("e", eq(""))),
    ("note=a>b", ("note", eq("a>b"))),              # the leftmost operator wins
    ("note>=a=b", ("note", ge("a=b"))),
    ("a=>b", ("a", eq(">b"))),
    ("x!y=1", ("x!y", eq(1))),                       # "!" and "^" alone belong to the name
    ("x^y<2", ("x^y", lt(2))),
    ("q=owner?", ("q", eq("owner?"))),
    ("n=NaN", ("n", eq("NaN"))),                     # not JSON: kept as a string
    ("n>NaN", ("n", gt("NaN"))),
    ("n>1e999", ("n", gt("1e999"))),
])
def test_parse_criterion(text: str, expected: Tuple[str, Criterion]) -> None:
    name, criterion = parse_criterion(text)
    assert (name, criterion) == expected
    assert type(criterion) is type(expected[1])


@pytest.fixture
def cli_store(tmp_path: Path) -> str:
    path = str(tmp_path / "s")
    with FileSystemStore(path, create=True) as s:
        s.set_metadata("a", {"size": 150, "tags": ["raw", "x"], "name": "img_1", "owner": None, "state": "x"})
        s.set_metadata("b", {"size": 50.5, "name": "photo", "state": "y"})
        s.set_metadata("c", {"size": True, "tags": ["y"], "name": "img2", "owner": "bob"})
        s.set_metadata("d", {"size": "200", "tags": "raw", "select": 1})
    return path


def _keys(capsys: Any, store: str, *criteria: str) -> List[str]:
    assert main(["--store", store, "query", *criteria, "--keys"]) == 0
    return capsys.readouterr().out.splitlines()


def test_cli_query_forms(cli_store: str, capsys: Any) -> None:
    assert _keys(capsys, cli_store, "size>100") == ["a"]           # not "200", not true
    assert _keys(capsys, cli_store, "size>=50.5") == ["a", "b"]
    assert _keys(capsys, cli_store, "size<100") == ["b"]
    assert _keys(capsys, cli_store, "size<=150.0") == ["a", "b"]
    assert _keys(capsys, cli_store, "size>1", "size<100") == ["b"]  # one name twice: both hold
    assert _keys(capsys, cli_store, "size>100", "size=150") == ["a"]
    assert _keys(capsys, cli_store, 'size>"1"') == ["d"]            # strings with strings
    assert _keys(capsys, cli_store, "tags~raw") == ["a"]
    assert _keys(capsys, cli_store, "name^=img") == ["a", "c"]
    assert _keys(capsys, cli_store, "owner?") == ["a", "c"]         # null is present
    assert _keys(capsys, cli_store, "state!=x") == ["b", "c", "d"]  # missing counts as not equal
    assert _keys(capsys, cli_store, "size=true") == ["c"]
    assert _keys(capsys, cli_store, "size=150", "name^=img", "owner?") == ["a"]
    assert _keys(capsys, cli_store, "select>0") == ["d"]           # query()'s own parameter name
    assert _keys(capsys, cli_store, "select?", "tags~raw") == []
    assert _keys(capsys, cli_store, "name>photo") == []
    assert main(["--store", cli_store, "query", "size>100"]) == 0
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == [
        {"key": "a", "metadata": {"size": 150, "tags": ["raw", "x"], "name": "img_1", "owner": None,
                                  "state": "x"}}]


@pytest.mark.parametrize("criterion, fragment", [
    ("novalue", "expected NAME=VALUE"),
    ("=3", "no NAME"),
    (">3", "no NAME"),
    ("?", "expected"),
    ("size>true", "gt()"),
    ("size>=[1]", "ge()"),
    ("size<null", "lt()"),
    ('size<={"a": 1}', "le()"),
    ("a?b", "expected"),
])
def test_cli_bad_criterion_is_a_usage_error(cli_store: str, capsys: Any, criterion: str, fragment: str) -> None:
    before = sorted(Path(cli_store).rglob("*"))
    assert main(["--store", cli_store, "query", "size>1", criterion]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("kvstore: error: bad query criterion"), captured.err
    assert fragment in lines[0] and repr(criterion) in lines[0]
    assert sorted(Path(cli_store).rglob("*")) == before


def test_cli_bad_criterion_in_a_real_process(tmp_path: Path) -> None:
    # exit 2, one line, no traceback; and a bad criterion never creates a store
    missing = tmp_path / "nothing-here"
    result = subprocess.run([sys.executable, "-m", "kvstore", "--store", str(missing), "query", "n>[1]"],
                            capture_output=True, timeout=60)
    assert result.returncode == 2, result.stderr
    err = result.stderr.decode()
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert err.startswith("kvstore: error: bad query criterion 'n>[1]': gt() takes a number or a str")
    assert not missing.exists()
