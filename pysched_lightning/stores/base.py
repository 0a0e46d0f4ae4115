"""What a store keeps: task records and run records, and the store protocol.

The scheduler serializes; a store only keeps bytes and numbers, so it never
imports user code. Times are wall-clock POSIX seconds (UTC), since a store
outlives the process and its monotonic clock.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ContextManager, Dict, List, Optional

try:
    from typing import Protocol, runtime_checkable
except ImportError:  # pragma: no cover
    from typing_extensions import Protocol, runtime_checkable  # type: ignore

__all__ = ["TaskRecord", "RUN_FIELDS", "Store", "StoreLockedError"]


@dataclasses.dataclass
class TaskRecord:
    """A task as stored: its definition (serialized) and its schedule state."""

    id: str
    name: str
    trigger: str                 # 'once', 'recur' or 'cron'
    interval: str                # the interval as given, as JSON text (for display)
    priority: float
    fn_ref: Optional[str]        # 'module:qualname' when importable, else None
    fn_pickle: Optional[bytes]   # cloudpickle of the function when fn_ref is None
    args: bytes                  # pickled tuple
    kwargs: bytes                # pickled dict
    options: bytes               # pickled TaskOptions
    schedule: Optional[bytes]    # pickled trigger object; None for a plain one-shot
    next_run: Optional[float]    # wall clock; None when nothing more is scheduled
    paused: bool = False
    runs: int = 0
    missed: int = 0
    status: int = 2              # TaskStatus.SUSPENDED
    created: float = 0.0
    updated: float = 0.0

    @property
    def stored_as(self) -> str:
        """'import' when the function is kept by reference, else 'pickle'."""
        return "import" if self.fn_ref else "pickle"


#: The columns of a run record, in order (also the JSON run log's keys).
RUN_FIELDS = ("task_id", "name", "run", "attempt", "status", "scheduled", "started",
              "finished", "duration", "exit_code", "result", "error", "traceback",
              "output", "stderr")


class StoreLockedError(RuntimeError):
    """Another live scheduler holds the store."""


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

    def load_tasks(self) -> List[TaskRecord]:
        """Every stored task, oldest ``created`` first. Needs no hold."""

    def save_task(self, record: TaskRecord) -> None:
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
