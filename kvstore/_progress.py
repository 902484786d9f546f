"""Progress operations: the start / step / end events around bytes streamed in or out of
a store, and the reader that counts them."""

from __future__ import annotations

import errno
import io
import itertools
import os
import stat
from typing import TYPE_CHECKING, Any, List

from . import signals
from .events import StoreProgressEndEvent, StoreProgressStartEvent, StoreProgressStepEvent

if TYPE_CHECKING:
    from .base import AbstractStore

__all__ = ["ProgressReader"]


_operation_ids = itertools.count(1)


def _progress_wanted(store: AbstractStore, steps: int) -> bool:
    if not any(signal.has_receivers_for(store) for signal in signals.PROGRESS_SIGNALS):
        return False
    gates = store._progress_gates
    counts = [len(signal.receivers) for signal in signals.PROGRESS_SIGNALS]
    if not gates or steps < 0 or max(counts) > len(gates):
        return True
    return steps >= min(gates.values())


class _Progress:
    """One progress operation: start was sent; ``advance`` sends steps; ``finish`` the end."""

    def __init__(self, store: AbstractStore, key: str, message: str, steps: int) -> None:
        self.store = store
        self.key = key
        self.message = message
        self.steps = steps
        self.done = 0
        self.sent = -1
        self.live = _progress_wanted(store, steps)
        # Unique across processes and hosts: the store's origin and a per-process count.
        self.operation_id = f"{store.origin}:{next(_operation_ids)}" if self.live else ""
        if self.live:
            store._send(signals.progress_start, StoreProgressStartEvent(
                store=store, origin=store.origin, operation_id=self.operation_id,
                key=key, message=message, steps=steps))

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, kind: Any, value: Any, traceback: Any) -> None:
        # the end of the operation, also when the block raised (then "exception")
        self.finish("normal" if kind is None else "exception")

    def advance(self, nbytes: int) -> None:
        self.done += nbytes
        if self.live and nbytes:
            self._step()

    def _step(self) -> None:
        self.sent = self.done
        self.store._send(signals.progress_step, StoreProgressStepEvent(
            store=self.store, origin=self.store.origin, operation_id=self.operation_id,
            key=self.key, message=self.message, step=self.done))

    def finish(self, exit_state: str) -> None:
        if not self.live:
            return
        if exit_state == "normal" and self.sent != self.done:
            self._step()  # the last step carries the total, even for empty data
        self.store._send(signals.progress_end, StoreProgressEndEvent(
            store=self.store, origin=self.store.origin, operation_id=self.operation_id,
            key=self.key, message=self.message, exit_state=exit_state))


class ProgressReader(io.RawIOBase):
    """Wraps a source stream; every ``read`` reports the bytes to the progress operation.

    Backends read the data they store from this object in ``buffer_size`` chunks.
    """

    def __init__(self, stream: Any, progress: _Progress, buffer_size: int) -> None:
        super().__init__()
        self._stream = stream
        self._progress = progress
        self.buffer_size = max(1, int(buffer_size))

    @property
    def steps(self) -> int:
        """The bytes the source is expected to hold, -1 when not known."""
        return self._progress.steps

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            chunks: List[bytes] = []
            while True:
                chunk = self.read(self.buffer_size)
                if not chunk:
                    return b"".join(chunks)
                chunks.append(chunk)
        data = self._stream.read(min(size, self.buffer_size))
        if data is None:
            data = b""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"a data stream must return bytes, not {type(data).__name__}")
        self._progress.advance(len(data))
        return bytes(data)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def fileno(self) -> int:
        return self._stream.fileno()

    def copy_to_fd(self, fd: int) -> bool:
        """Copy the rest of a regular-file source into ``fd`` in the kernel.

        Progress is reported per ``buffer_size`` as with ``read``. Returns False, having
        copied nothing, when the source is not a regular file or the kernel cannot copy
        between the two files; the caller then reads as usual.
        """
        try:
            src = self._stream.fileno()
            if not stat.S_ISREG(os.fstat(src).st_mode):
                return False
            pos = self._stream.tell()  # a buffered stream's logical position
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            return False
        first = True
        while True:
            try:
                n = os.copy_file_range(src, fd, self.buffer_size, pos)
            except OSError as exc:
                if first and exc.errno in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF):
                    return False
                raise
            first = False
            if n == 0:
                break
            pos += n
            self._progress.advance(n)
        self._stream.seek(pos)
        return True


def _stream_size(stream: Any) -> int:
    """Bytes left in ``stream`` when that can be known cheaply, else -1."""
    try:
        if isinstance(stream, io.BytesIO):
            return len(stream.getbuffer()) - stream.tell()
        fileno = stream.fileno()
        st = os.fstat(fileno)
        if not (st.st_mode & 0o170000 == 0o100000):  # not a regular file
            return -1
        return max(0, st.st_size - stream.tell())
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return -1


def _as_stream(data: Any) -> Any:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(data))
    if not hasattr(data, "read"):
        raise TypeError(f"data must be a readable binary stream, not {type(data).__name__}")
    return data


def _copy(src: Any, dst: Any, buffer_size: int, progress: _Progress) -> None:
    buffer_size = max(1, int(buffer_size))
    # A backend stream that can copy into a file descriptor in the kernel (the filesystem
    # store's) does so, still reporting progress per buffer_size.
    raw = getattr(src, "raw", src)
    copy_to_fd = getattr(raw, "copy_to_fd", None)
    if copy_to_fd is not None and src.tell() == raw.tell():  # nothing buffered above it
        try:
            fd = dst.fileno()
        except (AttributeError, OSError, io.UnsupportedOperation):
            fd = -1
        if fd >= 0:
            dst.flush()
            try:
                copy_to_fd(fd, progress.advance, buffer_size)
                return
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                    raise
    while True:
        chunk = src.read(buffer_size)
        if not chunk:
            return
        dst.write(chunk)
        progress.advance(len(chunk))

