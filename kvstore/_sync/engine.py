"""The run of :func:`kvstore.sync`: compare every key, send those that differ, delete the
extra ones (see :mod:`kvstore._sync` for the steps)."""

from __future__ import annotations

import concurrent.futures
import os
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple, TypeVar, Union

from .._checksum import Crc32, KeyStat
from .._progress import _Progress
from .._retry import Backoff
from ..base import DEFAULT_BUFFER_SIZE, AbstractStore
from ..errors import ChecksumError
from .._keys import canonical
from .compare import Plan, verdict
from .report import SyncReport
from .state import StateFile, describe, fingerprint, same_source
from .workers import Failed, SourceReader, Stopped, Vanished, attempt, crc_checksum, each

__all__ = ["sync"]

_T = TypeVar("_T")


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
        self.state = StateFile(state, describe(source), describe(destination), writable=not dry_run)
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._hashed: Dict[str, None] = {}
        self._progress: Optional[_Progress] = None
        self._planned: Dict[str, int] = {}
        self._shown: Dict[str, int] = {}
        # keys are copied by the destination's service itself (two S3Stores of one service)
        self.server_side = destination._can_copy_from(source)
        # key -> (size, token) from one listing of the destination; None: stat() per key
        self.listing: Optional[Dict[str, Tuple[int, str]]] = None
        # keys whose write was checked against what the destination's commit said it wrote:
        # key -> ((size, token) a listing must show, attempts so far, its plan)
        self._unconfirmed: Dict[str, Tuple[Tuple[int, str], int, Plan]] = {}
        self._sent: Dict[str, int] = {}
        # the source's stat of each key, taken while the destination is listed
        self._stats: Dict[str, KeyStat] = {}

    # ------------------------------------------------------------ outcome bookkeeping

    def _outcome(self, key: str, state: str, *, attempts: Optional[int] = None, message: Optional[str] = None,
                 source: Optional[Dict[str, Any]] = None, nbytes: int = 0, token: Optional[str] = None) -> None:
        with self._lock:
            if state == "done":
                self.report.done.append(key)
                self.report.bytes += nbytes
                self._sent[key] = nbytes
            elif state == "skipped":
                self.report.skipped.append(key)
            elif state == "failed":
                self.report.failed.append(key)
                self.report.errors[key] = message or "failed"
            elif state == "deleted":
                self.report.deleted.append(key)
        self.state.set(key, state, attempts=attempts, message=message, source=source, destination=token)

    def _retract(self, key: str) -> None:
        """Take back the ``done`` of ``key`` (its write is to be made again)."""
        with self._lock:
            self.report.done.remove(key)
            self.report.bytes -= self._sent.pop(key, 0)

    def _attempts(self, key: str, operation: Callable[[], _T], tried: int = 0) -> Tuple[_T, int]:
        """``operation`` with the attempts left after ``tried``; the attempts made in all."""
        try:
            result, attempts = attempt(operation, self.retries - tried, self.backoff, self.stop)
        except Failed as failure:
            failure.attempts += tried
            raise
        return result, attempts + tried

    def _hash(self, store: AbstractStore, key: str) -> str:
        """Read the data of ``key`` to compute its checksum (the cost the module docstring
        speaks of): KeyError when it is missing."""
        with self._lock:
            self._hashed[key] = None
        crc = Crc32()
        with store.get_data(key) as stream:
            while True:
                if self.stop.is_set():
                    raise Stopped()
                chunk = stream.read(self.buffer_size)
                if not chunk:
                    break
                crc.update(chunk)
        return crc.text()

    # ------------------------------------------------------------ step 1: compare

    def _known(self, key: str, ours: KeyStat) -> Optional[Tuple[str, KeyStat, Optional[str]]]:
        """The verdict on ``key`` that needs no request: with a listing of the destination, a
        key it lacks (or lists with another size) is to be sent, and one the state file
        recorded with the token the listing shows, its source unchanged, is skipped; without
        a listing a key recorded with an unchanged source is skipped unlooked-at. None: the
        destination is to be asked."""
        listing = self.listing
        listed = listing.get(key) if listing is not None else None
        recorded = self.state.get(key)
        if recorded is not None and recorded.get("state") in ("done", "skipped") and \
                same_source(recorded.get("source"), self._fingerprint_of(ours)):
            if listing is None:
                return "resumed", ours, recorded.get("destination")
            if listed is not None and listed == (ours.size, recorded.get("destination")):
                return "resumed", ours, listed[1]
        if listing is not None and (listed is None or listed[0] != ours.size):
            return ("fresh" if listed is None else "send"), ours, None
        return None

    def _compare_known(self, keys: List[str]) -> Tuple[List[Plan], List[str]]:
        """The plans of the keys whose source stat was taken and whose verdict needs no
        request (their outcomes recorded), decided here without the pool's hand-offs; and
        the keys left for :meth:`_compare`."""
        plans: List[Plan] = []
        rest: List[str] = []
        for key in keys:
            ours = self._stats.get(key)
            known = self._known(key, ours) if ours is not None else None
            if known is None:
                rest.append(key)
                continue
            del self._stats[key]
            plan = self._settle(key, *known, attempts=1)
            if plan is not None:
                plans.append(plan)
        return plans, rest

    def _compare(self, key: str) -> Optional[Plan]:
        """None when the key is to be left alone (its outcome recorded), else its plan."""
        def look() -> Tuple[str, KeyStat, Optional[str]]:
            ours = self._stats.pop(key, None)  # the first attempt's, taken during the listing
            if ours is None:
                try:
                    ours = self.source.stat(key)
                except KeyError:
                    raise Vanished() from None
            known = self._known(key, ours)
            if known is not None:
                return known
            try:
                theirs: Optional[KeyStat] = self.destination.stat(key)
            except KeyError:
                theirs = None
            return verdict(ours, theirs, lambda: self._hash(self.source, key),
                           lambda: self._hash(self.destination, key), self.dry_run), ours, \
                theirs.token if theirs is not None else None

        try:
            (kind, found, token), attempts = self._attempts(key, look)
        except Vanished:
            self._outcome(key, "skipped", message="vanished from the source")
            return None
        except Failed as failure:
            self._outcome(key, "failed", attempts=failure.attempts, message=failure.message)
            return None
        return self._settle(key, kind, found, token, attempts)

    def _settle(self, key: str, kind: str, found: KeyStat, token: Optional[str], attempts: int) -> Optional[Plan]:
        """Record the outcome of a key to leave alone (None), or its plan."""
        if kind in ("skip", "resumed"):
            self._outcome(key, "skipped", attempts=attempts, source=self._fingerprint_of(found), token=token)
            return None
        fresh = kind == "fresh"
        if fresh:
            kind = "send"
        if self.dry_run:
            self._outcome(key, "done", nbytes=0)
            with self._lock:
                self.report.total_bytes += found.size if kind == "send" else 0
            return None
        self.state.set(key, "pending")
        return Plan(key, kind, found, fresh)

    @staticmethod
    def _fingerprint_of(found: KeyStat) -> Dict[str, Any]:
        return fingerprint(found.size, crc_checksum(found.checksum), found.metadata, found.modified)

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

    def _transfer(self, plan: Plan, tried: int = 0) -> None:
        """Send ``plan``'s key, with the attempts left after ``tried``."""
        key = plan.key
        hint = [plan.fresh and not tried]  # only the first write is hinted as a new key's
        written: List[Optional[KeyStat]] = [None]  # what the last write's commit said it wrote

        def write(operation: Callable[[], None]) -> None:
            destination = self.destination
            destination._written_stat(key)  # nothing left from an earlier write
            if hint[0]:
                hint[0] = False
                destination._expect_new(key)
            operation()
            written[0] = destination._written_stat(key)

        def send() -> Tuple[int, Dict[str, Any], Optional[str]]:
            try:
                value = self.source.get(key)
            except KeyError:
                raise Vanished() from None
            reader = SourceReader(value.data, lambda n: self._advance(key, n), self.stop)
            metadata = value.metadata
            try:
                write(lambda: self.destination.set(key, (reader, metadata), self.buffer_size))
            except KeyError:
                raise Vanished() from None  # the source's stream found its key gone
            if reader.crc.size != value.size:
                raise ChecksumError(f"{key!r}: read {reader.crc.size} bytes from the source, "
                                    f"its size is {value.size}")
            token = self._verify(key, reader.crc.size, reader.crc.text(), metadata, written[0])
            return reader.crc.size, fingerprint(reader.crc.size, reader.crc.text(), metadata, value.modified), token

        def send_metadata() -> Tuple[int, Dict[str, Any], Optional[str]]:
            try:
                now = self.source.stat(key)
            except KeyError:
                raise Vanished() from None
            if now.size != plan.stat.size or now.checksum != plan.stat.checksum:
                return send()  # the source's data changed since it was compared
            write(lambda: self.destination.set_metadata(key, now.metadata))
            theirs = written[0] if written[0] is not None else self.destination.stat(key)
            if canonical(theirs.metadata) != canonical(now.metadata):
                raise ChecksumError(f"{key!r}: the destination's metadata is not the source's after the write")
            return 0, self._fingerprint_of(now), self._confirm_later(key, theirs, written[0] is theirs)

        def copy() -> Tuple[int, Dict[str, Any], Optional[str]]:
            try:
                write(lambda: self.destination._copy_in(self.source, key, key, self.buffer_size))
                now = self.source.stat(key)
            except KeyError:
                raise Vanished() from None
            checksum = crc_checksum(now.checksum)
            if checksum is None:  # a foreign object: no CRC-32 to check the copy against
                return send()
            token = self._verify(key, now.size, checksum, now.metadata, written[0])
            self._advance(key, now.size)
            return now.size, self._fingerprint_of(now), token

        operation = send_metadata if plan.kind == "metadata" else copy if self.server_side else send
        self.state.set(key, "transferring")
        try:
            (nbytes, seen, token), attempts = self._attempts(key, operation, tried)
        except Vanished:
            self._outcome(key, "skipped", message="vanished from the source")
        except Failed as failure:
            self._outcome(key, "failed", attempts=failure.attempts, message=failure.message)
        else:
            with self._lock:
                entry = self._unconfirmed.get(key)
                if entry is not None:  # the listing's check counts as one more attempt
                    self._unconfirmed[key] = (entry[0], attempts, plan)
            self._outcome(key, "done", attempts=attempts, source=seen, nbytes=nbytes, token=token)
        self._advance(key, self._planned.get(key, 0))  # whatever happened, this key is over

    def _confirm_later(self, key: str, theirs: KeyStat, from_commit: bool) -> Optional[str]:
        """``theirs``' token; a stat the destination's commit gave (``from_commit``) is
        to be confirmed by the listing after the transfers (:meth:`_confirm`)."""
        if from_commit and theirs.token is not None and self.listing is not None:
            with self._lock:
                self._unconfirmed[key] = ((theirs.size, theirs.token), 0, Plan(key, "send", theirs))
        else:
            with self._lock:
                self._unconfirmed.pop(key, None)
        return theirs.token

    def _confirm(self, pool: concurrent.futures.ThreadPoolExecutor) -> None:
        """Check the writes that were verified from their commits against one listing of the
        destination (its own word, as a stat would give it, for all keys at once): a key it
        shows otherwise (overwritten meanwhile, its data object not of its size) is sent
        again, as a failed attempt."""
        while self._unconfirmed and not self.stop.is_set():
            unconfirmed, self._unconfirmed = self._unconfirmed, {}
            listing = self.destination._sync_listing(self.pattern) or {}
            again = []
            for key, (seen, attempts, plan) in sorted(unconfirmed.items()):
                if listing.get(key) == seen:
                    continue
                self._retract(key)
                message = (f"ChecksumError: {key!r}: the destination does not hold what was written "
                           f"(listed {listing.get(key)}, written {seen})")
                if attempts > self.retries:
                    self._outcome(key, "failed", attempts=attempts, message=message)
                else:
                    self.state.set(key, "pending", attempts=attempts, message=message)
                    again.append((plan, attempts))
            each(pool, self.stop, lambda item: self._transfer(*item), again)

    def _verify(self, key: str, size: int, checksum: str, metadata: Dict[str, Any],
                written: Optional[KeyStat] = None) -> Optional[str]:
        """The destination holds what was sent: size, metadata and checksum, as its stat
        says, or as its commit said (``written``: confirmed by a listing at the end). The
        destination's token of the key."""
        try:
            theirs = written if written is not None else self.destination.stat(key)
        except KeyError:
            raise ChecksumError(f"{key!r} is missing from the destination after its write") from None
        if theirs.size != size:
            raise ChecksumError(f"{key!r}: the destination holds {theirs.size} bytes, {size} were sent")
        if canonical(theirs.metadata) != canonical(metadata):
            raise ChecksumError(f"{key!r}: the destination's metadata is not the source's after the write")
        stored = crc_checksum(theirs.checksum)
        if stored is None:
            stored = self._hash(self.destination, key)
        if stored != checksum:
            raise ChecksumError(f"{key!r}: the destination's data does not match the source's "
                                f"({stored} != {checksum})")
        return self._confirm_later(key, theirs, written is not None)

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
        except Failed as failure:
            self._outcome(key, "failed", attempts=failure.attempts, message=failure.message)
            return
        self._outcome(key, "deleted" if removed else "skipped", attempts=attempts)

    # ------------------------------------------------------------ driving the workers

    def _list_while_stating(self, pool: concurrent.futures.ThreadPoolExecutor,
                            keys: List[str]) -> Optional[Dict[str, Tuple[int, str]]]:
        """The destination's listing, taken in this thread (Ctrl-C stops it at once) while
        the workers stat the source's keys (kept in ``_stats`` for the compare): the two
        wait on different stores."""
        def stat(key: str) -> None:
            if self.stop.is_set():
                return
            try:
                self._stats[key] = self.source.stat(key)
            except Exception:  # noqa: S110 - the compare stats it again, with its retries
                pass

        stats = [pool.submit(stat, key) for key in keys]
        listing = self.destination._sync_listing(self.pattern)
        concurrent.futures.wait(stats)
        return listing

    def run(self) -> SyncReport:
        started = time.monotonic()
        keys = sorted(self.source.glob(self.pattern))
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="kvstore-sync")
        progress: Optional[_Progress] = None
        try:
            self.listing = self._list_while_stating(pool, keys)
            plans, rest = self._compare_known(keys)
            plans += [p for p in each(pool, self.stop, self._compare, rest) if p is not None]
            plans.sort(key=lambda p: p.key)
            total = sum(p.stat.size for p in plans if p.kind == "send")
            self._planned = {p.key: p.stat.size for p in plans if p.kind == "send"}
            if not self.dry_run:
                self.report.total_bytes = total
                progress = self._progress = _Progress(self.destination, self.pattern, "sync", total)
            each(pool, self.stop, self._transfer, plans)
            self._confirm(pool)
            if self.delete:
                present = set(keys)
                extra = [k for k in sorted(self.destination.glob(self.pattern)) if k not in present]
                each(pool, self.stop, self._delete, extra)
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
