"""The retry policy of :func:`kvstore.sync`: which failures deserve another attempt, and
how long to wait before it.

An attempt is retried when it raised a :class:`~kvstore.errors.StoreError` or an
``OSError`` (a network or disk hiccup, a checksum that did not match), except the errors
that another attempt cannot cure: :class:`~kvstore.errors.InvalidKeyError`,
:class:`~kvstore.errors.AuthorizationError` and ``ReadOnlyError``. Anything else (a
``TypeError``, a ``ValueError`` ...) is a bug or bad input and fails at once.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Tuple, Type

from . import errors

__all__ = ["Backoff", "is_transient"]


def _permanent() -> Tuple[Type[BaseException], ...]:
    found = [errors.InvalidKeyError, errors.AuthorizationError]
    read_only = getattr(errors, "ReadOnlyError", None)  # arrives with read-only stores
    if read_only is not None:
        found.append(read_only)
    return tuple(found)


def is_transient(exc: BaseException) -> bool:
    """Whether an attempt that raised ``exc`` may succeed if tried again."""
    return isinstance(exc, (errors.StoreError, OSError)) and not isinstance(exc, _permanent())


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter: before retry ``n`` (1, 2, ...) wait
    ``min(cap, base * 2 ** (n - 1))`` seconds, less a random part of up to ``jitter`` of it
    (so that many workers failing together do not retry together).
    """

    base: float = 0.2
    cap: float = 10.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.base < 0 or self.cap < 0 or not 0 <= self.jitter <= 1:
            raise ValueError("Backoff needs base >= 0, cap >= 0 and 0 <= jitter <= 1")

    def delay(self, failures: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait after the ``failures``-th failed attempt of one operation."""
        full = min(self.cap, self.base * 2.0 ** min(64, max(0, failures - 1)))
        return full * (1.0 - self.jitter * rand())
