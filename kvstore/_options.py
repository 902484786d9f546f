"""Store options given as text (URL query strings): each backend names what it reads and
how to convert it; an option nobody reads is an error, never silently dropped."""

from __future__ import annotations

from typing import Any, Callable, Dict, Mapping

__all__ = ["as_bool", "as_int", "as_float", "as_str", "url_options"]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def as_bool(name: str, text: str) -> bool:
    low = text.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError(f"option {name}={text!r}: expected 1/0, true/false, yes/no or on/off")


def as_int(name: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"option {name}={text!r}: expected a whole number") from None


def as_float(name: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"option {name}={text!r}: expected a number") from None


def as_str(name: str, text: str) -> str:
    return text


Converter = Callable[[str, str], Any]


def url_options(url: str, query: Mapping[str, str], known: Mapping[str, Converter]) -> Dict[str, Any]:
    """``query`` converted by ``known`` (option name -> converter).

    Raises
    ------
    ValueError : an option that is not in ``known``, or a value its converter refuses.
    """
    unknown = sorted(set(query) - set(known))
    if unknown:
        raise ValueError(f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} in {url!r}; "
                         f"known: {', '.join(sorted(known)) or 'none'}")
    return {name: known[name](name, text) for name, text in query.items()}
