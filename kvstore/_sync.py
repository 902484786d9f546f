"""``kvstore.sync``: make the keys of one store that match a pattern equal in another.

How a run goes
--------------
1. The source keys matching ``pattern`` are listed. Each is compared with the destination
   (by ``workers`` threads): size, checksum and metadata, from :meth:`AbstractStore.stat`,
   which reads no data where the store keeps a checksum beside the metadata (MemoryStore;
   S3Store's ``kvstore-crc32`` header). An equal key is ``skipped``; one whose data is
   equal but metadata differs gets its metadata only; any other is to be sent.
2. Where one side keeps no checksum for a key (FileSystemStore until its index keeps
   one, an object written into S3 by another tool), that side's data is read and hashed
   to compare it: that costs a full read, and the key is listed in ``SyncReport.hashed``.
   A dry run never reads data: it counts such a key as one to send.
3. The keys to send go through ``pending -> transferring -> done``: the source's
   :class:`~kvstore.Value` is streamed into ``destination.set`` (one atomic write, with its
   usual events), its CRC-32 computed on the way, and the destination is then checked:
   its size, metadata and checksum must be the source's (a destination that keeps no
   checksum is read back to hash it, listed in ``hashed`` too). A mismatch is a failed
   attempt.
4. With ``delete=True``, destination keys matching ``pattern`` that the source lacks are
   deleted.

A failed attempt is retried after a backoff (:mod:`kvstore._retry`) when its error is
transient, at most ``retries`` more times; then the key is ``failed`` with its message and
the others go on. A source key that vanishes meanwhile is ``skipped``.

The state file
--------------
``state=PATH`` keeps every key's state, attempts, message and, once done or skipped, the
fingerprint of the source it matched (size, checksum, metadata digest, modification time)
in a JSON document (:func:`encode_state` / :func:`decode_state`), replaced atomically
(temporary file + rename) as the run goes, at most every ``_StateFile.interval`` seconds
and at the end. A key recorded ``done`` or ``skipped`` whose source still has that
fingerprint is skipped by the next run without looking at the destination; a key left
``pending`` or ``transferring`` by an interrupted run is compared again. Ctrl-C
(``KeyboardInterrupt``) stops the workers at their next read, writes the state file and
propagates.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import io
import json
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, TypeVar, Union

from ._checksum import CHECKSUM_ALGORITHM, Crc32, KeyStat
from ._keys import canonical
from ._retry import Backoff, is_transient
from ._progress import _Progress
from .base import DEFAULT_BUFFER_SIZE, AbstractStore
from .errors import ChecksumError

__all__ = ["sync", "SyncReport", "encode_state", "decode_state", "STATE_FORMAT", "STATE_VERSION"]

STATE_FORMAT = "kvstore-sync-state"
STATE_VERSION = 1

_T = TypeVar("_T")


@dataclass
class SyncReport:
    """What a :func:`sync` run did (a dry run: what a real run would do).

    Attributes
    ----------
    done : keys written to the destination (data and metadata, or metadata only).
    skipped : keys left alone: unchanged, done by an earlier run (state file), or vanished
        from the source during the run.
    failed : keys that still failed after their retries; ``errors`` says why.
    deleted : destination keys deleted because the source lacks them (``delete=True``).
    bytes : data bytes written to the destination.
    errors : key -> message of its last failure.
    hashed : keys whose data had to be read only to compute a checksum that a store keeps
        none of (see the module docstring); empty where both stores keep checksums.
    total_bytes : data bytes the run had to send (a dry run: would send).
    elapsed : seconds the run took.
    """

    done: List[str] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)
    failed: List[str] = field(default_factory=list)
    deleted: List[str] = field(default_factory=list)
    bytes: int = 0
    errors: Dict[str, str] = field(default_factory=dict)
    hashed: List[str] = field(default_factory=list)
    total_bytes: int = 0
    elapsed: float = 0.0
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        """True when no key failed."""
        return not self.failed

    def summary(self) -> str:
        """One line: ``done 3, skipped 2, failed 0, deleted 1; 1.5 MiB in 0.4 s``."""
        verb = "would copy" if self.dry_run else "done"
        amount = _human(self.total_bytes if self.dry_run else self.bytes)
        return (f"{verb} {len(self.done)}, skipped {len(self.skipped)}, failed {len(self.failed)}, "
                f"{'would delete' if self.dry_run else 'deleted'} {len(self.deleted)}; "
                f"{amount} in {self.elapsed:.1f} s")


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


# ---------------------------------------------------------------- the state file


def encode_state(document: Dict[str, Any]) -> bytes:
    """The bytes of a state file holding ``document`` (keys sorted: stable output)."""
    return (json.dumps(document, ensure_ascii=False, sort_keys=True, indent=1) + "\n").encode("utf-8")


def decode_state(data: bytes, where: str = "the state file") -> Dict[str, Any]:
    """The document of a state file; ``ValueError`` when it is not one this version reads."""
    try:
        document = json.loads(data.decode("utf-8"))
    except ValueError as exc:
        raise ValueError(f"{where} is not a kvstore sync state file: {exc}") from None
    if not isinstance(document, dict) or document.get("format") != STATE_FORMAT:
        raise ValueError(f"{where} is not a kvstore sync state file")
    if document.get("version") != STATE_VERSION:
        raise ValueError(f"{where} has version {document.get('version')!r}; this kvstore reads "
                         f"version {STATE_VERSION}")
    if not isinstance(document.get("keys"), dict):
        raise ValueError(f"{where} has no 'keys' object")
    return document


def _describe(store: AbstractStore) -> Dict[str, Any]:
    """Which store this is, as a state file records it (a place, or this instance)."""
    info = store.info()
    d: Dict[str, Any] = {"type": type(store).__name__}
    for name in ("path", "bucket", "prefix", "endpoint_url"):
        if info.get(name) is not None:
            d[name] = info[name]
    if len(d) == 1:  # a store with no place (memory): only this instance is the same store
        d["origin"] = store.origin
    return d


def _fingerprint(size: int, checksum: Optional[str], metadata: Dict[str, Any], modified: float) -> Dict[str, Any]:
    digest = hashlib.sha256(canonical(metadata).encode("utf-8")).hexdigest()
    return {"size": size, "checksum": checksum, "metadata": digest, "modified": modified}


def _same_source(recorded: Any, now: Dict[str, Any]) -> bool:
    if not isinstance(recorded, dict):
        return False
    if any(recorded.get(name) != now[name] for name in ("size", "metadata", "modified")):
        return False
    return recorded.get("checksum") is None or now["checksum"] is None or recorded["checksum"] == now["checksum"]


class _StateFile:
    """Per-key states kept in memory and written to ``path`` atomically as they change."""

    #: at most one write of the file per this many seconds while the run goes on
    interval = 0.25

    def __init__(self, path: Optional[str], source: Dict[str, Any], destination: Dict[str, Any],
                 writable: bool) -> None:
        self.path = path
        self.writable = writable and path is not None
        self._lock = threading.Lock()
        self._written = 0.0
        self._dirty = False
        self.keys: Dict[str, Dict[str, Any]] = {}
        if path is not None and os.path.exists(path):
            with open(path, "rb") as f:
                document = decode_state(f.read(), path)
            if document.get("source") != source or document.get("destination") != destination:
                raise ValueError(f"the state file {path} was written by a sync between other stores "
                                 f"({document.get('source')} -> {document.get('destination')})")
            self.keys = {k: v for k, v in document["keys"].items() if isinstance(v, dict)}
        self._document = {"format": STATE_FORMAT, "version": STATE_VERSION,
                          "source": source, "destination": destination}

    def get(self, key: str) -> Optional[Dict[str, Any]]:
        with self._lock:
            entry = self.keys.get(key)
            return dict(entry) if entry is not None else None

    def set(self, key: str, state: str, *, attempts: Optional[int] = None, message: Optional[str] = None,
            source: Optional[Dict[str, Any]] = None) -> None:
        with self._lock:
            entry = self.keys.setdefault(key, {"attempts": 0})
            entry["state"] = state
            if attempts is not None:
                entry["attempts"] = attempts
            entry["message"] = message
            if source is not None:
                entry["source"] = source
            elif state not in ("done", "skipped"):
                entry.pop("source", None)
            self._dirty = True
            if time.monotonic() - self._written >= self.interval:
                self._flush()

    def flush(self) -> None:
        with self._lock:
            self._flush()

    def _flush(self) -> None:
        if not self.writable or not self._dirty:
            return
        assert self.path is not None
        data = encode_state({**self._document, "keys": self.keys})
        directory = os.path.dirname(os.path.abspath(self.path))
        tmp = os.path.join(directory, f".{os.path.basename(self.path)}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        self._dirty = False
        self._written = time.monotonic()


# ---------------------------------------------------------------- reading a store


def _crc_checksum(checksum: Optional[str]) -> Optional[str]:
    """``checksum`` when it is comparable with the CRC-32 computed here, else None."""
    if checksum is not None and checksum.startswith(CHECKSUM_ALGORITHM + ":"):
        return checksum
    return None


class _Stopped(BaseException):
    """The run is stopping (Ctrl-C): a worker abandons its key at the next read."""


class _Vanished(Exception):
    """The source key disappeared during the run."""


class _Failed(Exception):
    def __init__(self, message: str, attempts: int) -> None:
        super().__init__(message)
        self.message = message
        self.attempts = attempts


class _SourceReader(io.RawIOBase):
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
            raise _Stopped()
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


# ---------------------------------------------------------------- the run


@dataclass
class _Plan:
    key: str
    kind: str  # "send" (data and metadata) or "metadata"
    stat: KeyStat


class _Sync:
    def __init__(self, source: AbstractStore, destination: AbstractStore, pattern: str, *, delete: bool,
                 workers: int, retries: int, state: Optional[str], dry_run: bool, backoff: Backoff,
                 buffer_size: int) -> None:
        self.source = source
        self.destination = destination
        self.pattern = pattern
        self.delete = delete
        self.workers = workers
        self.retries = retries
        self.dry_run = dry_run
        self.backoff = backoff
        self.buffer_size = buffer_size
        self.report = SyncReport(dry_run=dry_run)
        self.state = _StateFile(state, _describe(source), _describe(destination), writable=not dry_run)
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._hashed: Dict[str, None] = {}
        self._progress: Optional[_Progress] = None
        self._planned: Dict[str, int] = {}
        self._shown: Dict[str, int] = {}

    # ------------------------------------------------------------ outcome bookkeeping

    def _outcome(self, key: str, state: str, *, attempts: Optional[int] = None, message: Optional[str] = None,
                 source: Optional[Dict[str, Any]] = None, nbytes: int = 0) -> None:
        with self._lock:
            if state == "done":
                self.report.done.append(key)
                self.report.bytes += nbytes
            elif state == "skipped":
                self.report.skipped.append(key)
            elif state == "failed":
                self.report.failed.append(key)
                self.report.errors[key] = message or "failed"
            elif state == "deleted":
                self.report.deleted.append(key)
        self.state.set(key, state, attempts=attempts, message=message, source=source)

    def _attempts(self, key: str, operation: Callable[[], _T]) -> Tuple[_T, int]:
        """Run ``operation`` until it succeeds, retrying transient errors with backoff."""
        attempts = 0
        while True:
            if self.stop.is_set():
                raise _Stopped()
            attempts += 1
            try:
                return operation(), attempts
            except _Vanished:
                raise
            except Exception as exc:
                message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                if not is_transient(exc) or attempts > self.retries:
                    raise _Failed(message, attempts) from exc
                if self.stop.wait(self.backoff.delay(attempts)):
                    raise _Stopped() from None

    def _hash(self, store: AbstractStore, key: str) -> str:
        """Read the data of ``key`` to compute its checksum (the cost the module docstring
        speaks of): KeyError when it is missing."""
        with self._lock:
            self._hashed[key] = None
        crc = Crc32()
        with store.get_data(key) as stream:
            while True:
                if self.stop.is_set():
                    raise _Stopped()
                chunk = stream.read(self.buffer_size)
                if not chunk:
                    break
                crc.update(chunk)
        return crc.text()

    # ------------------------------------------------------------ step 1: compare

    def _compare(self, key: str) -> Optional[_Plan]:
        """None when the key is to be left alone (its outcome recorded), else its plan."""
        def look() -> Tuple[str, KeyStat]:
            try:
                ours = self.source.stat(key)
            except KeyError:
                raise _Vanished() from None
            recorded = self.state.get(key)
            if recorded is not None and recorded.get("state") in ("done", "skipped") and \
                    _same_source(recorded.get("source"), self._fingerprint(ours)):
                return "resumed", ours
            try:
                theirs = self.destination.stat(key)
            except KeyError:
                return "send", ours
            same_metadata = canonical(ours.metadata) == canonical(theirs.metadata)
            if ours.size != theirs.size:
                return "send", ours
            mine, other = _crc_checksum(ours.checksum), _crc_checksum(theirs.checksum)
            if mine is None or other is None:
                if self.dry_run:
                    return "send", ours  # cannot tell without reading the data
                try:
                    mine = mine or self._hash(self.source, key)
                except KeyError:
                    raise _Vanished() from None
                try:
                    other = other or self._hash(self.destination, key)
                except KeyError:
                    return "send", ours
            if mine != other:
                return "send", ours
            return ("skip" if same_metadata else "metadata"), ours

        try:
            (verdict, found), attempts = self._attempts(key, look)
        except _Vanished:
            self._outcome(key, "skipped", message="vanished from the source")
            return None
        except _Failed as failure:
            self._outcome(key, "failed", attempts=failure.attempts, message=failure.message)
            return None
        if verdict in ("skip", "resumed"):
            self._outcome(key, "skipped", attempts=attempts, source=self._fingerprint(found))
            return None
        if self.dry_run:
            self._outcome(key, "done", nbytes=0)
            with self._lock:
                self.report.total_bytes += found.size if verdict == "send" else 0
            return None
        self.state.set(key, "pending")
        return _Plan(key, verdict, found)

    @staticmethod
    def _fingerprint(found: KeyStat) -> Dict[str, Any]:
        return _fingerprint(found.size, _crc_checksum(found.checksum), found.metadata, found.modified)

    # ------------------------------------------------------------ step 2: transfer

    def _advance(self, key: str, upto: int) -> None:
        """Show ``key``'s bytes up to ``upto`` (never beyond what was planned, never back)."""
        progress = self._progress
        if progress is None:
            return
        with self._lock:
            target = min(upto, self._planned.get(key, 0))
            shown = self._shown.get(key, 0)
            if target > shown:
                self._shown[key] = target
                progress.advance(target - shown)

    def _transfer(self, plan: _Plan) -> None:
        key = plan.key

        def send() -> Tuple[int, Dict[str, Any]]:
            try:
                value = self.source.get(key)
            except KeyError:
                raise _Vanished() from None
            reader = _SourceReader(value.data, lambda n: self._advance(key, n), self.stop)
            metadata = value.metadata
            try:
                self.destination.set(key, (reader, metadata), self.buffer_size)
            except KeyError:
                raise _Vanished() from None  # the source's stream found its key gone
            if reader.crc.size != value.size:
                raise ChecksumError(f"{key!r}: read {reader.crc.size} bytes from the source, "
                                    f"its size is {value.size}")
            self._verify(key, reader.crc.size, reader.crc.text(), metadata)
            return reader.crc.size, _fingerprint(reader.crc.size, reader.crc.text(), metadata, value.modified)

        def send_metadata() -> Tuple[int, Dict[str, Any]]:
            try:
                now = self.source.stat(key)
            except KeyError:
                raise _Vanished() from None
            if now.size != plan.stat.size or now.checksum != plan.stat.checksum:
                return send()  # the source's data changed since it was compared
            self.destination.set_metadata(key, now.metadata)
            theirs = self.destination.stat(key)
            if canonical(theirs.metadata) != canonical(now.metadata):
                raise ChecksumError(f"{key!r}: the destination's metadata is not the source's after the write")
            return 0, self._fingerprint(now)

        self.state.set(key, "transferring")
        try:
            (nbytes, fingerprint), attempts = self._attempts(key, send if plan.kind == "send" else send_metadata)
        except _Vanished:
            self._outcome(key, "skipped", message="vanished from the source")
        except _Failed as failure:
            self._outcome(key, "failed", attempts=failure.attempts, message=failure.message)
        else:
            self._outcome(key, "done", attempts=attempts, source=fingerprint, nbytes=nbytes)
        self._advance(key, self._planned.get(key, 0))  # whatever happened, this key is over

    def _verify(self, key: str, size: int, checksum: str, metadata: Dict[str, Any]) -> None:
        """The destination holds what was sent: size, metadata and checksum."""
        try:
            theirs = self.destination.stat(key)
        except KeyError:
            raise ChecksumError(f"{key!r} is missing from the destination after its write") from None
        if theirs.size != size:
            raise ChecksumError(f"{key!r}: the destination holds {theirs.size} bytes, {size} were sent")
        if canonical(theirs.metadata) != canonical(metadata):
            raise ChecksumError(f"{key!r}: the destination's metadata is not the source's after the write")
        stored = _crc_checksum(theirs.checksum)
        if stored is None:
            stored = self._hash(self.destination, key)
        if stored != checksum:
            raise ChecksumError(f"{key!r}: the destination's data does not match the source's "
                                f"({stored} != {checksum})")

    # ------------------------------------------------------------ step 3: delete

    def _delete(self, key: str) -> None:
        if self.dry_run:
            self._outcome(key, "deleted")
            return

        def remove() -> bool:
            try:
                self.destination.delete(key)
            except KeyError:
                return False
            return True

        self.state.set(key, "deleting")
        try:
            removed, attempts = self._attempts(key, remove)
        except _Failed as failure:
            self._outcome(key, "failed", attempts=failure.attempts, message=failure.message)
            return
        self._outcome(key, "deleted" if removed else "skipped", attempts=attempts)

    # ------------------------------------------------------------ driving the workers

    def _each(self, pool: concurrent.futures.ThreadPoolExecutor, function: Callable[[Any], _T],
              items: Sequence[Any]) -> List[_T]:
        """``function`` of every item on the pool, in order; the first exception that is
        not an outcome (Ctrl-C, a bug) stops the run and is raised."""
        def guarded(item: Any) -> Any:
            if self.stop.is_set():
                return None
            try:
                return function(item)
            except _Stopped:
                return None
            except BaseException:
                self.stop.set()  # Ctrl-C (or a bug) in a worker: the others stop now
                raise

        futures = [pool.submit(guarded, item) for item in items]
        pending = set(futures)
        while pending:
            done, pending = concurrent.futures.wait(pending, timeout=0.5,
                                                    return_when=concurrent.futures.FIRST_EXCEPTION)
            for future in done:
                if future.exception() is not None:
                    self.stop.set()
                    raise future.exception()  # type: ignore[misc]
        return [future.result() for future in futures]

    def run(self) -> SyncReport:
        started = time.monotonic()
        keys = sorted(self.source.glob(self.pattern))
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="kvstore-sync")
        progress: Optional[_Progress] = None
        try:
            plans = [p for p in self._each(pool, self._compare, keys) if p is not None]
            total = sum(p.stat.size for p in plans if p.kind == "send")
            self._planned = {p.key: p.stat.size for p in plans if p.kind == "send"}
            if not self.dry_run:
                self.report.total_bytes = total
                progress = self._progress = _Progress(self.destination, self.pattern, "sync", total)
            self._each(pool, self._transfer, plans)
            if self.delete:
                present = set(keys)
                extra = [k for k in sorted(self.destination.glob(self.pattern)) if k not in present]
                self._each(pool, self._delete, extra)
        except BaseException:
            self.stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            if progress is not None:
                progress.finish("exception")
            self.state.flush()
            raise
        pool.shutdown(wait=True)
        self.state.flush()
        if progress is not None:
            progress.finish("normal" if self.report.ok else "error")
        report = self.report
        for name in ("done", "skipped", "failed", "deleted"):
            getattr(report, name).sort()
        report.hashed = sorted(self._hashed)
        report.elapsed = time.monotonic() - started
        return report


def sync(source: AbstractStore, destination: AbstractStore, pattern: str = "*", *, delete: bool = False,
         workers: int = 4, retries: int = 3, state: Union[str, os.PathLike[str], None] = None,
         dry_run: bool = False, backoff: Optional[Backoff] = None,
         buffer_size: int = DEFAULT_BUFFER_SIZE) -> SyncReport:
    """Copy every key matching ``pattern`` whose data or metadata differ from ``source`` to
    ``destination`` (any two connected stores); see :mod:`kvstore._sync` for the steps.

    Parameters
    ----------
    source, destination : the stores (connected; not the same instance).
    pattern : an fnmatch glob of the keys to sync (``*`` crosses ``/``).
    delete : also delete destination keys matching ``pattern`` that the source lacks.
    workers : threads comparing and sending keys at once.
    retries : further attempts of a key after a transient failure (StoreError or OSError,
        except InvalidKeyError, AuthorizationError and ReadOnlyError).
    state : path of a JSON state file: a run interrupted (Ctrl-C, a crash) resumes from it
        without sending again what was done.
    dry_run : read and write no data, change nothing; report what a run would do.
    backoff : the wait between attempts (:class:`kvstore._retry.Backoff`).
    buffer_size : bytes read at a time.

    Returns
    -------
    SyncReport : ``done``, ``skipped``, ``failed``, ``deleted``, ``bytes``, ``errors``, ``ok``.

    Raises
    ------
    ValueError : bad arguments, or a state file of another sync.
    KeyboardInterrupt : the run was interrupted; the state file is consistent.
    StoreError : listing the keys failed.

    Events
    ------
    On the destination: progress_start/step/end of one operation (message ``"sync"``,
    ``key`` the pattern, ``steps`` the bytes to send); the usual events of every write and
    delete made through its public methods.
    """
    if source is destination:
        raise ValueError("sync needs two different stores")
    for name, store in (("source", source), ("destination", destination)):
        if not isinstance(store, AbstractStore):
            raise TypeError(f"{name} must be a store, not {type(store).__name__}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive int, not {workers!r}")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries must be an int >= 0, not {retries!r}")
    if not isinstance(pattern, str):
        raise TypeError(f"pattern must be a str, not {type(pattern).__name__}")
    path = os.fspath(state) if state is not None else None
    return _Sync(source, destination, pattern, delete=delete, workers=workers, retries=retries, state=path,
                 dry_run=dry_run, backoff=backoff if backoff is not None else Backoff(),
                 buffer_size=buffer_size).run()
