"""The ``kvstore`` command line, run for real as ``python -m kvstore`` (and in-process via main)."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import pytest

import kvstore
from kvstore import testing
from kvstore.cli import main, parse_assignment, parse_value

COMMANDS = ["put", "get", "meta", "rm", "ls", "query", "info", "watch", "demo"]
MB = 1024 * 1024


def _env(**extra: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KVSTORE_", "AWS_"))}
    env.update(extra)
    return env


def kv(*args: str, store: Optional[Path] = None, cwd: Optional[Path] = None, input: bytes = b"",
       env: Optional[Dict[str, str]] = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``python -m kvstore [--store STORE] ARGS`` and capture its output (bytes)."""
    cmd = [sys.executable, "-m", "kvstore"]
    if store is not None:
        cmd += ["--store", str(store)]
    return subprocess.run(cmd + list(args), cwd=cwd, input=input, capture_output=True,
                          timeout=timeout, env=env if env is not None else _env())


def assert_ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr.decode()
    assert b"Traceback" not in result.stderr
    return result.stdout.decode("utf-8", "replace")


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """A failure: exit code != 0, exactly one line on stderr, no traceback."""
    err = result.stderr.decode()
    assert result.returncode != 0, (result.stdout, err)
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("kvstore: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], err
    return lines[0]


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "a condition") -> Any:
    return testing.wait_for(predicate, timeout, what)


class LineReader:
    """Reads lines from a subprocess pipe with a deadline (no thread: select + os.read)."""

    def __init__(self, pipe: Any) -> None:
        self.fd = pipe.fileno()
        self.buffer = b""
        self.eof = False

    def readline(self, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or self.eof:
                raise AssertionError(f"no complete line within {timeout} s (got {self.buffer!r})")
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                chunk = os.read(self.fd, 65536)
                if not chunk:
                    self.eof = True
                self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()

    def rest(self, timeout: float = 20.0) -> str:
        """Everything until end of file."""
        deadline = time.monotonic() + timeout
        while not self.eof:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("the pipe did not close in time")
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                chunk = os.read(self.fd, 65536)
                self.eof = not chunk
                self.buffer += chunk
        text, self.buffer = self.buffer, b""
        return text.decode()


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    # An existing store: commands that only read never create one.
    path = tmp_path / "store"
    kvstore.FileSystemStore(path, create=True)
    return path


@pytest.fixture
def big_file(tmp_path: Path) -> Path:
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(5 * MB))
    return path


# ------------------------------------------------------------------ value parsing


@pytest.mark.parametrize("raw, value", [
    ("3", 3), ("2.5", 2.5), ("-1", -1), ('["a"]', ["a"]), ('{"x": 1}', {"x": 1}), ("true", True),
    ("false", False), ("null", None), ('"3"', "3"), ("egg", "egg"), ("", ""), ("NaN", "NaN"),
    ("Infinity", "Infinity"), ("1e999", "1e999"), ("[1,", "[1,"), ("a=b", "a=b"),
])
def test_parse_value(raw: str, value: Any) -> None:
    assert parse_value(raw) == value
    assert type(parse_value(raw)) is type(value)


def test_parse_assignment_splits_at_the_first_equals() -> None:
    assert parse_assignment("expr=a=b") == ("expr", "a=b")
    assert parse_assignment("n=3") == ("n", 3)


# ------------------------------------------------------------------ round trips (subprocess)


def test_put_get_5mb_file_with_metadata(store_dir: Path, big_file: Path, tmp_path: Path) -> None:
    assert_ok(kv("put", "big/data.bin", str(big_file), "--meta", "type=blob", "n=3",
                 'tags=["a", "b"]', "--meta", "ok=true", "ratio=0.5", "note=hello world",
                 store=store_dir))
    out = tmp_path / "out.bin"
    result = kv("get", "big/data.bin", "-o", str(out), store=store_dir)
    assert_ok(result)
    assert result.stdout == b"" and result.stderr == b""  # no progress bar without a terminal
    assert out.read_bytes() == big_file.read_bytes()
    metadata = json.loads(assert_ok(kv("meta", "big/data.bin", store=store_dir)))
    assert metadata == {"type": "blob", "n": 3, "tags": ["a", "b"], "ok": True, "ratio": 0.5,
                        "note": "hello world"}


def test_put_from_stdin_and_get_to_stdout(store_dir: Path, big_file: Path) -> None:
    data = big_file.read_bytes()
    result = kv("put", "piped", "-", "--meta", "source=stdin", store=store_dir, input=data)
    assert_ok(result)
    assert result.stderr == b""
    result = kv("get", "piped", store=store_dir)
    assert_ok(result)
    assert result.stdout == data  # binary-safe, byte for byte
    assert result.stderr == b""
    # No FILE at all (a forgotten argument, as in cron or ssh -n): a usage error, not an
    # empty or piped value by accident; "-" says "read stdin".
    result = kv("put", "implicit", store=store_dir, input=b"\x00\xffbinary\r\n")
    assert result.returncode == 2
    assert_one_line_error(result, "FILE|-")
    assert "implicit" not in assert_ok(kv("ls", store=store_dir))
    assert_ok(kv("put", "implicit", "-", store=store_dir, input=b"\x00\xffbinary\r\n"))
    assert kv("get", "implicit", "-o", "-", store=store_dir).stdout == b"\x00\xffbinary\r\n"
    assert json.loads(kv("meta", "piped", store=store_dir).stdout) == {"source": "stdin"}


def test_put_replaces_data_and_metadata(store_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "v.txt"
    src.write_bytes(b"one")
    assert_ok(kv("put", "k", str(src), "--meta", "a=1", "b=2", store=store_dir))
    src.write_bytes(b"two")
    assert_ok(kv("put", "k", str(src), "--meta", "a=5", store=store_dir))
    assert kv("get", "k", store=store_dir).stdout == b"two"
    assert json.loads(kv("meta", "k", store=store_dir).stdout) == {"a": 5}


def test_ls_by_glob_rm_and_info(store_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "v.txt"
    src.write_bytes(b"x")
    for key in ["images/cat.png", "images/dog.png", "images/deep/owl.png", "notes.txt"]:
        assert_ok(kv("put", key, str(src), store=store_dir))
    assert assert_ok(kv("ls", store=store_dir)).splitlines() == [
        "images/cat.png", "images/deep/owl.png", "images/dog.png", "notes.txt"]
    assert assert_ok(kv("ls", "images/*.png", store=store_dir)).splitlines() == [
        "images/cat.png", "images/deep/owl.png", "images/dog.png"]  # * crosses /
    assert assert_ok(kv("ls", "images/d?g.*", store=store_dir)).splitlines() == ["images/dog.png"]
    assert assert_ok(kv("ls", "nothing*", store=store_dir)) == ""
    assert_ok(kv("rm", "images/cat.png", store=store_dir))
    assert "images/cat.png" not in assert_ok(kv("ls", store=store_dir)).splitlines()
    info = json.loads(assert_ok(kv("info", store=store_dir)))
    assert info["type"] == "FileSystemStore"
    assert info["path"] == str(store_dir)
    assert info["keys"] == 3
    assert info["url"] == str(store_dir)


def test_query_by_metadata(store_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "v.txt"
    src.write_bytes(b"x")
    items = {
        "a": ["type=egg", "n=3", 'tags=["x", "y"]', "fresh=true"],
        "b": ["type=egg", "n=3.0", 'tags=["y"]', "fresh=false"],
        "c": ["type=spam", "n=1", "fresh=1"],
        "d": ['type="egg"', 'n="3"'],
    }
    for key, meta in items.items():
        assert_ok(kv("put", key, str(src), "--meta", *meta, store=store_dir))

    def query(*criteria: str) -> List[str]:
        lines = assert_ok(kv("query", *criteria, store=store_dir)).splitlines()
        return [json.loads(line)["key"] for line in lines]

    assert query("type=egg") == ["a", "b", "d"]          # egg and "egg" are the same string
    assert query("n=3") == ["a", "b"]                     # numbers by value: 3 == 3.0, not "3"
    assert query('n="3"') == ["d"]
    assert query('tags=["x", "y"]') == ["a"]              # lists by structure
    assert query("fresh=true") == ["a"]                   # true matches only true, not 1
    assert query("type=egg", "fresh=false") == ["b"]
    assert query("type=nothing") == []
    assert query() == ["a", "b", "c", "d"]
    first = json.loads(assert_ok(kv("query", "fresh=true", store=store_dir)).splitlines()[0])
    assert first == {"key": "a", "metadata": {"type": "egg", "n": 3, "tags": ["x", "y"], "fresh": True}}
    assert assert_ok(kv("query", "type=egg", "--keys", store=store_dir)).splitlines() == ["a", "b", "d"]


def test_default_store_is_dot_kvstore_created_on_first_use(tmp_path: Path) -> None:
    src = tmp_path / "v.txt"
    src.write_bytes(b"hello")
    assert_ok(kv("put", "k", "v.txt", "--meta", "x=1", cwd=tmp_path))
    assert (tmp_path / ".kvstore" / ".FSStore").is_file()
    assert (tmp_path / ".kvstore" / "k.data").read_bytes() == b"hello"
    assert kv("get", "k", cwd=tmp_path).stdout == b"hello"


def test_store_from_environment_and_urls(tmp_path: Path) -> None:
    env_store = tmp_path / "from-env"
    src = tmp_path / "v.txt"
    src.write_bytes(b"v")
    assert_ok(kv("put", "k", str(src), env=_env(KVSTORE_URL=f"file://{env_store}")))
    assert (env_store / "k.data").is_file()
    # --store wins over the environment, before or after the command
    other = tmp_path / "other"
    assert_ok(kv("put", "k2", str(src), "--store", str(other), env=_env(KVSTORE_URL=f"file://{env_store}")))
    assert (other / "k2.data").is_file()
    assert assert_ok(kv("ls", "--store", "file:other", cwd=tmp_path)).splitlines() == ["k2"]
    assert assert_ok(kv("--store", "memory://", "ls")) == ""


def test_demo_runs_twice_on_the_default_store(tmp_path: Path) -> None:
    first = assert_ok(kv("demo", cwd=tmp_path))
    assert (tmp_path / ".kvstore" / ".FSStore").is_file()
    assert "~ event set    demo/eggs.txt" in first
    assert "~ event delete demo/scratch.txt" in first
    second = assert_ok(kv("demo", cwd=tmp_path))
    assert "~ event update demo/eggs.txt" in second
    for out in (first, second):
        assert "demo/ham.txt" in out and "demo/spam.bin" in out
        assert "b'green eggs\\n'" in out
        # the events of the transaction come after "no event yet" and before "committed"
        tx = out[out.index("no event yet"):out.index("committed")]
        assert "~ event set    demo/scratch.txt" in tx
    keys = assert_ok(kv("ls", "demo/*", cwd=tmp_path)).splitlines()
    assert keys == ["demo/eggs.txt", "demo/ham.txt", "demo/spam.bin"]
    query = [json.loads(line)["key"] for line in assert_ok(kv("query", "type=food", cwd=tmp_path)).splitlines()]
    assert query == ["demo/eggs.txt", "demo/ham.txt"]


def test_help_of_each_command_shows_an_example() -> None:
    result = kv("--help")
    out = assert_ok(result)
    assert out.startswith("usage: kvstore")
    assert "example" in out
    for command in COMMANDS:
        assert command in out


@pytest.mark.parametrize("command", COMMANDS)
def test_command_help_in_process(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: kvstore {command}")
    assert "example:" in out
    assert re.search(rf"kvstore (--store \S+ )?{command}\b", out.split("example:", 1)[1])


# ------------------------------------------------------------------ errors (subprocess)


def test_error_missing_key(store_dir: Path, tmp_path: Path) -> None:
    for args in (["get", "nope"], ["get", "nope", "-o", str(tmp_path / "x")], ["meta", "nope"], ["rm", "nope"]):
        assert_one_line_error(kv(*args, store=store_dir), "'nope'")
    assert not (tmp_path / "x").exists()
    assert_ok(kv("rm", "-f", "nope", store=store_dir))


def test_error_missing_file(store_dir: Path, tmp_path: Path) -> None:
    assert_one_line_error(kv("put", "k", str(tmp_path / "missing.bin"), store=store_dir), "missing.bin")
    assert_one_line_error(kv("put", "k", str(tmp_path), store=store_dir), "directory")
    src = tmp_path / "v"
    src.write_bytes(b"v")
    assert_ok(kv("put", "k", str(src), store=store_dir))
    assert_one_line_error(kv("get", "k", "-o", str(tmp_path / "no" / "such" / "dir"), store=store_dir),
                          "no such directory")


@pytest.mark.parametrize("url", ["foo://bar", "file://otherhost/path", "s3://", "http://example.com/x"])
def test_error_bad_url(url: str) -> None:
    assert_one_line_error(kv("--store", url, "ls"), "cannot open store", url)


def test_error_bad_meta(store_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "v"
    src.write_bytes(b"v")
    assert_one_line_error(kv("put", "k", str(src), "--meta", "novalue", store=store_dir), "bad --meta", "NAME=VALUE")
    assert_one_line_error(kv("put", "k", str(src), "--meta", "=3", store=store_dir), "bad --meta")
    # nothing was written
    assert assert_ok(kv("ls", store=store_dir)) == ""
    assert_one_line_error(kv("query", "novalue", store=store_dir), "bad query")


def test_error_store_cannot_be_opened(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"not a directory")
    assert_one_line_error(kv("--store", str(blocker), "ls"), "cannot open store")
    assert_one_line_error(kv("--store", str(blocker / "below"), "info"), "cannot open store")


def test_error_invalid_key_and_usage(store_dir: Path) -> None:
    assert_one_line_error(kv("meta", "", store=store_dir), "invalid key")
    result = kv("put", store=store_dir)
    assert result.returncode == 2
    assert_one_line_error(result, "KEY", "--help")
    assert kv("frobnicate").returncode == 2
    assert_one_line_error(kv("frobnicate"))


def test_error_unreachable_redis(store_dir: Path) -> None:
    assert_one_line_error(kv("watch", "--redis", "redis://127.0.0.1:1/0", store=store_dir), "Redis")


def test_error_unreachable_s3() -> None:
    env = _env(AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_DEFAULT_REGION="us-east-1",
               AWS_MAX_ATTEMPTS="1", AWS_RETRY_MODE="standard", AWS_EC2_METADATA_DISABLED="true")
    url = "s3://bucket/prefix?endpoint_url=http://127.0.0.1:1"
    assert_one_line_error(kv("--store", url, "ls", env=env))
    assert_one_line_error(kv("--store", url, "put", "k", "-", input=b"x", env=env))


def test_error_watch_a_memory_store_without_redis() -> None:
    assert_one_line_error(kv("--store", "memory://", "watch"), "--redis")


def test_keyboard_interrupt_exits_130_and_writes_nothing(tmp_path: Path) -> None:
    store_dir = tmp_path / "created-by-put"  # a write command creates its store
    proc = subprocess.Popen([sys.executable, "-m", "kvstore", "--store", str(store_dir), "put", "k", "-"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=_env())
    assert proc.stdin is not None
    try:
        proc.stdin.write(b"partial data")
        proc.stdin.flush()
        # The store exists once the command is running, and it then reads stdin (which stays open).
        wait_for(lambda: (store_dir / ".FSStore").exists(), what="the store to be created")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    assert proc.returncode == 130
    assert_one_line_error(result, "interrupted")
    assert assert_ok(kv("ls", store=store_dir)) == ""  # the interrupted put left nothing


# ------------------------------------------------------------------ progress bars


def _run_with_terminal_stderr(args: List[str], timeout: float = 60) -> subprocess.CompletedProcess:
    """Run the CLI with stderr on a pseudo-terminal; return what the terminal showed."""
    master, slave = pty.openpty()
    # A new pseudo-terminal is 0 columns wide: give it a real size, as a terminal has.
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    try:
        proc = subprocess.Popen([sys.executable, "-m", "kvstore", *args], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=slave, env=_env())
        os.close(slave)
        slave = -1
        shown = b""
        deadline = time.monotonic() + timeout
        while True:
            if time.monotonic() > deadline:
                proc.kill()
                raise AssertionError("the command did not finish in time")
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the terminal's last writer is gone
                    chunk = b""
                if not chunk:
                    break
                shown += chunk
            elif proc.poll() is not None:
                break
        assert proc.stdout is not None
        out = proc.stdout.read()
        proc.wait(timeout=timeout)
        proc.stdout.close()
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, shown)


def test_progress_bar_on_a_terminal_for_big_transfers(store_dir: Path, big_file: Path, tmp_path: Path) -> None:
    pytest.importorskip("tqdm")
    result = _run_with_terminal_stderr(["--store", str(store_dir), "put", "big", str(big_file)])
    assert result.returncode == 0, result.stderr
    assert b"100%" in result.stderr and b"big" in result.stderr
    result = _run_with_terminal_stderr(["--store", str(store_dir), "get", "big", "-o", str(tmp_path / "o")])
    assert result.returncode == 0, result.stderr
    assert b"100%" in result.stderr
    assert (tmp_path / "o").read_bytes() == big_file.read_bytes()
    # small transfers stay silent, even on a terminal
    small = tmp_path / "small"
    small.write_bytes(b"x" * 1000)
    result = _run_with_terminal_stderr(["--store", str(store_dir), "put", "small", str(small)])
    assert result.returncode == 0 and result.stderr == b""


# ------------------------------------------------------------------ in-process


def test_in_process_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = str(tmp_path / "s")
    src = tmp_path / "v.txt"
    src.write_bytes("données €".encode())
    assert main(["--store", store, "put", "clé/€", str(src), "--meta", "lang=fr", 'who=["é"]']) == 0
    assert main(["--store", store, "ls", "clé/*"]) == 0
    assert capsys.readouterr().out == "clé/€\n"
    assert main(["--store", store, "meta", "clé/€"]) == 0
    assert json.loads(capsys.readouterr().out) == {"lang": "fr", "who": ["é"]}
    assert main(["--store", store, "get", "clé/€", "-o", str(tmp_path / "back")]) == 0
    assert (tmp_path / "back").read_bytes() == "données €".encode()
    assert main(["--store", store, "query", "lang=fr", "-k"]) == 0
    assert capsys.readouterr().out == "clé/€\n"
    assert main(["--store", store, "rm", "clé/€"]) == 0
    assert main(["--store", store, "meta", "clé/€"]) == 1
    captured = capsys.readouterr()
    assert captured.err == f"kvstore: error: no key 'clé/€' in {store}\n"


def test_in_process_query_on_a_name_called_select(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = str(tmp_path / "s")
    src = tmp_path / "v"
    src.write_bytes(b"")
    assert main(["--store", store, "put", "a", str(src), "--meta", "select=1", "x=2"]) == 0
    assert main(["--store", store, "put", "b", str(src), "--meta", "select=2", "x=2"]) == 0
    assert main(["--store", store, "query", "select=1", "x=2", "--keys"]) == 0
    assert capsys.readouterr().out == "a\n"


def test_in_process_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--store", "nope://x", "ls"]) == 1
    assert main(["--store", str(tmp_path / "s"), "put", "k", str(tmp_path / "missing")]) == 1
    assert main(["--store", str(tmp_path / "s"), "put"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 3 and all(line.startswith("kvstore: error: ") for line in err.splitlines())
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("kvstore ")


# ------------------------------------------------------------------ watch (needs kvstore.watch)


def start_watch(*args: str) -> Any:
    """Start ``python -m kvstore ARGS`` (a watch); return (process, stdout, stderr) once it listens."""
    proc = subprocess.Popen([sys.executable, "-m", "kvstore", *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
    out, err = LineReader(proc.stdout), LineReader(proc.stderr)
    try:
        banner = err.readline(timeout=30)
        assert banner.startswith("kvstore: watching"), banner
    except BaseException:
        _cleanup(proc)
        raise
    return proc, out, err


def _cleanup(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


@pytest.fixture
def watching(store_dir: Path) -> Any:
    """``kvstore watch 'w/*'`` running on a filesystem store: (process, stdout, stderr)."""
    pytest.importorskip("kvstore.watch", exc_type=ImportError)
    assert_ok(kv("info", store=store_dir))  # create the store first
    proc, out, err = start_watch("--store", str(store_dir), "watch", "w/*")
    try:
        yield proc, out, err
    finally:
        _cleanup(proc)


def _stop(proc: subprocess.Popen, err: LineReader, sig: int) -> None:
    proc.send_signal(sig)
    assert proc.wait(timeout=30) == 0
    rest = err.rest()
    assert "Traceback" not in rest, rest


def test_watch_prints_a_json_line_for_another_process_write(watching: Any, store_dir: Path, tmp_path: Path) -> None:
    proc, out, err = watching
    src = tmp_path / "v"
    src.write_bytes(b"payload")
    assert_ok(kv("put", "other/key", str(src), store=store_dir))          # not matching w/*
    assert_ok(kv("put", "w/one", str(src), "--meta", "n=1", "tag=new", store=store_dir))
    event = json.loads(out.readline(timeout=30))
    assert event["type"] == "StoreSetEvent"
    assert event["key"] == "w/one"
    assert event["metadata"] == {"n": 1, "tag": "new"}
    assert event["remote"] is True
    _stop(proc, err, signal.SIGINT)


def test_watch_opens_an_indexed_store_read_only(store_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("kvstore.watch", exc_type=ImportError)
    with kvstore.FileSystemStore(store_dir) as store:  # indexed, by a writer
        store.set("w/a", (b"", {}))
    reserve = store_dir / ".kvstore" / "reserve"
    reserve.unlink()  # made again by any writable open
    proc, out, err = start_watch("--store", str(store_dir), "watch", "w/*")
    try:
        assert not reserve.exists()  # it listens: it has connected, read-only
        src = tmp_path / "v"
        src.write_bytes(b"x")
        assert_ok(kv("put", "w/b", str(src), store=store_dir))
        assert json.loads(out.readline(timeout=30))["key"] == "w/b"
        _stop(proc, err, signal.SIGINT)
    finally:
        _cleanup(proc)


def test_watch_reports_deletes_and_stops_on_sigterm(watching: Any, store_dir: Path, tmp_path: Path) -> None:
    proc, out, err = watching
    src = tmp_path / "v"
    src.write_bytes(b"payload")
    assert_ok(kv("put", "w/two", str(src), "--meta", "n=2", store=store_dir))
    assert_ok(kv("rm", "w/two", store=store_dir))
    kinds = [json.loads(out.readline(timeout=30))["type"] for _ in range(2)]
    assert kinds == ["StoreSetEvent", "StoreDeleteEvent"]
    _stop(proc, err, signal.SIGTERM)


_RELAY_WRITER = """
import io, sys, kvstore
from kvstore.relay import RedisRelay
store = kvstore.MemoryStore()
store.connect()
with RedisRelay(store, sys.argv[1]) as relay:
    assert relay.wait_ready(20)
    store.set("r/key", (io.BytesIO(b"x"), {"via": "redis"}))
"""


def test_watch_through_redis_prints_another_process_write() -> None:
    pytest.importorskip("kvstore.relay", exc_type=ImportError)
    redis_server = pytest.importorskip("redis_server")
    if redis_server.redis_server_path() is None:
        pytest.skip("redis-server is not installed")
    with redis_server.RedisServer() as server:
        proc, out, err = start_watch("--store", "memory://", "watch", "r/*", "--redis", server.url)
        try:
            writer = subprocess.run([sys.executable, "-c", _RELAY_WRITER, server.url], capture_output=True,
                                    timeout=60, env=_env())
            assert writer.returncode == 0, writer.stderr.decode()
            event = json.loads(out.readline(timeout=30))
            assert (event["type"], event["key"], event["metadata"], event["remote"]) == (
                "StoreSetEvent", "r/key", {"via": "redis"}, True)
            _stop(proc, err, signal.SIGINT)
        finally:
            _cleanup(proc)
