"""Progress bars on stderr (tqdm), driven by a store's progress signals."""

from __future__ import annotations

import sys
import threading
from typing import Any, Dict, List, Optional

from .. import signals
from ..base import AbstractStore
from .output import PROGRESS_THRESHOLD

# ---------------------------------------------------------------- progress bars


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def _load_tqdm() -> Any:
    try:
        from tqdm import tqdm
    except ImportError:
        return None

    class _Bar(tqdm):  # type: ignore[misc]
        # No monitor thread: the bars are closed by the progress end event.
        monitor_interval = 0

    return _Bar


class _ProgressBars:
    """tqdm bars on stderr driven by a store's progress signals.

    Only when stderr is a terminal and tqdm is installed, and only for transfers of more than
    ``threshold`` bytes (a transfer of unknown size gets its bar once it passes that).
    """

    def __init__(self, store: AbstractStore, threshold: int = PROGRESS_THRESHOLD,
                 enabled: Optional[bool] = None) -> None:
        self.store = store
        self.threshold = threshold
        if enabled is None:
            enabled = _isatty(sys.stderr)
        self._bar_class = _load_tqdm() if enabled else None
        # operation id -> [bar or None, total bytes or -1, bytes shown, label]
        self._ops: Dict[str, List[Any]] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> _ProgressBars:
        if self._bar_class is not None:
            signals.progress_start.connect(self._on_start, sender=self.store, weak=False)
            signals.progress_step.connect(self._on_step, sender=self.store, weak=False)
            signals.progress_end.connect(self._on_end, sender=self.store, weak=False)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar_class is not None:
            signals.progress_start.disconnect(self._on_start)
            signals.progress_step.disconnect(self._on_step)
            signals.progress_end.disconnect(self._on_end)
        for op_id in list(self._ops):
            self.end(op_id)

    def _on_start(self, sender: Any, event: Any = None, **_: Any) -> None:
        self.start(event.operation_id, f"{event.message} {event.key}", event.steps)

    def _on_step(self, sender: Any, event: Any = None, **_: Any) -> None:
        self.step(event.operation_id, event.step)

    def _on_end(self, sender: Any, event: Any = None, **_: Any) -> None:
        self.end(event.operation_id)

    def start(self, op_id: str, label: str, total: int) -> None:
        """A transfer of ``total`` bytes (-1: unknown) begins."""
        if self._bar_class is None:
            return
        with self._lock:
            self._ops[op_id] = [None, total, 0, label]
            if total > self.threshold:
                self._open_bar(self._ops[op_id])

    def step(self, op_id: str, done: int) -> None:
        """``done`` bytes of the transfer have moved."""
        with self._lock:
            op = self._ops.get(op_id)
            if op is None:
                return
            if op[0] is None and done > self.threshold:
                self._open_bar(op)
            if op[0] is not None and done > op[2]:
                op[0].update(done - op[2])
                op[2] = done

    def end(self, op_id: str) -> None:
        """The transfer is over."""
        with self._lock:
            op = self._ops.pop(op_id, None)
            if op is not None and op[0] is not None:
                op[0].close()

    def _open_bar(self, op: List[Any]) -> None:
        assert self._bar_class is not None  # only called when bars are enabled
        label = op[3] if len(op[3]) <= 40 else op[3][:37] + "..."
        op[0] = self._bar_class(total=op[1] if op[1] >= 0 else None, initial=op[2], desc=label,
                                unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
                                dynamic_ncols=True)
