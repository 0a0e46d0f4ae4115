"""A task's life as its runs make it: a retry after a failed run, the
dependents a final run releases or cancels, retiring a task whose last run
is over, canceling a task, a coalesced skip, and taking back a task that an
interrupt cut short while it was being added.

``TaskLife`` extends ``RunLife`` (``State`` is one): these are decided by
the same facts as the run transitions, with the state lock held, and call
no user code.
"""
from __future__ import annotations

import logging
from typing import Any, List, Optional

from ..durability.encoding import slot_of
from ..records.events import EventKind
from ..records.runs import FAILED, Phase, Run, TaskStatus
from ..records.task import task_label
from .effects import Effects
from .runbook import TaskState
from .runlife import RunLife
from .timetable import Extra

__all__ = ["TaskLife"]

_DROPPED, _READY, _STARTED = Phase.DROPPED, Phase.READY, Phase.STARTED
_WAITING = frozenset({Phase.DUE, Phase.READY, Phase.HELD, Phase.BLOCKED})
_COMPLETED, _MISSED, _CANCELED = TaskStatus.COMPLETED, TaskStatus.MISSED, TaskStatus.CANCELED
_ERROR, _TIMEOUT, _INTERRUPTED = TaskStatus.ERROR, TaskStatus.TIMEOUT, TaskStatus.INTERRUPTED


def _outcome(run: Run) -> str:
    """``error: ConnectionError: refused``: how an attempt ended, with its
    error line (already a plain str: no user code runs)."""
    status = run.status.label.lower()
    if run.status is _TIMEOUT:  # (its error line would only repeat it)
        return f"{status} ({run.timeout:g} s)" if run.timeout else status
    return f"{status}: {run.error}" if run.error else status


class TaskLife(RunLife):
    """What runs mean for their tasks."""

    def waiting_runs(self, task_id: Optional[str] = None) -> List[Run]:
        """Every run admitted but not started (of one task, or all): in a
        ready heap, held or blocked."""
        runs: List[Run] = []
        if task_id is None:
            for lane in self.lanes.all():
                runs.extend(lane.waiting())
            states = self.runbook.states()
        else:
            state = self.runbook.get(task_id)
            states = [state] if state is not None else []
            for state in states:  # its ready runs are among its latest ones...
                kept = [run for run in state.kept_runs() if run._phase is _READY]
                if len(kept) < state.ready:  # ...unless more piled up (no coalesce)
                    kept = [run for lane in self.lanes.all() for run in lane.waiting()
                            if run.task_id == task_id]
                runs.extend(kept)
        for lane in self.lanes.all():
            runs.extend(lane.held_runs(task_id))
        runs.extend(run for state in states for run in state.blocked or ())
        return list(dict.fromkeys(run for run in runs if run._phase in _WAITING))

    def _retry(self, run: Run, now: float, fx: Effects) -> bool:
        options = run.task.options
        state: TaskState = run._state
        if run.attempt > options.retries or state.canceled or run.status is _CANCELED \
                or state is not self.runbook.get(run.task_id):
            return False  # (a canceled run did not fail; a replaced definition is owed nothing)
        if self.closing:  # owed still: with a store, a restart runs it (see recovery)
            state.status = TaskStatus.SUSPENDED
            if run.status is _INTERRUPTED:
                fx.log(logging.WARNING, "shutdown: interrupted %s run %d attempt %d, still "
                       "going after shutdown's timeout; its retry is left to the next "
                       "start", run.task.label, run.run_number, run.attempt)
            else:
                fx.log(logging.WARNING, "%s attempt %d %s; its retry is left to the "
                       "next start (the scheduler is shutting down)", run.task.label,
                       run.attempt, _outcome(run))
            return True
        wait = options.retry_wait(run.attempt)
        extra = Extra(now + wait, run.task.priority, next(self.seq), run.task_id,
                      run.attempt + 1, run.run_number, "retry", run._slot,
                      self.timetable.generation(run.task_id))
        state.owed += 1
        if self.timetable.push_extra(extra):
            self.wakeup.notify()
        if not state.canceled:
            state.status = TaskStatus.SUSPENDED
        reason = f"attempt {run.attempt} {_outcome(run)}; retrying in {wait:g} s"
        fx.log(logging.WARNING, "%s attempt %d %s; retrying in %g s", run.task.label,
               run.attempt, _outcome(run), wait)
        self.event(fx, EventKind.RETRY, run.task_id, run, reason=reason)
        return True

    def _log_failure(self, run: Run, status: TaskStatus, fx: Effects) -> None:
        """A run failed for good: the log says how."""
        if status is _ERROR and run.exit_code is not None:
            # a command: its exit code and the tail of its stderr say it all
            fx.log(logging.ERROR, "%s run %d failed: %s", run.task.label, run.run_number,
                   run.error)
        elif status is _ERROR:
            fx.log(logging.ERROR, "%s run %d failed:\n%s", run.task.label, run.run_number,
                   run.traceback or run.error)
        elif status is _TIMEOUT:
            fx.log(logging.WARNING, "%s", run.error)
        elif status is _INTERRUPTED:  # (stopped on purpose: no error)
            fx.log(logging.WARNING, "shutdown: interrupted %s run %d, still going after "
                   "shutdown's timeout", run.task.label, run.run_number)

    def _after_final(self, run: Run, status: TaskStatus, now: float, fx: Effects) -> None:
        """A run is final: release or cancel dependents; retire a finished task."""
        task_id = run.task_id
        timetable = self.timetable
        if timetable.dependents and task_id in timetable.dependents:
            if status is _COMPLETED:
                self._release_dependents(task_id, now, fx)
            elif status in FAILED or timetable.has_fired_last(task_id):
                self._fail_dependents(task_id, fx)
        self.retire_if_over(task_id, now, fx)

    def retire_if_over(self, task_id: str, now: float, fx: Effects,
                       stored: bool = True) -> None:
        """A task whose last occurrence fired, with no run live, none owed and
        none parked, leaves the timetable (it stays queryable until purged).
        Not *stored*: its end is another node's to write."""
        state = self.runbook.get(task_id)
        if state is not None and (state.live or state.owed):
            return
        task = self.timetable.retire(task_id)  # (if its last occurrence fired)
        if task is None:
            return
        state = state or self.runbook.state(task_id)
        self.runbook.retire(task, now, state)
        if self.journal is not None and stored:
            self.journal.task_finished(task_id, int(state.status))
        if self.listening:
            self.event(fx, EventKind.REMOVED, task_id)

    def dependencies(self, task: Any) -> Optional[bool]:
        """True when every task *task* depends on completed; False when one
        failed, or is over without completing (missed, canceled, purged):
        it never will; None while one may still complete."""
        timetable, runbook = self.timetable, self.runbook
        met = True
        for dep in task.options.depend_on:
            scheduled = dep in timetable
            status = runbook.status_of(dep, scheduled)
            if status in FAILED or (status is not _COMPLETED and not scheduled):
                return False
            if status is not _COMPLETED:
                met = False
        return True if met else None

    def _release_dependents(self, task_id: str, now: float, fx: Effects) -> None:
        timetable, runbook = self.timetable, self.runbook
        for dependent in timetable.dependents_of(task_id):
            task = timetable.parked(dependent)
            if task is None:
                continue
            met = self.dependencies(task)
            if met:
                timetable.unpark(dependent)
                self.admit(runbook.new_run(task, 1, task.time, self.offset), fx)
            elif met is False:
                self.cancel_task(dependent, "a dependency did not complete", fx)

    def _fail_dependents(self, task_id: str, fx: Effects) -> None:
        for dependent in self.timetable.dependents_of(task_id):
            if dependent in self.timetable:
                self.cancel_task(dependent, f"dependency {task_id!r} did not complete", fx)

    def skip(self, task: Any, scheduled: float, count: int, reason: str, now: float,
             fx: Effects) -> Run:
        """*count* occurrences of *task* from *scheduled* on were skipped
        (coalesced into the next one): one MISSED record, never live."""
        state = self.runbook.state(task.id)
        run = Run(task, state, 0, 1, scheduled, self.offset)
        run._phase = _DROPPED
        run.status, run.reason, run._t_finished = _MISSED, reason, now
        record = self.runbook.skipped(state, run, count)
        journal = self.journal
        if journal is not None:
            if record._slot is None and journal.store is not None:
                record._slot = slot_of(record, self.offset)
            fx.record(journal.missed(record))
            journal.task_changed(task.id, missed=state.missed)
        return record

    def cancel_task(self, task_id: str, reason: str, fx: Effects,
                    keep_stored: bool = False) -> None:
        """Stop a task: no further runs; its waiting runs are dropped, its
        dependents canceled. A run in progress goes on. Doing it again (after
        an interrupt) completes it; KeyError if the task is unknown."""
        task = self.timetable.get(task_id)
        state = self.runbook.get(task_id)
        if task is None and (state is None or not state.canceled):
            raise KeyError(f"no scheduled task with id {task_id!r}")
        now = self.clock.now()
        if task is not None:
            state = self.runbook.cancel(task, now)
        for run in self.waiting_runs(task_id):
            self.drop(run, _CANCELED, reason, now, fx)
        if task is not None:
            self.timetable.remove(task_id)
        if state is not None:
            state.status = _CANCELED
        if self.journal is not None and not keep_stored:
            self.journal.task_removed(task_id)
        fx.log(logging.INFO, "%s canceled: %s", task.label if task is not None
               else task_label(task_id), reason)
        if self.listening:
            self.event(fx, EventKind.CANCELED, task_id, reason=reason)
        if self.waiters:
            self.notify_waiters(task_id, fx)
        if self.timetable.depended_on(task_id):
            self._fail_dependents(task_id, fx)

    def take_back(self, task_id: str, fx: Effects) -> None:
        """A new task was being added when an interrupt came: everything of
        it goes, as if ``delay()`` had never been called (its id is new, so
        nothing else refers to it)."""
        self.timetable.discard(task_id)
        state = self.runbook.get(task_id)
        runs = fx.take_runs_of(task_id)
        if state is not None:
            runs.extend(run for run in state.kept_runs() if run not in runs)
            self.runbook.forget(task_id)
        for run in runs:
            lane = self.lanes.of(run)
            if run._phase is _STARTED:
                lane.give_back()
            lane.unhold(run)
            self.deadlines.remove(run._deadline_key)
            run._phase, run.status, run.reason = _DROPPED, _CANCELED, "interrupted"
            if run._owns_future:
                fx.resolve(run)
        fx.forget_events_of(task_id)
