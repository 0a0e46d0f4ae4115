"""The run book: what is known of each task's runs.

Per task: its status, counters, the latest run (the result map), a bounded
history, how many of its runs are live, executing, queued or blocked. Pure
data: no threads, no locks (the scheduler's state lock guards it), no user
code. The run's own fields are not written here: ``RunLife`` moves runs
and tells the run book what happened to each.
"""
from __future__ import annotations

from collections import deque
from types import MappingProxyType
from typing import Callable, Deque, Dict, Iterator, List, Mapping, Optional, Tuple

from ..records.runs import Run, TaskStatus
from ..records.task import Task

__all__ = ["RunBook", "TaskState"]


# Members read on every run, bound once: on Python 3.11 reading an attribute
# of an Enum class goes through EnumType.__getattr__, several times slower.
_SUSPENDED, _RUNNING, _COMPLETED, _MISSED = (TaskStatus.SUSPENDED, TaskStatus.RUNNING,
                                            TaskStatus.COMPLETED, TaskStatus.MISSED)


class TaskState:
    """What is known of one task's runs (made at its first run, or loaded).

    The defaults are class attributes, so making one costs almost nothing:
    an instance stores only what differs.
    """

    status = TaskStatus.SUSPENDED
    runs = 0
    missed = 0
    paused = False
    canceled = False
    #: Runs made and not final yet (due, waiting, executing).
    live = 0
    #: Runs holding a worker slot (timed-out thread runs until they return).
    running = 0
    #: Runs outside the schedule owed to the task, not due yet (retries,
    #: manual runs in the timer heap).
    owed = 0
    last_error: Optional[str] = None
    perf: Optional[float] = None
    latest: Optional[Run] = None
    #: Older runs and the latest, bounded; made at the second run, so a
    #: one-shot task costs no deque.
    history: Optional[Deque[Run]] = None
    finished_at: Optional[float] = None
    #: The task's last definition once it has left the timetable.
    retired: Optional[Task] = None
    #: How many of its runs wait in a lane's ready heap.
    ready = 0
    #: Extra runs (retries, manual runs) waiting for a running one to return.
    blocked: Optional[List[Run]] = None
    #: The last MISSED record, while repeated skips add to its count.
    last_missed: Optional[Run] = None

    def kept_runs(self) -> List[Run]:
        """The runs kept for this task, oldest first."""
        if self.history is not None:
            return list(self.history)
        return [self.latest] if self.latest is not None else []


class RunBook:
    """Task states, their runs and the latest run of each task."""

    def __init__(self, history: int) -> None:
        self._history = history
        self._states: Dict[str, TaskState] = {}
        self._results: Dict[str, Run] = {}
        #: States of replaced definitions whose runs still execute.
        self._orphans: List[TaskState] = []

    # -- reading --------------------------------------------------------------

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._states

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._states))

    def get(self, task_id: str) -> Optional[TaskState]:
        return self._states.get(task_id)

    def states(self) -> List[TaskState]:
        return list(self._states.values())

    def executing(self) -> List[TaskState]:
        """The states with runs holding a worker slot (replaced ones too)."""
        self._orphans = [state for state in self._orphans if state.running]
        return [state for state in self._states.values() if state.running] + self._orphans

    @property
    def results(self) -> Mapping[str, Run]:
        """``{task_id: latest run}``, a read-only live view."""
        return MappingProxyType(self._results)

    def status_of(self, task_id: str, scheduled: bool) -> TaskStatus:
        """A task's status; one never run is SUSPENDED while scheduled."""
        state = self._states.get(task_id)
        if state is not None:
            return state.status
        return TaskStatus.SUSPENDED if scheduled else TaskStatus.CANCELED

    # -- runs -------------------------------------------------------------------

    def state(self, task_id: str) -> TaskState:
        state = self._states.get(task_id)
        if state is None:
            state = self._states[task_id] = TaskState()
        return state

    def new_run(self, task: Task, attempt: int, scheduled: float, offset: float,
                number: Optional[int] = None, state: Optional[TaskState] = None) -> Run:
        """A run of *task* due at *scheduled*; it becomes the task's latest.
        A retry passes the *number* of the run it retries."""
        if state is None:
            state = self.state(task.id)
        if number is None:
            state.runs += 1
            number = state.runs
        run = Run(task, state, number, attempt, scheduled, offset)
        latest = state.latest
        if latest is not None:
            run._previous = latest
            if state.history is None:
                state.history = deque((latest,), maxlen=self._history)
        if state.history is not None:  # (the latest run is always in it)
            state.history.append(run)
        if state.status is not _SUSPENDED and not state.canceled:
            state.status = _SUSPENDED
        state.latest = run
        state.live += 1
        self._results[task.id] = run
        return run

    def may_start(self, run: Run) -> bool:
        """False when starting *run* would exceed the task's max_instances."""
        return run._state.running < run.task.options.max_instances

    def started(self, run: Run) -> None:
        """*run* took a worker slot: it counts as running."""
        state = run._state
        state.running += 1
        if state.latest is run and not state.canceled:
            state.status = _RUNNING

    def ended(self, run: Run, status: TaskStatus, now: float) -> None:
        """*run* has its final *status*: its task's counters follow."""
        if run._previous is not None:  # an ended run is never forgotten: no chain
            run._previous = None
        state = run._state
        state.live -= 1
        if run._t_started is not None:
            state.perf = now - run._t_started
        if status is not _COMPLETED:
            state.last_error = run.error or status.label

    def settle(self, run: Run) -> None:
        """*run* is the last word on its task for now: the task takes its status."""
        state = run._state
        if state.latest is run and not state.canceled:
            state.status = run.status
        if run.status is not _MISSED:
            state.last_missed = None

    def returned(self, run: Run) -> List[Run]:
        """*run*'s executor gave it back; returns the blocked runs that may
        start now."""
        state = run._state
        state.running -= 1
        blocked = state.blocked
        if not blocked or state.running >= run.task.options.max_instances:
            return []
        state.blocked = None
        return blocked

    def block(self, run: Run) -> None:
        """An extra run waits until the task's running run returns."""
        state = run._state
        if state.blocked is None:
            state.blocked = []
        state.blocked.append(run)

    def unblock(self, run: Run) -> None:
        blocked = run._state.blocked
        if blocked is not None and run in blocked:
            blocked.remove(run)

    def dropped(self, run: Run, missed: bool, numbered: bool = False) -> Run:
        """*run* will not execute: the task's latest is the run before it
        again. A missed run is counted: returns the record to write (see
        :meth:`_missed`). A *numbered* one keeps its run number used (it
        runs on another node of a shared store)."""
        state = run._state
        state.live -= 1
        if state.latest is run:
            self._forget(run, state, numbered)
        if not missed:
            return run
        return self._missed(state, run, 1)

    def skipped(self, state: TaskState, run: Run, count: int) -> Run:
        """*count* occurrences were skipped (coalesced), recorded as *run*
        (MISSED, never live): returns the record to write."""
        return self._missed(state, run, count)

    def _missed(self, state: TaskState, run: Run, count: int) -> Run:
        """Count a MISSED record. A skip that repeats the task's last one (same
        reason, no run in between) adds to that record's count instead:
        returns the record to write, *run* or that earlier one."""
        state.missed += count
        last = state.last_missed
        if last is not None and last.reason == run.reason:
            last.count += count
            if state.history and run in state.history:
                state.history.remove(run)
            return last
        run.count = count
        state.last_missed = run
        if state.history is None:
            state.history = deque(([state.latest] if state.latest is not None else []),
                                  maxlen=self._history)
        if not state.history or state.history[-1] is not run:
            state.history.append(run)
        return run

    def _forget(self, run: Run, state: TaskState, numbered: bool = False) -> None:
        previous = run._previous
        state.latest = previous
        if run.attempt == 1 and state.runs == run.run_number and not numbered:
            state.runs -= 1
        if previous is None:
            self._results.pop(run.task_id, None)
            if not state.canceled:
                state.status = TaskStatus.SUSPENDED
        else:
            self._results[run.task_id] = previous
            if not state.canceled:  # (a retry or a manual run owed: one waits)
                state.status = TaskStatus.SUSPENDED if state.owed else previous.status

    # -- the task's life ----------------------------------------------------------

    def cancel(self, task: Task, now: float) -> TaskState:
        state = self.state(task.id)
        state.canceled = True
        state.status = TaskStatus.CANCELED
        state.retired = task
        state.finished_at = now
        return state

    def retire(self, task: Task, now: float, state: Optional[TaskState] = None) -> None:
        """The task's last run is over: it stays queryable until purged."""
        if state is None:
            state = self.state(task.id)
        state.retired = task
        state.finished_at = now

    def restart(self, task_id: str) -> None:
        """A task re-added under a finished id starts afresh (a changed one),
        its run numbers going on: no two runs under one id share a number."""
        state = self.forget(task_id)
        if state is not None and state.runs:
            self.state(task_id).runs = state.runs

    def forget(self, task_id: str) -> Optional[TaskState]:
        """Nothing is known of *task_id* any more (a run still executing
        keeps its state until it returns); returns what was known."""
        state = self._states.pop(task_id, None)
        self._results.pop(task_id, None)
        if state is not None and state.running:
            self._orphans.append(state)
        return state

    def load(self, task_id: str, runs: int, missed: int, status: TaskStatus,
             paused: bool, latest: Optional[Run]) -> TaskState:
        """A task's state as a store kept it."""
        state = self.state(task_id)
        state.runs, state.missed, state.paused = runs, missed, paused
        state.status = status
        if latest is not None:
            state.latest = latest
            self._results[task_id] = latest
        return state

    def purge(self, cutoff: float, scheduled: Callable[[str], bool],
              needed: Callable[[str], bool]) -> Tuple[int, List[str]]:
        """Drop runs that finished before *cutoff*, and finished tasks that
        left the schedule before it, unless another task still depends on
        them. Returns how many runs were dropped, and the tasks dropped."""
        removed, tasks = 0, []
        for task_id in list(self._states):
            state = self._states[task_id]
            removed += _purge_history(state, cutoff)
            if scheduled(task_id) or state.running or needed(task_id):
                continue
            if state.finished_at is None or state.finished_at <= cutoff:
                removed += len(state.kept_runs())
                del self._states[task_id]
                self._results.pop(task_id, None)
                tasks.append(task_id)
        return removed, tasks


def _purge_history(state: TaskState, cutoff: float) -> int:
    history = state.history
    if not history:
        return 0
    kept = [run for run in history
            if not run.done or run is state.latest
            or (run._t_finished is not None and run._t_finished > cutoff)]
    removed = len(history) - len(kept)
    if removed:
        history.clear()
        history.extend(kept)
    return removed
