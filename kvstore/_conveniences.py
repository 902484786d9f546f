"""The conveniences of the store API built on its public methods: the ``multi*`` calls and
the file and bytes helpers (``to_file``, ``from_file``, ``to_bytes``, ``from_bytes``)."""

from __future__ import annotations

import contextlib
import io
import os
import stat
import uuid
from typing import TYPE_CHECKING, Any, BinaryIO, ContextManager, Dict, Iterable, List, Mapping, Optional, Union

from ._progress import _copy
from ._rules import check_if_revision
from ._value import DEFAULT_BUFFER_SIZE, Value, ValueLike

if TYPE_CHECKING:
    from ._progress import _Progress

__all__ = ["ConvenienceMixin"]


class ConvenienceMixin:
    """``multi*`` and the file and bytes helpers of :class:`~kvstore.base.AbstractStore`."""

    if TYPE_CHECKING:  # provided by AbstractStore
        def get(self, key: str) -> Value: ...

        def get_data(self, key: str) -> BinaryIO: ...

        def get_metadata(self, key: str, select: Optional[Iterable[str]] = None) -> Dict[str, Any]: ...

        def set(self, key: str, value: ValueLike, buffer_size: int = DEFAULT_BUFFER_SIZE) -> None: ...

        def set_data(self, key: str, data: Any, buffer_size: int = DEFAULT_BUFFER_SIZE) -> None: ...

        def set_metadata(self, key: str, metadata: Mapping[str, Any]) -> None: ...

        def update_metadata(self, key: str, metadata: Mapping[str, Any]) -> None: ...

        def _ready(self, key: Any = ...) -> None: ...

        def _ready_to_write(self, key: str) -> None: ...

        def _get(self, key: str) -> Value: ...

        def _progress(self, key: str, message: str, steps: int) -> ContextManager[_Progress]: ...

        def _write_stream(self, key: str, stream: Any, metadata: Optional[Dict[str, Any]],
                          buffer_size: int, message: str, if_revision: Optional[int] = None) -> None: ...

    # ------------------------------------------------------------ multi-key

    def multiget(self, keys: Iterable[str]) -> List[Value]:
        """``[get(k) for k in keys]``."""
        return [self.get(k) for k in keys]

    def multiget_data(self, keys: Iterable[str]) -> List[BinaryIO]:
        """``[get_data(k) for k in keys]``."""
        return [self.get_data(k) for k in keys]

    def multiget_metadata(self, keys: Iterable[str], select: Optional[Iterable[str]] = None) -> List[Dict[str, Any]]:
        """``[get_metadata(k, select) for k in keys]``."""
        select = None if select is None else list(select)
        return [self.get_metadata(k, select) for k in keys]

    def multiset(self, keys: Iterable[str], values: Iterable[ValueLike],
                 buffer_size: int = DEFAULT_BUFFER_SIZE) -> None:
        """``set`` each pair of ``zip(keys, values)``."""
        for key, value in zip(keys, values, strict=False):
            self.set(key, value, buffer_size)

    def multiset_data(self, keys: Iterable[str], datas: Iterable[Any],
                      buffer_size: int = DEFAULT_BUFFER_SIZE) -> None:
        """``set_data`` each pair of ``zip(keys, datas)``."""
        for key, data in zip(keys, datas, strict=False):
            self.set_data(key, data, buffer_size)

    def multiset_metadata(self, keys: Iterable[str], metadatas: Iterable[Mapping[str, Any]]) -> None:
        """``set_metadata`` each pair of ``zip(keys, metadatas)``."""
        for key, metadata in zip(keys, metadatas, strict=False):
            self.set_metadata(key, metadata)

    def multiupdate_metadata(self, keys: Iterable[str], metadatas: Iterable[Mapping[str, Any]]) -> None:
        """``update_metadata`` each pair of ``zip(keys, metadatas)``."""
        for key, metadata in zip(keys, metadatas, strict=False):
            self.update_metadata(key, metadata)

    # ------------------------------------------------------------ file helpers

    def to_file(self, key: str, path: Union[str, os.PathLike], buffer_size: int = DEFAULT_BUFFER_SIZE) -> None:
        """Write the key's data to the file ``path``, as ``cp`` does.

        A regular file (new or existing) is replaced atomically when complete and an existing
        one keeps its permissions; a symlink is written through (its target is replaced, the
        link stays); a FIFO or a device is opened and written in place, never replaced.

        Events: progress_start/step/end.
        """
        self._ready(key)
        value = self._get(key)
        target = os.path.realpath(os.fspath(path))
        try:
            existing: Optional[os.stat_result] = os.stat(target)
        except FileNotFoundError:
            existing = None
        with self._progress(key, "to_file", value.size) as progress:
            if existing is not None and not stat.S_ISREG(existing.st_mode):
                with value.data as src, open(target, "wb") as dst:
                    _copy(src, dst, buffer_size, progress)
                return
            tmp = f"{target}.{uuid.uuid4().hex[:8]}.part"
            try:
                with value.data as src, open(tmp, "wb") as dst:
                    if existing is not None:  # keep the file's permissions and, where allowed, owner
                        os.chmod(dst.fileno(), stat.S_IMODE(existing.st_mode))
                        with contextlib.suppress(PermissionError):
                            os.chown(dst.fileno(), existing.st_uid, existing.st_gid)
                    _copy(src, dst, buffer_size, progress)
                os.replace(tmp, target)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise

    def from_file(self, key: str, path: Union[str, os.PathLike], buffer_size: int = DEFAULT_BUFFER_SIZE, *,
                  if_revision: Optional[int] = None) -> None:
        """Store the contents of the file ``path`` as the key's data (``set_data``).

        ``if_revision`` as for ``set`` (ConflictError).

        Events: progress_start/step/end, then store_set or store_update.
        """
        self._ready_to_write(key)
        expected = check_if_revision(if_revision)
        with open(path, "rb") as stream:
            self._write_stream(key, stream, None, buffer_size, "from_file", expected)

    def to_bytes(self, key: str, buffer_size: int = DEFAULT_BUFFER_SIZE) -> bytes:
        """Return the key's data as bytes. Events: progress_start/step/end."""
        self._ready(key)
        value = self._get(key)
        out = io.BytesIO()
        with self._progress(key, "to_bytes", value.size) as progress:
            with value.data as src:
                _copy(src, out, buffer_size, progress)
        return out.getvalue()

    def from_bytes(self, key: str, data: bytes, buffer_size: int = DEFAULT_BUFFER_SIZE, *,
                   if_revision: Optional[int] = None) -> None:
        """Store ``data`` as the key's data (``set_data``).

        ``if_revision`` as for ``set`` (ConflictError).

        Events: progress_start/step/end, then store_set or store_update.
        """
        self._ready_to_write(key)
        expected = check_if_revision(if_revision)
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes, not {type(data).__name__}")
        self._write_stream(key, io.BytesIO(bytes(data)), None, buffer_size, "from_bytes", expected)

