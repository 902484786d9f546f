"""Big values stream in constant memory: a 2 GiB value in and out, RSS grows < 64 MiB."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

SCRIPT = r"""
import hashlib, io, os, sys
import kvstore
from kvstore import signals

GIB2 = 2 << 30
CHUNK = 1 << 20

def peak_rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

class Generated(io.RawIOBase):
    # 2 GiB of deterministic bytes, made as they are read
    def __init__(self):
        self.left = GIB2
        self.block = bytes(range(256)) * (CHUNK // 256)
    def readable(self):
        return True
    def read(self, n=-1):
        n = min(self.left, CHUNK if n is None or n < 0 else n, CHUNK)
        self.left -= n
        return self.block[:n]

path, out = sys.argv[1], sys.argv[2]
store = kvstore.FileSystemStore(path, create=True)
store.connect()
steps = []
signals.progress_step.connect(lambda s, event: steps.append(event.step), weak=False)
base = peak_rss()

store.set("big", (Generated(), {"size": GIB2}))
assert steps[-1] == GIB2 and len(steps) >= 2048, (len(steps), steps[-1])
value = store.get("big")
assert value.size == GIB2
h = hashlib.sha256()
expect = hashlib.sha256()
block = Generated().block
with value.data as f:
    while True:
        chunk = f.read(CHUNK)
        if not chunk:
            break
        h.update(chunk)
for _ in range(GIB2 // CHUNK):
    expect.update(block)
assert h.digest() == expect.digest()
steps.clear()
store.to_file("big", out)
assert os.path.getsize(out) == GIB2 and steps[-1] == GIB2
steps.clear()
store.from_file("big2", out)
assert steps[-1] == GIB2 and store.get("big2").size == GIB2
assert store.get_data_range("big2", GIB2 - 10).read() == block[(GIB2 - 10) % CHUNK:]
print("growth", peak_rss() - base)
"""


@pytest.mark.timeout(600)
def test_two_gib_value_streams_in_constant_memory(tmp_path):
    st = os.statvfs(tmp_path)
    if st.f_bavail * st.f_frsize < 7 << 30:
        pytest.skip("needs 7 GiB of free disk")
    out = tmp_path / "out.bin"
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "store"), str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    growth = int(proc.stdout.split()[-1])
    assert growth < 64 << 20, f"peak RSS grew by {growth / 2**20:.1f} MiB"
