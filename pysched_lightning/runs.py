"""Run records: one per execution of a task, with its status and outcome.

A run keeps its exception with the traceback *text* formatted where it was
caught; the frames' locals are cleared so a failing task cannot keep large
objects alive through its history.
"""
from __future__ import annotations

import enum
import traceback as _traceback
from concurrent.futures import Future, InvalidStateError
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

    # Defaults live on the class: a run is made for every execution, so its
    # constructor sets only what differs.
    started: Optional[float] = None
    finished: Optional[float] = None
    status = TaskStatus.SUSPENDED
    result: Any = None
    exception: Optional[BaseException] = None
    #: The formatted traceback of ``exception``, or None.
    traceback: Optional[str] = None
    hard = False
    #: Why the run did not happen, for a MISSED or CANCELED run.
    reason: Optional[str] = None
    _deadline: Optional[float] = None
    _killable: Any = None
    _future: Optional[Future] = None
    _owns_future = False
    _previous: Optional["Run"] = None  # the task's latest run before this one
    _claimed: Optional[bool] = None  # False: the store refused this run

    def __init__(self, task: Any, number: int, attempt: int, scheduled: float,
                 timestamp: float, timeout: Optional[float], state: Any) -> None:
        self.task = task
        self.task_id = task[3]
        self.run_number = number
        if attempt != 1:
            self.attempt = attempt
        if timeout is not None:
            self.timeout = timeout
        #: When the run was due, on the scheduler's clock.
        self.scheduled = scheduled
        #: When it was handed to an executor, on the scheduler's clock.
        self.timestamp = timestamp
        self._state = state

    @property
    def future(self) -> Future:
        """A future for the run's outcome: the executor's for a process run;
        for a thread run one made on first use (most runs never need one)."""
        future = self._future
        if future is None:
            future = self._future = Future()
            self._owns_future = True
            if self.done:
                self._resolve_future()
        return future

    def _resolve_future(self) -> None:
        """Give a future made by :attr:`future` the run's final outcome."""
        future = self._future
        if not self._owns_future or future is None:
            return
        try:
            if self.status is TaskStatus.COMPLETED:
                future.set_result(self.result)
            elif self.status is TaskStatus.CANCELED:
                future.cancel()
            else:
                future.set_exception(self.exception or TimeoutError(
                    f"task {self.task_id!r} run {self.run_number} timed out"))
        except InvalidStateError:
            pass  # resolved already, by the other side of a race

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
