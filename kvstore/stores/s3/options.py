"""S3Store's options: their defaults and validation, and their parsing from an ``s3://`` URL.

Two ways in, one set of rules. The constructor takes keyword options, which may be strings
(as a URL's query gives them) and are converted leniently as they always were;
:meth:`S3Options.from_query` reads an ``s3://`` URL's query strictly: every documented option
is honoured, an unknown one or a value that is not of its type raises ``ValueError``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

__all__ = ["S3Options", "MIN_PART", "MAX_PART", "CREDENTIAL_NAMES"]

MiB = 1024 * 1024
MIN_PART = 5 * MiB                # S3's limits for a multipart part
MAX_PART = 5 * 1024 * MiB
CREDENTIAL_NAMES = ("aws_access_key_id", "aws_secret_access_key", "aws_session_token")

_ALIASES = {"region_name": "region", "profile_name": "profile"}
_STRINGS = ("endpoint_url", *CREDENTIAL_NAMES)
_INTEGERS = ("max_attempts", "part_size", "upload_workers", "max_workers")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _as_int(name: str, value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"S3Store option {name} must be an integer, not {value!r}") from None


def _as_bool(value: Any) -> bool:
    """The constructor's reading of a flag: a true word, or else false (as it always was)."""
    if isinstance(value, str):
        return value.strip().lower() in _TRUE
    return bool(value)


def _strict_bool(name: str, text: str) -> bool:
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError(f"S3Store option {name} must be one of {', '.join(_TRUE + _FALSE)}, not {text!r}")


def _verify(value: Any) -> Any:
    """TLS verification: a flag word becomes a bool; anything else (a CA bundle path) stays."""
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return _as_bool(value)
    return value


@dataclasses.dataclass(frozen=True)
class S3Options:
    """The options of an S3Store besides its bucket, prefix, client and name.

    ``endpoint_url``, ``region``, ``profile`` and the three credentials configure the client
    the store makes (``None``: boto3's own default); ``verify`` is TLS verification (a bool
    or a CA bundle path); ``max_attempts`` boto3's retries; ``create`` makes the bucket on
    connect when it is missing; ``part_size`` is the multipart part size in bytes;
    ``upload_workers`` the parts sent at once; ``max_workers`` the metadata objects
    ``query`` and ``glob`` fetch at once.
    """

    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    aws_session_token: str | None = None
    verify: Any = None
    max_attempts: int = 5
    create: bool = False
    part_size: int = 8 * MiB
    upload_workers: int = 4
    max_workers: int = 8

    def __post_init__(self) -> None:
        if not MIN_PART <= self.part_size <= MAX_PART:
            raise ValueError(f"part_size must be between {MIN_PART} and {MAX_PART} bytes (S3's limits)")
        if self.upload_workers < 1 or self.max_workers < 1:
            raise ValueError("upload_workers and max_workers must be at least 1")

    @classmethod
    def names(cls) -> list[str]:
        """Every option name accepted, aliases included."""
        return [f.name for f in dataclasses.fields(cls)] + list(_ALIASES)

    @classmethod
    def from_kwargs(cls, options: Mapping[str, Any]) -> S3Options:
        """The options of ``S3Store(..., **options)``; values may be strings.

        Raises
        ------
        TypeError : an unknown option.
        ValueError : a bad value.
        """
        opts = dict(options)
        values: dict[str, Any] = {}
        for alias, name in _ALIASES.items():  # the plain name wins over its alias
            values[name] = opts.pop(name, None) or opts.pop(alias, None) or None
            opts.pop(alias, None)
        for name in _STRINGS:
            values[name] = opts.pop(name, None) or None
        if "verify" in opts:
            values["verify"] = _verify(opts.pop("verify"))
        for name in _INTEGERS:
            if name in opts:
                values[name] = _as_int(name, opts.pop(name))
        for name in ("upload_workers", "max_workers"):
            if name in values:
                values[name] = max(1, values[name])
        if "create" in opts:
            values["create"] = _as_bool(opts.pop("create"))
        result = cls(**values)
        if opts:
            raise TypeError(f"S3Store got unknown option(s) {sorted(opts)}")
        return result

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> dict[str, Any]:
        """The typed keyword options that an ``s3://`` URL's query names.

        Raises
        ------
        ValueError : an unknown option, or a value that is not of the option's type.
        """
        known = set(cls.names())
        unknown = sorted(set(query) - known)
        if unknown:
            raise ValueError(f"unknown S3Store option(s) {unknown} in the URL; known: {', '.join(sorted(known))}")
        typed: dict[str, Any] = {}
        for name, text in query.items():
            if name in _INTEGERS:
                typed[name] = _as_int(name, text)
            elif name == "create":
                typed[name] = _strict_bool(name, text)
            elif name == "verify":
                typed[name] = _verify(text)
            else:
                typed[name] = text
        return typed

    def session_args(self, credentials: Any = None) -> dict[str, Any]:
        """The ``boto3.session.Session`` arguments, ``credentials`` (of ``connect()``) last.

        Raises
        ------
        TypeError : ``credentials`` is neither None nor a dict.
        """
        args: dict[str, Any] = {"profile_name": self.profile} if self.profile else {}
        for name in CREDENTIAL_NAMES:
            if getattr(self, name):
                args[name] = getattr(self, name)
        if isinstance(credentials, dict):
            args.update({k: v for k, v in credentials.items() if k in CREDENTIAL_NAMES})
        elif credentials is not None:
            raise TypeError("S3Store credentials must be a dict of aws_access_key_id, "
                            "aws_secret_access_key and aws_session_token")
        return args

    def client_args(self) -> dict[str, Any]:
        """The ``session.client("s3", ...)`` arguments besides its ``config``."""
        args: dict[str, Any] = {}
        if self.endpoint_url:
            args["endpoint_url"] = self.endpoint_url
        if self.region:
            args["region_name"] = self.region
        if self.verify is not None:
            args["verify"] = self.verify
        return args
