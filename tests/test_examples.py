"""The README's code and the core examples run as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python_blocks(path):
    text = open(path, encoding="utf-8").read()
    blocks = re.findall(r"^\.\. code-block:: python\n\n((?:(?:    .*)?\n)+)", text, re.M)
    return ["\n".join(line[4:] for line in block.splitlines()) for block in blocks]


def test_readme_code_runs(tmp_path, monkeypatch):
    blocks = _python_blocks(os.path.join(ROOT, "README.rst"))
    assert blocks, "README.rst has no python code block"
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, "README.rst", "exec"), {"__name__": "readme"})


def _run(name, *args):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "examples", name), *args],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_quickstart_example(tmp_path):
    out = _run("quickstart.py", str(tmp_path / "store"))
    assert "four legs: ['images/cat.png']" in out
    assert "images: ['images/bird.png', 'images/cat.png']" in out
    assert "exists after delete: False" in out
    assert (tmp_path / "store" / "images" / "cat.png.data").exists()


def test_find_things_example(tmp_path):
    out = _run("find_things.py", str(tmp_path / "store")).splitlines()
    assert out == [
        "big: ['runs/002', 'runs/003']",
        "raw and big: ['runs/002']",
        "medium: ['runs/001', 'runs/002']",
        "owned (even by null): ['runs/001', 'runs/003']",
        "nobody's: ['notes/readme', 'runs/002']",
        "not done: ['notes/readme', 'runs/002']",
        "finished: {'runs/001': {'state': 'done'}, 'runs/002': {'state': 'failed'}}",
        "titled img_: ['notes/readme']",
        "bad query: ge() takes a number or a str, not list",
    ]


def test_listen_example():
    out = _run("listen.py").splitlines()
    assert "images/ set    'images/a.png'" in out
    assert "images/ update 'images/a.png'" in out
    assert "images/ delete 'images/a.png'" in out
    assert not any(line.startswith("images/") and "docs" in line for line in out)
    held = out.index("inside the transaction: nothing heard yet")
    assert out[held + 1:] == ["set     'batch/0' {'i': 0}", "set     'batch/1' {'i': 1}",
                              "set     'batch/2' {'i': 2}", "after the commit"]


def test_readme_is_valid_restructuredtext():
    import docutils.core

    text = open(os.path.join(ROOT, "README.rst"), encoding="utf-8").read()
    docutils.core.publish_string(text, writer="null",
                                 settings_overrides={"report_level": 2, "halt_level": 2})


def test_coordinating_writers_example(tmp_path):
    out = _run("coordinating_writers.py", str(tmp_path / "store")).splitlines()
    assert out[:3] == ["counter: 100", "a takes the lease: True", "b takes the lease: False"]
