"""The timetable: when each task runs next.

It holds each task's current definition, the timer heap of due times, the
tasks whose last occurrence fired (a one-shot until its runs are over), the
occurrences parked while they wait for a dependency or a pause, and who
depends on whom. Tasks are found by id: a definition replaced while its
runs go on changes nothing for them. Pure data: no threads, no locks (the
scheduler's state lock guards it) and no user code.

A change is made visible last, in one assignment (``_tasks[id] = task``):
an interrupt before it leaves at most a dead heap entry behind.
"""
from __future__ import annotations

from collections import namedtuple
from types import MappingProxyType
from typing import Dict, Iterator, List, Mapping, Optional, Set, Tuple, Union

from ..records.task import Task
from ..timing.triggers import CronTrigger
from .heaps import LazyHeap

__all__ = ["Timetable", "Extra"]

_ExtraFields = namedtuple("_ExtraFields",
                          "time priority seq task_id attempt number kind slot generation")


class Extra(_ExtraFields):
    """A run outside the schedule: a retry (``kind`` 'retry', of run
    ``number``, whose store slot was ``slot``) or a manual run (``kind``
    'run_now', ``number`` and ``slot`` None), of the task's definition of
    that ``generation`` (a definition re-added under the id owes nothing
    of the one it replaced)."""

    __slots__ = ()


Entry = Union[Task, Extra]


class Timetable:
    """Definitions, due times, fired and parked occurrences, dependents."""

    def __init__(self) -> None:
        self._tasks: Dict[str, Task] = {}
        self._timers = LazyHeap(self._is_live)
        #: Tasks whose last occurrence fired (nothing scheduled after it).
        self._fired: Set[str] = set()
        #: Occurrences that are due but wait for a dependency or a resume.
        self._parked: Dict[str, Task] = {}
        #: Tasks whose trigger failed to give the occurrence after a time:
        #: that time and how many times it failed (their entry in the heap
        #: is a stand-in, due when the trigger is to be asked again). Read
        #: by the firing; changed here only.
        self.failed: Dict[str, Tuple[float, int]] = {}
        #: The generation of each task's definition: a new one at each add.
        self._generations: Dict[str, int] = {}
        self._next_generation = 1
        #: Who depends on whom: ``{task id: ids of the tasks naming it in
        #: depend_on}`` (read by the run transitions; changed here only).
        self.dependents: Dict[str, Set[str]] = {}

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
        if task is None or task_id in self._fired:
            return None
        return task.time

    def parked(self, task_id: str) -> Optional[Task]:
        return self._parked.get(task_id)

    def has_fired_last(self, task_id: str) -> bool:
        """True when the task's last occurrence fired (nothing scheduled after)."""
        return task_id in self._fired and task_id in self._tasks

    def head_time(self) -> Optional[float]:
        """When the earliest live heap entry is due, None when none is."""
        head = self._timers.peek()
        return None if head is None else head.time

    def dependents_of(self, task_id: str) -> List[str]:
        return sorted(self.dependents.get(task_id, ()))

    def depended_on(self, task_id: str) -> bool:
        """True when some task (scheduled or not) names *task_id* in depend_on."""
        return task_id in self.dependents

    def has_dependents(self, task_id: str) -> bool:
        """True when a scheduled task still depends on *task_id*."""
        return any(dep in self._tasks for dep in self.dependents.get(task_id, ()))

    # -- scheduling -----------------------------------------------------------

    def add(self, task: Task, in_heap: bool = True) -> bool:
        """Schedule a new task; True when it became the heap's head. With
        ``in_heap=False`` the caller fires it at once instead."""
        if task.options.depend_on:
            self._link(task)
        if in_heap:
            self._timers.push(task)
        self._generations[task.id] = self._next_generation
        self._next_generation += 1
        self._tasks[task.id] = task  # now it is scheduled (and its entry live)
        return in_heap and self._timers.is_head(task)

    def add_fired(self, task: Task) -> None:
        """Keep a task whose last occurrence fired before it was added (a
        stored one-shot whose run is owed a retry)."""
        self._fired.add(task.id)
        self.add(task, in_heap=False)

    def generation(self, task_id: str) -> int:
        """The generation of the task's current definition (0: unknown)."""
        return self._generations.get(task_id, 0)

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
            self._fired.add(fired.id)
        else:
            self._timers.push(following)
            self._tasks[fired.id] = following

    def retire(self, task_id: str) -> Optional[Task]:
        """The runs of a task's last occurrence are over: it leaves the
        timetable; returns its definition (None, and it stays, unless it
        has fired its last occurrence and none is parked)."""
        if task_id not in self._fired or task_id in self._parked:
            return None
        task = self._tasks.pop(task_id, None)
        self._fired.discard(task_id)
        self._parked.pop(task_id, None)
        return task

    def remove(self, task_id: str) -> Task:
        """Take a task out of the timetable (cancel); KeyError if unknown.
        Who depends on it is kept: a task re-added under that id keeps them."""
        task = self._tasks.pop(task_id)
        if task_id in self._fired:
            self._fired.discard(task_id)
        else:
            self._timers.discard()
        self._parked.pop(task_id, None)
        self.failed.pop(task_id, None)
        self._unlink(task)
        return task

    def discard(self, task_id: str) -> None:
        """Forget a task that was being added when an interrupt came: whatever
        of it got in goes (nothing if none did)."""
        task = self._tasks.pop(task_id, None)
        self._fired.discard(task_id)
        self._parked.pop(task_id, None)
        if task is not None:
            self._unlink(task)

    def replace(self, new: Task) -> bool:
        """Put a new definition in place of the task's current one (same
        id), due at ``new.time``; a fired one stays fired, a parked
        occurrence takes the new definition. True when the heap's head
        changed. Doing it again with the same *new* changes nothing more."""
        task_id = new.id
        old = self._tasks[task_id]
        if old is new:
            return False
        self._unlink(old)
        self._link(new)
        parked = self._parked.get(task_id)
        if parked is not None:
            self._parked[task_id] = new.at(parked.time, parked.seq)
        if task_id in self._fired:
            self._tasks[task_id] = new
            return False
        self._timers.push(new)
        self._tasks[task_id] = new  # the old entry is dead from here
        self._timers.discard()
        return self._timers.is_head(new)

    def park(self, task: Task) -> None:
        """A due occurrence waits (a later occurrence replaces a waiting one)."""
        self._parked[task.id] = task

    def unpark(self, task_id: str) -> Optional[Task]:
        return self._parked.pop(task_id, None)

    def requeue(self, task: Task) -> None:
        """Put a parked one-shot back in the heap (at its own due time; once,
        whatever an interrupt made the caller do again)."""
        if self._tasks.get(task.id) is task and task.id not in self._fired:
            return
        self._timers.push(task)
        self._tasks[task.id] = task
        self._fired.discard(task.id)

    def reschedule_lost(self) -> None:
        """After an interrupt: a scheduled task with no live heap entry (and
        not fired, nor parked) is put back in the heap at its due time."""
        due = {entry.id for entry in self._timers.entries() if type(entry) is Task}
        for task_id, task in self._tasks.items():
            if task_id not in due and task_id not in self._fired \
                    and task_id not in self._parked:
                self._timers.push(task)

    def trigger_fails(self, task_id: str, after: float, first: float, most: float) -> float:
        """*task_id*'s trigger failed to give the occurrence after *after*:
        seconds until it is asked again (*first*, doubling up to *most*)."""
        _, failures = self.failed.get(task_id, (after, 0))
        self.failed[task_id] = (after, failures + 1)
        return min(first * 2 ** failures, most)

    def trigger_answered(self, task_id: str) -> None:
        self.failed.pop(task_id, None)

    def forget_dependents(self, task_id: str) -> None:
        """*task_id* is gone for good (purged): nobody waits for it."""
        self.dependents.pop(task_id, None)

    # -- the wall clock -------------------------------------------------------

    def follow_wall_clock(self, shift: float, wall_now: float, offset: float,
                          seqs: Iterator[int]) -> None:
        """The wall clock stepped (the scheduler's times of wall instants move
        by *shift*; *offset* is the new wall - scheduler offset). A wildcard
        cron job is re-derived from the new wall time *wall_now*: it runs at
        the next instant that matches, as cron does (after a step back, the
        instants it passed come again: a pass of their own names their
        slots); other wall-clock tasks (fixed-time cron, datetimes) keep
        their wall instant, so a step back does not run them twice. Tasks on
        the scheduler's clock keep their times."""
        entries = []
        for entry in self._timers.entries():
            if type(entry) is Task:
                schedule = entry.schedule
                if schedule is not None and schedule.wall_clock:
                    due = entry.time + shift
                    if isinstance(schedule, CronTrigger) and schedule.wildcard:
                        following = schedule.next_due(wall_now)
                        if following is not None:
                            due = following - offset
                        if shift > 0:  # stepped back: up to the wall time it had
                            entry = entry._replace(when=schedule.repeating(wall_now + shift))
                    entry = entry.at(due, next(seqs))
                    self._tasks[entry.id] = entry
            entries.append(entry)
        self._timers.rebuild(entries)

    # -- private ----------------------------------------------------------------

    def _is_live(self, entry: Entry) -> bool:
        if type(entry) is Task:
            return self._tasks.get(entry.id) is entry
        extra: Extra = entry  # type: ignore[assignment]
        return (extra.task_id in self._tasks
                and self._generations.get(extra.task_id) == extra.generation)

    def _link(self, task: Task) -> None:
        for dep in task.options.depend_on:
            self.dependents.setdefault(dep, set()).add(task.id)

    def _unlink(self, task: Task) -> None:
        for dep in task.options.depend_on:
            dependents = self.dependents.get(dep)
            if dependents is not None:
                dependents.discard(task.id)
                if not dependents:
                    del self.dependents[dep]
