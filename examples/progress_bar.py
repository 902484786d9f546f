"""A big copy in and out of a store, with a text progress bar driven by progress events.

Every streaming operation (``set``, ``from_file``, ``to_file``, ``to_bytes`` ...) sends
``progress_start`` (``steps``: total bytes, or -1 when unknown), ``progress_step`` (``step``:
bytes done so far, at least once per ``buffer_size``) and ``progress_end`` (``exit_state``).
This example draws a bar from those three signals, with nothing but the standard library.

Run it with ``python examples/progress_bar.py [MEGABYTES]`` (default 50).
"""

from __future__ import annotations

import filecmp
import os
import sys
import tempfile
import time
from typing import Any, Dict

import kvstore
from kvstore import signals

MIB = 1024 * 1024


class TextProgressBar:
    """Draws one bar per operation: redrawn in place on a terminal, else a line every 25 %."""

    def __init__(self, stream: Any = sys.stdout, width: int = 30) -> None:
        self.stream = stream
        self.width = width
        self.live = stream.isatty()
        self.ops: Dict[str, Dict[str, Any]] = {}

    def connect(self, store: kvstore.AbstractStore) -> None:
        """Listen to the progress signals of ``store`` (only that store)."""
        signals.progress_start.connect(self.on_start, sender=store)
        signals.progress_step.connect(self.on_step, sender=store)
        signals.progress_end.connect(self.on_end, sender=store)

    def disconnect(self, store: kvstore.AbstractStore) -> None:
        signals.progress_start.disconnect(self.on_start, sender=store)
        signals.progress_step.disconnect(self.on_step, sender=store)
        signals.progress_end.disconnect(self.on_end, sender=store)

    def on_start(self, sender: Any, event: Any) -> None:
        self.ops[event.operation_id] = {"total": event.steps, "done": 0, "shown": -1,
                                        "label": f"{event.message} {event.key}", "t0": time.monotonic()}
        self.draw(event.operation_id)

    def on_step(self, sender: Any, event: Any) -> None:
        self.ops[event.operation_id]["done"] = event.step
        self.draw(event.operation_id)

    def on_end(self, sender: Any, event: Any) -> None:
        op = self.ops.pop(event.operation_id)
        seconds = time.monotonic() - op["t0"]
        rate = op["done"] / MIB / seconds if seconds > 0 else float("inf")
        if self.live:
            self.stream.write("\n")
        self.stream.write(f"{op['label']}: {event.exit_state}, {op['done'] / MIB:.1f} MiB "
                          f"in {seconds:.2f} s ({rate:.0f} MiB/s)\n")
        self.stream.flush()

    def draw(self, operation_id: str) -> None:
        op = self.ops[operation_id]
        total, done = op["total"], op["done"]
        if total <= 0:  # unknown size (a pipe): show the bytes only
            percent = -1
            text = f"{op['label']} {done / MIB:8.1f} MiB"
        else:
            percent = 100 * done // total
            filled = self.width * done // total
            bar = "#" * filled + "-" * (self.width - filled)
            text = f"{op['label']} [{bar}] {percent:3d}% {done / MIB:6.1f}/{total / MIB:.1f} MiB"
        if self.live:
            self.stream.write("\r" + text)
        elif percent < 0 or percent // 25 > op["shown"] // 25:
            self.stream.write(text + "\n")
        else:
            return
        op["shown"] = percent
        self.stream.flush()


def main(megabytes: int = 50) -> None:
    size = megabytes * 1024 * 1024
    with tempfile.TemporaryDirectory() as tmp:
        source = os.path.join(tmp, "big.bin")
        with open(source, "wb") as f:
            block = os.urandom(1024 * 1024)
            for _ in range(megabytes):
                f.write(block)
        print(f"made {source}: {size / MIB:.1f} MiB")

        bar = TextProgressBar()
        with kvstore.FileSystemStore(os.path.join(tmp, "store"), create=True) as store:
            bar.connect(store)
            try:
                store.from_file("big/file.bin", source)              # file -> store
                copy = os.path.join(tmp, "copy.bin")
                store.to_file("big/file.bin", copy)                  # store -> file
            finally:
                bar.disconnect(store)
            same = filecmp.cmp(source, copy, shallow=False)
            print(f"copy {'verified' if same else 'DIFFERS'}: {os.path.getsize(copy)} bytes")
            if not same:
                sys.exit(1)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 50)
