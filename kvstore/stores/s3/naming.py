"""Object naming: which S3 objects hold a key, and which keys a listing's names are.

``<prefix><key_to_relpath(key)>.data`` / ``.metadata``, the filesystem store's layout and
escaping (``kvstore._keys``); a key whose metadata object's name would pass S3's 1024 bytes
is stored as ``<prefix>.kvstore/long/<sha256 of the key>.data`` / ``.metadata``, the key
itself in the metadata object's ``kvstore-key`` header (URL-safe base64). No escaped name
starts with ``.``, so ``<prefix>.kvstore/`` never holds a key's own objects.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib

from ..._keys import DATA_SUFFIX, METADATA_SUFFIX, key_to_relpath, relpath_to_key

__all__ = ["MAX_OBJECT_NAME", "LONG_DIR", "ObjectNames", "Naming"]

MAX_OBJECT_NAME = 1024  # bytes, S3's limit
LONG_DIR = ".kvstore/long/"
_SHA256_HEX = 64


@dataclasses.dataclass(frozen=True)
class ObjectNames:
    """The two objects of one key."""

    data: str
    metadata: str
    is_long: bool  # named by the key's hash: the metadata object carries the key


def _escaped_prefix(text: str) -> str:
    """The escaped form (without the leading '%') that starts every escaped key component
    beginning with ``text``: escaping works character by character, so it is the escaped
    form of ``text`` followed by a character that is always escaped."""
    rel = key_to_relpath(text + "\x00")
    if "/" in rel or not rel.endswith("%00"):  # long enough to be split: no narrower prefix
        return ""
    return rel[1:-3]


def encode_long_key(key: str) -> str:
    """The ``kvstore-key`` header of a long key's metadata object."""
    return base64.urlsafe_b64encode(key.encode("utf-8")).decode("ascii")


def decode_long_key(text: str) -> str | None:
    try:
        return base64.urlsafe_b64decode(text).decode("utf-8")
    except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
        return None


class Naming:
    """The object names of the keys of a store under ``prefix``.

    ``prefix``: ``"a/b"`` means ``"a/b/"`` (so the stores on ``team/a`` and ``team/ab`` never
    see each other's keys); ``""`` is the whole bucket.

    Raises
    ------
    TypeError : ``prefix`` is not a str.
    ValueError : it holds NUL, or leaves no room for a long key's names.
    """

    def __init__(self, prefix: str) -> None:
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, not {type(prefix).__name__}")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        if "\x00" in prefix:
            raise ValueError("an S3 prefix must not contain NUL")
        if len(prefix.encode("utf-8")) + len(LONG_DIR) + _SHA256_HEX + len(METADATA_SUFFIX) > MAX_OBJECT_NAME:
            raise ValueError(f"the prefix {prefix!r} is too long for S3 object names")
        self.prefix = prefix
        self.long_area = prefix + LONG_DIR

    def names(self, key: str) -> ObjectNames:
        base = self.prefix + key_to_relpath(key)
        if len(base.encode("utf-8")) + len(METADATA_SUFFIX) > MAX_OBJECT_NAME:
            base = self.long_area + hashlib.sha256(key.encode("utf-8")).hexdigest()
            return ObjectNames(base + DATA_SUFFIX, base + METADATA_SUFFIX, True)
        return ObjectNames(base + DATA_SUFFIX, base + METADATA_SUFFIX, False)

    def list_prefixes(self, prefix: str) -> list[str]:
        """S3 prefixes under which every key starting with ``prefix`` is stored (the long-key
        area aside)."""
        cut = prefix.rfind("/") + 1
        head, partial = prefix[:cut], prefix[cut:]
        base = self.prefix + (key_to_relpath(head + "x")[:-1] if head else "")
        if not partial:
            return [base]
        # The component that starts with `partial` is written as it is (plain), escaped
        # behind "%", or escaped and cut into "~" segments.
        escaped = _escaped_prefix(partial)
        prefixes = [base + "%" + escaped, base + "~" + escaped[:190]]
        if key_to_relpath(partial) == partial:
            prefixes.insert(0, base + partial)
        return prefixes

    def is_metadata(self, name: str) -> bool:
        return name.endswith(METADATA_SUFFIX)

    def is_long(self, name: str) -> bool:
        return name.startswith(self.long_area)

    def key_of(self, name: str) -> str | None:
        """The key whose metadata object is ``name`` (outside the long-key area), or None."""
        return relpath_to_key(name[len(self.prefix):-len(METADATA_SUFFIX)])

    def long_key_of(self, name: str, header: str | None) -> str | None:
        """The key named by the ``kvstore-key`` header of the long-key metadata object ``name``,
        if that key is indeed stored there."""
        key = decode_long_key(header) if header is not None else None
        return key if key is not None and self.names(key).metadata == name else None
