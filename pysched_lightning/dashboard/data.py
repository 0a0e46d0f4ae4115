"""Where the dashboard reads: a store written by another process, or a live
scheduler in this one. Both answer the same few questions (``Source``).

A store is only read: the source never takes its hold and never unpickles
a task's or a run's bytes; with actions on, it writes control requests
(and nothing else) for the store's scheduler to apply (``control``). A live scheduler is read through
its public API; with a store, its run history comes from the store (which
keeps earlier processes' runs too), else from the runs it keeps in memory.
"""
from __future__ import annotations

import abc
import logging
import math
import os
import reprlib
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence

from ..durability.encoding import info_options
from .model import (MISSED, RUNNING, TaskRow, display_status, error_summary, interval_of,
                    last_finished, schedule_words)
from .control import Outcome, StoreControl, can_control
from .runs import MemoryRuns, StoreRuns

__all__ = ["Source", "StoreSource", "SchedulerSource", "make_source", "ACTIONS", "missed_total",
           "count_running"]

_log = logging.getLogger("pysched_lightning.dashboard")

#: The run records read per task to find its latest status and duration: a
#: skipped overlapping run (MISSED) may be newer than the run still going.
_LATEST = 3
#: The actions a dashboard offers, by the name used in URLs.
ACTIONS = ("pause", "resume", "run-now", "cancel")


class Source(abc.ABC):
    """What the pages read. ``runs`` is the run history (``StoreRuns`` or
    ``MemoryRuns``); ``live`` says whether the scheduler runs in this
    process; ``acts`` whether actions are possible at all."""

    live = False
    acts = False
    runs: Any

    @abc.abstractmethod
    def tasks(self) -> List[TaskRow]:
        """Every task, as the tasks page lists them."""

    @abc.abstractmethod
    def task(self, task_id: str) -> Optional[TaskRow]:
        """The task, or None if this source does not know it."""

    @abc.abstractmethod
    def next_run_times(self, task_id: str, n: int) -> List[float]:
        """The task's next *n* due times (POSIX seconds)."""

    def holder(self) -> Optional[str]:
        """Who holds the store right now (a scheduler's owner string), if anyone."""
        return None

    def workers(self) -> Optional[List[Any]]:
        """Each lane's ``LaneLoad`` of a live scheduler; None from a store."""
        return None

    def store_object(self) -> Any:
        """The store read, or None (a scheduler without one)."""
        return None

    @abc.abstractmethod
    def describe(self) -> str:
        """What is shown, in words (a store's path, a live scheduler)."""

    def act(self, action: str, task_id: str) -> Optional[Outcome]:
        """Apply an action (None: done at once) or request it (its Outcome)."""
        raise PermissionError("this dashboard reads a store from another process: "
                              "it is read-only")

    def control_request(self, request_id: int) -> Optional[Dict[str, Any]]:
        """A control request this source wrote, or None."""
        return None

    def close(self) -> None:
        """Free what the source opened itself (nothing by default)."""


class StoreSource(Source):
    """A store another process writes; *owned* stores are closed by close().
    With *actions*, actions are control requests (the store must keep them)."""

    def __init__(self, store: Any, owned: bool = False, actions: bool = False) -> None:
        self.store = store
        self.runs = StoreRuns(store)
        self._owned = owned
        self.control = StoreControl(store) if actions and can_control(store) else None
        self.acts = self.control is not None

    def act(self, action: str, task_id: str) -> Optional[Outcome]:
        if self.control is None:
            return super().act(action, task_id)
        outcome = self.control.act(action, task_id)
        _log.info("dashboard: %s task %r: request #%s %s", action, task_id, outcome.request,
                  outcome.state)
        return outcome

    def control_request(self, request_id: int) -> Optional[Dict[str, Any]]:
        return self.control.request(request_id) if self.control is not None else None

    def tasks(self) -> List[TaskRow]:
        return [self._row(record) for record in self.store.load_tasks()]

    def task(self, task_id: str) -> Optional[TaskRow]:
        record = self.store.task(task_id)
        return None if record is None else self._row(record)

    def _row(self, record: Any) -> TaskRow:
        info = _json_object(record.info)
        interval = interval_of(record.interval)
        tz = info.get("tz") if isinstance(info.get("tz"), str) else None
        written, words = schedule_words(record.trigger, interval, tz)
        latest = self.store.runs(record.id, _LATEST)
        last = last_finished(latest) or (latest[0] if latest else None)
        return TaskRow(
            id=record.id, name=record.name or record.id, trigger=record.trigger,
            written=written, words=words, tz=tz, next_run=record.next_run,
            status=display_status(latest, record.status),
            last_run=_run_time(last), last_duration=last.get("duration") if last else None,
            last_exit_code=last.get("exit_code") if last else None,
            last_error=error_summary(last),
            runs=record.runs, missed=record.missed, paused=bool(record.paused),
            priority=record.priority, call=info.get("call") if isinstance(
                info.get("call"), str) else None,
            options=info_options(info),
            stored_as=record.stored_as, scheduled=record.next_run is not None)

    def next_run_times(self, task_id: str, n: int) -> List[float]:
        record = self.store.task(task_id)
        if record is None or record.next_run is None or n <= 0:
            return []
        return _preview(record.trigger, interval_of(record.interval),
                        _json_object(record.info).get("tz"), record.next_run, n)

    def holder(self) -> Optional[str]:
        return self.store.holder()

    def store_object(self) -> Any:
        return self.store

    def describe(self) -> str:
        path = getattr(self.store, "path", None)
        return f"store {path}" if path else f"store {type(self.store).__name__}"

    def close(self) -> None:
        if self._owned:
            self.store.close()


class SchedulerSource(Source):
    """A scheduler running in this process: its tasks, and its actions."""

    live = acts = True

    def __init__(self, sched: Any) -> None:
        self.sched = sched
        store = sched.store
        self.runs = StoreRuns(store) if store is not None else MemoryRuns(sched)

    def tasks(self) -> List[TaskRow]:
        return [self._row(info) for info in self.sched.get_all()]

    def task(self, task_id: str) -> Optional[TaskRow]:
        try:
            return self._row(self.sched.get_task(task_id))
        except KeyError:
            return None

    def _row(self, info: Mapping[str, Any]) -> TaskRow:
        task_id = info["id"]
        task = self.sched.task.get(task_id)
        schedule = getattr(task, "schedule", None)
        tz = getattr(schedule, "tz_name", None)
        interval = _plain_interval(info.get("interval"))
        written, words = schedule_words(info.get("trigger"), interval, tz)
        last = info.get("last_run")
        next_at = info.get("next_run_time")
        return TaskRow(
            id=task_id, name=info.get("name") or task_id, trigger=info.get("trigger"),
            written=written, words=words, tz=tz,
            next_run=next_at.timestamp() if next_at is not None else None,
            status=int(info["status"]) if info.get("status") is not None else None,
            last_run=_timestamp(getattr(last, "started", None) or getattr(last, "scheduled", None)),
            last_duration=getattr(last, "duration", None),
            last_exit_code=getattr(last, "exit_code", None),
            last_error=_live_error(last),
            runs=info.get("runs") or 0, missed=info.get("missed") or 0,
            paused=bool(info.get("paused")), priority=info.get("priority"),
            call=_call_text(task) if task is not None else None,
            options=task.options.as_dict() if task is not None else {},
            stored_as=info.get("stored_as"), scheduled=task is not None)

    def next_run_times(self, task_id: str, n: int) -> List[float]:
        try:
            return [moment.timestamp() for moment in self.sched.next_run_times(task_id, n)]
        except KeyError:  # finished or canceled
            return []

    def holder(self) -> Optional[str]:
        store = self.sched.store
        return store.holder() if store is not None else None

    def workers(self) -> Optional[List[Any]]:
        return list(self.sched.workers())

    def store_object(self) -> Any:
        return self.sched.store

    def describe(self) -> str:
        store = self.sched.store
        where = getattr(store, "path", None) or (type(store).__name__ if store else "memory")
        return f"live scheduler (runs in {where})"

    def act(self, action: str, task_id: str) -> Optional[Outcome]:
        """Pause, resume, run now or cancel a task; KeyError if it is not
        scheduled, ValueError for an unknown action."""
        calls: Dict[str, Callable[[str], None]] = {
            "pause": self.sched.pause, "resume": self.sched.resume,
            "run-now": self.sched.run_now, "cancel": self.sched.cancel}
        if action not in calls:
            raise ValueError(f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
        calls[action](task_id)
        _log.info("dashboard: %s task %r", action, task_id)
        return None


def make_source(target: Any, actions: bool = False) -> Source:
    """The source for ``app(target)``: a Scheduler, a store object, or a store
    URL or path (opened read-only, it must exist; with *actions*, it may
    write control requests, and only them)."""
    from ..records.protocols import Store
    from ..scheduler import Scheduler
    if isinstance(target, Source):
        return target
    if isinstance(target, Scheduler):
        return SchedulerSource(target)
    if isinstance(target, (str, os.PathLike)):
        from ..durability.stores import open_store
        return StoreSource(open_store(target, read_only=True, control=actions), owned=True,
                           actions=actions)
    if isinstance(target, Store):
        return StoreSource(target, actions=actions)
    raise TypeError(f"the dashboard reads a Scheduler, a store, or a store URL or path; "
                    f"got {type(target).__name__} {target!r}")


# -- helpers --------------------------------------------------------------------


def _json_object(text: Optional[str]) -> Dict[str, Any]:
    """A task's info JSON as a dict ({} when absent or unreadable)."""
    import json
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _live_error(run: Any) -> Optional[str]:
    if run is None:
        return None
    return error_summary({"exit_code": run.exit_code, "stderr": run.stderr, "error": run.error})


def _run_time(run: Optional[Mapping[str, Any]]) -> Optional[float]:
    if run is None:
        return None
    return run.get("started") if run.get("started") is not None else run.get("scheduled")


def _timestamp(moment: Any) -> Optional[float]:
    return moment.timestamp() if moment is not None else None


def _plain_interval(interval: Any) -> Any:
    """A live task's interval as the store keeps it (numbers, text)."""
    import datetime as _dt
    if isinstance(interval, _dt.datetime):
        return interval.isoformat()
    if isinstance(interval, _dt.timedelta):
        return interval.total_seconds()
    return interval


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 100


def _call_text(task: Any) -> str:
    """``module.fn(1, x=2)`` or a command's repr; each part a short repr.
    Runs user code (reprs), so it is never called under a lock."""
    fn = task.fn
    try:
        module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
        head = f"{module}.{qualname}" if isinstance(module, str) and isinstance(
            qualname, str) else _REPR.repr(fn)
        parts = [_REPR.repr(arg) for arg in task.args]
        parts += [f"{key}={_REPR.repr(value)}" for key, value in dict(task.kwargs).items()]
        return f"{head}({', '.join(parts)})"
    except Exception as exc:  # a hostile __repr__ must not break the page
        return f"<call not shown: {type(exc).__name__}>"


def _preview(trigger: str, interval: Any, tz: Any, first: float, n: int) -> List[float]:
    """The next *n* due times of a stored task from its next run, without
    unpickling its trigger: a recurring grid, or the cron expression again."""
    if trigger == "recur" and isinstance(interval, (int, float)) and interval > 0:
        return [first + k * float(interval) for k in range(n)]
    if trigger == "cron" and isinstance(interval, str):
        from ..timing.triggers import make_trigger
        try:
            cron = make_trigger("cron", interval, now=0.0, wall_now=first - 0.001,
                                tz=tz if isinstance(tz, str) else None)
        except (ValueError, TypeError, LookupError):
            return [first]
        times = [first]
        while len(times) < n:
            following = cron.next_due(times[-1])
            if following is None or not math.isfinite(following):
                break
            times.append(following)
        return times
    return [first]


def missed_total(runs: Sequence[Mapping[str, Any]]) -> int:
    """How many runs MISSED records stand for."""
    return sum(run.get("count") or 1 for run in runs if run.get("status") == MISSED)


def count_running(rows: Iterable[TaskRow]) -> int:
    return sum(1 for row in rows if row.status == RUNNING)
