"""The command line's rules (API.md "Command line"), tried as a new user would: get -o writes
like cp, put needs FILE or -, read commands never create a store, usage errors exit 2, a
closed pipe ends quietly, -- ends options, options go anywhere among a command's arguments,
keys that could be misread are quoted by ls."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

import kvstore
from test_cli import _env, assert_ok, assert_one_line_error, kv
from test_to_file import fifo_reader


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    path = tmp_path / "store"
    with kvstore.FileSystemStore(path, create=True) as store:
        store.from_bytes("k", b"new data")
        store.from_bytes("big", os.urandom(3 * 1024 * 1024))
        for i in range(50):
            store.set_metadata(f"q/{i:02d}", {"i": i})
    return path


def test_get_output_to_a_fifo_writes_through(store_dir: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    with fifo_reader(fifo) as got:
        assert_ok(kv("get", "k", "-o", str(fifo), store=store_dir))
    assert got == [b"new data"]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_get_output_through_a_symlink_and_keeping_permissions(store_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_bytes(b"old")
    os.chmod(target, 0o600)
    link = tmp_path / "link"
    link.symlink_to(target)
    assert_ok(kv("get", "k", "-o", str(link), store=store_dir))
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_bytes() == b"new data"
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600


def test_put_without_file_is_a_usage_error_and_keeps_the_key(store_dir: Path) -> None:
    result = kv("put", "k", store=store_dir, input=b"")
    assert result.returncode == 2
    assert_one_line_error(result, "FILE|-")
    assert kv("get", "k", store=store_dir).stdout == b"new data"


def test_double_dash_ends_options(store_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "f.txt"
    src.write_bytes(b"from f")
    assert_ok(kv("put", "k1", "--meta", "a=1", "--", str(src), store=store_dir))
    assert kv("get", "k1", store=store_dir).stdout == b"from f"
    assert json.loads(kv("meta", "k1", store=store_dir).stdout) == {"a": 1}
    assert_ok(kv("put", "--", "-dash-key", str(src), store=store_dir))
    assert kv("get", "--", "-dash-key", store=store_dir).stdout == b"from f"


def test_options_anywhere_among_a_commands_arguments(store_dir: Path, tmp_path: Path) -> None:
    # positionals on both sides of an option: plain argparse called the later ones unrecognized
    copy = tmp_path / "copy"
    sync = kv("sync", f"file:{store_dir}", f"file:{copy}", "--workers", "2", "q/0*", "--retries", "1")
    assert_ok(sync)
    with kvstore.FileSystemStore(copy) as copied:
        assert sorted(copied.glob("*")) == [f"q/{i:02d}" for i in range(10)]
    keys = assert_ok(kv("query", "i>=20", "-k", "i<23", store=store_dir)).split()
    assert keys == ["q/20", "q/21", "q/22"]
    assert_ok(kv("rm", "q/30", "-f", "q/31", "nothing/here", store=store_dir))
    with kvstore.FileSystemStore(store_dir) as store:
        assert not store.exists("q/30") and not store.exists("q/31") and store.exists("q/32")
    assert assert_ok(kv("ls", "q/4*", "-l", store=store_dir)).count("\n") == 10


@pytest.mark.parametrize("command", [["get", "x"], ["ls"], ["info"], ["meta", "x"], ["query", "a=1"],
                                     ["watch"]])
def test_read_commands_never_create_a_store(tmp_path: Path, command: List[str]) -> None:
    typo = tmp_path / "typo" / "deep" / "path"
    assert_one_line_error(kv("--store", str(typo), *command), "no store at", str(typo))
    assert not (tmp_path / "typo").exists()


def test_default_store_is_created_by_a_write_only(tmp_path: Path) -> None:
    assert_one_line_error(kv("ls", cwd=tmp_path), "no store at .kvstore", "put")
    assert not (tmp_path / ".kvstore").exists()
    src = tmp_path / "v"
    src.write_bytes(b"v")
    assert_ok(kv("put", "a", str(src), cwd=tmp_path))
    assert assert_ok(kv("ls", cwd=tmp_path)) == "a\n"


def test_store_that_is_a_file(tmp_path: Path) -> None:
    f = tmp_path / "f.txt"
    f.write_bytes(b"text")
    for command in (["ls"], ["put", "k", "-"]):
        assert_one_line_error(kv("--store", str(f), *command, input=b"x"), "is a file, not a store directory")
    assert f.read_bytes() == b"text"


@pytest.mark.parametrize("since", ["-5", "abc", "1.5"])
def test_watch_since_bad_value_is_a_usage_error(store_dir: Path, since: str) -> None:
    result = kv("watch", "--since", since, store=store_dir)
    assert result.returncode == 2
    assert_one_line_error(result, "--since")


@pytest.mark.parametrize("command,limit", [(["get", "big"], 10), (["query"], 1), (["ls"], 1)])
def test_closed_pipe_ends_quietly(store_dir: Path, command: List[str], limit: int) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "kvstore", "--store", str(store_dir), *command],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.read(limit)
    assert len(first) == limit
    proc.stdout.close()  # like `| head -c 10`: the reader goes away
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 0, err
    assert err == b""


def test_ls_quotes_keys_that_could_be_misread(store_dir: Path) -> None:
    with kvstore.FileSystemStore(store_dir) as store:
        store.from_bytes("two\nlines", b"x")
        store.from_bytes('"quoted"', b"x")
    out = assert_ok(kv("ls", store=store_dir)).splitlines()
    assert '"two\\nlines"' in out
    assert json.dumps('"quoted"') in out
    assert "k" in out and "q/00" in out


def test_ls_long_and_json(store_dir: Path) -> None:
    lines = assert_ok(kv("ls", "-l", "k", store=store_dir)).splitlines()
    assert len(lines) == 1
    size, day, clock, key = lines[0].split()
    assert (size, key) == ("8", "k") and len(day) == 10 and len(clock) == 8
    rows = [json.loads(line) for line in assert_ok(kv("ls", "--json", "q/0*", store=store_dir)).splitlines()]
    assert [r["key"] for r in rows] == [f"q/{i:02d}" for i in range(10)]
    assert rows[3]["metadata"] == {"i": 3} and rows[3]["size"] == 0
    assert rows[3]["modified"] >= rows[3]["created"] > 0


def test_meta_set_and_unset_keep_the_data(store_dir: Path) -> None:
    assert_ok(kv("put", "m", "-", "--meta", "a=1", "b=x", "c=true", store=store_dir, input=b"payload"))
    out = json.loads(assert_ok(kv("meta", "m", "--set", "a=2", "d=[1]", store=store_dir)))
    assert out == {"a": 2, "b": "x", "c": True, "d": [1]}
    out = json.loads(assert_ok(kv("meta", "m", "--unset", "b", "c", "--set", "e=egg", store=store_dir)))
    assert out == {"a": 2, "d": [1], "e": "egg"}
    assert kv("get", "m", store=store_dir).stdout == b"payload"
    result = kv("meta", "m", "--set", "a=3", "--unset", "a", store=store_dir)
    assert result.returncode == 2
    assert_one_line_error(result, "both name a")
    assert_one_line_error(kv("meta", "nope", "--set", "a=1", store=store_dir), "no key 'nope'")
    assert_one_line_error(kv("meta", "m", "--set", "novalue", store=store_dir), "bad --set")
    assert json.loads(kv("meta", "m", store=store_dir).stdout) == {"a": 2, "d": [1], "e": "egg"}
