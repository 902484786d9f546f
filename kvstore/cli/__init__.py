"""The ``kvstore`` command line (also ``python -m kvstore``).

The store is chosen by ``--store URL``, else the ``KVSTORE_URL`` environment variable, else a
filesystem store in ``./.kvstore`` (created by the first command that writes; commands that
only read never create a store)::

    kvstore put images/cat.png cat.png --meta type=image --meta width=640
    kvstore get images/cat.png -o copy.png
    kvstore meta images/cat.png
    kvstore ls 'images/*'
    kvstore query type=image
    kvstore watch 'images/*'

Every failure is one line on stderr, ``kvstore: error: ...``, and a non-zero exit code (1; 2 for
a command-line usage error; 130 when interrupted).
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from ..errors import InvalidKeyError, StoreError
from .args import parse_assignment, parse_criterion, parse_value
from .output import (
    DEFAULT_STORE,
    PROGRESS_THRESHOLD,
    CLIError,
    _describe_exception,
    _error,
    _library_logging,
    _silence_stdout,
)
from .parser import build_parser

__all__ = ["main", "build_parser", "parse_value", "parse_assignment", "parse_criterion", "DEFAULT_STORE",
           "PROGRESS_THRESHOLD", "CLIError"]


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``kvstore`` command line; return the exit code.

    Parameters
    ----------
    argv : the arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int : 0 on success, 1 on an error, 2 on a usage error, 130 when interrupted.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version or a usage error
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    with _library_logging():
        try:
            code: int = args.func(args)
            return code
        except KeyboardInterrupt:
            _error("interrupted")
            return 130
        except CLIError as exc:
            _error(str(exc))
            return exc.code
        except BrokenPipeError:
            # The reader went away (``kvstore get key | head``): nothing left to say to it,
            # and not a failure (like cat or ls in a pipeline that was cut short).
            _silence_stdout()
            return 0
        except InvalidKeyError as exc:
            _error(f"invalid key: {exc}")
            return 1
        except StoreError as exc:
            _error(str(exc) or type(exc).__name__)
            return 1
        except KeyError as exc:
            _error(f"no key {exc.args[0]!r}" if exc.args else "no such key")
            return 1
        except Exception as exc:
            _error(_describe_exception(exc))
            return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
