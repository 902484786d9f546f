"""``kvstore watch``: one JSON line per change, pulled from a filesystem store's journal
(``store.events()``) or heard through a Redis relay, until interrupted."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from typing import Any, Callable, Iterator

from .._bridge import Bridge
from .._optional import install_hint, require
from ..stores.filesystem import FileSystemStore
from .opening import _open, _where
from .output import CLIError, _describe_exception, _json, _one_line, _silence_stdout, _write_text


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
        redis = require("redis", "redis", needed_by="watch --redis")
    except ImportError as exc:
        raise CLIError(str(exc)) from None
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
        raise CLIError(f"kvstore.{module} needs {exc.name}: {install_hint(extra)}") from None


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
        if isinstance(store, FileSystemStore) and store._index.in_memory:
            # The store exists but was never opened writable: no journal to follow yet.
            # Its index is made (as its first writer would), the store is not created.
            stack.close()
            stack.enter_context(_stop_on_signals(stop))
            store = stack.enter_context(_open(args, write=False, readonly=False))
        if args.redis:
            _watch_relay(args, store, stack, stop)
        elif isinstance(store, FileSystemStore):
            _watch_journal(args, store, stop)
        else:
            raise CLIError(f"a {type(store).__name__} can only be watched through Redis: "
                           f"add --redis URL (e.g. --redis redis://localhost:6379/0)")
    return 0


def _watching(store: Any, pattern: str, via: str) -> None:
    _write_text(sys.stderr, f"kvstore: watching {_where(store)} for {pattern!r} "
                            f"through {via}; Ctrl-C to stop\n")


def _watch_journal(args: argparse.Namespace, store: FileSystemStore, stop: threading.Event) -> None:
    """Pull the journal's changes through ``store.events()`` and print them."""
    via = "the filesystem"
    try:
        stream = store.events(args.pattern, since=args.since)
    except Exception as exc:
        raise CLIError(f"cannot watch {_where(store)} through {via}: {_describe_exception(exc)}") from None
    print_event = _event_printer(stop)
    with stream:
        _watching(store, args.pattern, via)
        # Until a signal, a closed stdout, or the stream ending (the store went away).
        while not stop.is_set():
            try:
                event = stream.get(timeout=0.25)
            except Exception as exc:
                raise CLIError(f"stopped watching {_where(store)}: {_describe_exception(exc)}") from None
            if event is not None:
                print_event(event)
            elif stream.closed:
                break


def _watch_relay(args: argparse.Namespace, store: Any, stack: contextlib.ExitStack, stop: threading.Event) -> None:
    """Hear what a Redis relay delivers on the store's signals and print it."""
    _check_redis(args.redis)
    relay_module = _import_bridge("relay", "redis")
    bridge: Bridge = relay_module.RedisRelay(store, args.redis, channel=args.channel)
    from ..relay import redact_url

    via = f"Redis {redact_url(args.redis)} channel {args.channel!r}"
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
    _watching(store, args.pattern, via)
    # Until a signal, a closed stdout, or the bridge stopping on its own (its stop()
    # then raises the reason).
    while not stop.wait(0.25):
        if not bridge.running:
            break
