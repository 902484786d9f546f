"""The lifecycle shared by the bridges that carry events into a store from elsewhere
(:class:`kvstore.watch.FileSystemWatcher`, :class:`kvstore.relay.RedisRelay`).

A bridge is started and stopped (also as a context manager), says whether it is running,
whether it is ready (listening), and why it stopped on its own, if it did. Callers such as
the CLI use this API instead of guessing with ``getattr(bridge, "running", True)``.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from typing import Any, TypeVar

__all__ = ["Bridge"]

_B = TypeVar("_B", bound="Bridge")


class Bridge(ABC):
    """Base of the bridges: start / stop / running / wait_ready / error / ``with``.

    Subclasses implement :meth:`start`, :meth:`stop` and :attr:`running`; they set
    ``self._ready`` when they listen (and clear it when they no longer do), and keep in
    ``self._error`` the exception that made them stop on their own.
    """

    def __init__(self) -> None:
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @abstractmethod
    def start(self: _B) -> _B:
        """Start the bridge's threads; return ``self``."""

    @abstractmethod
    def stop(self) -> None:
        """Stop the bridge and join its threads. Safe to call more than once."""

    @property
    @abstractmethod
    def running(self) -> bool:
        """Whether the bridge is started and has not stopped (by :meth:`stop` or an error)."""

    @property
    def error(self) -> BaseException | None:
        """The exception that stopped the bridge on its own, or None."""
        return self._error

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until the bridge listens (see the subclass for what that means).

        Parameters
        ----------
        timeout : seconds; None waits as long as it takes.

        Returns
        -------
        bool : whether the bridge is ready.
        """
        return self._ready.wait(timeout)

    def __enter__(self: _B) -> _B:
        """Start the bridge (see :meth:`start`)."""
        return self.start()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        """Stop the bridge; an error of its stop is raised unless the block is already raising."""
        if exc_type is None:
            self.stop()
            return
        # Do not hide the exception already on its way out.
        try:
            self.stop()
        except BaseException:
            logging.getLogger(type(self).__module__).exception("%r had stopped on an error", self)
