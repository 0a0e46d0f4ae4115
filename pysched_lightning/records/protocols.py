"""The seams the scheduler core depends on: triggers, executors and stores,
with the records a store keeps.

Each seam is a small structural protocol, so a user can bring their own (any
``concurrent.futures.Executor`` is already an executor). This module imports
nothing from the package, so every part may import it.
"""
from __future__ import annotations

import dataclasses
import types
from concurrent.futures import Future
from typing import (Any, Callable, ContextManager, Dict, Iterable, List, Mapping, Optional,
                    Protocol, Union, runtime_checkable)

__all__ = ["Trigger", "Executor", "Store", "TaskRecord", "RUN_FIELDS", "StoreLockedError",
           "ClaimLostError",
           "COMPLETED", "ERROR", "SUSPENDED", "RUNNING", "CANCELED", "TIMEOUT", "MISSED",
           "INTERRUPTED",
           "STATUS_NAMES", "EVERY_SLOT"]


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

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> "Future[Any]": ...

    def shutdown(self, wait: bool = True) -> None: ...


# -- what a store keeps ---------------------------------------------------------

#: Status codes as a store keeps them, for runs and tasks; the same values as
#: ``pysched_lightning.TaskStatus``. MISSED (a run skipped, e.g. while the
#: scheduler was down) is new in schema 2; INTERRUPTED (a run that was going
#: when its scheduler process died) in schema 3.
COMPLETED, ERROR, SUSPENDED, RUNNING, CANCELED, TIMEOUT, MISSED, INTERRUPTED = range(8)
#: Every status code a store accepts, with its name.
STATUS_NAMES: Mapping[int, str] = types.MappingProxyType({
    COMPLETED: "completed", ERROR: "error", SUSPENDED: "suspended", RUNNING: "running",
    CANCELED: "canceled", TIMEOUT: "timeout", MISSED: "missed",
    INTERRUPTED: "interrupted"})


@dataclasses.dataclass
class TaskRecord:
    """A task as stored: its definition (serialized) and its schedule state.

    The scheduler serializes; a store keeps only bytes, text and numbers, and
    never unpickles or parses them. Times are wall-clock POSIX seconds, since
    a store outlives the process and its monotonic clock. A finished one-shot
    task stays stored, with ``next_run`` None and a final ``status``, until
    it is removed.
    """

    id: str
    name: str
    trigger: str                  # 'once', 'recur' or 'cron'
    interval: str                 # the interval as given, as JSON text (for display)
    priority: Union[int, float]   # kept as given: an int stays an int
    fn_ref: Optional[str]         # 'module:qualname' when importable, else None
    fn_pickle: Optional[bytes]    # cloudpickle of the function when fn_ref is None
    args: bytes                   # pickled tuple
    kwargs: bytes                 # pickled dict
    options: Optional[bytes]      # pickled TaskOptions; None for the defaults
    schedule: Optional[bytes]     # pickled trigger object; None for a plain one-shot
    next_run: Optional[float]     # None when nothing more is scheduled
    paused: bool = False
    runs: int = 0
    missed: int = 0
    status: int = SUSPENDED
    created: float = 0.0
    updated: float = 0.0
    #: JSON text for display (call, schedule, time zone, options), kept as text.
    info: Optional[str] = None

    @property
    def stored_as(self) -> str:
        """'import' when the function is kept by reference, else 'pickle'."""
        return "import" if self.fn_ref else "pickle"


#: The fields of a run record, in order (also the JSON run log's keys). A run
#: is keyed by ``(task_id, slot, attempt)``: ``slot`` is an opaque claim key
#: the scheduler computes, ``scheduled`` the wall time used for ordering and
#: display; ``count`` is how many runs a MISSED record stands for, ``reason``
#: why a run was missed or canceled, ``outcome`` the pickled result or
#: exception.
#: ``Store.set_aside_runs``'s "every slot" (a slot is never empty).
EVERY_SLOT = ""

RUN_FIELDS = ("task_id", "name", "run", "attempt", "slot", "status", "scheduled",
              "started", "finished", "duration", "exit_code", "result", "error",
              "traceback", "output", "stderr", "reason", "count", "outcome")


class StoreLockedError(RuntimeError):
    """Another live scheduler holds the store."""


class ClaimLostError(RuntimeError):
    """A store shared by several nodes refused to record a run's end (or its
    process, or its release): the claim is no longer this node's, since its
    lease expired and another node took the run over (recorded it
    INTERRUPTED). The outcome is not recorded."""


@runtime_checkable
class Store(Protocol):
    """Durable tasks and runs, shared by the processes that open the same store.

    Claims (``claim_run``, ``save_task(replace=False)``) are decided by the
    store, so schedulers in several processes never run one slot twice. The
    value rules every store follows are in :mod:`pysched_lightning.stores.rules`.

    Optional, for a dashboard's actions on a store (looked up with
    ``getattr(store, 'request_control', None)``; a store without them has a
    read-only dashboard, and its scheduler applies no requests):
    ``request_control(action, task_id, requested_by) -> int``,
    ``take_control_requests(owner, limit=100) -> list``,
    ``answer_control(request_id, ok, message)`` and
    ``control_request(request_id) -> dict | None``; their rules are in
    ``durability.stores.controls``. A store that can notify its scheduler
    sooner than the once-a-second poll may also have
    ``listen_control(callback)``: it calls ``callback()`` (from any thread)
    when a request is written.
    """

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

    def task(self, task_id: str) -> Optional[TaskRecord]:
        """The stored task *task_id*, or None. Needs no hold."""

    def save_task(self, record: TaskRecord, replace: bool = True) -> bool:
        """Store *record*; durable when it returns. With *replace* it replaces
        a task with the same id; without, it inserts only if no task has that
        id, and otherwise returns False and changes nothing. True if written."""

    def update_task(self, task_id: str, **fields: Any) -> None:
        """Change some of a task's fields (next_run, runs, missed, status, paused,
        info...); nothing if the task is unknown."""

    def remove_task(self, task_id: str) -> None:
        """Delete a task (nothing if unknown); its run history stays until purged."""

    def claim_run(self, task_id: str, slot: str, attempt: int, *, run: int, name: str,
                  scheduled: float, started: float) -> bool:
        """Insert a RUNNING record keyed by ``(task_id, slot, attempt)`` unless
        that key exists (claimed in this or another process): True if it
        inserted; False means another claim won and the run must not start."""

    def finish_run(self, record: Mapping[str, Any]) -> None:
        """Write a run record (keys: RUN_FIELDS) over its claimed row, keyed by
        ``(task_id, slot, attempt)``; a None ``name``, ``run`` or ``started``
        keeps the claimed value. A run never claimed (missed, never started)
        is inserted."""

    def set_aside_runs(self, task_id: str, slot: str = EVERY_SLOT) -> None:
        """The task's records (of *slot* only, if one is given) belong to a
        definition or a trigger that was replaced: each keeps its history
        under a slot name of its own (``slot~run.attempt``), so that the new
        one may claim the slot and is owed nothing of theirs (RUNNING ones
        stay: their run finishes under its slot)."""

    def release_run(self, task_id: str, slot: str, attempt: int) -> None:
        """Give back a claim whose run never executed: its RUNNING record is
        deleted (nothing if it is not RUNNING), so the slot may be claimed
        again."""

    def mark_interrupted(self) -> int:
        """Runs left RUNNING by a process that died: mark them INTERRUPTED.

        (A store may also keep the process running a claim:
        ``note_process(task_id, slot, attempt, pid, pid_started)`` and
        ``claimed_processes()``, see ``stores.rules``. They are optional:
        without them a restart cannot tell that a run's process outlived
        its scheduler.)"""

    def runs(self, task_id: Optional[str] = None, limit: Optional[int] = None, *,
             before: Optional[float] = None, since: Optional[float] = None,
             statuses: Optional[Iterable[int]] = None) -> List[Dict[str, Any]]:
        """Run records, newest first (``scheduled`` descending, then the later
        written first), of one task or all; at most *limit*; only those with
        ``scheduled`` < *before* (a paging cursor), ``scheduled`` >= *since*,
        and a status in *statuses*."""

    def count_runs(self, task_id: Optional[str] = None, *, since: Optional[float] = None,
                   statuses: Optional[Iterable[int]] = None) -> int:
        """How many run records ``runs()`` would list with these filters."""

    def purge_runs(self, before: float) -> int:
        """Delete finished runs that ended before *before*; return how many. (A
        store with control requests deletes the answered ones older too.)"""

    def clear(self) -> None:
        """Delete every task and run."""

    def close(self) -> None:
        """Release the hold and free the store's resources; closing twice is fine."""
