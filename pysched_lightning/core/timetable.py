"""The timetable: when each task runs next.

It holds each task's current definition, the timer heap of due times, the
occurrences that fired with nothing scheduled after them (a one-shot until
its run is over), the occurrences parked while they wait for a dependency or
a pause, and who depends on whom. Pure data: no threads, no locks (the
scheduler's state lock guards it) and no user code.
"""
from __future__ import annotations

from collections import namedtuple
from types import MappingProxyType
from typing import Dict, Iterator, List, Mapping, Optional, Set, Union

from ..records.task import Task
from .heaps import LazyHeap

__all__ = ["Timetable", "Extra"]

_ExtraFields = namedtuple("_ExtraFields",
                          "time priority seq task_id attempt number kind slot")


class Extra(_ExtraFields):
    """A run outside the schedule: a retry (``kind`` 'retry', of run
    ``number``, whose store slot was ``slot``) or a manual run (``kind``
    'run_now', ``number`` and ``slot`` None)."""

    __slots__ = ()


Entry = Union[Task, Extra]


class Timetable:
    """Definitions, due times, fired and parked occurrences, dependents."""

    def __init__(self) -> None:
        self._tasks: Dict[str, Task] = {}
        self._timers = LazyHeap(self._is_live)
        #: The last occurrence that fired, for tasks with none scheduled after
        #: it (a one-shot whose run is not over).
        self._fired: Dict[str, Task] = {}
        #: Occurrences that are due but wait for a dependency or a resume.
        self._parked: Dict[str, Task] = {}
        self._dependents: Dict[str, Set[str]] = {}

    # -- reading --------------------------------------------------------------

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._tasks

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._tasks))

    def get(self, task_id: str) -> Optional[Task]:
        return self._tasks.get(task_id)

    @property
    def tasks(self) -> Mapping[str, Task]:
        """``{task_id: Task}``, a read-only live view."""
        return MappingProxyType(self._tasks)

    def next_time(self, task_id: str) -> Optional[float]:
        """The task's next due time, None when nothing more is scheduled."""
        task = self._tasks.get(task_id)
        if task is None or self._fired.get(task_id) is task:
            return None
        return task.time

    def parked(self, task_id: str) -> Optional[Task]:
        return self._parked.get(task_id)

    def has_fired_last(self, task_id: str) -> bool:
        """True when the task's last occurrence fired (nothing scheduled after)."""
        task = self._tasks.get(task_id)
        return task is not None and self._fired.get(task_id) is task

    def head_time(self) -> Optional[float]:
        """When the earliest live heap entry is due, None when none is."""
        head = self._timers.peek()
        return None if head is None else head.time

    def dependents_of(self, task_id: str) -> List[str]:
        return sorted(self._dependents.get(task_id, ()))

    def depended_on(self, task_id: str) -> bool:
        """True when some task (scheduled or not) names *task_id* in depend_on."""
        return task_id in self._dependents

    def has_dependents(self, task_id: str) -> bool:
        """True when a scheduled task still depends on *task_id*."""
        return any(dep in self._tasks for dep in self._dependents.get(task_id, ()))

    # -- scheduling -----------------------------------------------------------

    def add(self, task: Task, in_heap: bool = True) -> bool:
        """Schedule a new task; True when it became the heap's head. With
        ``in_heap=False`` the caller fires it at once instead."""
        self._tasks[task.id] = task
        if task.options.depend_on:
            self._link(task)
        if not in_heap:
            return False
        self._timers.push(task)
        return self._timers.is_head(task)

    def push_extra(self, extra: Extra) -> bool:
        """Schedule a retry or a manual run; True when it became the head."""
        self._timers.push(extra)
        return self._timers.is_head(extra)

    def pop_due(self, now: float) -> Optional[Entry]:
        """The first live entry due at *now*, removed; None when none is due."""
        return self._timers.pop_due(now)

    def advance(self, fired: Task, following: Optional[Task]) -> None:
        """*fired* fired: *following* is its next occurrence (None: the last)."""
        if following is None:
            self._fired[fired.id] = fired
        else:
            self._tasks[fired.id] = following
            self._timers.push(following)

    def retire(self, task: Task) -> bool:
        """The run of a last occurrence is over: the task leaves the
        timetable (True), unless it was replaced or canceled meanwhile."""
        task_id = task.id
        if self._fired.get(task_id) is not task or self._tasks.get(task_id) is not task:
            return False
        del self._fired[task_id]
        del self._tasks[task_id]
        self._parked.pop(task_id, None)
        return True

    def remove(self, task_id: str) -> Task:
        """Take a task out of the timetable (cancel); KeyError if unknown.
        Who depends on it is kept: a task re-added under that id keeps them."""
        task = self._tasks.pop(task_id)
        if self._fired.pop(task_id, None) is not task:
            self._timers.discard()
        self._parked.pop(task_id, None)
        self._unlink(task)
        return task

    def replace(self, new: Task) -> bool:
        """Put a new definition in place of the task's current one (same
        id): a scheduled one keeps its due time from *new*, a fired one stays
        fired, a parked occurrence takes the new definition. True when the
        heap's head changed."""
        task_id = new.id
        old = self._tasks[task_id]
        self._unlink(old)
        self._link(new)
        self._tasks[task_id] = new
        parked = self._parked.get(task_id)
        if parked is not None:
            self._parked[task_id] = new.at(parked.time, parked.seq)
        if self._fired.get(task_id) is old:
            self._fired[task_id] = new
            return False
        self._timers.discard()
        self._timers.push(new)
        return self._timers.is_head(new)

    def park(self, task: Task) -> None:
        """A due occurrence waits (a later occurrence replaces a waiting one)."""
        self._parked[task.id] = task

    def unpark(self, task_id: str) -> Optional[Task]:
        return self._parked.pop(task_id, None)

    def requeue(self, task: Task) -> None:
        """Put a parked one-shot back in the heap (at its own due time)."""
        if self._fired.get(task.id) is task:
            del self._fired[task.id]
        self._timers.push(task)

    def forget_dependents(self, task_id: str) -> None:
        """*task_id* is gone for good (purged): nobody waits for it."""
        self._dependents.pop(task_id, None)

    # -- the wall clock -------------------------------------------------------

    def shift_wall_clock_tasks(self, shift: float, seqs: Iterator[int]) -> None:
        """The wall clock stepped: wall-clock tasks (cron, datetimes) move by
        *shift* on the scheduler's clock; the others keep their times."""
        entries = []
        for entry in self._timers.entries():
            if type(entry) is Task:
                schedule = entry.schedule
                if schedule is not None and schedule.wall_clock:
                    entry = entry.at(entry.time + shift, next(seqs))
                    self._tasks[entry.id] = entry
            entries.append(entry)
        self._timers.rebuild(entries)

    # -- private ----------------------------------------------------------------

    def _is_live(self, entry: Entry) -> bool:
        if type(entry) is Task:
            return self._tasks.get(entry.id) is entry
        return entry.task_id in self._tasks  # type: ignore[union-attr]

    def _link(self, task: Task) -> None:
        for dep in task.options.depend_on:
            self._dependents.setdefault(dep, set()).add(task.id)

    def _unlink(self, task: Task) -> None:
        for dep in task.options.depend_on:
            dependents = self._dependents.get(dep)
            if dependents is not None:
                dependents.discard(task.id)
                if not dependents:
                    del self._dependents[dep]
