"""Run records: one per execution of a task, the same type with or without a
store, and the statuses runs and tasks go through.

A run keeps its exception with the traceback *text* formatted where it was
caught; the frames' locals are cleared so a failing task cannot keep large
objects alive through its history. Times read as aware UTC datetimes; the
scheduler keeps them on its own clock underneath (``_t_*``) and converts
with the wall-clock offset of the run's day.
"""
from __future__ import annotations

import datetime as _dt
import enum
import pickle
import traceback as _traceback
from concurrent.futures import CancelledError, Future, InvalidStateError
from typing import Any, Iterator, Mapping, Optional

from .context import RunContext
from .outcomes import CommandError, CommandResult, CommandTimeout
from .pickles import loads

__all__ = ["TaskStatus", "Run", "format_exception", "error_line", "safe_repr"]

_UTC = _dt.timezone.utc


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
    #: The run was skipped (too late, or its previous run still going).
    MISSED = 6
    #: The run was going when its scheduler stopped: its process died
    #: (found at the next start), or shutdown's timeout cut it short; it
    #: counts as a failed attempt.
    INTERRUPTED = 7

    @property
    def label(self) -> str:
        """The name as Task Control prints it: ``"Completed"``, ``"Error"``..."""
        return self.name.capitalize()


class Phase(enum.Enum):
    """Where a run is in its life (``core.runlife.RunLife`` moves it, and
    only it, with its extensions)::

        DUE --admit--> STARTED --finish--> FINISHED
         |              ^   '--expire/interrupt--> OVERDUE --finish--> FINISHED
         +--> READY ----+   (a lane's ready heap: waits for a free slot)
         +--> HELD -----+   (its task or the scheduler is paused)
         '--> BLOCKED --'   (a retry or manual run waits for its task's run)
        DUE/READY/HELD/BLOCKED --drop--> DROPPED (MISSED or CANCELED)
        STARTED --refuse--> DROPPED (the store refused its claim)
    """

    #: Made, not placed yet.
    DUE = "due"
    #: In its lane's ready heap.
    READY = "ready"
    #: Held while its task or the scheduler is paused.
    HELD = "held"
    #: Waiting for its task's running run to return (max_instances).
    BLOCKED = "blocked"
    #: Holds a worker slot: handed, or about to be handed, to its executor.
    STARTED = "started"
    #: Ended (deadline, shutdown) while its executor still holds it.
    OVERDUE = "overdue"
    #: Ended, and given back by its executor: its slot is free.
    FINISHED = "finished"
    #: Never executed: missed or canceled.
    DROPPED = "dropped"

    # Members are singletons: identity is their hash (Enum's own is Python code).
    __hash__ = object.__hash__


FINAL = frozenset({TaskStatus.COMPLETED, TaskStatus.ERROR, TaskStatus.CANCELED,
                   TaskStatus.TIMEOUT, TaskStatus.MISSED, TaskStatus.INTERRUPTED})
#: The statuses that make a dependent task give up.
FAILED = frozenset({TaskStatus.ERROR, TaskStatus.TIMEOUT, TaskStatus.CANCELED,
                    TaskStatus.INTERRUPTED})

#: The keys a run has as a mapping: upstream's result entries.
_KEYS = ("timestamp", "task", "future")


def format_exception(exc: BaseException) -> str:
    """The traceback text of *exc*, then its frames' locals are released.

    Never raises: an exception whose ``__str__`` fails still gets a text.
    """
    try:
        text = "".join(_traceback.format_exception(type(exc), exc, exc.__traceback__))
    except Exception:
        text = f"{_type_name(exc)}: <the exception could not be formatted>\n"
    if exc.__traceback__ is not None:
        _traceback.clear_frames(exc.__traceback__)
    return text


def error_line(exc: BaseException, limit: int = 500) -> str:
    """``"ValueError: message"`` on one line; never raises."""
    try:
        text = str(exc)
    except Exception:
        text = "<str() of the exception failed>"
    line = text.strip().splitlines()[0] if text.strip() else ""
    line = f"{_type_name(exc)}: {line}" if line else _type_name(exc)
    return line if len(line) <= limit else line[:limit] + "..."


def safe_repr(value: Any, limit: int = 2000) -> str:
    """``repr(value)``, cut at *limit*; a failing ``__repr__`` gives a placeholder."""
    try:
        text = repr(value)
    except Exception as exc:
        text = f"<unrepresentable {_type_name(value)}: {error_line(exc)}>"
    return text if len(text) <= limit else text[:limit] + "..."


def _type_name(value: Any) -> str:
    try:
        return type(value).__qualname__
    except Exception:  # pragma: no cover - a hostile metaclass
        return "object"


class Run(RunContext, Mapping[str, Any]):
    """One execution of a task (or a skipped one, MISSED).

    Attributes: ``task_id, name, run_number, attempt, status, scheduled,
    started, finished`` (aware UTC datetimes), ``duration`` (seconds),
    ``result, exception, traceback`` (text), ``error`` (one line),
    ``reason`` (why it was missed or canceled), ``count`` (runs a MISSED
    record stands for), ``exit_code, output, stderr`` (command tasks) and
    ``future``. It also reads as upstream's result entry, a read-only
    mapping with the keys ``'timestamp'``, ``'task'`` and ``'future'``.
    """

    # Defaults live on the class: a run is made for every execution, so its
    # constructor sets only what differs.
    status = TaskStatus.SUSPENDED
    result: Any = None
    exception: Optional[BaseException] = None
    #: The formatted traceback of ``exception``, or None.
    traceback: Optional[str] = None
    #: The exception on one line, or None.
    error: Optional[str] = None
    #: Why the run was missed or canceled.
    reason: Optional[str] = None
    #: How many runs a MISSED record stands for.
    count = 1
    #: True for a run made by run_now(), outside the schedule.
    manual = False
    _t_scheduled: float
    _stored: Optional[Mapping[str, Any]] = None
    _name: Optional[str] = None
    _future: Optional[Future] = None
    _owns_future = False
    # The fields below are the run's life, written by ``core.runlife.RunLife``
    # and its extensions only (with ``status`` and the outcome fields above);
    # the run book keeps ``_previous`` and ``_state``.
    _phase = Phase.DUE
    #: True once it was handed to its executor (a pulled run never is).
    _sent = False
    #: When it got its worker slot (handed over), started, and ended.
    _t_timestamp: Optional[float] = None
    _t_started: Optional[float] = None
    _t_finished: Optional[float] = None
    #: Its deadline on the scheduler's clock, and its key in the deadlines.
    _deadline: Optional[float] = None
    _deadline_key: Optional[int] = None
    #: What the scheduler kills or cancels at a deadline (a process, a task).
    _handle: Any = None
    #: The claim key in the store; None without a store.
    _slot: Optional[str] = None
    #: The journal's claim of this run in the store (its ``granted`` says
    #: the store's answer); None without a store.
    _claim: Any = None
    _previous: Optional["Run"] = None  # the task's latest run before this one

    def __init__(self, task: Any, state: Any, number: int, attempt: int,
                 scheduled: float, offset: float) -> None:
        self.task = task
        self.task_id = task.id
        self.run_number = number
        if attempt != 1:
            self.attempt = attempt
        options = task.options
        if options.timeout is not None:
            self.timeout = options.timeout
        #: Where it executes (a LaneKind).
        self.lane = options.lane
        self._t_scheduled = scheduled
        #: wall clock - scheduler clock when the run was made.
        self._offset = offset
        self._state = state

    # -- times, as aware datetimes --------------------------------------------

    def _wall(self, t: Optional[float]) -> Optional[_dt.datetime]:
        return None if t is None else _dt.datetime.fromtimestamp(t + self._offset, _UTC)

    @property
    def scheduled(self) -> Optional[_dt.datetime]:
        """When the run was due."""
        return self._wall(self._t_scheduled)

    @property
    def timestamp(self) -> Optional[_dt.datetime]:
        """When the run was handed to its executor (upstream's key)."""
        return self._wall(self._t_timestamp)

    @property
    def started(self) -> Optional[_dt.datetime]:
        return self._wall(self._t_started)

    @property
    def finished(self) -> Optional[_dt.datetime]:
        return self._wall(self._t_finished)

    @property
    def duration(self) -> Optional[float]:
        """Seconds from start to finish, if both are known."""
        if self._t_started is None or self._t_finished is None:
            return None
        return self._t_finished - self._t_started

    # -- outcome ----------------------------------------------------------------

    @property
    def name(self) -> str:
        if self._name is None:
            self._name = self.task.name if self.task is not None else self.task_id
        return self._name

    @property
    def done(self) -> bool:
        """True once the run has a final status."""
        return self.status in FINAL

    @property
    def exit_code(self) -> Optional[int]:
        return self._command_part(0, "exit_code")

    @property
    def output(self) -> Optional[str]:
        return self._command_part(1, "output")

    @property
    def stderr(self) -> Optional[str]:
        return self._command_part(2, "stderr")

    def _command_part(self, index: int, key: str) -> Any:
        if self._stored is not None:
            return self._stored.get(key)
        exc = self.exception
        if exc is None:
            outcome = self.result
        elif isinstance(exc, (CommandError, CommandTimeout)):
            outcome = exc.result
        else:
            return None
        return outcome[index] if isinstance(outcome, CommandResult) else None

    @property
    def future(self) -> Future:
        """A future for the run's outcome, made on first use (most runs never
        need one)."""
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
            elif self.status in (TaskStatus.CANCELED, TaskStatus.MISSED):
                future.cancel()
                future.set_running_or_notify_cancel()
            else:
                future.set_exception(self.outcome_error())
        except (InvalidStateError, RuntimeError):
            pass  # resolved already, by the other side of a race

    def outcome(self) -> Any:
        """The run's value, or raise its error (as ``get_result`` does)."""
        if self.status is TaskStatus.COMPLETED:
            return self.result
        raise self.outcome_error()

    def outcome_error(self) -> BaseException:
        if self.status is TaskStatus.TIMEOUT:
            if isinstance(self.exception, TimeoutError):
                return self.exception
            return TimeoutError(f"task {self.task_id!r} run {self.run_number} timed out")
        if self.status in (TaskStatus.CANCELED, TaskStatus.MISSED):
            why = f": {self.reason}" if self.reason else ""
            return CancelledError(f"task {self.task_id!r} run {self.run_number} was "
                                  f"{self.status.label.lower()}{why}")
        if self.exception is not None:
            return self.exception
        if self.status is TaskStatus.INTERRUPTED:
            why = self.error or "its scheduler process stopped during the run"
            return RuntimeError(f"task {self.task_id!r} run {self.run_number} was {why}")
        return RuntimeError(f"task {self.task_id!r} run {self.run_number} failed: "
                            f"{self.error or self.status.label}")

    # -- upstream's mapping ---------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        if key in _KEYS:
            return getattr(self, key)
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(_KEYS)

    def __len__(self) -> int:
        return len(_KEYS)

    def __contains__(self, key: object) -> bool:
        return key in _KEYS

    # A run is a record, not a value: equal only to itself (object's own
    # comparison and hash, in C: runs are kept in sets on the hot path).
    __eq__ = object.__eq__
    __ne__ = object.__ne__
    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return (f"<Run {self.task_id!r} #{self.run_number} attempt {self.attempt} "
                f"{self.status.label}>")

    # -- from the store ---------------------------------------------------------

    @classmethod
    def from_record(cls, record: Mapping[str, Any], task: Any = None) -> "Run":
        """A run as the store keeps it (earlier processes' runs included)."""
        run = cls.__new__(cls)
        run.task = task
        run.task_id = record["task_id"]
        run._name = record.get("name") or run.task_id
        run.run_number = record.get("run") or 0
        run.attempt = record.get("attempt") or 1
        run.status = TaskStatus(record.get("status", TaskStatus.SUSPENDED))
        run._offset = 0.0
        run._t_scheduled = float(record["scheduled"])
        run._t_started = record.get("started")
        run._t_timestamp = run._t_started  # handed over when it started, as far as is known
        run._t_finished = record.get("finished")
        run.error = record.get("error")
        run.traceback = record.get("traceback")
        run.reason = record.get("reason")
        run.count = record.get("count") or 1
        run._stored = dict(record)
        run.lane = None
        run._state = None
        _load_outcome(run, record.get("outcome"))
        return run


def _load_outcome(run: Run, data: Optional[bytes]) -> None:
    """The stored result or exception, when it was kept and loads here (a
    result that could not be pickled reads as None; its repr is in the
    record's ``result`` text)."""
    value = None
    if data:
        try:
            value = loads(data)
        except Exception:
            value = None
    if run.status is TaskStatus.COMPLETED:
        run.result = value
    elif isinstance(value, BaseException):
        run.exception = value


def outcome_bytes(run: Run, limit: int = 1 << 20) -> Optional[bytes]:
    """The run's result (or exception) pickled for the store, or None when it
    cannot be pickled or is larger than *limit*. Runs user code (pickling):
    never call it under a lock."""
    if run.status is TaskStatus.COMPLETED:
        value: Any = run.result
    elif run.exception is not None:
        value = run.exception
    else:
        return None
    try:
        data = pickle.dumps(value, protocol=4)
    except Exception:
        return None
    return data if len(data) <= limit else None
