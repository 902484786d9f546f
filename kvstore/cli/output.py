"""Output of the command line: one-line errors, text and JSON on stdout, the library's
log records as one line each."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from typing import Any, Iterator, Optional

from ..errors import StoreError

#: The store used when neither ``--store`` nor ``KVSTORE_URL`` names one.
DEFAULT_STORE = ".kvstore"
#: Transfers of more bytes than this get a progress bar (when stderr is a terminal).
PROGRESS_THRESHOLD = 4 * 1024 * 1024
_CHUNK = 1024 * 1024


class CLIError(Exception):
    """A failure to report as one line on stderr, with an exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------- output helpers


def _write_text(stream: Any, text: str) -> None:
    # JSON and keys are unicode: write UTF-8 even under a locale that cannot encode them.
    try:
        stream.write(text)
    except UnicodeEncodeError:
        stream.flush()
        stream.buffer.write(text.encode("utf-8", "backslashreplace"))
    stream.flush()


def _say(text: str = "") -> None:
    _write_text(sys.stdout, text + "\n")


def _silence_stdout() -> None:
    # After a broken pipe, point stdout at /dev/null so that the flush at exit does not
    # complain about the reader that went away.
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _error(message: str) -> None:
    _write_text(sys.stderr, f"kvstore: error: {_one_line(message)}\n")


def _json(value: Any, indent: Optional[int] = None) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent, default=str)


def _describe_exception(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    text = _one_line(str(exc))
    if isinstance(exc, StoreError) and text:
        return text  # kvstore's own messages say what failed
    if isinstance(exc, KeyError) and exc.args:
        text = repr(exc.args[0])
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


class _OneLineFormatter(logging.Formatter):
    """Log records as ``kvstore: warning: message`` lines: never a traceback."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text += f" ({_describe_exception(record.exc_info[1])})"
        return f"kvstore: {record.levelname.lower()}: {_one_line(text)}"


@contextlib.contextmanager
def _library_logging() -> Iterator[None]:
    # The library logs what it cannot raise (a failing receiver, a watcher noticing a gap);
    # show those as one line each rather than through logging's last-resort traceback.
    logger = logging.getLogger("kvstore")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLineFormatter())
    handler.setLevel(logging.WARNING)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
