"""The seams the scheduler core depends on: triggers, executors and stores.

Each is a small structural protocol, so a user can bring their own (any
``concurrent.futures.Executor`` is already an executor).
"""
from __future__ import annotations

from concurrent.futures import Future
from typing import Any, Callable, Optional

try:  # Python 3.8+: typing.Protocol
    from typing import Protocol, runtime_checkable
except ImportError:  # pragma: no cover
    from typing_extensions import Protocol, runtime_checkable  # type: ignore

__all__ = ["Trigger", "Executor"]


@runtime_checkable
class Trigger(Protocol):
    """When a task is due: ``first_due`` and then ``next_due(after)``.

    Due times are POSIX seconds on the wall clock when ``wall_clock`` is true
    (cron strings, datetimes), else seconds on the scheduler's own clock.
    """

    name: str
    interval: Any
    wall_clock: bool
    first_due: float

    def next_due(self, after: float) -> Optional[float]:
        """The first due time strictly after *after*, or None when finished."""

    def describe(self) -> str:
        """A short human description, e.g. ``every 3s``."""


@runtime_checkable
class Executor(Protocol):
    """Where a run executes: ``submit`` returns a future, as in concurrent.futures."""

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future: ...

    def shutdown(self, wait: bool = True) -> None: ...
