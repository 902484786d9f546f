"""How a sync run works on its keys: the source's stream on its way (:class:`SourceReader`),
attempts with retries and backoff (:func:`attempt`), and the pool driver (:func:`each`)."""

from __future__ import annotations

import concurrent.futures
import io
import threading
from typing import Any, Callable, List, Optional, Sequence, Tuple, TypeVar

from .._checksum import CHECKSUM_ALGORITHM, Crc32
from .._retry import Backoff, is_transient
from ..base import DEFAULT_BUFFER_SIZE

__all__ = ["SourceReader", "Stopped", "Vanished", "Failed", "attempt", "each", "crc_checksum"]

_T = TypeVar("_T")


# ---------------------------------------------------------------- reading a store


def crc_checksum(checksum: Optional[str]) -> Optional[str]:
    """``checksum`` when it is comparable with the CRC-32 computed here, else None."""
    if checksum is not None and checksum.startswith(CHECKSUM_ALGORITHM + ":"):
        return checksum
    return None


class Stopped(BaseException):
    """The run is stopping (Ctrl-C): a worker abandons its key at the next read."""


class Vanished(Exception):
    """The source key disappeared during the run."""


class Failed(Exception):
    def __init__(self, message: str, attempts: int) -> None:
        super().__init__(message)
        self.message = message
        self.attempts = attempts


class SourceReader(io.RawIOBase):
    """The source's data on its way to the destination: CRC-32 and size as it goes,
    progress reported, and a stop request honoured at every read."""

    def __init__(self, stream: Any, on_bytes: Callable[[int], None], stop: threading.Event) -> None:
        super().__init__()
        self._stream = stream
        self._on_bytes = on_bytes
        self._stop = stop
        self.crc = Crc32()

    def readable(self) -> bool:
        return True

    def read(self, size: Optional[int] = -1) -> bytes:
        if self._stop.is_set():
            raise Stopped()
        if size is None or size < 0:
            size = DEFAULT_BUFFER_SIZE
        data = bytes(self._stream.read(size) or b"")
        if data:
            self.crc.update(data)
            self._on_bytes(self.crc.size)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


def attempt(operation: Callable[[], _T], retries: int, backoff: Backoff, stop: threading.Event) -> Tuple[_T, int]:
    """Run ``operation`` until it succeeds, retrying transient errors (``is_transient``)
    after ``backoff``, at most ``retries`` more times: (its result, the attempts made).

    Raises Stopped when ``stop`` is set, Vanished as it comes, Failed with the last message.
    """
    attempts = 0
    while True:
        if stop.is_set():
            raise Stopped()
        attempts += 1
        try:
            return operation(), attempts
        except Vanished:
            raise
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if not is_transient(exc) or attempts > retries:
                raise Failed(message, attempts) from exc
            if stop.wait(backoff.delay(attempts)):
                raise Stopped() from None


def each(pool: concurrent.futures.ThreadPoolExecutor, stop: threading.Event, function: Callable[[Any], _T],
         items: Sequence[Any]) -> List[_T]:
    """``function`` of every item on the pool, in order; the first exception that is not an
    outcome (Ctrl-C, a bug) sets ``stop`` (the other workers stop) and is raised."""
    def guarded(item: Any) -> Any:
        if stop.is_set():
            return None
        try:
            return function(item)
        except Stopped:
            return None
        except BaseException:
            stop.set()
            raise

    futures = [pool.submit(guarded, item) for item in items]
    pending = set(futures)
    while pending:
        done, pending = concurrent.futures.wait(pending, timeout=0.5,
                                                return_when=concurrent.futures.FIRST_EXCEPTION)
        for future in done:
            if future.exception() is not None:
                stop.set()
                raise future.exception()  # type: ignore[misc]
    return [future.result() for future in futures]
