"""Effects: what a transition leaves to do once the state lock is released.

Transitions change the scheduler's state with the lock held and never call
user code there. What needs user code or I/O is noted here and done after
the lock by ``Workers.aftermath``: sending runs to executors, resolving
futures (their done-callbacks are user code), building store records (a
result's ``repr`` and pickling), listeners, log lines, telling runs that
they timed out, waking waiters.
"""
from __future__ import annotations

import logging
from typing import Any, List, Optional, Tuple

from ..records.events import Event
from ..records.runs import Run

__all__ = ["Effects"]

_log = logging.getLogger("pysched_lightning")


class Effects:
    """What a transition leaves to do after the state lock is released.

    The fields are class defaults: an instance stores only what a transition
    noted (most note nothing, or one run to send). ``todo`` is true once
    anything is noted."""

    todo = False
    events: Optional[List[Event]] = None
    #: (level, message, args) for the logger, formatted later.
    logs: Optional[List[Tuple[int, str, Tuple[Any, ...]]]] = None
    #: Runs that got a slot, to hand to their executors.
    runs: Optional[List[Run]] = None
    #: Runs past their deadline, to be told (and killed or cancelled).
    expired: Optional[List[Run]] = None
    #: Wake the threads waiting for runs to end (get_result, shutdown).
    wake = False
    #: Runs whose future (made by ``run.future``) gets their outcome.
    resolved: Optional[List[Run]] = None
    #: Journal writes whose records are to be built (user code: repr,
    #: pickling) by the thread that noted them.
    records: Optional[List[Any]] = None
    #: Flush the journal now (while shutting down nobody else will).
    flush = False

    def add_event(self, event: Event) -> None:
        if self.events is None:
            self.events = []
        self.events.append(event)
        self.todo = True

    def log(self, level: int, message: str, *args: Any) -> None:
        if not _log.isEnabledFor(level):  # (reads the logger's level cache: no handler runs)
            return
        if self.logs is None:
            self.logs = []
        self.logs.append((level, message, args))
        self.todo = True

    def submit(self, run: Run) -> None:
        if self.runs is None:
            self.runs = []
        self.runs.append(run)
        self.todo = True

    def expire(self, run: Run) -> None:
        if self.expired is None:
            self.expired = []
        self.expired.append(run)
        self.todo = True

    def resolve(self, run: Run) -> None:
        if self.resolved is None:
            self.resolved = []
        self.resolved.append(run)
        self.todo = True

    def record(self, write: Any) -> None:
        if self.records is None:
            self.records = []
        self.records.append(write)
        self.todo = True

    def wake_waiters(self) -> None:
        self.wake = self.todo = True

    def flush_now(self) -> None:
        self.flush = self.todo = True

    def take_runs_of(self, task_id: str) -> List[Run]:
        """Take the runs of *task_id* off the runs to send."""
        runs = self.runs or []
        taken = [run for run in runs if run.task_id == task_id]
        if taken:
            self.runs = [run for run in runs if run.task_id != task_id]
        return taken

    def forget_events_of(self, task_id: str) -> None:
        if self.events:
            self.events = [event for event in self.events if event.task_id != task_id]

    def __bool__(self) -> bool:
        return self.todo
