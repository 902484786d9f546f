"""The store's files: staging values in temporary files, writing files whole, reading values
through shared descriptors, and the walk that finds every key's files (for ``reindex``)."""

from __future__ import annotations

import errno
import io
import itertools
import json
import logging
import os
import uuid
import zlib
from collections.abc import Callable
from typing import Any

from ..._keys import DATA_SUFFIX, METADATA_SUFFIX, check_key, relpath_to_key, split_suffix
from ...base import ProgressReader, Value
from ...errors import DiskFullError, InvalidKeyError, ReadOnlyError, StoreError

log = logging.getLogger("kvstore.filesystem")

INTERNAL_DIR = ".kvstore"  # the store's own files: index, lock, temporary files

# What the walk finds of one key: (key, metadata, created, modified, recorded path or None,
# the data when small enough to be kept in the index).
ScannedKey = tuple[str, dict[str, Any], float, float, str | None, bytes | None]


# ------------------------------------------------------------------ errors

_FULL = (errno.ENOSPC, errno.EDQUOT)


def store_error(exc: OSError, what: str) -> StoreError:
    """The StoreError for ``exc`` met while doing ``what`` (chain it: ``raise ... from exc``):
    :class:`DiskFullError` for a full disk or quota, :class:`ReadOnlyError` for read-only
    media, else a plain :class:`StoreError` naming the cause."""
    reason = exc.strerror or str(exc)
    if exc.errno in _FULL:
        return DiskFullError(f"{what}: the disk is full ({reason})")
    if exc.errno == errno.EROFS:
        return ReadOnlyError(f"{what}: the filesystem is read-only ({reason})")
    name = f" {exc.filename}" if exc.filename else ""
    return StoreError(f"{what}: {type(exc).__name__}{name}: {reason}")


# ------------------------------------------------------------------ writing


def put_file(path: str, payload: bytes, durable: bool) -> None:
    """Write ``payload`` over the file at ``path`` in place (made if missing)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        write_all(fd, payload)
        # Cut off the rest of a longer old content (a stat costs a third of a truncate).
        if os.fstat(fd).st_size > len(payload):
            os.ftruncate(fd, len(payload))
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    done = os.write(fd, data)
    if done < len(data):
        view = memoryview(data)[done:]
        while view:
            view = view[os.write(fd, view):]


# The ioctl that shares a file's extents with another (Linux FICLONE: btrfs, XFS, ...).
FICLONE = 0x40049409
# errnos that mean "the kernel cannot copy between these two files": try the next way.
_NO_KERNEL_COPY = (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF, errno.ENOTTY,
                   errno.EPERM)


def kernel_copy(src: int, dst: int, size: int, advance: Callable[[int], None], chunk: int) -> str:
    """Copy the first ``size`` bytes of file ``src`` into the empty file ``dst`` without them
    passing through Python where the kernel can: ``copy_file_range`` (which itself shares
    extents on filesystems that can), else a reflink (``FICLONE``), else a plain copy.
    ``advance(n)`` is told of each chunk. Returns the way used: ``"copy_file_range"``,
    ``"reflink"`` or ``"read"``.
    """
    pos = 0
    try:
        while pos < size:
            n = os.copy_file_range(src, dst, min(chunk, size - pos), pos, pos)
            if n == 0:
                break
            pos += n
            advance(n)
        return "copy_file_range"
    except OSError as exc:
        if pos or exc.errno not in _NO_KERNEL_COPY:
            raise
    try:
        import fcntl
        fcntl.ioctl(dst, FICLONE, src)
        advance(size)
        return "reflink"
    except (OSError, ImportError) as exc:
        if isinstance(exc, OSError) and exc.errno not in _NO_KERNEL_COPY:
            raise
    while pos < size:
        data = os.pread(src, min(chunk, size - pos), pos)
        if not data:
            break
        write_all(dst, data)
        pos += len(data)
        advance(len(data))
    return "read"


def crc32_of_fd(fd: int, chunk: int = 1 << 20) -> int:
    """The CRC-32 of the whole file open on ``fd`` (read with pread: its offset is kept)."""
    crc, offset = 0, 0
    while True:
        data = os.pread(fd, chunk, offset)
        if not data:
            return crc
        crc = zlib.crc32(data, crc)
        offset += len(data)


def unlink(path: str | None) -> None:
    """Remove the file at ``path`` if there is one (nothing when ``path`` is None)."""
    if path:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def unlink_quietly(path: str) -> None:
    """Remove the file at ``path``, ignoring every error (a clean-up after a failure)."""
    try:
        os.unlink(path)
    except OSError:
        pass


def fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def prune_dirs(root: str, directory: str) -> None:
    """Remove directories left empty by a delete, up to (not including) ``root``."""
    while len(directory) > len(root) and directory.startswith(root + os.sep):
        try:
            os.rmdir(directory)
        except OSError:
            return
        directory = os.path.dirname(directory)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError as exc:
        return exc.errno != errno.ESRCH
    return True


class TempFiles:
    """Temporary files in ``directory``, each named once: where a big value is staged before
    the commit that renames it into place."""

    def __init__(self, directory: str, durable: bool) -> None:
        self.directory = directory
        self.durable = durable
        self._counter = itertools.count()
        self._token = uuid.uuid4().hex[:12]

    def name(self, suffix: str) -> str:
        # pid first: clean() removes the files of dead processes; the instance token
        # keeps two instances of one process apart. Names are never reused.
        return os.path.join(self.directory, f"{os.getpid()}-{self._token}-{next(self._counter)}{suffix}")

    def new(self, fill: Callable[[int], None]) -> str:
        """A new temporary file filled by ``fill(fd)``; removed again if that fails."""
        path = self.name(".part")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            fill(fd)
            if self.durable:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            unlink(path)
            raise
        os.close(fd)
        return path

    def take(self, source: ProgressReader, inline_max: int) -> tuple[bytes | None, str | None, int | None]:
        """(bytes, None, None) for a value of ``inline_max`` bytes or less, read into memory;
        else (None, the temporary file it was streamed to, the CRC-32 of its bytes)."""
        head = b""
        if source.steps <= inline_max:  # small, or of unknown size: read to find out
            chunks: list[bytes] = []
            size = 0
            while size <= inline_max:
                chunk = source.read(source.buffer_size)
                if not chunk:
                    return b"".join(chunks), None, None
                chunks.append(chunk)
                size += len(chunk)
            head = b"".join(chunks)
        return (None, *self.stage(source, head))

    def stage(self, source: ProgressReader, head: bytes) -> tuple[str, int]:
        """(a temporary file holding ``head`` and then the rest of ``source``, the CRC-32 of
        its bytes)."""
        crc = [zlib.crc32(head)]

        def fill(fd: int) -> None:
            write_all(fd, head)
            # A regular file is copied by the kernel, then its copy read back (from the page
            # cache) for the CRC; anything else is read in chunks, the CRC taken on the way.
            if source.copy_to_fd(fd):
                crc[0] = crc32_of_fd(fd)
                return
            while True:
                chunk = source.read(source.buffer_size)
                if not chunk:
                    return
                crc[0] = zlib.crc32(chunk, crc[0])
                write_all(fd, chunk)

        return self.new(fill), crc[0]

    def clean(self) -> None:
        """Remove temporary files left by processes that died before committing."""
        for name in os.listdir(self.directory):
            pid_text = name.split("-", 1)[0]
            if pid_text.isdigit() and int(pid_text) != os.getpid() and not pid_alive(int(pid_text)):
                unlink(os.path.join(self.directory, name))


# ------------------------------------------------------------------ reading


class _Fd:
    """An open file descriptor shared by a Value and its streams; closed when all are gone."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __del__(self) -> None:
        os.close(self.fd)


class RangeReader(io.RawIOBase):
    """Reads ``[start, end)`` of a shared descriptor with pread: independent positions."""

    def __init__(self, fd: _Fd, start: int, end: int) -> None:
        super().__init__()
        self._fd = fd
        self._start = start
        self._pos = start
        self._end = end

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos - self._start

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: self._start, 1: self._pos, 2: self._end}[whence]
        self._pos = max(self._start, base + offset)
        return self._pos - self._start

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self._end - self._pos)
        if n <= 0:
            return 0
        view = memoryview(buffer).cast("B")[:n]
        got = os.preadv(self._fd.fd, [view], self._pos)
        self._pos += got
        return got

    def copy_to_fd(self, fd: int, advance: Any, chunk: int) -> None:
        """Copy the rest of the range into ``fd`` in the kernel, ``advance(n)`` per chunk."""
        while self._pos < self._end:
            n = os.copy_file_range(self._fd.fd, fd, min(chunk, self._end - self._pos), self._pos)
            if n == 0:
                return
            self._pos += n
            advance(n)

    def read(self, size: int | None = -1) -> bytes:
        if self.closed:
            raise ValueError("read of closed file")
        n = self._end - self._pos if size is None or size < 0 else min(size, self._end - self._pos)
        if n <= 0:
            return b""
        data = os.pread(self._fd.fd, n, self._pos)
        self._pos += len(data)
        return data

    def readall(self) -> bytes:
        return self.read(-1)


def fd_value(fd: int, size: int, metadata: Any, created: float, modified: float,
             revision: int | None = None) -> Value:
    """A Value reading an open descriptor; ``metadata`` is a dict or its JSON text."""
    holder = _Fd(fd)
    text = metadata if isinstance(metadata, str) else json.dumps(metadata)
    return Value(size=size, metadata_json=text, created=created, modified=modified, revision=revision,
                 opener=lambda start, end: io.BufferedReader(RangeReader(holder, start, end), 1 << 16))


def bytes_value(data: bytes, metadata_json: str, created: float, modified: float,
                revision: int | None = None) -> Value:
    return Value(size=len(data), metadata_json=metadata_json, created=created, modified=modified,
                 revision=revision, opener=lambda start, end: io.BytesIO(data[start:end]))


def read_json(path: str) -> dict[str, Any]:
    with open(path, "rb") as f:
        return json.loads(f.read() or b"{}")


# ------------------------------------------------------------------ the walk


def _read_key_files(full: str, inline_max: int) -> tuple[dict[str, Any], float, bytes | None]:
    """(metadata, mtime, data if small) of the data file ``full`` and its metadata file."""
    try:
        metadata = read_json(full[: -len(DATA_SUFFIX)] + METADATA_SUFFIX)
    except FileNotFoundError:
        metadata = {}
    except ValueError:
        log.warning("%s has invalid JSON metadata; indexing it as {}", full)
        metadata = {}
    if not isinstance(metadata, dict):
        metadata = {}
    st = os.stat(full)
    data = None
    if st.st_size <= inline_max:
        with open(full, "rb") as f:
            data = f.read()
    return metadata, st.st_mtime, data


def scan(root: str, inline_max: int) -> list[ScannedKey]:
    """What every key's files under ``root`` hold (see :data:`ScannedKey`).

    A file whose name is not a key's canonical name was written by another tool
    (encore names files after raw keys): its key is its name, and the index records
    the path so the key is read and written where it is.
    """
    found: dict[str, ScannedKey] = {}
    legacy: list[ScannedKey] = []
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath == root:
            dirnames[:] = [d for d in dirnames if d != INTERNAL_DIR]
        for name in filenames:
            stem, suffix = split_suffix(name)
            if suffix != DATA_SUFFIX:
                continue
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(os.path.join(dirpath, stem), root).replace(os.sep, "/")
            metadata, mtime, data = _read_key_files(full, inline_max)
            key = relpath_to_key(rel)
            if key is not None:
                found[key] = (key, metadata, mtime, mtime, None, data)
            else:
                legacy.append((rel, metadata, mtime, mtime, rel, data))
    for entry in legacy:
        try:
            check_key(entry[0])
        except InvalidKeyError:
            log.warning("skipping %s: its name is not a valid key", entry[0])
            continue
        if entry[0] in found:
            log.warning("skipping %s: the key is also stored under its canonical name", entry[0])
            continue
        found[entry[0]] = entry
    return list(found.values())


class SpaceReserve:
    """A file of ``size`` bytes kept allocated in ``.kvstore/`` so that a delete can still
    commit on a full disk (its SQLite commit needs a few pages): released to let it through,
    made again when there is room."""

    def __init__(self, path: str, size: int) -> None:
        self.path = path
        self.size = size

    def make(self) -> None:
        """Allocate the reserve if it is missing (quietly nothing when there is no room)."""
        if self.size <= 0 or os.path.exists(self.path):
            return
        tmp = self.path + ".part"
        try:
            st = os.statvfs(os.path.dirname(self.path))
            if st.f_bavail * st.f_frsize < 4 * self.size:
                return  # not while space is short: the deletes freeing it need it more

            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.posix_fallocate(fd, 0, self.size)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except OSError:
            unlink_quietly(tmp)

    def release(self) -> bool:
        """Free the reserve; whether there was one."""
        try:
            os.unlink(self.path)
        except OSError:
            return False
        return True
