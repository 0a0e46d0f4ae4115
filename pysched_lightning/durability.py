"""The scheduler's durable side: its store and run log, the standby, and the
store records of its tasks.

A mixin of :class:`~pysched_lightning.scheduler.Scheduler`: the dispatcher
notes what the store owes in the journal under the scheduler's lock, and
these methods write it (never under that lock), load stored tasks at start,
and wait as a standby while another process holds the store.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import socket
from typing import Any, List, Optional

from .events import Event
from .journal import Journal
from .persistence import load_args, load_function, load_options, load_schedule, task_record
from .runs import Run, TaskStatus
from .runlog import RunLog
from .stores import open_store
from .task import Task
from .triggers import RecurTrigger
from .validation import check_kwargs

__all__ = ["DurabilityMixin"]

_log = logging.getLogger("pysched_lightning")

#: How often a standby scheduler tries to take over the store.
_STANDBY_RETRY_SECONDS = 1.0


class DurabilityMixin:
    """Store and run-log methods; relies on the Scheduler's private state."""

    def _open_store(self, store: Any, run_log: Any) -> None:
        """Open the store and run log; take the store, or become a standby."""
        opened = open_store(store)
        log = RunLog(run_log) if isinstance(run_log, (str, os.PathLike)) else run_log
        self._owns = (opened is not store, log is not run_log)
        if opened is None and log is None:
            return
        self._journal = Journal(opened, log, lambda: self._offset, self._lock)
        if opened is None:
            return
        self._owner = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self._active = opened.acquire(self._owner, wait=False)
        if self._active:
            self._load_from_store()
        else:
            _log.warning("store %r is held by another scheduler (%s): this one waits as a "
                         "STANDBY and runs nothing until that one stops", opened,
                         opened.holder())

    @property
    def store(self) -> Any:
        """The store this scheduler keeps its tasks in, or None."""
        return self._journal.store if self._journal is not None else None

    def _load_from_store(self) -> None:
        """Schedule the stored tasks (a slot missed while down is due now)."""
        store = self._journal.store
        interrupted = store.mark_interrupted()
        if interrupted:
            _log.warning("%d run(s) were interrupted when the last scheduler stopped",
                         interrupted)
        now = self._clock.now()
        for record in store.load_tasks():
            try:
                task = self._task_from_record(record, now)
            except Exception:
                _log.exception("stored task %r cannot be loaded; it stays in the store "
                               "untouched", record.id)
                continue
            if task is None:
                continue
            with self._lock:
                self._tasks[task[3]] = task
                self._timers.push(task)
                state = self._state(task[3])
                state.runs, state.missed = record.runs, record.missed
                state.status, state.paused = TaskStatus(record.status), bool(record.paused)
                for dep in task[9].depend_on:
                    self._dependents.setdefault(dep, set()).add(task[3])
            _log.info("loaded task %r (%s), next run %s", task[3], task.name,
                      _dt.datetime.fromtimestamp(record.next_run, _dt.timezone.utc))

    def _task_from_record(self, record: Any, now: float) -> Optional[Task]:
        if record.next_run is None:
            return None
        fn = load_function(record)
        args, kwargs = load_args(record)
        schedule = load_schedule(record)
        due = record.next_run - self._offset
        if isinstance(schedule, RecurTrigger):  # its grid was on the old process's clock
            schedule = RecurTrigger(schedule.interval, anchor=due - schedule.seconds)
        return Task(due, record.priority, next(self._seq), record.id,
                    schedule if schedule is not None else record.trigger,
                    json.loads(record.interval), fn, args, check_kwargs(kwargs),
                    load_options(record))

    def _flush(self) -> None:
        """Write what the journal holds (called without the lock)."""
        if self._journal is not None:
            self._journal.flush()

    def _stored_record(self, task: Task) -> Any:
        """Under the lock: the store record of a scheduled task, with its
        schedule state (next run, counters, pause)."""
        state = self._states.get(task[3])
        waiting = task[3] in self._parked or (state is not None and state.pending is task)
        record = task_record(task, None if waiting else task[0] + self._offset,
                             self._clock.wall())
        if state is not None:
            record.runs, record.missed = state.runs, state.missed
            record.status, record.paused = int(state.status), state.paused
        return record

    def _standby_keeps(self, record: Any, replace_existing: bool) -> bool:
        """A standby has nothing in memory: it compares with the store. True
        when an identical task is stored already (it keeps its state)."""
        stored = next((r for r in self._journal.store.load_tasks() if r.id == record.id),
                      None)
        if stored is None:
            return False
        if _same_record(stored, record):
            return True
        if not replace_existing:
            raise ValueError(f"a task with id {record.id!r} already exists "
                             "(pass replace_existing=True to replace it)")
        return False

    def _wait_as_standby(self) -> bool:
        """Until the store's holder stops: try to take the store once a second.
        (A blocking lock could not be interrupted by shutdown.)"""
        store = self._journal.store
        while True:
            with self._lock:
                if self._closing:
                    return False
            if store.acquire(self._owner, wait=False):
                break
            with self._lock:
                self._wakeup.wait(_STANDBY_RETRY_SECONDS)
        _log.warning("store %r: the previous scheduler stopped; this one takes over", store)
        self._load_from_store()
        with self._lock:
            self._active = True
        return True

    def _settle_journal(self, following: Optional[Run]) -> Optional[Run]:
        """A worker does not wait to write its run's record: the next flush
        (a delay(), the dispatcher, or the journal's linger) takes it along.
        Before the next run, it makes sure that run's claim is decided."""
        journal = self._journal
        while following is not None and journal.store is not None:
            if following._claimed is None:
                journal.flush()
            if following._claimed is not False:
                break
            following = self._refuse(following, pull=True)
        return following

    def _refuse(self, run: Run, pull: bool = False) -> Optional[Run]:
        """The store says this slot ran already (another process): skip it."""
        events: List[Event] = []
        following = None
        with self._lock:
            lane = self._lanes[1] if run.hard else self._lanes[0]
            run._state.running -= 1
            self._running -= 1
            self._drop_run(run, 0.0, "already claimed in the store by another scheduler",
                           events)
            if pull and lane.ready and not self._closing:
                following = self._pop_ready(lane, self._clock.now(), events)
            if following is None:
                lane.give_back()
        self._listeners.emit(events)
        self._flush()
        return following

def _same_record(a: Any, b: Any) -> bool:
    fields = ("trigger", "interval", "priority", "fn_ref", "fn_pickle", "args", "kwargs",
              "options")
    return all(getattr(a, f) == getattr(b, f) for f in fields)
