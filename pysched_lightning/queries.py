"""Reading the scheduler for its public API: results, statuses, runs,
previews and task descriptions.

What is read under the state lock is a snapshot of plain values; names,
times and stored records are made from it after the lock is released
(a task's name may run user code; the store is I/O).
"""
from __future__ import annotations

import datetime as _dt
import time
from concurrent.futures import CancelledError
from typing import Any, Dict, List, NamedTuple, Optional

from .core import control
from .core.lanes import Mechanism
from .core.state import State
from .durability.encoding import function_reference
from .records.runs import FINAL, Run, TaskStatus
from .records.task import Task

__all__ = ["wait_for_result", "status", "runs", "next_run_times", "task_info",
           "all_task_info", "definition", "LaneLoad", "workers"]

_UTC = _dt.timezone.utc


def definition(st: State, task_id: str) -> Task:
    """The scheduled task's current definition (KeyError if not scheduled)."""
    with st.lock:
        return control.known(st, task_id)


def wait_for_result(st: State, task_id: str, timeout: Optional[float]) -> Optional[Run]:
    """Wait until the task's latest run is final and return it; None when the
    task was canceled. Raises KeyError, TimeoutError or CancelledError, or
    RuntimeError when no run is final and the scheduler was never started."""
    deadline = None if timeout is None else time.monotonic() + timeout
    if st.shared:
        return _wait_across_nodes(st, task_id, timeout, deadline)
    with st.lock:
        if task_id not in st.timetable and task_id not in st.runbook:
            raise KeyError(f"no task with id {task_id!r}")
        while True:
            state = st.runbook.get(task_id)
            current = st.runbook.status_of(task_id, task_id in st.timetable)
            if current is TaskStatus.CANCELED:
                return None
            if state is not None and current not in (TaskStatus.SUSPENDED,
                                                     TaskStatus.RUNNING):
                return _final_run(task_id, current, state.latest)
            if st.closing and (state is None or not state.running):
                raise CancelledError(f"task {task_id!r} will not run: the scheduler "
                                     "was shut down")
            if not st.started:
                raise _never_started(task_id)
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"task {task_id!r} has no finished run after "
                                   f"{timeout!r} s")
            st.wait_run_done(task_id, remaining)


#: How often a wait for a result on a shared store looks at the store.
_CLUSTER_POLL = 0.05


def _wait_across_nodes(st: State, task_id: str, timeout: Optional[float],
                       deadline: Optional[float]) -> Optional[Run]:
    """On a shared store, the task's newest run may be any node's: wait
    until the store's newest record of it is final (or this node's own run
    ends first), looking again at every run that ends here and every
    ``_CLUSTER_POLL`` seconds."""
    journal = st.journal
    assert journal is not None and journal.store is not None
    while True:
        with st.lock:
            if task_id not in st.timetable and task_id not in st.runbook:
                raise KeyError(f"no task with id {task_id!r}")
            state = st.runbook.get(task_id)
            task = st.timetable.get(task_id) or (state.retired if state is not None else None)
            if state is not None and state.canceled:
                return None
        journal.flush_all()  # (this node's own records first)
        rows = journal.store.runs(task_id, 1)
        stored = journal.store.task(task_id)
        waiting = stored is not None and stored.status == TaskStatus.SUSPENDED  # (a retry)
        if rows and rows[0]["status"] in FINAL_CODES and not waiting:
            run = Run.from_record(rows[0], task)
            if run.status is TaskStatus.CANCELED:
                return None
            return run
        if rows and rows[0]["status"] == TaskStatus.MISSED and \
                task_id not in st.timetable:
            raise CancelledError(f"task {task_id!r} was missed: its only run was skipped")
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            raise TimeoutError(f"task {task_id!r} has no finished run after {timeout!r} s")
        with st.lock:
            if st.closing:
                raise CancelledError(f"task {task_id!r} will not run here: the scheduler "
                                     "was shut down")
            if not st.started:
                raise _never_started(task_id)
            st.wait_run_done(task_id, _CLUSTER_POLL if remaining is None
                             else min(_CLUSTER_POLL, remaining))


def _never_started(task_id: str) -> RuntimeError:
    """Waiting would never end: nothing runs before start()."""
    return RuntimeError(f"task {task_id!r} has no finished run and the scheduler was "
                        "never started: call start() first")


#: The status codes of a run over (a store's ints; a skip is no result).
FINAL_CODES = frozenset(int(status) for status in FINAL - {TaskStatus.MISSED})


def _final_run(task_id: str, current: TaskStatus, latest: Optional[Run]) -> Run:
    if latest is not None and latest.done:
        return latest
    if current is TaskStatus.MISSED:
        raise CancelledError(f"task {task_id!r} was missed: its only run was skipped")
    raise LookupError(f"task {task_id!r} is {current.label}, but its run record is "
                      "no longer kept (purged)")


def status(st: State, task_id: str) -> TaskStatus:
    with st.lock:
        if task_id not in st.timetable and task_id not in st.runbook:
            raise KeyError(f"no task with id {task_id!r}")
        here = st.runbook.status_of(task_id, task_id in st.timetable)
    if not st.shared or here is TaskStatus.RUNNING or st.journal is None:
        return here
    return _cluster_status(st.journal.store, task_id, here)


def _cluster_status(store: Any, task_id: str, here: TaskStatus) -> TaskStatus:
    """On a shared store, the task's status across the nodes: that of its
    newest run (running on another node, say), else what the node that ran
    it last stored. The run is read first: a run's end commits its task's
    status with it (or before it), so the task read next is never older
    than the run (read the other way round, a run ending between the two
    reads left the status from before it)."""
    newest = store.runs(task_id, 1)
    if newest and newest[0]["status"] == TaskStatus.RUNNING:
        return TaskStatus.RUNNING if store.task(task_id) is not None else here
    record = store.task(task_id)
    if record is None:
        return here
    return TaskStatus(record.status)


def runs(st: State, task_id: str, limit: Optional[int]) -> List[Run]:
    """The task's runs, newest first: the stored ones with a store, else the
    ones kept in memory."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                              or limit < 0):
        raise ValueError(f"limit must be None or an int >= 0, got {limit!r}")
    with st.lock:
        known = task_id in st.timetable or task_id in st.runbook
        state = st.runbook.get(task_id)
        kept = state.kept_runs() if state is not None else []
        task = st.timetable.get(task_id) or (state.retired if state is not None else None)
    journal = st.journal
    store = journal.store if journal is not None else None
    if journal is not None and store is not None:
        journal.flush_all()
        rows = store.runs(task_id, limit)
        if rows or known:
            return [Run.from_record(row, task) for row in rows]
    if not known:
        raise KeyError(f"no task with id {task_id!r}")
    kept.reverse()
    return kept[:limit] if limit is not None else kept


def next_run_times(st: State, task_id: str, n: int) -> List[_dt.datetime]:
    """The next *n* due times as aware datetimes, in the cron zone (else local)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an int >= 0, got {n!r}")
    with st.lock:
        task = control.known(st, task_id)
        due = st.timetable.next_time(task_id)
        offset = st.offset
    times: List[float] = []
    trig = task.schedule
    if due is not None:
        if trig is None:
            times.append(due + offset)
        else:
            at: Optional[float] = due + (offset if trig.wall_clock else 0.0)
            while at is not None and len(times) < n:
                times.append(at + (0.0 if trig.wall_clock else offset))
                at = trig.next_due(at)
    zone = _zone_of(task)
    return [_dt.datetime.fromtimestamp(t, _UTC).astimezone(zone) for t in times[:n]]


def task_info(st: State, task_id: str) -> Dict[str, Any]:
    with st.lock:
        snap = control.snapshot(st, task_id)
    return _describe(task_id, snap, st)


def all_task_info(st: State) -> List[Dict[str, Any]]:
    with st.lock:
        ids = list(dict.fromkeys(list(st.timetable) + list(st.runbook)))
        snaps = [(task_id, control.snapshot(st, task_id)) for task_id in ids]
    return [_describe(task_id, snap, st) for task_id, snap in snaps]


def _describe(task_id: str, snap: Dict[str, Any], st: State) -> Dict[str, Any]:
    task: Optional[Task] = snap["task"]
    next_run = None
    if snap["next_time"] is not None and task is not None:
        next_run = _dt.datetime.fromtimestamp(snap["next_time"] + snap["offset"],
                                              _UTC).astimezone(_zone_of(task))
    options = task.options if task is not None else None
    stored = st.journal is not None and st.journal.store is not None
    return {
        "id": task_id,
        "name": task.name if task is not None else None,
        "trigger": task.trigger if task is not None else None,
        "interval": task.interval if task is not None else None,
        "priority": task.priority if task is not None else None,
        "status": snap["status"],
        "next_run_time": next_run,
        "runs": snap["runs"],
        "missed": snap["missed"],
        "last_error": snap["last_error"],
        "perf": snap["perf"],
        "paused": snap["paused"],
        "hard": bool(options is not None and options.hard),
        "async": bool(options is not None and options.lane.value == "async"),
        "depend_on": list(options.depend_on) if options is not None else [],
        "last_run": snap["latest"],
        "stored_as": (("import" if function_reference(task.fn) else "pickle")
                      if stored and task is not None else None),
    }


class LaneLoad(NamedTuple):
    """One lane of workers at a moment: ``kind`` ('threads', 'processes' or
    'async'), ``size`` (workers; None when the executor does not say),
    ``busy`` (runs executing), ``waiting`` (due runs waiting for a worker)
    and ``held`` (runs of paused tasks, kept until they are resumed)."""

    kind: str
    size: Optional[int]
    busy: int
    waiting: int
    held: int


def workers(st: State) -> List[LaneLoad]:
    """Each lane made so far, counted under the state lock (no user code)."""
    with st.lock:
        loads = []
        for lane in st.lanes.all():
            kind = "threads" if lane is st.lanes.threads else \
                "async" if lane.mechanism is Mechanism.LOOP else "processes"
            size = lane.capacity
            if lane.to_processes:  # a few runs per process are sent ahead
                size = getattr(lane.executor, "capacity", None)
            flying = lane.used - len(lane.reservations)
            busy = flying if size is None else min(flying, size)
            loads.append(LaneLoad(kind, size, busy,
                                  len(lane.ready.entries()) + flying - busy,
                                  len(lane.held_runs())))
    return loads


def _zone_of(task: Task) -> Optional[_dt.tzinfo]:
    """The cron trigger's zone; None (local) for everything else."""
    zone = getattr(task.schedule, "zone", None)
    return zone if isinstance(zone, _dt.tzinfo) else None
