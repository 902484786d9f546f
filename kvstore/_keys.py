"""Keys and metadata: validation, JSON normalisation, and the key <-> file-name mapping.

The mapping is shared by the filesystem and S3 layouts so that a copy of one is a valid
instance of the other.
"""

from __future__ import annotations

import json
import json.encoder
import math
import re
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Tuple

from .errors import InvalidKeyError

if TYPE_CHECKING:
    from .query import Criterion

MAX_KEY_LENGTH = 255
DATA_SUFFIX = ".data"
METADATA_SUFFIX = ".metadata"


def check_key(key: Any) -> str:
    """Return ``key`` if it is a valid key, else raise :class:`InvalidKeyError`."""
    if not isinstance(key, str):
        raise InvalidKeyError(f"a key must be a str, not {type(key).__name__}")
    if not key:
        raise InvalidKeyError("a key must not be empty")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidKeyError(f"a key must have at most {MAX_KEY_LENGTH} characters, not {len(key)}")
    if "\x00" in key:
        raise InvalidKeyError("a key must not contain NUL")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidKeyError("a key must be valid Unicode (no lone surrogates)") from None
    return key


#: How deep metadata may nest: the dict itself is level 1, each dict or list inside adds one.
MAX_METADATA_DEPTH = 100


def _check_names(value: Any, path: str, depth: int = 1) -> None:
    if isinstance(value, dict):
        if depth > MAX_METADATA_DEPTH:
            raise ValueError(f"metadata nests deeper than {MAX_METADATA_DEPTH} levels (at {path})")
        for name, item in value.items():
            if not isinstance(name, str):
                raise TypeError(f"metadata names must be str; {path or 'top level'} has {name!r}")
            _check_names(item, f"{path}.{name}" if path else name, depth + 1)
    elif isinstance(value, (list, tuple)):
        if depth > MAX_METADATA_DEPTH:
            raise ValueError(f"metadata nests deeper than {MAX_METADATA_DEPTH} levels (at {path})")
        for i, item in enumerate(value):
            _check_names(item, f"{path}[{i}]", depth + 1)


# Made once: json.dumps with any option builds a new encoder on every call.
_dump_strict = json.JSONEncoder(allow_nan=False, ensure_ascii=False).encode
dump_json = json.JSONEncoder(ensure_ascii=False).encode
"""``json.dumps(value, ensure_ascii=False)``, the form metadata is written in."""


def dump_metadata(metadata: Any) -> str:
    """Validate ``metadata`` and return its JSON text.

    Raises
    ------
    TypeError
        Not a dict, a non-str name at any level, or a value JSON cannot hold.
    ValueError
        NaN or infinity, a circular reference, or nesting deeper than
        ``MAX_METADATA_DEPTH`` (100) levels.
    """
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict, not {type(metadata).__name__}")
    # json.dumps rejects cycles, NaN/inf (allow_nan=False) and foreign objects; it would
    # quietly turn int or bool names into strings, so names are checked separately.
    _check_names(metadata, "")
    return _dump_strict(metadata)


def normalize_metadata(metadata: Any) -> Dict[str, Any]:
    """Validate ``metadata`` as :func:`dump_metadata` does (the same errors) and return a
    fresh copy of it as it will come back from the store: ``json.loads(dump_metadata(metadata))``.

    Every write's path: plain metadata (the built-in types JSON maps one to one) is checked
    and copied in one walk, several times cheaper than encoding and decoding it; anything
    else, errors included, takes the JSON round trip, which decides and words the error.
    """
    if type(metadata) is dict:
        try:
            return _copy_dict(metadata, 1)
        except _Unusual:
            pass
    return json.loads(dump_metadata(metadata))


class _Unusual(Exception):
    """Raised by the one-walk copy on what it does not know: the JSON round trip decides."""


# Types whose values json.loads(json.dumps(v)) gives back as they are (exact types only: a
# subclass may encode otherwise). ints beyond 64 bits are left to the round trip, which
# knows the interpreter's limit on digits; floats must be finite.
_KEPT = frozenset({str, bool, type(None)})
_INT_LIMIT = 1 << 64


def _copy_dict(value: Dict[Any, Any], depth: int) -> Dict[str, Any]:
    # What a JSON round trip gives: the same names in the same order (str names cannot
    # collide), a tuple as a list, every container new; _check_names's depth rule (a cycle
    # ends there too).
    if depth > MAX_METADATA_DEPTH:
        raise _Unusual
    out = {}
    for name, item in value.items():
        if type(name) is not str:
            raise _Unusual
        kind = type(item)
        if kind in _KEPT:
            out[name] = item
        elif kind is int:
            if not -_INT_LIMIT < item < _INT_LIMIT:
                raise _Unusual
            out[name] = item
        elif kind is float:
            if item - item != 0.0:  # NaN or an infinity
                raise _Unusual
            out[name] = item
        elif kind is dict:
            out[name] = _copy_dict(item, depth + 1)
        elif kind is list or kind is tuple:
            out[name] = _copy_list(item, depth + 1)
        else:
            raise _Unusual
    return out


def _copy_list(value: Any, depth: int) -> List[Any]:
    if depth > MAX_METADATA_DEPTH:
        raise _Unusual
    out = []
    for item in value:
        kind = type(item)
        if kind in _KEPT:
            out.append(item)
        elif kind is int:
            if not -_INT_LIMIT < item < _INT_LIMIT:
                raise _Unusual
            out.append(item)
        elif kind is float:
            if item - item != 0.0:
                raise _Unusual
            out.append(item)
        elif kind is dict:
            out.append(_copy_dict(item, depth + 1))
        elif kind is list or kind is tuple:
            out.append(_copy_list(item, depth + 1))
        else:
            raise _Unusual
    return out


def canonical(value: Any) -> str:
    """JSON text such that two values are JSON-equal exactly when their texts are equal.

    Integral floats are written as integers (``1.0`` like ``1``); booleans stay ``true`` /
    ``false`` and so never equal a number; object names are sorted.
    """
    # Scalars, the common case, without a full json.dumps (it is on every write's path).
    kind = type(value)
    if kind is str:
        return _encode_str(value)
    if kind is int:
        return int.__repr__(value)
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    return json.dumps(_canon(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


_encode_str = json.encoder.encode_basestring  # type: ignore[attr-defined]


def _canon(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, float):
        if math.isfinite(value) and value == int(value):
            return int(value)
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, dict):
        return {k: _canon(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canon(v) for v in value]
    return value


def criteria_of(kwargs: Mapping[str, Any]) -> Dict[str, Criterion]:
    """Validate query keywords and return them as ``{name: criterion}``.

    A plain value becomes ``kvstore.query.eq(value)`` (whose ``text`` is its canonical JSON);
    an operator of :mod:`kvstore.query` stays as it is.

    Raises
    ------
    TypeError
        A value JSON cannot hold, or an operator object kvstore does not know.
    ValueError
        NaN, infinity or a cycle in a plain value.
    """
    # kvstore.query builds on this module's JSON rules, so it is imported here, not at the top.
    from .query import criterion

    result = {}
    for name, value in kwargs.items():
        try:
            result[name] = criterion(value)
        except (TypeError, ValueError) as exc:
            kind = TypeError if isinstance(exc, TypeError) else ValueError
            raise kind(f"query criterion {name!r}: {exc}") from None
    return result


def matches(metadata: Mapping[str, Any], criteria: Mapping[str, Criterion]) -> bool:
    """True when every criterion of ``criteria`` (see :func:`criteria_of`) holds for ``metadata``."""
    for name, crit in criteria.items():
        text = crit.text  # plain equality, the common case, without a call
        if name in metadata:
            if text is not None:
                if canonical(metadata[name]) != text:
                    return False
            elif not crit.holds(True, metadata[name]):
                return False
        elif not crit.holds(False):
            return False
    return True


def select_names(metadata: Dict[str, Any], select: Optional[Any]) -> Dict[str, Any]:
    """Keep only the names in ``select`` that are present (all when ``select`` is None)."""
    if select is None:
        return metadata
    if isinstance(select, str):
        select = [select]
    return {name: metadata[name] for name in select if name in metadata}


def literal_prefix(pattern: str) -> str:
    """The part of an fnmatch pattern before its first wildcard."""
    m = re.search(r"[*?\[]", pattern)
    return pattern if m is None else pattern[: m.start()]


# ---------------------------------------------------------------------------
# key <-> relative path
#
# A key is split on "/" into components; each component becomes one path segment.
# A component made of safe characters is written as it is (so "images/cat.png" is
# "images/cat.png.data", encore's layout). Any other component is percent-encoded
# behind a leading "%": "..", "", "a b?", "données" and so on. Escaped text is pure
# ASCII, so no filesystem normalises it, and it never contains "." so an escaped
# directory can not collide with a file. A segment too long for a file name is cut
# into directories "~<part>" that are joined back before decoding.
# ---------------------------------------------------------------------------

_SAFE_FIRST = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
_SAFE = _SAFE_FIRST | frozenset("-.,+=@")
_ESCAPED_KEEP = _SAFE_FIRST | frozenset("-,+=@")
# 255 bytes is the usual file-name limit; leave room for ".metadata" and margin.
_MAX_SEGMENT = 200


def _is_plain(component: str, is_dir: bool) -> bool:
    if not component or component[0] not in _SAFE_FIRST or len(component) > _MAX_SEGMENT:
        return False
    if is_dir and (component.endswith(DATA_SUFFIX) or component.endswith(METADATA_SUFFIX)):
        return False
    return all(c in _SAFE for c in component)


def _escape(component: str) -> str:
    out = []
    for ch in component:
        if ch in _ESCAPED_KEEP:
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8"))
    return "".join(out)


def _split_long(body: str) -> List[str]:
    parts = []
    while len(body) > _MAX_SEGMENT:
        cut = _MAX_SEGMENT
        # never cut inside a %XX triple
        if body[cut - 1] == "%":
            cut -= 1
        elif body[cut - 2] == "%":
            cut -= 2
        parts.append("~" + body[:cut])
        body = body[cut:]
    parts.append("%" + body)
    return parts


def key_to_relpath(key: str) -> str:
    """The '/'-separated relative path of ``key`` without suffix (add ``.data`` / ``.metadata``)."""
    components = key.split("/")
    segments: List[str] = []
    last = len(components) - 1
    for i, component in enumerate(components):
        if _is_plain(component, i != last):
            segments.append(component)
        else:
            segments.extend(_split_long(_escape(component)))
    return "/".join(segments)


def _unescape(body: str) -> str:
    raw = bytearray()
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == "%":
            raw.append(int(body[i + 1 : i + 3], 16))
            i += 3
        else:
            raw.extend(ch.encode("ascii"))
            i += 1
    return raw.decode("utf-8")


def relpath_to_key(relpath: str) -> Optional[str]:
    """Inverse of :func:`key_to_relpath`; None when ``relpath`` is not a canonical key path."""
    components: List[str] = []
    pending = ""
    try:
        for segment in relpath.split("/"):
            if segment.startswith("~"):
                pending += segment[1:]
            elif segment.startswith("%"):
                components.append(_unescape(pending + segment[1:]))
                pending = ""
            elif pending:
                return None
            else:
                components.append(segment)
    except (ValueError, UnicodeDecodeError):
        return None
    if pending:
        return None
    key = "/".join(components)
    try:
        check_key(key)
    except InvalidKeyError:
        return None
    return key if key_to_relpath(key) == relpath else None


def split_suffix(name: str) -> Tuple[str, str]:
    """Split a stored file name into (relpath, suffix) for ``.data`` / ``.metadata``; else ('', '')."""
    if name.endswith(DATA_SUFFIX):
        return name[: -len(DATA_SUFFIX)], DATA_SUFFIX
    if name.endswith(METADATA_SUFFIX):
        return name[: -len(METADATA_SUFFIX)], METADATA_SUFFIX
    return "", ""
