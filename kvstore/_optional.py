"""Optional dependencies, imported when first needed, with the install hint said once."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["require", "install_hint", "MissingExtraError"]


def install_hint(extra: str) -> str:
    """The command that installs kvstore's ``extra``."""
    return f"pip install 'kvstore[{extra}]'"


class MissingExtraError(ImportError):
    """An optional dependency is missing; the message names the extra to install."""


def require(module: str, extra: str, *, needed_by: str) -> ModuleType:
    """Import ``module`` (e.g. ``"boto3"``) or raise :class:`MissingExtraError` saying that
    ``needed_by`` needs it and how to install it (``pip install 'kvstore[extra]'``)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        missing = exc.name or module
        raise MissingExtraError(f"{needed_by} needs {missing}: {install_hint(extra)}",
                                name=missing) from exc
