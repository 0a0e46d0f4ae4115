"""A run's way through the scheduler, and what its end means for its task.

A run is admitted to its lane (started at once when a slot is free, else it
waits in the ready heap), claimed in the store when it starts, finished with
an outcome (perhaps retried), or dropped without executing (MISSED or
CANCELED). Its end releases or cancels the tasks that depend on its task and
retires a task whose last occurrence it was. Every function here runs with
the state lock held and notes side effects in ``fx`` (see ``state.py``).
"""
from __future__ import annotations

import logging
from typing import Any, List, Optional

from ..durability.journal import EarlyClaim
from ..records.events import EventKind
from ..records.runs import FAILED, Run, TaskStatus
from .lanes import Lane
from .state import Effects, State
from .timetable import Extra

__all__ = ["admit", "drain", "next_ready", "finish", "end", "drop", "cancel_task",
           "returned", "overrun", "refuse", "queued_runs"]

# Members read on every run, bound once: on Python 3.11 reading an attribute
# of an Enum class goes through EnumType.__getattr__, several times slower.
_RUNNING, _COMPLETED, _ERROR, _TIMEOUT = (TaskStatus.RUNNING, TaskStatus.COMPLETED,
                                         TaskStatus.ERROR, TaskStatus.TIMEOUT)

_EVENT_OF_STATUS = {
    TaskStatus.COMPLETED: EventKind.COMPLETED,
    TaskStatus.ERROR: EventKind.FAILED,
    TaskStatus.TIMEOUT: EventKind.TIMEOUT,
    TaskStatus.CANCELED: EventKind.CANCELED,
    TaskStatus.MISSED: EventKind.MISSED,
}

# -- admission ---------------------------------------------------------------


def admit(st: State, run: Run, fx: Effects, early: Optional[EarlyClaim] = None) -> None:
    """*run* is due: start it if its lane has a free slot, else it waits. A
    run claimed *early*, with its task, starts in the slot reserved for it."""
    lane = st.lanes.of(run)
    if early is not None:
        run._slot, run._claimed = early.slot, early.claimed
        early.used = _start(st, run, lane, fx, True, reserved=True)
    elif st.paused or run._state.paused:
        lane.held.append(run)
    elif lane.has_room() and not lane.ready and not lane.returning:
        _start(st, run, lane, fx, True)
    else:  # a worker that just finished a run takes it next, or a free one
        lane.queue(run, next(st.seq))


def drain(st: State, lane: Lane, now: float, fx: Effects) -> None:
    """Fill the lane's free slots from its ready heap."""
    while lane.has_room():
        if next_ready(st, lane, now, fx, True) is None:
            return


def next_ready(st: State, lane: Lane, now: float, fx: Effects,
               take: bool = False) -> Optional[Run]:
    """The next ready run that may start, by (priority, due time), started;
    runs of paused tasks are held, runs too late or overlapping dropped.
    With *take* it gets a slot of its own and is sent (see :func:`_start`);
    without, it is for the calling worker, which keeps its slot."""
    if st.paused or st.closing:
        return None
    while True:
        run = lane.pop_ready()
        if run is None:
            return None
        if run._state.paused:
            lane.held.append(run)
            continue
        grace = run.task.options.misfire_grace_time
        late = now - run._t_scheduled
        if grace is not None and late > grace:
            drop(st, run, TaskStatus.MISSED, "no free worker", now, fx, late)
        elif _start(st, run, lane, fx, take):
            return run


def _start(st: State, run: Run, lane: Lane, fx: Effects, take: bool,
           reserved: bool = False) -> bool:
    """Count *run* as started, unless max_instances says it would overlap:
    then a regular run is MISSED and an extra one waits for the running one.
    With *take* it gets a lane slot (unless one was *reserved* for it) and is
    noted to be sent at once, before anything else, so that a failure later
    in the pass cannot strand it."""
    runbook = st.runbook
    if not runbook.may_start(run):
        if run.attempt > 1 or run.manual:
            runbook.wait_for_running(run)
        else:
            now = st.clock.now()
            drop(st, run, TaskStatus.MISSED, "previous run still going", now, fx,
                 now - run._t_scheduled)
        return False
    runbook.start(run)
    if take:
        if not reserved:
            lane.take()
        fx.submit(run)
    if st.journal is not None and run._claimed is None:  # (not claimed early)
        st.journal.claim(run, st.offset)
    if st.listening:
        st.event(fx, EventKind.SUBMITTED, run.task_id, run)
    return True


def refuse(st: State, run: Run, fx: Effects, pull: bool) -> Optional[Run]:
    """The store refused *run*'s claim (another scheduler ran that slot, or
    the store failed): it does not execute. Like :func:`finish`, returns
    the next ready run for a worker that keeps its slot."""
    now = st.clock.now()
    returned(st, run, fx)
    reason = run.reason or "already claimed in the store by another scheduler"
    run.status = TaskStatus.SUSPENDED  # it never ran
    drop(st, run, TaskStatus.MISSED, reason, now, fx, 0.0, recorded=False)
    return _next_for(st, st.lanes.of(run), now, fx, pull)


def returned(st: State, run: Run, fx: Effects) -> None:
    """*run*'s executor gave it back: runs waiting for it may start. (Once:
    a run a shutdown gave up on may still come back from its executor.)"""
    if run._returned:
        return
    run._returned = True
    for waiting in st.runbook.returned(run):
        if not waiting.done:
            admit(st, waiting, fx)
    if st.waiters:  # shutdown() waits for every run to return
        st.notify_waiters(run.task_id, fx)


# -- the end of a run ----------------------------------------------------------


def finish(st: State, run: Run, status: TaskStatus, result: Any,
           exc: Optional[BaseException], text: Optional[str], error: Optional[str],
           fx: Effects, pull: bool) -> Optional[Run]:
    """*run*'s executor is done with it: record its outcome (unless a
    deadline or a shutdown ended it first; an outcome after the deadline
    counts as TIMEOUT). *text* and *error* are the exception's traceback
    and one-line texts, made by the caller without the lock (``str`` of an
    exception is user code). With *pull* the caller is a worker that keeps
    its slot: the next ready run of the lane is returned for it to execute;
    otherwise the slot is given back."""
    now = st.clock.now()
    lane = st.lanes.of(run)
    if run.status is _RUNNING:  # not ended by a deadline or a shutdown
        if run._deadline is not None and now > run._deadline:
            status = _TIMEOUT  # the outcome came too late to count
            overrun(run)
        else:
            run.result, run.exception, run.traceback, run.error = result, exc, text, error
        end(st, run, status, now, fx)
    returned(st, run, fx)
    if pull and lane.returning:
        # Only now: runs that its end released (a retry waiting for it,
        # dependents) waited in the ready heap for this worker to take them.
        lane.returning.pop()
    return _next_for(st, lane, now, fx, pull)


def _next_for(st: State, lane: Lane, now: float, fx: Effects, pull: bool) -> Optional[Run]:
    """A slot is free: a pulling worker takes the lane's next ready run, or
    the slot is given back (and the dispatcher told of waiting runs)."""
    following = next_ready(st, lane, now, fx) if pull and lane.ready else None
    if following is None:
        lane.give_back()
        if lane.ready and not st.paused:
            st.wakeup.notify()
    return following


def end(st: State, run: Run, status: TaskStatus, now: float, fx: Effects) -> None:
    """Record *run*'s final status and what follows from it: a retry, or the
    task's new status, its event, and its dependents' fate."""
    st.runbook.end(run, status, now)
    if run._owns_future:
        run._resolve_future()
    if st.journal is not None:  # every attempt, retried or not
        st.journal.finished(run, st.offset)
        st.write_soon(now)
    if st.waiters:
        st.notify_waiters(run.task_id, fx)
    if status is not _COMPLETED and _retry(st, run, now, fx):
        return
    if status is _ERROR and run.exit_code is not None:
        # a command: its exit code and the tail of its stderr say it all
        fx.log(logging.ERROR, "task %r run %d failed: %s", run.task_id, run.run_number,
               run.error)
    elif status is _ERROR:
        fx.log(logging.ERROR, "task %r run %d failed:\n%s", run.task_id, run.run_number,
               run.traceback or run.error)
    elif status is _TIMEOUT:
        fx.log(logging.WARNING, "%s", run.error)
    st.runbook.settle(run)
    if st.journal is not None:
        state = run._state
        st.journal.task_changed(run.task_id, runs=state.runs, missed=state.missed,
                                status=int(state.status))
    if st.listening:
        st.event(fx, _EVENT_OF_STATUS[status], run.task_id, run)
    _after_final(st, run, status, now, fx)


def _retry(st: State, run: Run, now: float, fx: Effects) -> bool:
    options = run.task.options
    if run.attempt > options.retries or run._state.canceled or st.closing:
        return False
    wait = options.retry_wait(run.attempt)
    extra = Extra(now + wait, run.task.priority, next(st.seq), run.task_id,
                  run.attempt + 1, run.run_number, "retry", run._slot)
    if st.timetable.push_extra(extra):
        st.wakeup.notify()
    state = run._state
    if not state.canceled:
        state.status = TaskStatus.SUSPENDED
    reason = f"attempt {run.attempt} {run.status.label.lower()}; retrying in {wait:g} s"
    fx.log(logging.WARNING, "task %r: %s", run.task_id, reason)
    st.event(fx, EventKind.RETRY, run.task_id, run, reason=reason)
    return True


def _after_final(st: State, run: Run, status: TaskStatus, now: float,
                 fx: Effects) -> None:
    """A run is final: release or cancel dependents; retire a finished task."""
    task = run.task
    timetable = st.timetable
    if timetable.depended_on(task.id):
        if status is TaskStatus.COMPLETED:
            _release_dependents(st, task.id, now, fx)
        elif status in FAILED or timetable.has_fired_last(task.id):
            _fail_dependents(st, task.id, fx)
    if timetable.retire(task):
        st.runbook.retire(task, now, run._state)
        if st.journal is not None:
            st.journal.task_finished(task.id, int(run._state.status))
        if st.listening:
            st.event(fx, EventKind.REMOVED, task.id)


def _release_dependents(st: State, task_id: str, now: float, fx: Effects) -> None:
    timetable, runbook = st.timetable, st.runbook
    for dependent in timetable.dependents_of(task_id):
        task = timetable.parked(dependent)
        if task is None:
            continue
        if all(runbook.status_of(dep, dep in timetable) is TaskStatus.COMPLETED
               for dep in task.options.depend_on):
            timetable.unpark(dependent)
            admit(st, runbook.new_run(task, 1, task.time, st.offset), fx)


def _fail_dependents(st: State, task_id: str, fx: Effects) -> None:
    for dependent in st.timetable.dependents_of(task_id):
        if dependent in st.timetable:
            cancel_task(st, dependent, f"dependency {task_id!r} did not complete", fx)


def overrun(run: Run) -> None:
    """Give *run* the outcome of a run past its timeout."""
    exc = TimeoutError(f"task {run.task_id!r} run {run.run_number} exceeded its "
                       f"timeout of {run.timeout!r} s")
    run.result, run.exception, run.traceback = None, exc, None
    run.error = f"TimeoutError: {exc}"


# -- runs that do not execute --------------------------------------------------


def drop(st: State, run: Run, status: TaskStatus, reason: str, now: float, fx: Effects,
         lateness: Optional[float] = None, recorded: bool = True) -> None:
    """*run* will not execute: MISSED (too late, or overlapping) or CANCELED
    (its task was canceled, or the scheduler shut down before it started).
    A MISSED run is recorded (unless not *recorded*: its slot's record is
    another scheduler's); a missed last occurrence ends its task."""
    record = st.runbook.drop(run, status, reason, now)
    if run._owns_future:
        run._resolve_future()
    st.notify_waiters(run.task_id, fx)
    if status is not TaskStatus.MISSED:
        return
    if st.journal is not None and recorded:
        st.journal.missed(record, st.offset)
        st.journal.task_changed(run.task_id, missed=run._state.missed)
        st.write_soon(now)
    if record is run:  # the first of repeated skips; the others add to its count
        fx.log(logging.WARNING, "task %r: run skipped, %.3f s late (%s)", run.task_id,
               lateness or 0.0, reason)
    st.event(fx, EventKind.MISSED, run.task_id, run, reason=reason, lateness=lateness)
    state = run._state
    if st.timetable.has_fired_last(run.task_id) and not state.running:
        if not state.canceled:
            state.status = TaskStatus.MISSED  # its only occurrence never ran
        _after_final(st, run, TaskStatus.MISSED, now, fx)


def cancel_task(st: State, task_id: str, reason: str, fx: Effects,
                keep_stored: bool = False) -> None:
    """Stop a task (KeyError if not scheduled): no further runs; its queued
    runs are dropped, its dependents canceled. A run in progress goes on."""
    task = st.timetable.remove(task_id)
    now = st.clock.now()
    state = st.runbook.cancel(task, now)
    if state.latest is not None or state.waiting:
        # Runs not started yet (in a ready heap, held, or waiting) are the
        # task's SUSPENDED runs: dropping them makes their heap entries dead.
        for run in state.kept_runs() + (state.waiting or []):
            if run.status is TaskStatus.SUSPENDED:
                drop(st, run, TaskStatus.CANCELED, reason, now, fx)
        state.waiting = None
        state.status = TaskStatus.CANCELED
    if st.journal is not None and not keep_stored:
        st.journal.task_removed(task_id)
    fx.log(logging.INFO, "task %r canceled: %s", task_id, reason)
    if st.listening:
        st.event(fx, EventKind.CANCELED, task_id, reason=reason)
    if st.waiters:
        st.notify_waiters(task_id, fx)
    if st.timetable.depended_on(task_id):
        _fail_dependents(st, task_id, fx)


def queued_runs(st: State) -> List[Run]:
    """Every run admitted but not started (ready heaps, held, waiting)."""
    runs = []
    for lane in st.lanes.all():
        runs.extend(lane.waiting())
        runs.extend(lane.held)
    return [run for run in runs if not run.done]
