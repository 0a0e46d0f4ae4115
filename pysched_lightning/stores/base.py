"""What a store keeps: task records and run records (the protocol, ``Store``,
lives with the other seams in ``pysched_lightning.protocols``).

The scheduler serializes; a store only keeps bytes and numbers, so it never
imports user code. Times are wall-clock POSIX seconds (UTC), since a store
outlives the process and its monotonic clock.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

from ..protocols import Store

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
