"""The transitions behind the Scheduler's control methods: adding a task
(or keeping, or replacing, one with the same id), pause and resume,
replacing a definition, a manual run, purge, and snapshots for queries.

Every function here runs with the state lock held and notes side effects in
``fx`` (see ``effects.py``); none calls user code.
"""
from __future__ import annotations

import enum
import logging
from typing import Any, Dict, List, Optional, Tuple

from ..durability.encoding import slot_at
from ..durability.journal import Claim, EarlyClaim
from ..records.events import EventKind
from ..records.runs import TaskStatus
from ..records.task import Task
from ..timing.triggers import CronTrigger, RecurTrigger
from .effects import Effects
from .firing import fire
from .runbook import TaskState
from .state import State
from .timetable import Extra

__all__ = ["Added", "add_task", "catch_up", "reserve_start", "unreserve", "pause", "resume",
           "replace_task", "run_now", "cancel", "complete_cancel", "purge", "snapshot",
           "same_definition"]


class Added(enum.Enum):
    """What ``add_task`` did with a task id."""

    #: A new task.
    NEW = "new"
    #: The same definition was there already: kept, with its schedule state.
    KEPT = "kept"
    #: A changed definition replaced the one under that id.
    REPLACED = "replaced"


def existing(st: State, task_id: str) -> Optional[Task]:
    """The definition a new task with this id would meet: a scheduled task,
    or a finished one (kept until purged)."""
    task = st.timetable.get(task_id)
    if task is None:
        state = st.runbook.get(task_id)
        if state is not None and not state.canceled:
            task = state.retired
    return task


def check_add(st: State, task: Task, replace_existing: bool) -> Optional[Task]:
    """Raise if *task* cannot be added; return the definition it meets."""
    if st.closing:
        raise RuntimeError("cannot schedule new tasks after shutdown")
    _check_dependencies(st, task)
    old = existing(st, task.id)
    if old is not None and not replace_existing:
        raise ValueError(f"a task with id {task.id!r} already exists "
                         "(pass replace_existing=True to replace it)")
    return old


def catch_up(st: State, old: Optional[Task], task: Task, now: float) -> Task:
    """*task*, a changed definition of the recurring task *old*, as it is to
    be added: due when *old* is, if that occurrence came due without
    running (a slot that passed while no scheduler ran, owed at a restart):
    the new definition runs that slot once, and its own trigger follows."""
    due = st.timetable.next_time(old.id) if old is not None else None
    if due is None or due > now or not (_recurring(old) and _recurring(task)):
        return task
    return task.at(due, task.seq)


def _recurring(task: Any) -> bool:
    return isinstance(task.when, (RecurTrigger, CronTrigger))


def add_task(st: State, task: Task, replace_existing: bool, same: bool, now: float,
             fx: Effects, early: Optional[Claim] = None) -> Added:
    """Schedule *task*; one due now fires at once when the scheduler runs.
    *same* says the caller found (without the lock: ``==`` is user code)
    that the definition under this id is the same as *task*'s. *early*: its
    first run was claimed with it (see :func:`reserve_start`)."""
    old = check_add(st, task, replace_existing)
    added = Added.NEW
    if old is not None:
        if same:
            return Added.KEPT
        _retract(st, task.id, now, fx)
        added = Added.REPLACED
        fx.log(logging.INFO, "%s: definition changed, replacing it", task.label)
    elif task.id in st.runbook:  # a canceled task's id is free again
        st.runbook.restart(task.id)
    add_new(st, task, now, fx, early)
    return added


def add_new(st: State, task: Task, now: float, fx: Effects,
            early: Optional[Claim] = None) -> None:
    """Schedule *task*, whose id is new (``delay()``'s own ids are). One
    claimed *early* starts now, even if a pause came since: the pause came
    after its ``delay()`` had decided so."""
    if st.closing:
        raise RuntimeError("cannot schedule new tasks after shutdown")
    if task.options.depend_on:
        _check_dependencies(st, task)
    due_now = task.time <= now and st.started and (early is not None or not st.paused)
    if st.timetable.add(task, in_heap=not due_now):
        st.wakeup.notify()
    if st.listening:
        st.event(fx, EventKind.ADDED, task.id)
    if due_now:
        fire(st, task, now, fx, early)


def reserve_start(st: State, task: Task, name: str, now: float) -> Optional[Claim]:
    """A new task that would start the moment it is added (due, its lane
    idle): reserve its lane slot and make the claim of its first run (named
    *name*: ``task.name`` may be user code), to be written with the task.
    None otherwise."""
    journal = st.journal
    if journal is None or journal.store is None or not st.started or st.paused \
            or st.closing or task.time > now or task.options.depend_on:
        return None
    lane = st.lanes.of_kind(task.options.lane)
    if not lane.has_room() or lane.ready or lane.returning:
        return None
    early = EarlyClaim(task.id, slot_at(task, task.time, st.offset), name,
                       task.time + st.offset)
    lane.reserve(early)
    return early


def abandon_start(st: State, task: Task) -> None:
    """An interrupt came around :func:`reserve_start` (the claim may be made
    or not, returned or not): no slot stays reserved for the new *task*."""
    lane = st.lanes.of_kind(task.options.lane)
    lane.abandon(task.id, sum(1 for run in st.in_flight() if st.lanes.of(run) is lane))


def unreserve(st: State, task: Task, early: Claim) -> None:
    """The slot reserved by :func:`reserve_start` goes back, unless its run
    took it (nothing if it went back already)."""
    st.lanes.of_kind(task.options.lane).unreserve(early)


def redo_replace(st: State, task: Task, fx: Effects) -> None:
    """Putting *task* in place of the definition under its id was cut short
    (an interrupt): it is done again, from the start."""
    for run in fx.take_runs_of(task.id):
        st.withdraw(run, "replaced by a new definition", fx)
    now = st.clock.now()
    _retract(st, task.id, now, fx)
    add_new(st, task, now, fx)
    st.repair(fx)


def _retract(st: State, task_id: str, now: float, fx: Effects) -> None:
    """Make room for a changed definition: the old one leaves the timetable
    and its runs not started yet are dropped; the tasks that depend on the
    id keep waiting for the new one."""
    for run in st.waiting_runs(task_id):
        st.drop(run, TaskStatus.CANCELED, "replaced by a new definition", now, fx)
    if task_id in st.timetable:
        st.timetable.remove(task_id)
    st.runbook.restart(task_id)


def _check_dependencies(st: State, task: Task) -> None:
    for dep in task.options.depend_on:
        if dep == task.id:
            raise ValueError(f"task {task.id!r} cannot depend on itself")
        if dep not in st.timetable and dep not in st.runbook:
            raise KeyError(f"depend_on names an unknown task id {dep!r}")


def same_definition(a: Task, b: Task) -> bool:
    """True when *b* schedules the same work the same way as *a*."""
    return (a.trigger == b.trigger and a.interval == b.interval
            and a.priority == b.priority and type(a.priority) is type(b.priority)
            and a.fn == b.fn and a.args == b.args and a.kwargs == b.kwargs
            and a.options == b.options and _zone(a) == _zone(b))


def _zone(task: Task) -> Any:
    return getattr(task.schedule, "_tz_key", None)


def known(st: State, task_id: str) -> Task:
    task = st.timetable.get(task_id)
    if task is None:
        raise KeyError(f"no scheduled task with id {task_id!r}")
    return task


# -- pause and resume ---------------------------------------------------------


def pause(st: State, task_id: Optional[str], fx: Effects) -> None:
    """Pause one task or, with None, the whole scheduler: nothing new starts."""
    if task_id is None:
        st.paused = True
        st.event(fx, EventKind.SCHEDULER_PAUSED)
        return
    known(st, task_id)
    st.runbook.state(task_id).paused = True
    if st.journal is not None:
        st.journal.task_changed(task_id, paused=True)
    st.event(fx, EventKind.PAUSED, task_id)


def resume(st: State, task_id: Optional[str], now: float, fx: Effects) -> None:
    """Undo :func:`pause`: held runs go back to their lanes; a one-shot that
    came due meanwhile runs now (its misfire rules apply)."""
    if task_id is None:
        st.paused = False
        st.resumed_at = now
        st.event(fx, EventKind.SCHEDULER_RESUMED)
    else:
        known(st, task_id)
        st.runbook.state(task_id).paused = False
        if st.journal is not None:
            st.journal.task_changed(task_id, paused=False)
        parked = st.timetable.parked(task_id)
        if parked is not None and not parked.options.depend_on:
            st.timetable.requeue(parked)
            st.timetable.unpark(task_id)
        st.event(fx, EventKind.RESUMED, task_id)
    st.release_held(task_id, now, fx)
    st.wakeup.notify()


# -- changing a task ---------------------------------------------------------------


def replace_task(st: State, new: Task, fx: Effects, keep_time: bool) -> Task:
    """Put *new* in place of the scheduled task with its id: later runs use
    it. With *keep_time* (modify) it is due when the current definition is
    due now: a firing that came between reading the task and this change
    is never undone; else (reschedule) at ``new.time``. Returns what was
    put in place (doing it again with that changes nothing more)."""
    current = known(st, new.id)
    if current is not new:
        new = new.at(current.time if keep_time else new.time, next(st.seq))
        if st.timetable.replace(new):
            st.wakeup.notify()
    st.event(fx, EventKind.MODIFIED, new.id)
    return new


def run_now(st: State, task_id: str, now: float) -> None:
    """One extra run now; the regular schedule is unchanged."""
    task = known(st, task_id)
    head = st.timetable.push_extra(Extra(now, task.priority, next(st.seq), task_id, 1, None,
                                         "run_now", None, st.timetable.generation(task_id)))
    st.runbook.state(task_id).owed += 1
    if head:
        st.wakeup.notify()


def cancel(st: State, task_id: str, fx: Effects) -> None:
    known(st, task_id)
    st.cancel_task(task_id, "canceled by the user", fx)


def complete_cancel(st: State, task_id: str, fx: Effects) -> None:
    """A cancel() was interrupted: finish it (nothing if it had not begun
    and the task is unknown)."""
    state = st.runbook.get(task_id)
    if task_id in st.timetable or (state is not None and state.canceled):
        st.cancel_task(task_id, "canceled by the user", fx)


def purge(st: State, cutoff: float) -> Tuple[int, List[str]]:
    """Drop finished runs and tasks older than *cutoff* (scheduler clock),
    keeping tasks that another task depends on."""
    return st.runbook.purge(cutoff, lambda task_id: task_id in st.timetable,
                            st.timetable.has_dependents)


# -- queries --------------------------------------------------------------------------


def snapshot(st: State, task_id: str) -> Dict[str, Any]:
    """What is known of a task, read under the lock; names and times are
    made from it afterwards (they may run user code)."""
    task = st.timetable.get(task_id)
    state: Optional[TaskState] = st.runbook.get(task_id)
    if task is None and state is None:
        raise KeyError(f"no task with id {task_id!r}")
    scheduled = task is not None
    if task is None and state is not None:
        task = state.retired or (state.latest.task if state.latest is not None else None)
    return {
        "task": task, "scheduled": scheduled,
        "next_time": st.timetable.next_time(task_id) if scheduled else None,
        "parked": st.timetable.parked(task_id) is not None,
        "offset": st.offset,
        "status": st.runbook.status_of(task_id, scheduled),
        "runs": state.runs if state is not None else 0,
        "missed": state.missed if state is not None else 0,
        "last_error": state.last_error if state is not None else None,
        "perf": state.perf if state is not None else None,
        "paused": bool(state is not None and state.paused),
        "latest": state.latest if state is not None else None,
    }
