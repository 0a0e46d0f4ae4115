"""The seams the scheduler core depends on: triggers, executors and stores.

Each is a small structural protocol, so a user can bring their own (any
``concurrent.futures.Executor`` is already an executor).
"""
from __future__ import annotations

from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Dict, List, Optional

try:  # Python 3.8+: typing.Protocol
    from typing import Protocol, runtime_checkable
except ImportError:  # pragma: no cover
    from typing_extensions import Protocol, runtime_checkable  # type: ignore

if TYPE_CHECKING:  # pragma: no cover
    from .stores.base import TaskRecord

__all__ = ["Trigger", "Executor", "Store"]


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


@runtime_checkable
class Store(Protocol):
    """Durable tasks and runs for one active scheduler at a time."""

    def acquire(self, owner: str, wait: bool = False) -> bool:
        """Become the store's one active scheduler. Without *wait*, return
        False at once if another live process holds it; with *wait*, block
        until it is free. The hold ends with ``release()`` or the process."""

    def holder(self) -> Optional[str]:
        """Who holds the store (the owner string given to acquire), if anyone."""

    def release(self) -> None:
        """End this store's hold, if it has one; otherwise do nothing."""

    def batch(self) -> ContextManager[None]:
        """A transaction: calls made inside it commit together, or not at all."""

    def load_tasks(self) -> List["TaskRecord"]:
        """Every stored task, oldest ``created`` first. Needs no hold."""

    def save_task(self, record: "TaskRecord") -> None:
        """Insert or replace a task; durable when it returns."""

    def update_task(self, task_id: str, **fields: Any) -> None:
        """Change some of a task's fields (next_run, runs, missed, status, paused...)."""

    def remove_task(self, task_id: str) -> None:
        """Delete a task (nothing if unknown); its run history stays until purged."""

    def claim_run(self, task_id: str, scheduled: float, attempt: int, run: int,
                  name: str) -> bool:
        """Record that a run starts; False if (task_id, scheduled, attempt) was
        claimed already (by this or another process): do not run it again."""

    def finish_run(self, record: Dict[str, Any]) -> None:
        """Complete the claimed run (keys: RUN_FIELDS) — insert it if unclaimed."""

    def mark_interrupted(self) -> int:
        """Runs left 'running' by a process that died: mark them as errors."""

    def runs(self, task_id: Optional[str] = None,
             limit: Optional[int] = None) -> List[Dict[str, Any]]:
        """Run records, newest first (all tasks when *task_id* is None)."""

    def purge_runs(self, before: float) -> int:
        """Delete finished runs that finished before *before*; return how many."""

    def clear(self) -> None:
        """Delete every task and run."""

    def close(self) -> None:
        """Release the hold and free the store's resources; closing twice is fine."""

from .stores.base import TaskRecord  # INTERIM
