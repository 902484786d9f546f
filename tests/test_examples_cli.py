"""Run examples/progress_bar.py and examples/migrate_from_encore.py as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(args: List[str], cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KVSTORE_")}
    result = subprocess.run([sys.executable, "-W", "error", *args], cwd=cwd, capture_output=True,
                            timeout=120, env=env)
    assert result.returncode == 0, result.stderr.decode()
    assert b"Traceback" not in result.stderr
    return result.stdout.decode()


def test_progress_bar_example(tmp_path: Path) -> None:
    out = run_example([str(EXAMPLES / "progress_bar.py")], cwd=tmp_path)
    lines = out.splitlines()
    assert "50.0 MiB" in lines[0]
    for operation in ("from_file", "to_file"):
        bars = [line for line in lines if line.startswith(f"{operation} big/file.bin [")]
        # without a terminal: a line at the start and at each quarter passed, up to 100 %
        percents = [int(line.split("]")[1].split("%")[0]) for line in bars]
        assert len(percents) == 5 and percents[0] == 0 and percents[-1] == 100
        assert [p // 25 for p in percents] == [0, 1, 2, 3, 4]
        assert f"{operation} big/file.bin: normal, 50.0 MiB" in out
    assert lines[-1] == "copy verified: 52428800 bytes"
    assert os.listdir(tmp_path) == []  # everything was temporary


_EXPECTED_MIGRATION = [
    "kvstore opened it: 4 keys indexed",
    "query(experiment='alpha'):",
    '  run-001.csv {"experiment": "alpha", "run": 1, "type": "csv"}',
    '  run-002.csv {"experiment": "alpha", "run": 2, "type": "csv"}',
    "query_keys(type='text'): ['notes.txt']",
    "glob('run-*.csv'): ['run-001.csv', 'run-002.csv', 'run-003.csv']",
    "get('run-003.csv'): 16 bytes, first line b't,x\\n'",
    "after two writes, query_keys(experiment='beta'): ['run-003.csv', 'run-004.csv']",
]


def test_migrate_from_encore_example_with_encore(tmp_path: Path) -> None:
    pytest.importorskip("encore.storage.filesystem_store")
    lines = run_example([str(EXAMPLES / "migrate_from_encore.py")], cwd=tmp_path).splitlines()
    assert lines[0].startswith("made an encore directory with encore.storage: ['.FSStore', 'notes.txt.data'")
    assert lines[1:-1] == _EXPECTED_MIGRATION
    assert lines[-1] == ("encore reads kvstore's write: run-004.csv -> b't,x\\n0,1.2\\n' "
                         '{"experiment": "beta", "run": 4, "type": "csv"}')


def test_migrate_from_encore_example_without_encore(tmp_path: Path) -> None:
    # The files written by hand when encore is not installed (sys.modules[...] = None hides it).
    code = ("import runpy, sys; sys.modules['encore'] = None; "
            f"runpy.run_path({str(EXAMPLES / 'migrate_from_encore.py')!r}, run_name='__main__')")
    lines = run_example(["-c", code], cwd=tmp_path).splitlines()
    assert lines[0].startswith("made an encore directory by hand (encore is not installed): ['.FSStore'")
    assert lines[1:-1] == _EXPECTED_MIGRATION
    assert lines[-1] == "encore is not installed: skipping the read-back with encore"
