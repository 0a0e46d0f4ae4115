"""Task control and introspection: pause, resume, reschedule, modify, run_now,
previews, task info and purge.

A mixin of :class:`~pysched_lightning.scheduler.Scheduler`: these methods
take the scheduler's lock and change its heaps the same way the dispatcher
does, so they never race with it.
"""
from __future__ import annotations

import datetime as _dt
import math
from typing import Any, Dict, List, Optional

from .events import EventKind
from .queue import OneOff
from .runs import TaskStatus
from .task import Task
from .validation import check_args, check_kwargs, check_priority, make_options

__all__ = ["ControlMixin"]

_UTC = _dt.timezone.utc


class ControlMixin:
    """Public control methods; relies on the Scheduler's private state."""

    # ----------------------------------------------------------------- pause

    def pause(self, task_id: Optional[str] = None) -> None:
        """Pause one task (it keeps its place but does not run) or, with no
        argument, the whole scheduler (nothing new starts)."""
        with self._lock:
            if task_id is None:
                self._paused = True
                kind = EventKind.SCHEDULER_PAUSED
            else:
                self._known_task(task_id)
                self._state(task_id).paused = True
                if self._journal is not None:
                    self._journal.update(task_id, paused=True)
                kind = EventKind.PAUSED
        self._flush()
        self._emit(kind, task_id)

    def resume(self, task_id: Optional[str] = None) -> None:
        """Undo :meth:`pause`. A resumed recurring task runs next at its next
        future due time; runs that fell due while the whole scheduler was
        paused follow the misfire and coalesce rules."""
        with self._lock:
            if task_id is None:
                self._paused = False
                self._resumed_at = self._clock.now()
                kind = EventKind.SCHEDULER_RESUMED
            else:
                self._known_task(task_id)
                self._state(task_id).paused = False
                if self._journal is not None:
                    self._journal.update(task_id, paused=False)
                parked = self._parked.pop(task_id, None)
                if parked is not None:  # a one-shot that came due while paused
                    self._timers.push(parked)
                kind = EventKind.RESUMED
            self._wakeup.notify()
        self._flush()
        self._emit(kind, task_id)

    # ---------------------------------------------------------- reschedule

    def reschedule(self, task_id: str, trigger: str, interval: Any, *, tz: Any = None) -> None:
        """Give a task a new trigger; its next run follows the new one."""
        now = self._clock.now()
        schedule, due = self._make_schedule(trigger, interval, now, tz)
        with self._lock:
            old = self._known_task(task_id)
            self._replace_task(old, Task(due, old[1], next(self._seq), task_id, schedule,
                                         interval, old[6], old[7], old[8], old[9]))
        self._flush()
        self._emit(EventKind.MODIFIED, task_id)

    def modify(self, task_id: str, **changes: Any) -> None:
        """Change a task's priority, fn, args, kwargs, name or options
        (timeout, retries, retry_delay, retry_backoff, misfire_grace_time,
        coalesce, max_instances); its schedule is kept."""
        allowed = {"priority", "fn", "args", "kwargs", "name", "timeout", "retries",
                   "retry_delay", "retry_backoff", "misfire_grace_time", "coalesce",
                   "max_instances"}
        unknown = sorted(set(changes) - allowed)
        if unknown:
            raise TypeError(f"modify() got unknown option {unknown[0]!r}; "
                            f"allowed: {', '.join(sorted(allowed))}")
        with self._lock:
            old = self._known_task(task_id)
        fields = {"priority": old[1], "fn": old[6], "args": old[7], "kwargs": old[8]}
        options = old[9]
        merged = {slot: getattr(options, slot) for slot in options.__slots__}
        for key, value in changes.items():
            (fields if key in fields else merged)[key] = value
        probe = self._validated_task(fields, merged)
        with self._lock:
            current = self._known_task(task_id)
            task = Task(current[0], probe[1], next(self._seq), task_id, current[4],
                        current[5], probe[6], probe[7], probe[8], probe[9])
            self._replace_task(current, task)
        self._flush()
        self._emit(EventKind.MODIFIED, task_id)

    def _validated_task(self, fields: Dict[str, Any], merged: Dict[str, Any]) -> Task:
        """Validate changes by the same path delay() takes, without scheduling."""
        fn = fields["fn"]
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {fn!r}")
        priority = fields["priority"]
        if type(priority) is not int:
            priority = check_priority(priority)
        options = make_options(merged["name"], merged["hard"], merged["timeout"],
                                merged["retries"], merged["retry_delay"],
                                merged["retry_backoff"], merged["misfire_grace_time"],
                                merged["coalesce"], merged["max_instances"],
                                merged["depend_on"] or None)
        return Task(0.0, priority, 0, "", "once", 0, fn, check_args(fields["args"]),
                    check_kwargs(fields["kwargs"]), options)

    def _replace_task(self, old: Task, new: Task) -> None:
        """Under the lock: put *new* where *old* was in the schedule."""
        task_id = old[3]
        state = self._states.get(task_id)
        in_heap = task_id not in self._parked and (state is None or state.pending is not old)
        self._tasks[task_id] = new
        if in_heap:
            self._timers.discard()
            self._timers.push(new)
        elif task_id in self._parked:
            self._parked[task_id] = new
        elif state is not None and state.pending is old:
            state.pending = new
        if self._journal is not None and self._journal.store is not None:
            self._journal.saved(self._stored_record(new))
        self._wakeup.notify()

    def run_now(self, task_id: str) -> None:
        """One extra run now; the regular schedule is unchanged."""
        with self._lock:
            task = self._known_task(task_id)
            self._state(task_id)
            self._timers.push(OneOff(self._clock.now(), task[1], next(self._seq), task_id,
                                     1, "run_now"))
            self._wakeup.notify()

    # ---------------------------------------------------------- inspection

    def next_run_times(self, task_id: str, n: int = 5) -> List[_dt.datetime]:
        """The next *n* due times as aware datetimes (in the cron time zone,
        else local), to check a schedule before trusting it."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be an int >= 0, got {n!r}")
        with self._lock:
            task = self._known_task(task_id)
            offset = self._offset
        trig = task.schedule
        times: List[float] = []
        if task_id in self._parked or (self._states.get(task_id) is not None
                                       and self._states[task_id].pending is task):
            pass  # it has fired; nothing further is scheduled
        elif trig is None:
            times.append(task[0] + offset)
        else:
            due = task[0] + (offset if trig.wall_clock else 0.0)
            while due is not None and len(times) < n:
                times.append(due + (0.0 if trig.wall_clock else offset))
                due = trig.next_due(due)
        zone = _zone_of(trig)
        return [_dt.datetime.fromtimestamp(t, _UTC).astimezone(zone) for t in times[:n]]

    def get_task(self, task_id: str) -> Dict[str, Any]:
        """What is known of a task, as a plain dict."""
        with self._lock:
            return self._task_info(task_id)

    def get_all(self) -> List[Dict[str, Any]]:
        """:meth:`get_task` for every task the scheduler knows."""
        with self._lock:
            ids = list(dict.fromkeys(list(self._tasks) + list(self._states)))
            return [self._task_info(task_id) for task_id in ids]

    def _task_info(self, task_id: str) -> Dict[str, Any]:
        task = self._tasks.get(task_id)
        state = self._states.get(task_id)
        if task is None and state is None:
            raise KeyError(f"no task with id {task_id!r}")
        if task is None:
            task = state.task or (state.latest.task if state.latest is not None else None)
        next_run = None
        if task is not None and task_id in self._tasks and task_id not in self._parked \
                and (state is None or state.pending is not task):
            next_run = _dt.datetime.fromtimestamp(task[0] + self._offset, _UTC).astimezone(
                _zone_of(task.schedule))
        options = task[9] if task is not None else None
        return {
            "id": task_id,
            "name": task.name if task is not None else None,
            "trigger": task.trigger if task is not None else None,
            "interval": task.interval if task is not None else None,
            "priority": task[1] if task is not None else None,
            "status": state.status if state is not None else TaskStatus.SUSPENDED,
            "next_run_time": next_run,
            "runs": state.runs if state is not None else 0,
            "missed": state.missed if state is not None else 0,
            "last_error": state.last_error if state is not None else None,
            "perf": state.perf if state is not None else None,
            "paused": bool(state is not None and state.paused),
            "hard": bool(options is not None and options.hard),
            "depend_on": list(options.depend_on) if options is not None else [],
            "stored_as": self._stored_as(task),
        }

    def _stored_as(self, task: Optional[Task]) -> Optional[str]:
        """How the store keeps the task's function: 'import' or 'pickle'."""
        if task is None or self.store is None:
            return None
        from .persistence import function_reference
        return "import" if function_reference(task[6]) else "pickle"

    def _known_task(self, task_id: str) -> Task:
        task = self._tasks.get(task_id)
        if task is None:
            raise KeyError(f"no scheduled task with id {task_id!r}")
        return task

    # ---------------------------------------------------------------- purge

    def purge(self, days: float = 0, hours: float = 0, minutes: float = 0) -> int:
        """Drop finished one-shot tasks and finished run records older than
        the given age (all finished ones with no argument); returns how many
        run records were removed."""
        for label, value in (("days", days), ("hours", hours), ("minutes", minutes)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not 0 <= value < math.inf:
                raise ValueError(f"{label} must be a number >= 0, got {value!r}")
        removed = 0
        with self._lock:
            cutoff = self._clock.now() - (days * 86400 + hours * 3600 + minutes * 60)
            for task_id in list(self._states):
                state = self._states[task_id]
                removed += self._purge_runs(task_id, state, cutoff)
                if task_id not in self._tasks and state.running == 0 and \
                        (state.finished_at is None or state.finished_at <= cutoff):
                    removed += len(state.kept_runs())
                    del self._states[task_id]
                    self._results.pop(task_id, None)
            # with no age, every finished run goes, even one that ended just now
            age = days * 86400 + hours * 3600 + minutes * 60
            before_wall = math.inf if age == 0 else cutoff + self._offset
        if self.store is not None:
            self._flush()
            removed = max(removed, self.store.purge_runs(before_wall))
        return removed

    def _purge_runs(self, task_id: str, state: Any, cutoff: float) -> int:
        history = state.history
        if not history:
            return 0
        kept = [run for run in history
                if not run.done or run is state.latest
                or (run.finished is not None and run.finished > cutoff)]
        removed = len(history) - len(kept)
        if removed:
            history.clear()
            history.extend(kept)
        return removed


def _zone_of(trig: Any) -> Optional[_dt.tzinfo]:
    """The cron trigger's zone; None (local) for everything else."""
    zone = getattr(trig, "zone", None)
    return zone if isinstance(zone, _dt.tzinfo) else None
