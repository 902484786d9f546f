"""Parsing what the user typed: ``--meta`` values, ``NAME=VALUE`` assignments and query
criteria, and the argument parser's one-line usage errors."""

from __future__ import annotations

import argparse
import json
import math
from typing import Any, Dict, NoReturn, Optional, Sequence, Tuple

from ..query import Criterion, contains, eq, exists, ge, gt, le, lt, not_, prefix
from .output import CLIError, _one_line

# ---------------------------------------------------------------- argument parsing


def parse_value(raw: str) -> Any:
    """A ``--meta`` or query VALUE: its JSON value where it parses as JSON, else the string.

    ``3`` is the number 3, ``["a"]`` a list, ``true`` a boolean, ``null`` None and ``"3"``
    the string "3"; ``egg`` (not JSON) stays the string ``"egg"``. ``NaN`` and numbers too
    large for a float are not JSON values and stay strings.
    """

    def reject(text: str) -> Any:
        raise ValueError(text)

    def finite(text: str) -> float:
        number = float(text)
        if not math.isfinite(number):
            raise ValueError(text)
        return number

    try:
        return json.loads(raw, parse_constant=reject, parse_float=finite)
    except ValueError:
        return raw


def parse_assignment(text: str, what: str = "--meta") -> Tuple[str, Any]:
    """Split ``NAME=VALUE`` into the name and its :func:`parse_value`.

    Raises
    ------
    CLIError : no ``=`` or an empty name.
    """
    name, sep, raw = text.partition("=")
    if not sep or not name:
        hint = " (a FILE goes before --meta)" if what == "--meta" and not sep else ""
        raise CLIError(f"bad {what} {text!r}: expected NAME=VALUE, e.g. type=egg, n=3 "
                       f"or tags='[\"a\"]'{hint}")
    return name, parse_value(raw)


# A criterion's operator is the first of these found scanning from the left, two-character
# ones winning where they start ("a>=1" is ge, not gt of "=1"): so a value may contain any
# of them ("note=a>b" is note equal to "a>b"). "!" and "^" alone belong to the name.
_TWO_CHAR_OPS = {"!=": not_, ">=": ge, "<=": le, "^=": prefix}
_ONE_CHAR_OPS = {"=": eq, ">": gt, "<": lt, "~": contains}
_CRITERION_FORMS = "NAME=VALUE, NAME!=VALUE, NAME>VALUE, NAME>=VALUE, NAME<VALUE, NAME<=VALUE, " \
                   "NAME~VALUE, NAME^=PREFIX or NAME?"


def parse_criterion(text: str) -> Tuple[str, Criterion]:
    """Split a ``query`` criterion into its name and a :mod:`kvstore.query` criterion.

    ``NAME=VALUE`` (equal), ``NAME!=VALUE`` (not equal; a missing name counts as not equal),
    ``NAME>VALUE``, ``NAME>=VALUE``, ``NAME<VALUE``, ``NAME<=VALUE`` (numbers or strings),
    ``NAME~VALUE`` (a list containing VALUE), ``NAME^=PREFIX`` (a string starting with PREFIX,
    taken as written) or ``NAME?`` (the name is present). VALUE is read by :func:`parse_value`.

    Raises
    ------
    CLIError : (exit status 2) no operator, an empty name, or a VALUE the operator cannot
        take (``size>true``: gt takes a number or a string).
    """
    for i, ch in enumerate(text):
        op = text[i:i + 2]
        make: Any = _TWO_CHAR_OPS.get(op)
        if make is None:
            op = ch
            make = _ONE_CHAR_OPS.get(op)
        if make is not None:
            name, raw = text[:i], text[i + len(op):]
            break
    else:
        if len(text) > 1 and text.endswith("?"):
            return text[:-1], exists()
        raise CLIError(f"bad query criterion {text!r}: expected {_CRITERION_FORMS}", code=2)
    if not name:
        raise CLIError(f"bad query criterion {text!r}: no NAME before {op!r}", code=2)
    try:
        return name, make(raw if make is prefix else parse_value(raw))
    except (TypeError, ValueError) as exc:
        raise CLIError(f"bad query criterion {text!r}: {exc}", code=2) from None


def _assignments(items: Optional[Sequence[str]], what: str) -> Dict[str, Any]:
    result: Dict[str, Any] = {}
    for item in items or ():
        name, value = parse_assignment(item, what)
        result[name] = value
    return result


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors reported as one line like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"kvstore: error: {_one_line(message)} (see '{self.prog} --help')\n")


class _CommandParser(_Parser):
    """A command's parser: its options anywhere among its arguments (``kvstore sync SRC DST
    --delete 'images/*'``, ``kvstore query a=1 -k b=2``). Plain argparse gives the
    positionals met before an option all their slots at once, so one after it was
    "unrecognized". Arguments with a ``--`` are parsed plainly: the intermixed parse loses
    it and would take the ``-dash-key`` after it for an option."""

    _intermixing = False

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        if self._intermixing or (args is not None and "--" in args):  # a pass of the mix; a "--"
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False
