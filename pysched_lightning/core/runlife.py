"""The run's life: one state machine, one owner.

``RunLife`` (with its extensions ``HandOver`` and ``TaskLife``) is the only
writer of a run's phase, status, times, outcome, claim, slot and deadline
(see ``records.runs.Phase`` for the diagram). Each transition is one
method that checks the phase it leaves and does all of its bookkeeping at
once: the worker slot, the running counts, the deadline, the store's claim
and record, the retry, the task's status and the run's future (resolved
later, see ``Effects``). A transition called in
the wrong phase changes nothing, so doing one again (after an interrupt) is
safe. Every method runs with the state lock held and calls no user code.

What a run's end means for its task (a retry, its dependents, retiring a
task whose last run is over) is ``TaskLife``'s, in ``tasklife.py``.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Optional

from ..durability.encoding import slot_of, slot_offset
from ..records.events import EventKind
from ..records.runs import Phase, Run, TaskStatus
from .effects import Effects

if TYPE_CHECKING:  # pragma: no cover - the attributes State gives the mixin
    from ..timing.clock import Clock
    from .deadlines import Deadlines
    from .lanes import Lane, Lanes
    from .runbook import RunBook
    from .timetable import Timetable

__all__ = ["RunLife"]


# Members read on every run, bound once: on Python 3.11 reading an attribute
# of an Enum class goes through EnumType.__getattr__, several times slower.
_DUE, _READY, _HELD, _BLOCKED = Phase.DUE, Phase.READY, Phase.HELD, Phase.BLOCKED
_STARTED, _OVERDUE, _FINISHED, _DROPPED = (Phase.STARTED, Phase.OVERDUE, Phase.FINISHED,
                                           Phase.DROPPED)
_WAITING = frozenset({_DUE, _READY, _HELD, _BLOCKED})
_RUNNING, _COMPLETED, _ERROR, _TIMEOUT, _MISSED, _CANCELED = (
    TaskStatus.RUNNING, TaskStatus.COMPLETED, TaskStatus.ERROR, TaskStatus.TIMEOUT,
    TaskStatus.MISSED, TaskStatus.CANCELED)
_SUBMITTED = EventKind.SUBMITTED
#: Why a run that waited for a worker (or a resume) is skipped.
_STILL_WAITING = "no free worker"

_EVENT_OF_STATUS = {
    TaskStatus.COMPLETED: EventKind.COMPLETED,
    TaskStatus.ERROR: EventKind.FAILED,
    TaskStatus.TIMEOUT: EventKind.TIMEOUT,
    TaskStatus.CANCELED: EventKind.CANCELED,
    TaskStatus.MISSED: EventKind.MISSED,
    TaskStatus.INTERRUPTED: EventKind.FAILED,
}

class RunLife:
    """The run transitions; ``State`` (which holds what they change) is one,
    through ``TaskLife``."""

    if TYPE_CHECKING:  # pragma: no cover - set by State
        clock: Clock
        offset: float
        timetable: Timetable
        runbook: RunBook
        lanes: Lanes
        deadlines: Deadlines
        journal: Any
        seq: Any
        paused: bool
        closing: bool
        shared: bool
        share: Any
        listening: bool
        waiters: Any
        wakeup: Any

        def event(self, fx: Effects, kind: EventKind, task_id: Optional[str] = None,
                  run: Optional[Run] = None, **extra: Any) -> None: ...
        def write_soon(self, now: float) -> None: ...
        def notify_waiters(self, task_id: Optional[str], fx: Effects) -> None: ...
        # (TaskLife's)
        def _retry(self, run: Run, now: float, fx: Effects) -> bool: ...
        def _after_final(self, run: Run, status: TaskStatus, now: float,
                         fx: Effects) -> None: ...
        def _log_failure(self, run: Run, status: TaskStatus, fx: Effects) -> None: ...
        def retire_if_over(self, task_id: str, now: float, fx: Effects,
                           stored: bool = True) -> None: ...
        # (Sharing's)
        def _later(self, run: Run) -> float: ...
        def _foreseen(self, run: Run, elsewhere: Any, fx: Effects) -> bool: ...

    # -- due -> waiting or started ------------------------------------------------

    def admit(self, run: Run, fx: Effects, early: Any = None,
              slot: Optional[str] = None) -> None:
        """*run* is due (or held, and may go on): start it if its lane has a
        free slot, else it waits. A run claimed *early*, with its task,
        starts in the slot reserved for it (see ``control.reserve_start``);
        a retry takes the store *slot* of the run it retries."""
        if run._phase is not _DUE and run._phase is not _HELD:
            return
        if slot is not None:
            run._slot = slot
        lane = self.lanes.of(run)
        if early is not None:
            self._start(run, lane, fx, True, early)
        elif self.paused or run._state.paused:
            if run._phase is _DUE:
                self._hold(run, lane)
        elif lane.has_room() and not lane.ready and not lane.returning:
            self._start(run, lane, fx, True)
        else:  # a worker that just finished a run takes it next, or a free one
            lane.queue(run, next(self.seq), 0.0 if self.share is None else self._later(run))
            run._state.ready += 1
            run._phase = _READY

    def _hold(self, run: Run, lane: Lane) -> None:
        run._phase = _HELD
        lane.hold(run)

    def release_held(self, task_id: Optional[str], now: float, fx: Effects) -> None:
        """The held runs (of one task, or all) go back to their lanes."""
        for lane in self.lanes.all():
            for run in lane.held_runs(task_id):
                self.admit(run, fx)  # it leaves HELD in one step, or stays
            lane.compact_held(task_id)
        self.fill_slots(now, fx)

    def fill_slots(self, now: float, fx: Effects) -> None:
        """Fill every lane's free slots from its ready heap."""
        for lane in self.lanes.all():
            if lane.ready:
                self.drain(lane, now, fx)

    def drain(self, lane: Lane, now: float, fx: Effects) -> None:
        """Fill the lane's free slots from its ready heap."""
        while lane.has_room():
            if self.next_ready(lane, now, fx, True) is None:
                return

    def next_ready(self, lane: Lane, now: float, fx: Effects,
                   take: bool = False) -> Optional[Run]:
        """The next ready run that may start, by (priority, due time), started;
        runs of paused tasks are held, runs too late or overlapping dropped.
        With *take* it gets a slot of its own and is sent (see :meth:`_start`);
        without, it is for the calling worker, which keeps its slot."""
        if self.paused or self.closing:
            return None
        while True:
            run = lane.pop_ready()
            if run is None:
                return None
            run._state.ready -= 1
            if run._state.paused:
                self._hold(run, lane)
                continue
            grace = run.task.options.misfire_grace_time
            late = now - run._t_scheduled
            if grace is not None and late > grace:
                self.drop(run, _MISSED, _STILL_WAITING, now, fx, late)
            elif self._start(run, lane, fx, take, None, now):
                return run

    def _start(self, run: Run, lane: Lane, fx: Effects, take: bool,
               early: Any = None, now: Optional[float] = None) -> bool:
        """*run* takes a worker slot, unless max_instances says it would
        overlap: then a regular run is MISSED and an extra one is blocked
        until the running one returns. With *take* it gets a slot of the
        lane's (the one reserved *early*, if any) and is noted to be sent
        first thing after the lock; without, the calling worker's slot.
        A run another node is known to have claimed does not start here."""
        journal = self.journal
        if early is None and journal is not None and journal.elsewhere is not None \
                and self._foreseen(run, journal.elsewhere, fx):
            return False
        now = self.clock.now() if now is None else now
        if early is None and self._overtaken(run, now, fx):
            return False
        if not self.runbook.may_start(run):
            if run.attempt > 1 or run.manual:
                run._phase = _BLOCKED
                self.runbook.block(run)
            else:
                now = self.clock.now()
                self.drop(run, _MISSED, "previous run still going", now, fx,
                          now - run._t_scheduled)
            return False
        if take:
            fx.submit(run)  # first: an interrupt after it still sends the run
            if early is None:
                lane.take()
            else:  # its reservation becomes the run's slot
                lane.reservations.discard(early)
        run._phase = _STARTED
        run.status = _RUNNING
        run._t_timestamp = now
        self.runbook.started(run)
        if journal is not None and journal.store is not None:
            if early is not None:
                run._slot, run._claim = early.slot, early
                journal.follow(run, early)
            elif run._claim is None:  # (one taken back after an interrupt keeps its own)
                if run._slot is None:
                    run._slot = slot_of(run, self.offset)
                run._claim = journal.claim(run)
        if self.listening:
            self.event(fx, _SUBMITTED, run.task_id, run)
        return True

    def _overtaken(self, run: Run, now: float, fx: Effects) -> bool:
        """A regular run of a coalescing recurring task that waited (for a
        worker, a resume) until its task's next occurrence came due: it is
        MISSED, and the newest runs instead, as when that occurrence fires
        while it waits. (Else both ran back to back: one started the moment
        the scheduler resumed, the next as it fired.)"""
        options = run.task.options
        if run.attempt > 1 or run.manual or not options.coalesce or options.depend_on:
            return False
        following = self.timetable.next_time(run.task_id)
        if following is None or following <= run._t_scheduled or following > now:
            return False
        self.drop(run, _MISSED, _STILL_WAITING, now, fx, now - run._t_scheduled)
        return True

    # -- started: executing ---------------------------------------------------------

    def expire_due(self, now: float, fx: Effects) -> None:
        """Runs past their timeout end as TIMEOUT; they are told (and their
        process killed or coroutine cancelled) once the lock is released."""
        for run in self.deadlines.pop_expired(now):
            run._deadline_key = None
            if run._phase is _STARTED:
                self._overrun(run, f"exceeded its timeout of {run.timeout!r} s")
                self._overdue(run, _TIMEOUT, now, fx)

    def interrupt(self, run: Run, now: float, fx: Effects) -> None:
        """Shutdown's grace is over: a run still executing ends now (its late
        outcome will be dropped) and is told to stop. It is INTERRUPTED, as
        a run cut by its scheduler's end is; its timeout did not pass."""
        if run._phase is not _STARTED:
            return  # (its end logs it: see TaskLife._log_failure and _retry)
        run.result, run.exception, run.traceback = None, None, None
        run.error = "interrupted: the scheduler shut down during this run"
        self._overdue(run, TaskStatus.INTERRUPTED, now, fx)

    def _overdue(self, run: Run, status: TaskStatus, now: float, fx: Effects) -> None:
        """STARTED -> OVERDUE: the run ends now; its executor keeps its slot
        until it gives the run back."""
        run._phase = _OVERDUE
        self._end(run, status, now, fx)
        fx.expire(run)

    def _overrun(self, run: Run, what: str) -> None:
        exc = TimeoutError(f"{run.task.label} run {run.run_number} {what}")
        run.result, run.exception, run.traceback = None, exc, None
        run.error = f"TimeoutError: {exc}"

    # -- the end of a started run ----------------------------------------------------

    def finish(self, run: Run, status: TaskStatus, result: Any,
               exc: Optional[BaseException], text: Optional[str], error: Optional[str],
               fx: Effects, pull: bool) -> Optional[Run]:
        """*run*'s executor gave it back with its outcome (STARTED or OVERDUE
        -> FINISHED). An outcome after the deadline counts as TIMEOUT; one
        after the run ended (deadline, shutdown) is dropped. *text* and
        *error* are the exception's traceback and one-line texts, made by the
        caller without the lock (``str`` of an exception is user code). With
        *pull* the caller is a worker that keeps its slot: the lane's next
        ready run is returned for it to execute; else the slot is freed."""
        if run._phase is _STARTED:
            now = self.clock.now()
            run._phase = _FINISHED
            if run._deadline is not None and now > run._deadline:
                status = _TIMEOUT  # the outcome came too late to count
                self._overrun(run, f"exceeded its timeout of {run.timeout!r} s")
            elif exc is None:  # (the other fields are None: their class defaults)
                run.result = result
            else:
                run.result, run.exception, run.traceback, run.error = result, exc, text, error
            self._end(run, status, now, fx)
        elif run._phase is _OVERDUE:
            now = self.clock.now()
            run._phase = _FINISHED
        else:
            return None  # given back twice: nothing is counted twice
        lane = self.lanes.of(run)
        self._returned(run, fx)
        if pull and lane.returning:
            # Only now: runs that its end released (a retry waiting for it,
            # dependents) waited in the ready heap for this worker to take them.
            lane.returning.pop()
        return self._next_for(run, lane, now, fx, pull)

    def _returned(self, run: Run, fx: Effects) -> None:
        """*run* no longer holds its slot: runs blocked behind it may start."""
        if run._deadline_key is not None:
            self.deadlines.remove(run._deadline_key)
            run._deadline_key = None
        for blocked in self.runbook.returned(run):
            if blocked._phase is _BLOCKED:
                blocked._phase = _DUE
                self.admit(blocked, fx)
        if self.waiters:  # shutdown() waits for every run to return
            self.notify_waiters(run.task_id, fx)

    def _next_for(self, run: Run, lane: Lane, now: float, fx: Effects,
                  pull: bool) -> Optional[Run]:
        """*run*'s slot is free: a pulling worker takes the lane's next ready
        run in it, or it is given back (and the dispatcher told of waiting
        runs)."""
        following = self.next_ready(lane, now, fx) if pull and lane.ready else None
        if following is None:
            lane.give_back()
            if lane.ready and not self.paused:
                self.wakeup.notify()
        else:  # the slot is the following run's now
            following._t_started = now  # its worker begins it as soon as it has it
        return following

    def _end(self, run: Run, status: TaskStatus, now: float, fx: Effects) -> None:
        """*run* has its final *status*: record it, then what follows: a
        retry, or the task's new status, its event and its dependents."""
        run.status = status
        run._t_finished = now
        self.runbook.ended(run, status, now)
        if run._owns_future:
            fx.resolve(run)
        journal = self.journal
        if journal is not None:  # every attempt, retried or not
            if run._slot is None and journal.store is not None:
                run._slot = slot_of(run, self.offset)
            fx.record(journal.finished(run))
            self._write_soon(now, fx)
        if self.waiters:
            self.notify_waiters(run.task_id, fx)
        if status is not _COMPLETED:
            if self._retry(run, now, fx):
                if journal is not None:  # a retry waits (see recovery)
                    journal.task_changed(run.task_id, status=int(run._state.status))
                return
            self._log_failure(run, status, fx)
        self.runbook.settle(run)
        if journal is not None:
            state = run._state
            journal.task_changed(run.task_id, runs=state.runs, missed=state.missed,
                                 status=int(state.status))
            if self.shared:
                self._note_next_run(run.task_id)
        if self.listening:
            self.event(fx, _EVENT_OF_STATUS[status], run.task_id, run)
        self._after_final(run, status, now, fx)

    def _note_next_run(self, task_id: str) -> None:
        """On a shared store, the task's next due time is written with the
        end of a run by the node that ran it (every node fires the same
        occurrences, and writes nothing of those it did not run)."""
        task = self.timetable.get(task_id)
        due = self.timetable.next_time(task_id)
        if task is not None and due is not None:
            self.journal.task_changed(task_id, next_run=due + slot_offset(task, self.offset))

    def _write_soon(self, now: float, fx: Effects) -> None:
        """Writes were noted: flushed by the dispatcher after a short linger,
        or at once by the noting thread while shutting down (the dispatcher
        has stopped)."""
        if self.closing:
            fx.flush_now()
        else:
            self.write_soon(now)

    # -- runs that do not execute ------------------------------------------------------

    def drop(self, run: Run, status: TaskStatus, reason: str, now: float, fx: Effects,
             lateness: Optional[float] = None, recorded: bool = True) -> None:
        """*run* will not execute (DUE, READY, HELD or BLOCKED -> DROPPED):
        MISSED (too late, or overlapping) or CANCELED (its task was canceled,
        or the scheduler shut down before it started). A MISSED run is
        recorded (unless not *recorded*: another run's record says it); a
        missed last occurrence ends its task."""
        phase = run._phase
        if phase not in _WAITING:
            return
        run.status, run.reason, run._t_finished = status, reason, now
        run._phase = _DROPPED  # (from here on it is over, whatever comes next)
        if run._owns_future:
            fx.resolve(run)
        if phase is _HELD:
            self.lanes.of(run).unhold(run)
        elif phase is _BLOCKED:
            self.runbook.unblock(run)
        elif phase is _READY:
            run._state.ready -= 1  # its heap entry is dead from now on
        missed = status is _MISSED
        record = self.runbook.dropped(run, missed)
        if self.closing and run.attempt > 1 and not missed and not run._state.canceled:
            run._state.status = TaskStatus.SUSPENDED  # a restart owes this retry
        self.notify_waiters(run.task_id, fx)
        if not missed:
            return
        run.run_number = 0  # a skipped occurrence is not a run
        if self.journal is not None and recorded:
            if run._slot is None and self.journal.store is not None:
                run._slot = slot_of(run, self.offset)
            fx.record(self.journal.missed(record))
            self.journal.task_changed(run.task_id, missed=run._state.missed)
            self._write_soon(now, fx)
        if record is run:  # the first of repeated skips; the others add to its count
            fx.log(logging.WARNING, "%s: run skipped, %.3f s late (%s)", run.task.label,
                   lateness or 0.0, reason)
        self.event(fx, EventKind.MISSED, run.task_id, run, reason=reason, lateness=lateness)
        # (a timed-out run whose thread has not returned yet is over: it does
        # not keep the task, or nothing would retire it when it returns)
        state = run._state
        if self.timetable.has_fired_last(run.task_id) and not state.live and not state.owed:
            if not state.canceled:
                state.status = _MISSED  # its only occurrence never ran
            self._after_final(run, _MISSED, now, fx)

