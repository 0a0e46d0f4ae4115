"""Firing: what happens when a task's time comes, and when a deadline passes.

A due task schedules its next occurrence (coalescing missed ones), then runs
unless it is paused, waits for a dependency, or is past its grace time. A
retry or a manual run is a run of its own. Runs past their timeout end as
TIMEOUT. When the wall clock steps, wall-clock tasks follow it. Every
function here runs with the state lock held and notes side effects in
``fx`` (see ``effects.py``).
"""
from __future__ import annotations

import logging
from typing import Any, Optional

from ..durability.encoding import slot_offset
from ..records.events import EventKind
from ..records.runs import Phase, TaskStatus, error_line
from ..records.task import Task
from .effects import Effects
from .state import State
from .timetable import Extra

__all__ = ["fire_due", "fire", "expire_deadlines", "follow_wall_clock", "time_to_next"]

#: How many due timers the dispatcher fires per hold of the lock.
FIRE_PER_PASS = 32
#: A trigger that failed is asked again after this, then twice as long each
#: time, up to the most.
TRIGGER_RETRY_SECONDS = 1.0
TRIGGER_RETRY_MAX_SECONDS = 3600.0
#: A wall-clock jump larger than this (seconds) counts as a step.
CLOCK_STEP_SECONDS = 1.0
#: With the real clocks, never sleep longer than this, so a step of the wall
#: clock (NTP, suspend) is noticed and cron times are re-derived.
CLOCK_CHECK_SECONDS = 30.0

_READY, _HELD = Phase.READY, Phase.HELD
#: Why an occurrence is skipped when an earlier one still waits.
STILL_WAITING = "no free worker"


def fire_due(st: State, now: float, fx: Effects) -> bool:
    """Fire due timers; True if some are left for the next pass.

    A pass stops once the free workers have work, and after a bounded
    number of timers, so that during a burst the workers start at once and
    take ready runs between passes instead of waiting for the lock."""
    pop_due, threads = st.timetable.pop_due, st.lanes.threads
    for _ in range(FIRE_PER_PASS):
        entry = pop_due(now)
        if entry is None:
            return False
        if isinstance(entry, Extra):
            _fire_extra(st, entry, now, fx)
        else:
            fire(st, entry, now, fx)
        if fx.runs and not threads.has_room():
            return True
    return True


def fire(st: State, task: Task, now: float, fx: Effects, early: Any = None) -> None:
    """*task*'s due time has come: schedule its next occurrence, then run it
    (a new task's first run claimed *early* starts in its reserved slot)."""
    state = st.runbook.state(task.id)
    if st.timetable.failed and task.id in st.timetable.failed:
        # not an occurrence: its trigger is asked again for the next one
        _ask_again(st, task, st.timetable.failed[task.id][0], now, fx)
        return
    following = None if type(task.when) is str else _next_occurrence(st, task, now, fx)
    st.timetable.advance(task, following)
    if state.paused:
        if following is None:
            st.timetable.park(task)  # a one-shot runs on resume
        return
    if task.options.depend_on and not _dependencies_met(st, task, fx):
        return
    if following is not None and task.options.coalesce and (state.ready or st.paused):
        _coalesce_waiting(st, task, now, fx)
    run = st.runbook.new_run(task, 1, task.time, st.offset, None, state)
    grace = task.options.misfire_grace_time
    if grace is not None and now - task.time > grace:
        st.drop(run, TaskStatus.MISSED, _late_reason(st, task.time), now, fx,
                now - task.time)
        return
    st.admit(run, fx, early)


def _coalesce_waiting(st: State, task: Task, now: float, fx: Effects) -> None:
    """A new occurrence of a recurring task with ``coalesce`` replaces the
    regular runs of the task still waiting for a worker (or a resume):
    they are MISSED, one record with a count, and the newest runs."""
    state = st.runbook.state(task.id)
    lane = st.lanes.of_kind(task.options.lane)
    waiting = [old for old in state.kept_runs() + lane.held.get(task.id, [])
               if old.attempt == 1 and not old.manual
               and (old._phase is _READY or old._phase is _HELD)]
    if len(waiting) > 1:
        waiting = list(dict.fromkeys(waiting))
    for old in waiting:
        st.drop(old, TaskStatus.MISSED, STILL_WAITING, now, fx, now - old._t_scheduled)


def _fire_extra(st: State, extra: Extra, now: float, fx: Effects) -> None:
    """A retry or a run_now() is due: a run with the task's current definition."""
    task = st.timetable.get(extra.task_id)
    if task is None:
        return
    state = st.runbook.state(task.id)
    if state.owed:
        state.owed -= 1
    run = st.runbook.new_run(task, extra.attempt, extra.time, st.offset, extra.number, state)
    if extra.kind == "run_now":
        run.manual = True
    st.admit(run, fx, slot=extra.slot)  # (a retry is another attempt at the same slot)


def _next_occurrence(st: State, task: Task, now: float, fx: Effects) -> Optional[Task]:
    """A recurring task's next occurrence; missed slots coalesce into this
    one. A trigger that fails (a zone database unreadable for a moment) is
    asked again later, loudly, the task keeping its place meanwhile."""
    try:
        return _following(st, task, now, fx)
    except Exception as exc:
        return _later(st, task, task.time, now, fx, exc)


def _ask_again(st: State, task: Task, after: float, now: float, fx: Effects) -> None:
    """The trigger failed to give the occurrence after *after*: ask again."""
    try:
        following = _following(st, task.at(after, task.seq), now, fx)
    except Exception as exc:
        following = _later(st, task, after, now, fx, exc)
    else:
        st.timetable.trigger_answered(task.id)
        if following is None:  # nothing comes after: the task is over
            st.timetable.advance(task, None)
            st.retire_if_over(task.id, now, fx)
            return
    st.timetable.advance(task, following)


def _later(st: State, task: Task, after: float, now: float, fx: Effects,
           exc: Exception) -> Task:
    """A stand-in for the occurrence after *after*, due when the trigger is
    asked again (a second later, then twice as long each time, at most an
    hour)."""
    wait = st.timetable.trigger_fails(task.id, after, TRIGGER_RETRY_SECONDS,
                                      TRIGGER_RETRY_MAX_SECONDS)
    fx.log(logging.ERROR, "%s: its trigger failed to give its next occurrence (%s); "
           "asking again in %g s", task.label, error_line(exc), wait)
    return task.at(now + wait, next(st.seq))


def _following(st: State, task: Task, now: float, fx: Effects) -> Optional[Task]:
    trig = task.when
    offset = st.offset if trig.wall_clock else 0.0  # type: ignore[union-attr]
    due, current = task.time + offset, now + offset
    coalesce = task.options.coalesce
    following = trig.next_due(max(due, current) if coalesce else due)  # type: ignore[union-attr]
    period = getattr(trig, "seconds", None)  # recur only: the slots are countable
    if coalesce and period is not None and current - due >= period:
        skipped = int((current - due) // period)
        reason = _late_reason(st, task.time)
        record = st.skip(task, task.time + period, skipped, reason, now, fx)
        fx.log(logging.WARNING, "%s: %d run(s) coalesced into one, %.3f s late (%s)",
               task.label, skipped, current - due, reason)
        st.event(fx, EventKind.MISSED, task.id, record, reason=reason,
                 lateness=current - due, count=skipped)
    if following is None:
        return None
    nxt = task.at(following - offset, next(st.seq))
    if st.journal is not None and not st.shared:  # (shared: the node that runs it writes it)
        st.journal.task_changed(task.id, next_run=nxt.time + slot_offset(nxt, st.offset))
    return nxt


def _dependencies_met(st: State, task: Task, fx: Effects) -> bool:
    """True when every dependency completed; one that failed, or is over
    without completing, cancels the task; an unfinished one parks this
    occurrence until it completes."""
    met = st.dependencies(task)
    if met is False:
        st.cancel_task(task.id, "a dependency did not complete", fx)
        return False
    if met:
        return True
    st.timetable.park(task)  # a later occurrence replaces a waiting one
    return False


def _late_reason(st: State, due: float) -> str:
    """Why a run due at *due* comes late: "stalled" only if the scheduler
    was running then (not before its start or takeover: a restart's)."""
    if due < st.running_since:
        return "the scheduler was not running"
    return "scheduler paused" if due < st.resumed_at else "scheduler stalled"


# -- deadlines and clocks -------------------------------------------------------


def expire_deadlines(st: State, now: float, fx: Effects) -> None:
    """Runs past their timeout end as TIMEOUT; they are told (and their
    process killed or coroutine cancelled) once the lock is released."""
    if st.deadlines:
        st.expire_due(now, fx)


def follow_wall_clock(st: State, fx: Effects) -> None:
    """After a wall-clock step, re-derive the heap times of wall-clock tasks."""
    offset = st.clock.offset()
    shift = st.offset - offset
    if abs(shift) <= CLOCK_STEP_SECONDS:
        return
    fx.log(logging.WARNING, "wall clock stepped by %+.1f s; re-deriving cron and "
           "datetime times", -shift)
    st.offset = offset
    timetable = st.timetable
    timetable.follow_wall_clock(shift, st.clock.now() + offset, offset, st.seq)
    if st.journal is not None:  # a restart reads the wall times stored
        for task_id, task in timetable.tasks.items():
            if timetable.next_time(task_id) is not None:
                st.journal.task_changed(task_id, next_run=task.time + slot_offset(task, offset))


def time_to_next(st: State, now: float) -> Optional[float]:
    """Seconds until something may be due (None: nothing is scheduled)."""
    due = [] if st.paused else [st.timetable.head_time()]
    due.append(st.deadlines.next())
    times = [t for t in due if t is not None]
    may_step = st.clock.may_step
    if not times:
        return CLOCK_CHECK_SECONDS if may_step and len(st.timetable) else None
    wait = max(0.0, min(times) - now)
    return min(wait, CLOCK_CHECK_SECONDS) if may_step else wait
