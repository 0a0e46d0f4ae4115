"""Run records: one per execution of a task, with its status and outcome.

A run keeps its exception with the traceback *text* formatted where it was
caught; the frames' locals are cleared so a failing task cannot keep large
objects alive through its history.
"""
from __future__ import annotations

import enum
import traceback as _traceback
from concurrent.futures import Future
from typing import Any, Optional

from .context import RunContext

__all__ = ["TaskStatus", "Run", "format_exception"]


class TaskStatus(enum.IntEnum):
    """The state of a run, and of a task (that of its latest run)."""

    #: The run returned normally.
    COMPLETED = 0
    #: The run raised (after its retries, if any).
    ERROR = 1
    #: Waiting: for its time, a dependency or a free worker.
    SUSPENDED = 2
    #: Executing now.
    RUNNING = 3
    #: Canceled before it could run, or the task was canceled.
    CANCELED = 4
    #: The run exceeded its timeout.
    TIMEOUT = 5

    @property
    def label(self) -> str:
        """The name as Task Control prints it: ``"Completed"``, ``"Error"``..."""
        return self.name.capitalize()


_FINAL = frozenset({TaskStatus.COMPLETED, TaskStatus.ERROR,
                    TaskStatus.CANCELED, TaskStatus.TIMEOUT})


def format_exception(exc: BaseException) -> str:
    """The traceback text of *exc*, then its frames' locals are released."""
    text = "".join(_traceback.format_exception(type(exc), exc, exc.__traceback__))
    if exc.__traceback__ is not None:
        _traceback.clear_frames(exc.__traceback__)
    return text


class Run(RunContext):
    """One execution of a task.

    Read like upstream's result entries too: ``run['timestamp']``,
    ``run['task']`` and ``run['future']``.
    """

    __slots__ = ("task", "scheduled", "timestamp", "started", "finished",
                 "status", "future", "result", "exception", "traceback",
                 "hard", "reason", "_state", "_deadline", "_killable")

    def __init__(self, task: Any, number: int, attempt: int, scheduled: float,
                 timestamp: float, timeout: Optional[float], state: Any) -> None:
        super().__init__(task.id, number, attempt, timeout)
        self.task = task
        #: When the run was due, on the scheduler's clock.
        self.scheduled = scheduled
        #: When it was handed to an executor, on the scheduler's clock.
        self.timestamp = timestamp
        self.started: Optional[float] = None
        self.finished: Optional[float] = None
        self.status = TaskStatus.SUSPENDED
        self.future: Optional[Future] = None
        self.result: Any = None
        self.exception: Optional[BaseException] = None
        #: The formatted traceback of ``exception``, or None.
        self.traceback: Optional[str] = None
        self.hard = False
        #: Why the run did not happen, for a MISSED or CANCELED run.
        self.reason: Optional[str] = None
        self._state = state
        self._deadline: Optional[float] = None
        self._killable: Any = None

    @property
    def done(self) -> bool:
        """True once the run has a final status."""
        return self.status in _FINAL

    @property
    def duration(self) -> Optional[float]:
        """Seconds from start to finish on the scheduler's clock, if known."""
        if self.started is None or self.finished is None:
            return None
        return self.finished - self.started

    def __getitem__(self, key: str) -> Any:
        if key in ("timestamp", "task", "future"):
            return getattr(self, key)
        raise KeyError(key)

    def keys(self):
        return ("timestamp", "task", "future")

    def __repr__(self) -> str:
        return (f"<Run {self.task_id!r} #{self.run_number} attempt {self.attempt} "
                f"{self.status.label}>")
