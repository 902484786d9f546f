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

import argparse
import contextlib
import io
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, NoReturn, Optional, Sequence, Tuple
from urllib.parse import unquote, urlsplit

from . import __version__, signals
from ._bridge import Bridge
from ._keys import matches
from ._registry import open_store
from .base import AbstractStore
from .errors import InvalidKeyError, StoreError
from .query import Criterion, contains, eq, exists, ge, gt, le, lt, not_, prefix
from .stores.filesystem import FileSystemStore

__all__ = ["main", "parse_value", "parse_assignment", "parse_criterion", "DEFAULT_STORE", "PROGRESS_THRESHOLD"]

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


# ---------------------------------------------------------------- argument parsing


def parse_value(raw: str) -> Any:
    """A ``--meta`` or query VALUE: its JSON value where it parses as JSON, else the string.

    ``3`` is the number 3, ``["a"]`` a list, ``true`` a boolean, ``null`` None and ``"3"``
    the string "3"; ``egg`` (not JSON) stays the string ``"egg"``. ``NaN`` and numbers too
    large for a float are not JSON values and stay strings.
    """

    def reject(text: str) -> Any:
        raise ValueError(text)

    def finite(text: str) -> float:
        number = float(text)
        if not math.isfinite(number):
            raise ValueError(text)
        return number

    try:
        return json.loads(raw, parse_constant=reject, parse_float=finite)
    except ValueError:
        return raw


def parse_assignment(text: str, what: str = "--meta") -> Tuple[str, Any]:
    """Split ``NAME=VALUE`` into the name and its :func:`parse_value`.

    Raises
    ------
    CLIError : no ``=`` or an empty name.
    """
    name, sep, raw = text.partition("=")
    if not sep or not name:
        hint = " (a FILE goes before --meta)" if what == "--meta" and not sep else ""
        raise CLIError(f"bad {what} {text!r}: expected NAME=VALUE, e.g. type=egg, n=3 "
                       f"or tags='[\"a\"]'{hint}")
    return name, parse_value(raw)


# A criterion's operator is the first of these found scanning from the left, two-character
# ones winning where they start ("a>=1" is ge, not gt of "=1"): so a value may contain any
# of them ("note=a>b" is note equal to "a>b"). "!" and "^" alone belong to the name.
_TWO_CHAR_OPS = {"!=": not_, ">=": ge, "<=": le, "^=": prefix}
_ONE_CHAR_OPS = {"=": eq, ">": gt, "<": lt, "~": contains}
_CRITERION_FORMS = "NAME=VALUE, NAME!=VALUE, NAME>VALUE, NAME>=VALUE, NAME<VALUE, NAME<=VALUE, " \
                   "NAME~VALUE, NAME^=PREFIX or NAME?"


def parse_criterion(text: str) -> Tuple[str, Criterion]:
    """Split a ``query`` criterion into its name and a :mod:`kvstore.query` criterion.

    ``NAME=VALUE`` (equal), ``NAME!=VALUE`` (not equal; a missing name counts as not equal),
    ``NAME>VALUE``, ``NAME>=VALUE``, ``NAME<VALUE``, ``NAME<=VALUE`` (numbers or strings),
    ``NAME~VALUE`` (a list containing VALUE), ``NAME^=PREFIX`` (a string starting with PREFIX,
    taken as written) or ``NAME?`` (the name is present). VALUE is read by :func:`parse_value`.

    Raises
    ------
    CLIError : (exit status 2) no operator, an empty name, or a VALUE the operator cannot
        take (``size>true``: gt takes a number or a string).
    """
    for i, ch in enumerate(text):
        op = text[i:i + 2]
        make: Any = _TWO_CHAR_OPS.get(op)
        if make is None:
            op = ch
            make = _ONE_CHAR_OPS.get(op)
        if make is not None:
            name, raw = text[:i], text[i + len(op):]
            break
    else:
        if len(text) > 1 and text.endswith("?"):
            return text[:-1], exists()
        raise CLIError(f"bad query criterion {text!r}: expected {_CRITERION_FORMS}", code=2)
    if not name:
        raise CLIError(f"bad query criterion {text!r}: no NAME before {op!r}", code=2)
    try:
        return name, make(raw if make is prefix else parse_value(raw))
    except (TypeError, ValueError) as exc:
        raise CLIError(f"bad query criterion {text!r}: {exc}", code=2) from None


def _assignments(items: Optional[Sequence[str]], what: str) -> Dict[str, Any]:
    result: Dict[str, Any] = {}
    for item in items or ():
        name, value = parse_assignment(item, what)
        result[name] = value
    return result


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors reported as one line like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"kvstore: error: {_one_line(message)} (see '{self.prog} --help')\n")


def _store_url(args: argparse.Namespace) -> str:
    return args.store or os.environ.get("KVSTORE_URL") or DEFAULT_STORE


def _file_path(url: str) -> Optional[str]:
    """The local path a ``file:`` URL or bare path names (None for other schemes)."""
    parts = urlsplit(url)
    if len(parts.scheme) <= 1:
        return os.path.expanduser(url)
    if parts.scheme.lower() != "file" or parts.netloc not in ("", "localhost"):
        return None  # not a local path: open_store says what is wrong with it
    return os.path.expanduser(unquote(parts.path))


def _open(args: argparse.Namespace, *, write: bool = True) -> AbstractStore:
    """Open the store. A command that only reads (``write=False``) never creates one."""
    url = _store_url(args)
    options: Dict[str, Any] = {}
    path = _file_path(url)
    if path is not None:
        if os.path.exists(path) and not os.path.isdir(path):
            raise CLIError(f"cannot open store {url!r}: {path} is a file, not a store directory")
        if not write:
            if not os.path.isdir(path):
                hint = ("; the first write creates it (e.g. kvstore put KEY FILE), or name another "
                        "with --store URL") if url == DEFAULT_STORE else ""
                raise CLIError(f"cannot open store {url!r}: no store at {path}{hint}")
            options["create"] = False
    try:
        return open_store(url, **options)
    except (ImportError, ValueError) as exc:
        raise CLIError(f"cannot open store {url!r}: {_one_line(str(exc))}") from None
    except (FileExistsError, NotADirectoryError) as exc:
        raise CLIError(f"cannot open store {url!r}: cannot create directory {exc.filename or url} "
                       f"({exc.strerror})") from None
    except Exception as exc:
        raise CLIError(f"cannot open store {url!r}: {_describe_exception(exc)}") from None


def _where(store: AbstractStore) -> str:
    if isinstance(store, FileSystemStore):
        return store.path
    info_name = f" {store.name!r}" if store.name else ""
    return f"{type(store).__name__}{info_name}"


def _no_key(key: str, store: AbstractStore) -> CLIError:
    return CLIError(f"no key {key!r} in {_where(store)}")


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

    def __enter__(self) -> "_ProgressBars":
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


# ---------------------------------------------------------------- commands


def cmd_put(args: argparse.Namespace) -> int:
    """Store a file (or stdin) and metadata under a key, replacing what was there."""
    metadata = _assignments(args.meta, "--meta")
    source = args.file
    with contextlib.ExitStack() as stack:
        if source == "-":
            stream = sys.stdin.buffer
        else:
            if os.path.isdir(source):
                raise CLIError(f"{source} is a directory, not a file")
            try:
                stream = stack.enter_context(open(source, "rb"))
            except OSError as exc:
                raise CLIError(f"cannot read {source}: {exc.strerror or exc}") from None
        store = stack.enter_context(_open(args))
        stack.enter_context(_ProgressBars(store))
        store.set(args.key, (stream, metadata))
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    """Write a key's data to stdout or to a file."""
    output = args.output
    if output not in (None, "-"):
        if os.path.isdir(output):
            raise CLIError(f"{output} is a directory: give a file name")
        parent = os.path.dirname(os.path.realpath(output))
        if not os.path.isdir(parent):
            raise CLIError(f"cannot write {output}: no such directory {parent}")
    with _open(args, write=False) as store, _ProgressBars(store) as bars:
        try:
            if output not in (None, "-"):
                try:
                    store.to_file(args.key, output)
                except OSError as exc:
                    raise CLIError(f"cannot write {output}: {exc.strerror or exc}") from None
                return 0
            value = store.get(args.key)
        except KeyError:
            raise _no_key(args.key, store) from None
        # stdout is not a path: copy by hand, and feed the bar directly.
        op_id = f"stdout:{id(value)}"
        bars.start(op_id, f"get {args.key}", value.size)
        try:
            sys.stdout.flush()
            out = sys.stdout.buffer
            done = 0
            with value.data as src:
                while True:
                    chunk = src.read(_CHUNK)
                    if not chunk:
                        break
                    out.write(chunk)
                    done += len(chunk)
                    bars.step(op_id, done)
            out.flush()
        finally:
            bars.end(op_id)
    return 0


def cmd_meta(args: argparse.Namespace) -> int:
    """Print a key's metadata as JSON, or change names of it without rewriting the data."""
    updates = _assignments(args.set, "--set")
    unset = list(args.unset or ())
    both = sorted(set(updates) & set(unset))
    if both:
        raise CLIError(f"--set and --unset both name {', '.join(both)}", code=2)
    with _open(args, write=bool(updates or unset)) as store:
        try:
            if unset:
                metadata = store.get_metadata(args.key)
                for name in unset:
                    metadata.pop(name, None)
                metadata.update(updates)
                store.set_metadata(args.key, metadata)
            elif updates:
                store.update_metadata(args.key, updates)
            metadata = store.get_metadata(args.key)
        except KeyError:
            raise _no_key(args.key, store) from None
    _say(_json(metadata, indent=2))
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    """Delete keys."""
    with _open(args) as store:
        for key in args.keys:
            try:
                store.delete(key)
            except KeyError:
                if not args.force:
                    raise _no_key(key, store) from None
    return 0


def _shown_key(key: str) -> str:
    # One key per line: a key that could be misread (a newline or another control
    # character in it, or a leading quote) is printed as a JSON string instead.
    if key.isprintable() and not key.startswith('"'):
        return key
    return _json(key)


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def cmd_ls(args: argparse.Namespace) -> int:
    """List the keys matching a glob pattern, sorted."""
    with _open(args, write=False) as store:
        for key in sorted(store.glob(args.pattern)):
            if not (args.long or args.json):
                _say(_shown_key(key))
                continue
            try:
                value = store.get(key)
            except KeyError:
                continue  # deleted since it was listed
            if args.json:
                _say(_json({"key": key, "size": value.size, "created": value.created,
                            "modified": value.modified, "metadata": value.metadata}))
            else:
                _say(f"{value.size:>12}  {_when(value.modified)}  {_shown_key(key)}")
    return 0


def _query(store: AbstractStore, criteria: Sequence[Tuple[str, Criterion]]) -> Iterator[Tuple[str, Dict[str, Any]]]:
    # The store answers the first criterion on each name; a name given again ("n>1 n<9":
    # all must hold) is checked here, and so is "select": it is query()'s own parameter,
    # so a metadata name "select" cannot be passed as a keyword.
    first: Dict[str, Any] = {}
    again: List[Dict[str, Criterion]] = []
    for name, criterion in criteria:
        if name == "select" or name in first:
            again.append({name: criterion})
        else:
            first[name] = criterion
    for key, metadata in store.query(**first):
        if all(matches(metadata, extra) for extra in again):
            yield key, metadata


def cmd_query(args: argparse.Namespace) -> int:
    """Print the keys whose metadata meets every criterion, with their metadata."""
    criteria = [parse_criterion(text) for text in args.criteria]
    with _open(args, write=False) as store:
        try:
            results = sorted(_query(store, criteria), key=lambda item: item[0])
        except (TypeError, ValueError) as exc:
            raise CLIError(f"bad query: {exc}") from None
    for key, metadata in results:
        _say(key if args.keys else _json({"key": key, "metadata": metadata}))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    """Print what the store says about itself, as JSON."""
    with _open(args, write=False) as store:
        info = store.info()
    info["url"] = _store_url(args)
    _say(_json(info, indent=2))
    return 0


def _event_printer(stop: threading.Event) -> Callable[[Any], None]:
    lock = threading.Lock()

    def print_event(event: Any) -> None:
        line = _json(event.to_dict()) + "\n"
        with lock:
            try:
                _write_text(sys.stdout, line)
            except (BrokenPipeError, ValueError):
                # Nobody reads any more (``kvstore watch | head -3``): stop quietly.
                _silence_stdout()
                stop.set()

    return print_event


def _check_redis(url: str) -> None:
    """Fail fast, in one line, when Redis cannot be reached (the relay itself would retry)."""
    try:
        import redis
    except ImportError:
        raise CLIError("watch --redis needs the redis package: pip install 'kvstore[redis]'") from None
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5)
    except ValueError as exc:
        raise CLIError(f"bad Redis URL {url!r}: {exc}") from None
    try:
        client.ping()
    except Exception as exc:
        raise CLIError(f"cannot reach Redis at {url}: {_describe_exception(exc)}") from None
    finally:
        client.close()


def _import_bridge(module: str, extra: str) -> Any:
    import importlib

    try:
        return importlib.import_module(f"kvstore.{module}")
    except ImportError as exc:
        if exc.name in (f"kvstore.{module}", None):
            raise CLIError(f"this kvstore has no kvstore.{module} module ({_one_line(str(exc))})") from None
        raise CLIError(f"kvstore.{module} needs {exc.name}: pip install 'kvstore[{extra}]'") from None


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set ``stop`` (from the main thread only, where handlers can be set)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def cmd_watch(args: argparse.Namespace) -> int:
    """Print one JSON line per change, as it happens, until interrupted."""
    stop = threading.Event()
    with contextlib.ExitStack() as stack:
        stack.enter_context(_stop_on_signals(stop))
        store = stack.enter_context(_open(args, write=False))
        if args.redis:
            _check_redis(args.redis)
            relay_module = _import_bridge("relay", "redis")
            bridge: Bridge = relay_module.RedisRelay(store, args.redis, channel=args.channel)
            from .relay import redact_url

            via = f"Redis {redact_url(args.redis)} channel {args.channel!r}"
        elif isinstance(store, FileSystemStore):
            watch_module = _import_bridge("watch", "watch")
            options = {} if args.since is None else {"since": args.since}
            bridge = watch_module.FileSystemWatcher(store, **options)
            via = "the filesystem"
        else:
            raise CLIError(f"a {type(store).__name__} can only be watched through Redis: "
                           f"add --redis URL (e.g. --redis redis://localhost:6379/0)")
        subscription = store.subscribe(_event_printer(stop), args.pattern)
        stack.callback(subscription.cancel)
        try:
            bridge.start()
        except CLIError:
            raise
        except Exception as exc:
            raise CLIError(f"cannot watch {_where(store)} through {via}: {_describe_exception(exc)}") from None
        stack.callback(bridge.stop)
        # The relay subscribes in the background: say "watching" only once it listens.
        if not bridge.wait_ready(10):
            _write_text(sys.stderr, f"kvstore: warning: not listening on {via} yet; still trying\n")
        _write_text(sys.stderr, f"kvstore: watching {_where(store)} for {args.pattern!r} "
                                f"through {via}; Ctrl-C to stop\n")
        # Until a signal, a closed stdout, or the bridge stopping on its own (its stop()
        # then raises the reason).
        while not stop.wait(0.25):
            if not bridge.running:
                break
    return 0


# ---------------------------------------------------------------- demo

_DEMO_VALUES: List[Tuple[str, bytes, Dict[str, Any]]] = [
    ("demo/eggs.txt", b"green eggs\n", {"type": "food", "colour": "green", "n": 12}),
    ("demo/ham.txt", b"and ham\n", {"type": "food", "colour": "pink", "n": 1}),
    ("demo/spam.bin", bytes(range(16)), {"type": "tin", "n": 3, "tags": ["canned", "pink"]}),
]


def cmd_demo(args: argparse.Namespace) -> int:
    """A guided tour: writes, events, queries, a read and a transaction on the store."""
    with _open(args) as store:
        _say(f"kvstore demo on {_where(store)}")
        _say("Listening: store.subscribe(print_event, 'demo/*') prints every change below as '~ event'.")

        def print_event(event: Any) -> None:
            seq = "" if event.sequence is None else f" #{event.sequence}"
            _say(f"      ~ event {event.action:<6} {event.key}{seq} {_json(event.metadata)}")

        with store.subscribe(print_event, "demo/*"):
            _say("")
            _say("1. Store three values with metadata: store.set(key, (stream, metadata))")
            for key, data, metadata in _DEMO_VALUES:
                _say(f"   set {key} ({len(data)} bytes) {_json(metadata)}")
                store.set(key, (io.BytesIO(data), metadata))

            _say("")
            _say("2. Merge into the metadata: store.update_metadata('demo/eggs.txt', {'eaten': False})")
            store.update_metadata("demo/eggs.txt", {"eaten": False})

            _say("")
            _say("3. Query by metadata: store.query(type='food')")
            for key, metadata in sorted(store.query(type="food")):
                _say(f"   {key} {_json(metadata)}")
            _say("   ... and store.query_keys(tags=['canned', 'pink'])")
            for key in sorted(store.query_keys(tags=["canned", "pink"])):
                _say(f"   {key}")

            _say("")
            _say("4. List by glob: store.glob('demo/*.txt')")
            for key in sorted(store.glob("demo/*.txt")):
                _say(f"   {key}")

            _say("")
            _say("5. Read one back: value = store.get('demo/eggs.txt')")
            value = store.get("demo/eggs.txt")
            with value.data as stream:
                data = stream.read()
            _say(f"   value.data.read() = {data!r} ({value.size} bytes)")
            _say(f"   value.metadata = {_json(value.metadata)}")

            _say("")
            _say("6. A transaction: its events are sent only when it commits")
            with store.transaction("demo"):
                _say("   with store.transaction('demo'): set demo/scratch.txt, update demo/ham.txt")
                store.set("demo/scratch.txt", (io.BytesIO(b"scratch\n"), {"type": "scratch"}))
                store.update_metadata("demo/ham.txt", {"sliced": True})
                _say("   (still inside the block: no event yet)")
            _say("   committed")

            _say("")
            _say("7. Delete: store.delete('demo/scratch.txt')")
            store.delete("demo/scratch.txt")

    url = _store_url(args)
    prefix = "kvstore" if url == DEFAULT_STORE and not args.store else f"kvstore --store {url}"
    _say("")
    _say("Done: the demo/* keys stay in the store (run the demo again at will). Next, try:")
    _say(f"   {prefix} ls 'demo/*'")
    _say(f"   {prefix} query type=food")
    _say(f"   {prefix} get demo/eggs.txt")
    _say(f"   {prefix} watch        # in another terminal, then run the demo again here")
    return 0


# ---------------------------------------------------------------- copy, move, sync


def _copy_or_move(args: argparse.Namespace, move: bool) -> int:
    with _open(args) as store, _ProgressBars(store):
        try:
            (store.move if move else store.copy)(args.src, args.dst)
        except KeyError:
            raise _no_key(args.src, store) from None
        except InvalidKeyError:
            raise
        except ValueError as exc:  # the same key twice
            raise CLIError(str(exc)) from None
    return 0


def cmd_cp(args: argparse.Namespace) -> int:
    """Copy a key's data and metadata to another key of the store."""
    return _copy_or_move(args, move=False)


def cmd_mv(args: argparse.Namespace) -> int:
    """Move a key to another key of the store (atomic on memory and filesystem stores)."""
    return _copy_or_move(args, move=True)


def _is_file_url(url: str) -> bool:
    scheme = urlsplit(url).scheme.lower()
    return scheme == "file" or len(scheme) <= 1  # a bare path, or a Windows drive letter


def _open_url(url: str, what: str, create: bool) -> AbstractStore:
    """Open the store ``url`` names; a filesystem store that does not exist is created only
    when ``create``."""
    try:
        return open_store(url, create=False) if _is_file_url(url) and not create else open_store(url)
    except (ImportError, ValueError) as exc:
        raise CLIError(f"cannot open {what} {url!r}: {_one_line(str(exc))}") from None
    except Exception as exc:
        raise CLIError(f"cannot open {what} {url!r}: {_describe_exception(exc)}") from None


class _SyncBars(_ProgressBars):
    """The one bar of a sync over all its bytes (not one per key)."""

    def _on_start(self, sender: Any, event: Any = None, **_: Any) -> None:
        if event.message == "sync":
            self.start(event.operation_id, f"sync {event.key}", event.steps)


def cmd_sync(args: argparse.Namespace) -> int:
    """Copy to DST_URL the keys of SRC_URL matching PATTERN whose data or metadata differ."""
    from ._sync import sync

    with contextlib.ExitStack() as stack:
        source = stack.enter_context(_open_url(args.source, "source", create=False))
        destination = stack.enter_context(_open_url(args.destination, "destination", create=True))
        stack.enter_context(_SyncBars(destination, threshold=0))
        try:
            report = sync(source, destination, args.pattern, delete=args.delete, workers=args.workers,
                          retries=args.retries, state=args.state, dry_run=args.dry_run)
        except KeyboardInterrupt:
            if args.state:
                _write_text(sys.stderr, f"kvstore: the state is in {args.state}: run the same command "
                                        f"to resume\n")
            raise
        except ValueError as exc:
            raise CLIError(str(exc)) from None
    if args.dry_run:
        for key in report.done:
            _say(f"would copy {key}")
        for key in report.deleted:
            _say(f"would delete {key}")
    for key in report.failed:
        _error(f"{key!r} failed: {report.errors.get(key, 'failed')}")
    _say(report.summary())
    return 0 if report.ok else 1


# ---------------------------------------------------------------- the parser

_EPILOG = """\
examples:
  kvstore put notes/today.txt today.txt --meta type=note --meta n=3
  kvstore get notes/today.txt -o copy.txt
  kvstore query type=note
  kvstore --store file:///srv/data ls 'notes/*'
  KVSTORE_URL=s3://bucket/prefix kvstore info

The store is --store URL, else $KVSTORE_URL, else ./.kvstore (created by the first write;
commands that only read never create a store).
URLs: file:///abs/path, file:rel/path (or a bare path), memory://, s3://bucket/prefix.
"""

_COMMANDS: List[Tuple[str, Callable[[argparse.Namespace], int], str, str]] = [
    ("put", cmd_put, "store a file (or stdin) and metadata under a key", """\
example:
  kvstore put images/cat.png cat.png --meta type=image --meta width=640 --meta tags='["pet"]'
  tar c photos | kvstore put backups/photos.tar - --meta type=backup
  kvstore put notes/a.txt --meta type=note -- a.txt     # -- ends the options

A --meta VALUE is JSON where it parses as JSON (width=640 is a number, tags='["pet"]' a
list, ok=true a boolean), else a string (type=image). put replaces the key's data and
metadata together.
"""),
    ("get", cmd_get, "write a key's data to stdout or a file", """\
example:
  kvstore get images/cat.png -o cat-copy.png
  kvstore get notes/today.txt | less
"""),
    ("meta", cmd_meta, "print a key's metadata as JSON", """\
example:
  kvstore meta images/cat.png
  kvstore meta images/cat.png --set width=640 --unset draft

Prints the metadata as JSON (after the change, with --set or --unset).
"""),
    ("rm", cmd_rm, "delete keys", """\
example:
  kvstore rm images/cat.png
  kvstore rm -f maybe/there another/key
"""),
    ("cp", cmd_cp, "copy a key (data and metadata) to another key", """\
example:
  kvstore cp images/cat.png backup/cat.png
"""),
    ("mv", cmd_mv, "move a key to another key", """\
example:
  kvstore mv inbox/report.csv done/report.csv

The move is atomic on memory and filesystem stores (nobody sees both keys or neither);
on S3 it is a server-side copy, then a delete.
"""),
    ("sync", cmd_sync, "make the keys of one store match another's", """\
example:
  kvstore sync file:///srv/data s3://bucket/backup
  kvstore sync s3://bucket/backup file:restore 'images/*' --dry-run
  kvstore sync file:data s3://bucket/mirror --delete --state sync-state.json

Copies every key matching PATTERN (default *) whose size, checksum or metadata differ,
verifies what it wrote, retries transient failures, and with --delete removes destination
keys the source lacks. --store is not used: the two stores are SRC_URL and DST_URL (a
filesystem DST_URL is created when missing). --state FILE keeps each key's state so an
interrupted run resumes where it stopped. Prints a summary line; exit status 1 if any key
failed.
"""),
    ("ls", cmd_ls, "list keys matching a glob pattern", """\
example:
  kvstore ls
  kvstore ls 'images/*.png'       # * also crosses /
  kvstore ls -l 'images/*'
  kvstore ls --json | jq .size

A key with a newline or another control character is printed as a JSON string, in quotes.
"""),
    ("query", cmd_query, "list keys whose metadata meets every criterion", """\
example:
  kvstore query type=image
  kvstore query type=image width=640 --keys
  kvstore query tags='["pet"]'
  kvstore query 'size>100' 'size<=5000' 'tags~raw' 'name^=img' 'owner?' 'state!=x'

A criterion is NAME=VALUE (equal), NAME!=VALUE (not equal, or no NAME at all),
NAME>VALUE, NAME>=VALUE, NAME<VALUE, NAME<=VALUE (numbers with numbers, strings
with strings), NAME~VALUE (a list holding VALUE), NAME^=PREFIX (a string starting
with PREFIX, as written) or NAME? (NAME is present); all must hold. Quote them
for the shell. Values are parsed as for put --meta, and compared as JSON (640
matches 640.0; true matches only true).

Prints one JSON object per line: {"key": ..., "metadata": {...}}.
"""),
    ("info", cmd_info, "print information about the store as JSON", """\
example:
  kvstore info
  kvstore --store s3://bucket/prefix info
"""),
    ("watch", cmd_watch, "print one JSON line per change, as it happens", """\
example:
  kvstore watch                       # a filesystem store: changes by other processes
  kvstore watch 'images/*'
  kvstore watch --redis redis://localhost:6379/0    # changes relayed through Redis

Each line is an event's to_dict(), e.g.
  {"type": "StoreSetEvent", "key": "images/cat.png", "metadata": {...}, "remote": true, ...}
Stops cleanly on Ctrl-C (SIGINT) or SIGTERM.
"""),
    ("demo", cmd_demo, "a guided tour of kvstore on the store (idempotent)", """\
example:
  kvstore demo
  kvstore --store memory:// demo

Writes demo/* keys with metadata, prints the events it hears, queries by metadata and glob,
reads a value back and runs a transaction. Run it as often as you like.
"""),
]


def _sequence(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a journal sequence (a whole number >= 0), not {text!r}") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"a journal sequence is >= 0, not {number}")
    return number


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``kvstore`` command."""
    common = _Parser(add_help=False)
    common.add_argument("--store", metavar="URL", default=argparse.SUPPRESS,
                        help="the store (default: $KVSTORE_URL, else ./.kvstore)")
    parser = _Parser(prog="kvstore", description="kvstore: an event-driven key-value store with pub/sub.",
                     epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", metavar="URL", default=None,
                        help="the store (default: $KVSTORE_URL, else ./.kvstore)")
    parser.add_argument("--version", action="version", version=f"kvstore {__version__}")
    commands = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    subs: Dict[str, argparse.ArgumentParser] = {}
    for name, func, summary, epilog in _COMMANDS:
        sub = commands.add_parser(name, help=summary, description=summary[0].upper() + summary[1:] + ".",
                                  epilog=epilog, parents=[common],
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        sub.set_defaults(func=func)
        subs[name] = sub

    subs["put"].add_argument("key", metavar="KEY")
    subs["put"].add_argument("file", metavar="FILE|-",
                             help="the file to store; - reads standard input")
    subs["put"].add_argument("-m", "--meta", metavar="NAME=VALUE", action="extend", nargs="+",
                             help="a metadata item; repeat or list several")
    subs["get"].add_argument("key", metavar="KEY")
    subs["get"].add_argument("-o", "--output", metavar="FILE",
                             help="write to FILE instead of stdout, as cp does (a file is replaced when "
                                  "complete and keeps its permissions; a symlink, FIFO or device is "
                                  "written through)")
    subs["meta"].add_argument("key", metavar="KEY")
    subs["meta"].add_argument("--set", metavar="NAME=VALUE", action="extend", nargs="+",
                              help="set these names (VALUE parsed as for put --meta); the data stays")
    subs["meta"].add_argument("--unset", metavar="NAME", action="extend", nargs="+",
                              help="remove these names; the data stays")
    subs["rm"].add_argument("keys", metavar="KEY", nargs="+")
    subs["rm"].add_argument("-f", "--force", action="store_true", help="ignore keys that do not exist")
    for name in ("cp", "mv"):
        subs[name].add_argument("src", metavar="SRC", help="the key to copy")
        subs[name].add_argument("dst", metavar="DST", help="the key to write")
    subs["sync"].add_argument("source", metavar="SRC_URL", help="the store to copy from")
    subs["sync"].add_argument("destination", metavar="DST_URL", help="the store to copy to")
    subs["sync"].add_argument("pattern", metavar="PATTERN", nargs="?", default="*",
                              help="only keys matching this glob (default: *)")
    subs["sync"].add_argument("--delete", action="store_true",
                              help="delete destination keys matching PATTERN that the source lacks")
    subs["sync"].add_argument("--dry-run", action="store_true",
                              help="change nothing; print what would be copied and deleted")
    subs["sync"].add_argument("--state", metavar="FILE", help="keep per-key state in FILE, to resume")
    subs["sync"].add_argument("--workers", metavar="N", type=int, default=4,
                              help="keys copied at once (default: 4)")
    subs["sync"].add_argument("--retries", metavar="N", type=int, default=3,
                              help="further attempts of a key after a transient failure (default: 3)")
    subs["ls"].add_argument("pattern", metavar="PATTERN", nargs="?", default="*",
                            help="an fnmatch glob (default: *)")
    subs["ls"].add_argument("-l", "--long", action="store_true",
                            help="also print each key's size and modification time")
    subs["ls"].add_argument("--json", action="store_true",
                            help="one JSON object per key: key, size, created, modified, metadata")
    subs["query"].add_argument("criteria", metavar="CRITERION", nargs="*",
                               help="NAME=VALUE, NAME>VALUE, NAME~VALUE, NAME? ... (none: every key)")
    subs["query"].add_argument("-k", "--keys", action="store_true", help="print only the keys")
    subs["watch"].add_argument("pattern", metavar="PATTERN", nargs="?", default="*",
                               help="only keys matching this glob (default: *)")
    subs["watch"].add_argument("--redis", metavar="URL",
                               help="receive the changes published by other relays through Redis")
    subs["watch"].add_argument("--channel", default="kvstore", help="the Redis channel (default: kvstore)")
    subs["watch"].add_argument("--since", metavar="SEQUENCE", type=_sequence,
                               help="filesystem store: first replay the changes after this journal sequence")
    return parser


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
