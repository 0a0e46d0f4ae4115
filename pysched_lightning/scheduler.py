"""The Scheduler: its public methods and the dispatcher loop.

One dispatcher thread owns the timer heap. It sleeps on a condition until the
head is due (or, with an injected ``delayfunc``, calls it), and is woken at
once by an earlier task, a cancel, a free worker or shutdown. Due runs go to
their lane's executor while it has a free slot, else wait in the lane's ready
heap by priority. Runs report back from the worker (threads) or from the
future's callback (processes). All shared state is guarded by ``_lock``;
listeners and executors are always called with the lock released.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import math
import os
import threading
import time
from collections import deque
from concurrent.futures import CancelledError
from functools import partial
from types import MappingProxyType
from typing import Any, Callable, Deque, Dict, Iterable, List, Mapping, Optional, Tuple, Union

from .clock import Clock
from .context import _set_current_run, current_run
from .control import ControlMixin
from .durability import DurabilityMixin
from .events import Event, EventKind, Listeners
from .executors import ProcessPoolExecutor, ThreadPoolExecutor, _call_in_process, check_picklable
from .journal import Journal
from .persistence import RunRecord, task_record
from .lanes import KillableProcesses, Lane
from .queue import LazyHeap, OneOff
from .runs import _FINAL, Run, TaskStatus, format_exception
from .task import DEFAULT_OPTIONS, Task
from .triggers import make_trigger
from .validation import check_args, check_kwargs, check_priority, check_seconds, make_options

__all__ = ["Scheduler"]

_log = logging.getLogger("pysched_lightning")

#: With the real clocks, never sleep longer than this, so a step of the wall
#: clock (NTP, suspend) is noticed and cron times are re-derived.
_CLOCK_CHECK_SECONDS = 30.0
#: After shutdown's timeout, how long interrupted runs get to return.
_INTERRUPT_GRACE_SECONDS = 2.0
#: How many due timers the dispatcher fires per hold of the lock.
_FIRE_PER_PASS = 32
#: How many times a worker yields the GIL for a busy lock before it sleeps.
_LOCK_YIELDS = 100
#: How long finished runs' records may wait to be written with other writes.
_JOURNAL_LINGER_SECONDS = 0.01
#: A wall-clock jump larger than this (seconds) counts as a step.
_CLOCK_STEP_SECONDS = 1.0
_NO_RUNS: List[Any] = []


_FAILED = (TaskStatus.ERROR, TaskStatus.TIMEOUT, TaskStatus.CANCELED)


class _Spin:
    """Take *lock* adaptively: a few yields of the GIL first, then sleep.

    The lock is only ever held for a few microseconds of Python code, and its
    holder needs the GIL to finish; a waiter that sleeps in the kernel at once
    makes every hand-over a wake-up round trip, and under load the threads
    queue up behind each other (a lock convoy: with four workers, half the
    throughput). Yielding a bounded number of times lets the holder finish;
    a long hold still ends in an ordinary blocking acquire.
    """

    __slots__ = ("lock",)

    def __init__(self, lock: Any) -> None:
        self.lock = lock

    def __enter__(self) -> None:
        lock = self.lock
        if lock.acquire(False):
            return
        for _ in range(_LOCK_YIELDS):
            time.sleep(0)  # releases the GIL to the holder
            if lock.acquire(False):
                return
        lock.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.lock.release()


class _TaskState:
    """What the scheduler knows of a task once it has fired (made lazily).

    The defaults are class attributes, so making one costs almost nothing:
    an instance stores only what differs.
    """

    status = TaskStatus.SUSPENDED
    runs = 0
    missed = 0
    paused = False
    canceled = False
    running = 0
    last_error: Optional[str] = None
    perf: Optional[float] = None
    latest: Optional[Run] = None
    #: Older runs and the latest, bounded; made at the second run, so a
    #: one-shot task costs no deque.
    history: Optional[Deque[Run]] = None
    #: The Task that fired and is not yet done with (a one-shot's own).
    pending: Optional[Task] = None
    retrying = False
    finished_at: Optional[float] = None
    #: The task's last definition once it has left the schedule.
    task: Optional[Task] = None

    def kept_runs(self) -> List[Run]:
        """The runs kept for this task, oldest first."""
        if self.history is not None:
            return list(self.history)
        return [self.latest] if self.latest is not None else []


class Scheduler(DurabilityMixin, ControlMixin):
    """A priority scheduler running tasks on a thread pool or in processes.

    ``executor`` runs ordinary tasks (default: a thread pool made for this
    scheduler, one worker per core); ``process_executor`` runs ``hard=True``
    tasks (default: a loky process pool, created on first use).
    ``timefunc``/``delayfunc`` may be replaced, e.g. by a virtual clock;
    ``wallfunc`` (POSIX seconds) is the wall clock that cron and datetime
    triggers read: by default ``time.time``, or derived from an injected
    ``timefunc``. ``history`` bounds the runs kept per task.

    ``store`` keeps tasks and runs across restarts ('sqlite:///jobs.db', a
    path, or a store object); only one scheduler at a time runs a store's
    tasks, another one waits as a standby. ``run_log`` is a file that gets
    one JSON line per finished run.
    """

    def __init__(self, executor: Any = None, timefunc: Callable[[], float] = time.monotonic,
                 delayfunc: Callable[[float], Any] = time.sleep, *,
                 process_executor: Any = None, history: int = 100,
                 default_timeout: Optional[float] = None,
                 wallfunc: Optional[Callable[[], float]] = None,
                 store: Any = None, run_log: Any = None) -> None:
        if not callable(timefunc):
            raise TypeError(f"timefunc must be callable, got {timefunc!r}")
        if not callable(delayfunc):
            raise TypeError(f"delayfunc must be callable, got {delayfunc!r}")
        if isinstance(history, bool) or not isinstance(history, int) or history < 1:
            raise ValueError(f"history must be a positive int, got {history!r}")
        self._default_timeout = check_seconds("default_timeout", default_timeout)
        if wallfunc is not None and not callable(wallfunc):
            raise TypeError(f"wallfunc must be callable, got {wallfunc!r}")
        self._clock = Clock(timefunc, wallfunc)
        #: None means: wait on the condition (so an earlier task wakes us).
        self._delayfunc = None if delayfunc is time.sleep else delayfunc
        self._history = history
        self._lock = threading.Lock()  # guards every attribute below
        self._wakeup = threading.Condition(self._lock)  # the dispatcher waits here
        self._run_done = threading.Condition(self._lock)  # get_result() waits here
        #: Threads in get_result() (by task id) or shutdown() (key None): a
        #: finished run wakes them only if they wait for it.
        self._waiters: Dict[Optional[str], int] = {}
        self._offset = self._clock.offset()
        self._tasks: Dict[str, Task] = {}
        self._states: Dict[str, _TaskState] = {}
        self._results: Dict[str, Run] = {}
        self._timers = LazyHeap(self._timer_is_live)
        self._deadlines: List[Tuple[float, int, Run]] = []
        self._parked: Dict[str, Task] = {}
        self._dependents: Dict[str, set] = {}
        self._seq = itertools.count()
        self._id_prefix = os.urandom(3).hex() + "-"
        self._lanes = (Lane(executor if executor is not None else ThreadPoolExecutor(),
                            owned=executor is None), None)
        self._process_executor = process_executor
        self._killable = KillableProcesses()
        self._listeners = Listeners()
        self._thread: Optional[threading.Thread] = None
        self._closing = False
        self._paused = False
        self._resumed_at = -math.inf
        self._running = 0
        self._journal: Optional[Journal] = None
        self._journal_due: Optional[float] = None  # when leftover writes get flushed
        self._active = True  # False: a standby waiting for the store's holder to stop
        self._open_store(store, run_log)

    # ------------------------------------------------------------------ state

    @property
    def stopped(self) -> bool:
        """True until ``start()``, and again after ``shutdown()``."""
        return self._thread is None or self._closing

    @property
    def task(self) -> Mapping[str, Task]:
        """The scheduled tasks, ``{task_id: Task}`` (a read-only live view)."""
        return MappingProxyType(self._tasks)

    @property
    def result(self) -> Mapping[str, Run]:
        """The latest run of each task, ``{task_id: run}``; a run reads as
        upstream's ``{'timestamp', 'task', 'future'}``."""
        return MappingProxyType(self._results)

    # ------------------------------------------------------------- scheduling

    def delay(self, trigger: str, interval: Any, priority: int, fn: Callable[..., Any],
              args: Iterable[Any] = (), kwargs: Optional[Mapping[str, Any]] = None, *,
              task_id: Optional[str] = None, replace_existing: bool = True,
              name: Optional[str] = None, tz: Any = None, hard: bool = False,
              timeout: Optional[float] = None, retries: int = 0,
              retry_delay: float = 0.0, retry_backoff: float = 1.0,
              misfire_grace_time: Optional[float] = None, coalesce: bool = True,
              max_instances: int = 1,
              depend_on: Union[None, str, Iterable[str]] = None) -> str:
        """Schedule ``fn(*args, **kwargs)`` and return its task id.

        ``trigger`` is 'once' (``interval`` = seconds, a timedelta or a
        datetime), 'recur' (every ``interval`` seconds) or 'cron' (a cron
        string, or a number meaning once after that many seconds). A lower
        ``priority`` is more urgent. Bad input raises before anything changes.
        """
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {fn!r}")
        if type(priority) is not int:
            priority = check_priority(priority)
        args = check_args(args)
        kwargs = check_kwargs(kwargs)
        if (name is None and not hard and timeout is None and retries == 0
                and misfire_grace_time is None and coalesce is True
                and max_instances == 1 and depend_on is None
                and self._default_timeout is None):
            options = DEFAULT_OPTIONS
        else:
            options = make_options(name, hard, timeout if timeout is not None
                                    else self._default_timeout, retries, retry_delay,
                                    retry_backoff, misfire_grace_time, coalesce,
                                    max_instances, depend_on)
        if hard:
            check_picklable(fn, args, kwargs)
        if task_id is not None and not isinstance(task_id, str):
            raise TypeError(f"task_id must be a str, got {task_id!r}")
        now = self._clock.now()
        if trigger == "once" and tz is None and type(interval) in (int, float) \
                and 0 <= interval < math.inf:
            schedule: Any = "once"
            due = now + interval
        else:
            schedule, due = self._make_schedule(trigger, interval, now, tz)
        events: List[Event] = []
        seq = next(self._seq)
        task = Task(due, priority, seq, task_id or f"{self._id_prefix}{seq}", schedule,
                    interval, fn, args, kwargs, options)
        task_id = task[3]
        record = None
        if self._journal is not None and self._journal.store is not None:
            record = task_record(task, due + self._offset, self._clock.wall())
            if not self._active and self._standby_keeps(record, replace_existing):
                return task_id
        with _Spin(self._lock):
            if self._closing:
                raise RuntimeError("cannot schedule new tasks after shutdown")
            if options.depend_on:
                self._check_dependencies(options.depend_on, task_id)
            batch = _NO_RUNS
            if (task_id in self._tasks or task_id in self._states) and \
                    self._replace_existing(task, replace_existing, events) is not None:
                record = None  # the same task again: kept as it is, stored state too
            else:
                if record is not None:
                    self._journal.saved(record)  # flushed before delay() returns
                if self._active:  # a standby only stores; the one taking over runs it
                    batch = self._add_task(task, now, events)
        if events:
            self._listeners.emit(events)
        if record is not None or batch:
            self._flush()
        for run in batch:
            self._submit(run)
        return task_id

    def _add_task(self, task: Task, now: float, events: List[Event]) -> List[Run]:
        """Under the lock: schedule a new task; fire it at once if it is due."""
        task_id, due = task[3], task[0]
        self._tasks[task_id] = task
        for dep in task[9].depend_on:
            self._dependents.setdefault(dep, set()).add(task_id)
        if self._listeners.callbacks:
            events.append(self._event(EventKind.ADDED, task_id))
        if due <= now and self._thread is not None and not self._closing:
            # Due already: fire it here rather than wake the dispatcher.
            batch: List[Run] = []
            self._fire(task, now, batch, events)
            return batch
        self._timers.push(task)
        if self._timers.is_head(task):
            self._wakeup.notify()
        return _NO_RUNS

    def _make_schedule(self, trigger: str, interval: Any, now: float,
                       tz: Any) -> Tuple[Any, float]:
        trig = make_trigger(trigger, interval, now=now, wall_now=now + self._offset, tz=tz)
        if trig.wall_clock:
            return trig, trig.first_due - self._offset
        if trig.next_due(trig.first_due) is None:
            return trig.name, trig.first_due  # a one-shot needs no trigger object
        return trig, trig.first_due

    def _check_dependencies(self, depend_on: Tuple[str, ...], task_id: Optional[str]) -> None:
        for dep in depend_on:
            if dep == task_id:
                raise ValueError(f"task {task_id!r} cannot depend on itself")
            if dep not in self._tasks and dep not in self._states:
                raise KeyError(f"depend_on names an unknown task id {dep!r}")

    def _replace_existing(self, task: Task, replace: bool,
                          events: List[Event]) -> Optional[str]:
        """Keep an identical task under the same id, or replace it."""
        old = self._tasks.get(task.id)
        if not replace:
            raise ValueError(f"a task with id {task.id!r} already exists "
                             "(pass replace_existing=True to replace it)")
        if old is not None and _same_definition(old, task):
            return task.id
        _log.info("task %r: definition changed, replacing it", task.id)
        if old is not None:
            self._cancel_locked(task.id, "replaced by a new definition", events,
                                keep_stored=True)
        self._states.pop(task.id, None)
        self._results.pop(task.id, None)
        return None

    def cancel(self, task_id: str) -> None:
        """Stop a task: no further runs. A run in progress is not interrupted."""
        events: List[Event] = []
        with self._lock:
            task = self._tasks.get(task_id)
            if task is None:
                raise KeyError(f"no scheduled task with id {task_id!r}")
            if self._timers.is_head(task):
                self._wakeup.notify()  # the dispatcher may be waiting for it
            self._cancel_locked(task_id, "canceled by the user", events)
        if events:
            self._listeners.emit(events)
        if self._journal is not None:
            self._flush()

    def _cancel_locked(self, task_id: str, reason: str, events: List[Event],
                       keep_stored: bool = False) -> None:
        task = self._tasks.pop(task_id)
        state = self._state(task_id)
        if self._parked.pop(task_id, None) is None and state.pending is not task:
            self._timers.discard()
        state.canceled = True
        state.pending = None
        state.task = task
        if self._journal is not None and not keep_stored:
            self._journal.removed(task_id)
        state.status = TaskStatus.CANCELED
        state.finished_at = self._clock.now()
        _log.info("task %r canceled: %s", task_id, reason)
        if self._listeners.callbacks:
            events.append(self._event(EventKind.CANCELED, task_id, reason=reason))
        self._fail_dependents(task_id, events)
        if self._waiters:
            self._run_done.notify_all()

    # ---------------------------------------------------------------- control

    def start(self) -> None:
        """Start the dispatcher in the background; returns at once."""
        with self._lock:
            if self._closing:
                raise RuntimeError("a scheduler cannot be restarted after shutdown")
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._dispatch_loop,
                                            name="pysched-dispatcher", daemon=True)
            self._thread.start()
        self._emit(EventKind.SCHEDULER_STARTED)

    def shutdown(self, wait: bool = True, timeout: Optional[float] = None) -> None:
        """Stop the dispatcher and the executors.

        With ``wait`` it lets running work finish (at most ``timeout``
        seconds). It may be called from inside a task or a listener: the
        calling run is not waited for.
        """
        with self._lock:
            already = self._closing
            self._closing = True
            self._wakeup.notify_all()
            self._run_done.notify_all()
        if not already:
            self._emit(EventKind.SCHEDULER_SHUTDOWN)
        deadline = None if timeout is None else time.monotonic() + timeout
        me = threading.current_thread()
        inside_run = self._inside_own_run()
        if wait and self._thread is not None and self._thread is not me:
            self._thread.join(_remaining(deadline))
        if wait:
            wait = self._wait_for_runs(1 if inside_run else 0, deadline)
            if not wait:
                self._interrupt_running()
                self._wait_for_runs(1 if inside_run else 0,
                                    time.monotonic() + _INTERRUPT_GRACE_SECONDS)
        wait = wait and not (inside_run or me is self._thread)  # never join ourselves
        for lane in self._lanes:
            if lane is not None:
                lane.shutdown(wait)
        self._killable.shutdown(wait)
        if self._journal is not None:
            if wait or not self._running:
                self._journal.close(*self._owns)
            else:
                self._journal.flush()

    def _interrupt_running(self) -> None:
        """Shutdown's grace is over: the runs still going end as TIMEOUT (their
        late outcome is dropped), and are told so: cooperative tasks stop and
        command tasks kill their processes."""
        events: List[Event] = []
        with self._lock:
            going = [run for state in self._states.values() if state.running
                     for run in state.kept_runs() if run.status is TaskStatus.RUNNING]
            for run in going:
                _log.warning("shutdown: interrupting task %r run %d", run.task_id,
                             run.run_number)
                error = TimeoutError(f"task {run.task_id!r} run {run.run_number} was "
                                     "interrupted: the scheduler shut down")
                self._complete(run, TaskStatus.TIMEOUT, None, error, None, events)
        self._listeners.emit(events)
        for run in going:
            run._mark_timed_out()

    def _inside_own_run(self) -> bool:
        run = current_run()
        return isinstance(run, Run) and self._states.get(run.task_id) is run._state

    def _wait_for_runs(self, allowed: int, deadline: Optional[float]) -> bool:
        """Wait until at most *allowed* runs are going; False if time ran out."""
        with self._lock:
            while self._running > allowed:
                remaining = _remaining(deadline)
                if remaining is not None and remaining <= 0:
                    _log.warning("shutdown: %d run(s) still going after the timeout",
                                 self._running - allowed)
                    return False
                self._wait_run_done(None, remaining)
        return True

    def __enter__(self) -> "Scheduler":
        self.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.shutdown(wait=True)

    # ---------------------------------------------------------------- results

    def get_result(self, task_id: str, timeout: Optional[float] = None) -> Any:
        """Wait for the task's latest run; return its value or raise its error.

        A run that timed out raises ``TimeoutError``; a canceled task raises
        ``concurrent.futures.CancelledError``. If ``timeout`` passes first,
        ``TimeoutError`` is raised too.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            if task_id not in self._tasks and task_id not in self._states:
                raise KeyError(f"no task with id {task_id!r}")
            while True:
                state = self._states.get(task_id)
                if state is not None and state.status not in (TaskStatus.SUSPENDED,
                                                               TaskStatus.RUNNING):
                    break
                if self._closing and (state is None or state.running == 0):
                    raise CancelledError(f"task {task_id!r} will not run: the scheduler "
                                         "was shut down")
                remaining = _remaining(deadline)
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"task {task_id!r} has no finished run after "
                                       f"{timeout!r} s")
                self._wait_run_done(task_id, remaining)
            run = state.latest
        if state.status is TaskStatus.CANCELED:
            raise CancelledError(f"task {task_id!r} was canceled")
        return _outcome(run)

    def _wait_run_done(self, key: Optional[str], timeout: Optional[float]) -> None:
        """Under the lock: wait until a run of *key* (None: any) finishes."""
        waiters = self._waiters
        waiters[key] = waiters.get(key, 0) + 1
        try:
            self._run_done.wait(timeout)
        finally:
            waiters[key] -= 1
            if not waiters[key]:
                del waiters[key]

    def get_status(self, task_id: str) -> TaskStatus:
        """The task's status: that of its latest run (SUSPENDED before the first)."""
        with self._lock:
            state = self._states.get(task_id)
            if state is None:
                if task_id not in self._tasks:
                    raise KeyError(f"no task with id {task_id!r}")
                return TaskStatus.SUSPENDED
            return state.status

    def get_status_str(self, task_id: str) -> str:
        """The status name: 'Completed', 'Error', 'Suspended', 'Running', ..."""
        return self.get_status(task_id).label

    def runs(self, task_id: str, limit: Optional[int] = None) -> List[Any]:
        """The task's kept runs, newest first. With a store these are the
        stored records (``RunRecord``, earlier processes' runs included)."""
        if self.store is not None:
            self._flush()
            return [RunRecord(r) for r in self.store.runs(task_id, limit)]
        with self._lock:
            state = self._states.get(task_id)
            if state is None:
                if task_id not in self._tasks:
                    raise KeyError(f"no task with id {task_id!r}")
                return []
            runs = state.kept_runs()
        runs.reverse()
        return runs[:limit] if limit is not None else runs

    # ------------------------------------------------------------------ events

    def add_listener(self, callback: Callable[[Event], Any],
                     kinds: Optional[Iterable[EventKind]] = None) -> None:
        """Call ``callback(event)`` for each event (of ``kinds``, if given)."""
        self._listeners.add(callback, kinds)

    def remove_listener(self, callback: Callable[[Event], Any]) -> None:
        self._listeners.remove(callback)

    def subscribe(self, kinds: Optional[Iterable[EventKind]] = None):
        """A ``queue.Queue`` that receives the events (of ``kinds``, if given)."""
        return self._listeners.subscribe(kinds)

    def _event(self, kind: EventKind, task_id: Optional[str] = None, run: Any = None,
               **extra: Any) -> Event:
        return Event(kind, task_id, run, self._clock.wall(), **extra)

    def _emit(self, kind: EventKind, task_id: Optional[str] = None, **extra: Any) -> None:
        if self._listeners.callbacks:
            self._listeners.emit([self._event(kind, task_id, **extra)])

    # ------------------------------------------------------------- dispatcher

    def _dispatch_loop(self) -> None:
        """Wait for due work, hand it to the executors; never dies silently."""
        if not self._active and not self._wait_as_standby():
            return
        while True:
            try:
                batch, events, delay = self._next_batch()
                if batch is None:
                    return
                if events:
                    self._listeners.emit(events)
                self._flush()
                for run in batch:
                    self._submit(run)
                if delay is not None:
                    self._delayfunc(delay)
            except Exception:
                _log.exception("dispatcher error (the scheduler goes on)")
                with self._lock:
                    self._wakeup.wait(0.05)  # don't spin if the error repeats

    def _next_batch(self) -> Tuple[Optional[List[Run]], List[Event], Optional[float]]:
        """Under the lock: collect due runs, or wait until something may be due."""
        with _Spin(self._lock):
            while not self._closing:
                now = self._clock.now()
                if self._clock.may_step:
                    self._follow_wall_clock()
                events: List[Event] = []
                expired = self._expire_deadlines(now, events)
                batch: List[Run] = []
                more = not self._paused and self._fire_due(now, batch, events)
                for lane in self._lanes:
                    if lane is not None and lane.ready:
                        self._drain_ready(lane, now, batch, events)
                if batch or events or expired or more or self._journal_is_due(now):
                    self._mark_expired(expired)
                    return batch, events, None
                wait = self._time_to_next(now)
                if self._journal_due is not None:
                    wait = min(wait, self._journal_due - now) if wait is not None \
                        else self._journal_due - now
                if self._delayfunc is not None and wait is not None:
                    return [], events, wait
                self._wakeup.wait(wait)
            return None, [], None

    def _journal_is_due(self, now: float) -> bool:
        """Writes left by workers are flushed once they have waited a moment
        (other flushes usually take them along before that)."""
        if self._journal is None:
            return False
        if not self._journal.has_pending():
            self._journal_due = None
            return False
        if self._journal_due is None:
            self._journal_due = now + _JOURNAL_LINGER_SECONDS
            return False
        if now < self._journal_due:
            return False
        self._journal_due = None
        return True

    def _time_to_next(self, now: float) -> Optional[float]:
        due = []
        head = None if self._paused else self._timers.peek()
        if head is not None:
            due.append(head[0])
        if self._deadlines:
            due.append(self._deadlines[0][0])
        if not due:
            return _CLOCK_CHECK_SECONDS if self._clock.may_step and self._tasks else None
        wait = max(0.0, min(due) - now)
        return min(wait, _CLOCK_CHECK_SECONDS) if self._clock.may_step else wait

    def _fire_due(self, now: float, batch: List[Run], events: List[Event]) -> bool:
        """Fire due timers; True if some are left for the next pass.

        A pass stops once the free workers have work, and after a bounded
        number of timers, so that during a burst the workers start at once
        and can take ready runs between passes instead of waiting for the
        lock until the whole burst is through."""
        pop_due, threads = self._timers.pop_due, self._lanes[0]
        for _ in range(_FIRE_PER_PASS):
            head = pop_due(now)
            if head is None:
                return False
            if type(head) is Task:
                self._fire(head, now, batch, events)
            else:
                self._fire_one_off(head, now, batch, events)
            if batch and not threads.has_room():
                return True
        return True

    def _fire(self, task: Task, now: float, batch: List[Run], events: List[Event]) -> None:
        """A task's due time has come: schedule its next time, then run it."""
        task_id = task[3]
        state = self._states.get(task_id) or self._new_state(task_id)
        following = None if type(task[4]) is str else self._reschedule_next(task, now, state,
                                                                          events)
        if following is None:
            state.pending = task
        if state.paused:
            if following is None:
                self._parked[task_id] = task
            return
        if task[9].depend_on and not self._dependencies_met(task, following, state, events):
            return
        grace = task[9].misfire_grace_time
        if grace is not None and now - task[0] > grace:
            self._miss(task, state, now - task[0], self._late_reason(task[0]), events)
            return
        self._enqueue(self._new_run(task, state, 1, now), batch, events)

    def _reschedule_next(self, task: Task, now: float, state: _TaskState,
                         events: List[Event]) -> Optional[Task]:
        """Push a recurring task's next occurrence; coalesce missed slots."""
        trig, offset = task[4], self._offset if task[4].wall_clock else 0.0
        due, current = task[0] + offset, now + offset
        after = max(due, current) if task[9].coalesce else due
        following = trig.next_due(after)
        period = getattr(trig, "seconds", None)  # recur only: the slots are countable
        if task[9].coalesce and period is not None and current - due >= period:
            skipped = int((current - due) // period)
            self._miss(task, state, current - due, self._late_reason(task[0]), events,
                       count=skipped, coalesced=True)
        if following is None:
            return None
        nxt = task.at(following - offset, next(self._seq))
        self._tasks[task[3]] = nxt
        self._timers.push(nxt)
        if self._journal is not None:
            self._journal.update(task[3], next_run=nxt[0] + self._offset)
        return nxt

    def _fire_one_off(self, entry: OneOff, now: float, batch: List[Run],
                      events: List[Event]) -> None:
        """A retry or a run_now() is due."""
        task_id, attempt = entry[3], entry[4]
        task = self._tasks.get(task_id)
        state = self._states.get(task_id)
        if task is None or state is None:
            return
        if state.pending is not None:
            task = state.pending
        self._enqueue(self._new_run(task, state, attempt, now, scheduled=entry[0]), batch,
                      events)

    def _new_state(self, task_id: str) -> _TaskState:
        state = self._states[task_id] = _TaskState()
        return state

    def _state(self, task_id: str) -> _TaskState:
        return self._states.get(task_id) or self._new_state(task_id)

    def _new_run(self, task: Task, state: _TaskState, attempt: int, now: float,
                  scheduled: Optional[float] = None) -> Run:
        """A run of *task*, due at *scheduled* (default: the task's time); a
        retry (attempt > 1) keeps the number of the run it retries."""
        if attempt == 1:
            state.runs += 1
        options = task[9]
        run = Run(task, state.runs, attempt, task[0] if scheduled is None else scheduled,
                  now, options.timeout, state)
        if options.hard:  # attributes left at their class default cost nothing
            run.hard = True
        latest = state.latest
        if latest is not None:
            run._previous = latest
            if state.history is None:
                state.history = deque((latest,), maxlen=self._history)
            state.history.append(run)
        if state.status is not TaskStatus.SUSPENDED:
            state.status = TaskStatus.SUSPENDED
        state.latest = run
        self._results[task[3]] = run
        if self._journal is not None:  # the slot is this process's from now on
            self._journal.claim(run, task.name)
        return run

    def _enqueue(self, run: Run, batch: List[Run], events: List[Event]) -> None:
        lane = self._lane(run.hard)
        if lane.has_room() and not lane.ready and not lane.returning:
            self._take_slot(lane, run, batch, events)
        else:  # a worker that just finished a run takes it next, or a free one
            lane.ready.push((run.task[1], run.scheduled, next(self._seq), run))

    def _drain_ready(self, lane: Lane, now: float, batch: List[Run],
                     events: List[Event]) -> None:
        """Fill the lane's free slots from its ready heap."""
        while lane.has_room() and lane.ready:
            run = self._pop_ready(lane, now, events)
            if run is None:
                return
            lane.take()
            batch.append(run)

    def _pop_ready(self, lane: Lane, now: float, events: List[Event]) -> Optional[Run]:
        """The next ready run that may start, by (priority, due time); runs
        too late for their grace time, or overlapping, are skipped."""
        pop_live = lane.ready.pop_live
        while True:
            entry = pop_live()
            if entry is None:
                return None
            run = entry[3]
            grace = run.task[9].misfire_grace_time
            if grace is not None and now - run.scheduled > grace:
                self._drop_run(run, now - run.scheduled, "no free worker", events)
            elif self._may_start(run, events):
                return run

    def _take_slot(self, lane: Lane, run: Run, batch: List[Run], events: List[Event]) -> None:
        if self._may_start(run, events):
            lane.take()
            batch.append(run)

    def _may_start(self, run: Run, events: List[Event]) -> bool:
        """Count a run as started, unless max_instances says it would overlap."""
        state = run._state
        if state.running >= run.task[9].max_instances:
            self._drop_run(run, self._clock.now() - run.scheduled,
                           "previous run still going", events)
            return False
        state.running += 1
        self._running += 1
        if run._previous is not None:
            run._previous = None  # a started run is never forgotten; don't chain history
        if self._listeners.callbacks:
            events.append(self._event(EventKind.SUBMITTED, run.task_id, run))
        return True

    def _lane(self, hard: bool) -> Lane:
        if not hard:
            return self._lanes[0]
        lane = self._lanes[1]
        if lane is None:
            executor = self._process_executor
            lane = Lane(executor if executor is not None else ProcessPoolExecutor(),
                        owned=executor is None)
            self._lanes = (self._lanes[0], lane)
        return lane

    # ------------------------------------------------------------- execution

    def _submit(self, run: Run) -> None:
        """Hand a run to its executor (called without the lock)."""
        lane = self._lanes[1] if run.hard else self._lanes[0]
        run.timestamp = self._clock.now()
        if run._claimed is False:
            self._refuse(run)
            return
        try:
            if lane.in_threads and not run.hard:
                lane.executor.submit(self._execute, run)
            elif lane.handoff is not None:
                lane.handoff.submit(self._submit_elsewhere, run, lane)
            else:
                self._submit_elsewhere(run, lane)
        except BaseException as exc:  # e.g. the executor was shut down
            status = TaskStatus.CANCELED if self._closing else TaskStatus.ERROR
            self._finish(run, status, None, exc)

    def _submit_elsewhere(self, run: Run, lane: Lane) -> None:
        """Send a run to a process (or any executor that is not our threads)."""
        task = run.task
        try:
            executor = lane.executor
            if run.hard and run.timeout is not None:
                executor = run._killable = self._killable.acquire()
            self._started(run)
            if isinstance(executor, ProcessPoolExecutor):
                future = executor.submit(task[6], *task[7], **task[8])
            else:
                future = executor.submit(_call_in_process, task[6], task[7], task[8])
            run._future = future
            future.add_done_callback(partial(self._on_future_done, run))
        except BaseException as exc:  # e.g. the executor was shut down
            status = TaskStatus.CANCELED if self._closing else TaskStatus.ERROR
            self._finish(run, status, None, exc)

    def _execute(self, run: Optional[Run]) -> None:
        """A worker thread runs *run*, then whatever waits in its lane's ready
        heap, most urgent first, before it gives its slot back."""
        lane, now = self._lanes[0], self._clock.now
        returning = lane.returning
        while run is not None:
            _set_current_run(run)
            # _started(), inlined: this loop is the hot path of every thread run
            run.started = now()
            run.status = TaskStatus.RUNNING
            state = run._state
            if state.latest is run and not state.canceled:
                state.status = TaskStatus.RUNNING
            if run.timeout is not None or self._listeners.callbacks:
                self._started_extras(run)
            task = run.task
            try:
                result = task[6](*task[7], **task[8])
            except BaseException as exc:
                returning.append(None)  # this worker is about to take the next run
                if exc.__traceback__ is not None:  # start the traceback in the task
                    exc.__traceback__ = exc.__traceback__.tb_next
                run = self._finish(run, TaskStatus.ERROR, None, exc, pull=True)
            else:
                returning.append(None)
                run = self._finish(run, TaskStatus.COMPLETED, result, None, pull=True)
            finally:
                _set_current_run(None)

    def _started(self, run: Run) -> None:
        run.started = self._clock.now()
        run.status = TaskStatus.RUNNING
        state = run._state
        if state.latest is run and not state.canceled:
            state.status = TaskStatus.RUNNING
        self._started_extras(run)

    def _started_extras(self, run: Run) -> None:
        """A run with a timeout gets its deadline; listeners hear STARTED."""
        if run.timeout is not None:
            with self._lock:
                run._deadline = run.started + run.timeout
                heapq.heappush(self._deadlines, (run._deadline, next(self._seq), run))
                self._wakeup.notify()
        if self._listeners.callbacks:
            self._listeners.emit([self._event(EventKind.STARTED, run.task_id, run)])

    def _on_future_done(self, run: Run, future: Any) -> None:
        try:
            result = future.result()
        except BaseException as exc:
            status = TaskStatus.CANCELED if isinstance(exc, CancelledError) else TaskStatus.ERROR
            self._finish(run, status, None, exc)
        else:
            self._finish(run, TaskStatus.COMPLETED, result, None)
        if run._killable is not None and not run.timed_out:
            self._killable.release(run._killable)

    def _finish(self, run: Run, status: TaskStatus, result: Any,
                exc: Optional[BaseException], pull: bool = False) -> Optional[Run]:
        """Record a run's outcome (or drop it, if it already timed out).

        With *pull*, the caller is a worker thread that keeps its slot: the
        next ready run of the lane is returned for it to execute.
        """
        text = format_exception(exc) if exc is not None else None
        events: List[Event] = []
        following = None
        with _Spin(self._lock):
            lane = self._lanes[1] if run.hard else self._lanes[0]
            if run.status not in _FINAL:
                if run._deadline is not None and self._clock.now() > run._deadline:
                    status, result, exc, text = TaskStatus.TIMEOUT, None, _overran(run), None
                self._complete(run, status, result, exc, text, events)
            self._running -= 1
            if pull:
                lane.returning.pop()
                if lane.ready and not self._closing:
                    following = self._pop_ready(lane, self._clock.now(), events)
            if following is None:
                lane.give_back()
                if lane.ready:
                    self._wakeup.notify()
            waiters = self._waiters
            if waiters and (None in waiters or run.task_id in waiters):
                self._run_done.notify_all()
            if self._journal is not None and self._journal_due is None:
                self._journal_due = self._clock.now() + _JOURNAL_LINGER_SECONDS
                self._wakeup.notify()  # so the dispatcher's sleep ends by then
        if events:
            self._listeners.emit(events)
        if self._journal is not None:
            following = self._settle_journal(following)
        return following

    def _complete(self, run: Run, status: TaskStatus, result: Any,
                  exc: Optional[BaseException], text: Optional[str],
                  events: List[Event]) -> None:
        """Under the lock: set the run's final status and what follows from it."""
        now = self._clock.now()
        run.finished = now
        run.status, run.result, run.exception, run.traceback = status, result, exc, text
        if run._owns_future:
            run._resolve_future()
        state = run._state
        state.running -= 1
        if run.started is not None:
            state.perf = now - run.started
        task = run.task
        if self._journal is not None:  # every attempt, retried or not
            self._journal.finished(run, task.name)
        if status is not TaskStatus.COMPLETED:
            state.last_error = _error_line(exc, status)
            if self._retry(run, now, events):
                return
            _log_failure(run)
        if state.latest is run and not state.canceled:
            state.status = status
        if self._journal is not None:
            self._journal.update(run.task_id, runs=state.runs, missed=state.missed,
                                 status=int(state.status))
        if self._listeners.callbacks:
            kind = _EVENT_OF_STATUS[status]
            events.append(self._event(kind, run.task_id, run))
        self._after_run(task, state, status, now, events)

    def _retry(self, run: Run, now: float, events: List[Event]) -> bool:
        options = run.task[9]
        if run.attempt > options.retries or run._state.canceled or self._closing:
            return False
        wait = options.retry_delay * options.retry_backoff ** (run.attempt - 1)
        entry = OneOff(now + wait, run.task[1], next(self._seq), run.task_id,
                       run.attempt + 1, "retry")
        self._timers.push(entry)
        self._wakeup.notify()
        run._state.status = TaskStatus.SUSPENDED
        run._state.retrying = True
        reason = f"attempt {run.attempt} {run.status.label.lower()}; retrying in {wait:g} s"
        _log.warning("task %r: %s", run.task_id, reason)
        if self._listeners.callbacks:
            events.append(self._event(EventKind.RETRY, run.task_id, run, reason=reason))
        return True

    def _after_run(self, task: Task, state: _TaskState, status: TaskStatus, now: float,
                   events: List[Event]) -> None:
        """A run is final: release or cancel dependents; retire a finished one-shot."""
        if state.retrying:
            state.retrying = False
        task_id = task[3]
        if not self._dependents:
            pass
        elif status is TaskStatus.COMPLETED:
            self._release_dependents(task_id, now, events)
        else:
            self._fail_dependents(task_id, events)
        if state.pending is task and self._tasks.get(task_id) is task:
            state.pending = None
            state.finished_at = now
            state.task = task
            del self._tasks[task_id]
            if self._journal is not None:
                self._journal.removed(task_id)
            if self._listeners.callbacks:
                events.append(self._event(EventKind.REMOVED, task_id))

    def _expire_deadlines(self, now: float, events: List[Event]) -> List[Run]:
        """Runs past their timeout become TIMEOUT; returns them to be marked."""
        expired = []
        while self._deadlines and self._deadlines[0][0] <= now:
            run = heapq.heappop(self._deadlines)[2]
            if run.done:
                continue
            error = _overran(run)
            _log.warning("%s", error)
            self._complete(run, TaskStatus.TIMEOUT, None, error, None, events)
            expired.append(run)
        if expired and self._waiters:
            self._run_done.notify_all()
        return expired

    def _mark_expired(self, expired: List[Run]) -> None:
        """Tell timed-out runs (outside the lock: callbacks may kill processes)."""
        if not expired:
            return
        self._lock.release()
        try:
            for run in expired:
                run._mark_timed_out()
                if run._killable is not None:
                    self._killable.kill(run._killable)
        finally:
            self._lock.acquire()

    # ---------------------------------------------------------- misfires etc.

    def _late_reason(self, due: float) -> str:
        return "scheduler paused" if due < self._resumed_at else "scheduler stalled"

    def _miss(self, task: Task, state: _TaskState, lateness: float, reason: str,
              events: List[Event], count: int = 1, coalesced: bool = False) -> None:
        state.missed += count
        if self._journal is not None:
            self._journal.update(task[3], missed=state.missed)
        if not coalesced and state.latest is None:
            state.status = TaskStatus.CANCELED
        what = f"{count} run(s) coalesced into one" if coalesced else "run skipped"
        _log.warning("task %r: %s, %.3f s late (%s)", task[3], what, lateness, reason)
        if self._listeners.callbacks:
            events.append(self._event(EventKind.MISSED, task[3], reason=reason,
                                      lateness=lateness, count=count))
        if not coalesced and state.pending is task and self._tasks.get(task[3]) is task:
            self._after_run(task, state, TaskStatus.CANCELED, self._clock.now(), events)

    def _drop_run(self, run: Run, lateness: float, reason: str, events: List[Event]) -> None:
        """A run that waited was not started after all (MISSED): it is
        forgotten, and the task's latest run is the one before it again."""
        run.status = TaskStatus.CANCELED
        run.reason = reason
        if run._owns_future:
            run._resolve_future()
        if self._journal is not None:
            self._journal.finished(run, run.task.name)
        state = run._state
        if state.latest is run:
            self._forget_run(run, state)
        self._miss(run.task, state, lateness, reason, events)

    def _forget_run(self, run: Run, state: _TaskState) -> None:
        previous = run._previous
        state.latest = previous
        if state.history and state.history[-1] is run:
            state.history.pop()
        if run.attempt == 1:
            state.runs -= 1
        if previous is None:
            self._results.pop(run.task_id, None)
            state.status = TaskStatus.SUSPENDED if run.task_id in self._tasks \
                else TaskStatus.CANCELED
        else:
            self._results[run.task_id] = previous
            state.status = previous.status

    # ----------------------------------------------------------- dependencies

    def _dependencies_met(self, task: Task, following: Optional[Task], state: _TaskState,
                          events: List[Event]) -> bool:
        statuses = [self._status_of(dep) for dep in task[9].depend_on]
        if any(s in _FAILED for s in statuses):
            self._cancel_locked(task[3], "a dependency failed", events)
            return False
        if all(s is TaskStatus.COMPLETED for s in statuses):
            return True
        self._parked[task[3]] = task  # a later occurrence replaces a waiting one
        return False

    def _status_of(self, task_id: str) -> TaskStatus:
        state = self._states.get(task_id)
        if state is not None:
            return state.status
        return TaskStatus.SUSPENDED if task_id in self._tasks else TaskStatus.CANCELED

    def _release_dependents(self, task_id: str, now: float, events: List[Event]) -> None:
        if not self._dependents:
            return
        for dependent in sorted(self._dependents.get(task_id, ())):
            task = self._parked.get(dependent)
            if task is None:
                continue
            deps = [self._status_of(d) for d in task[9].depend_on]
            if all(s is TaskStatus.COMPLETED for s in deps):
                del self._parked[dependent]
                state = self._state(dependent)
                run = self._new_run(task, state, 1, now)
                lane = self._lane(run.hard)
                lane.ready.push((task[1], run.scheduled, next(self._seq), run))
                self._wakeup.notify()

    def _fail_dependents(self, task_id: str, events: List[Event]) -> None:
        if not self._dependents:
            return
        for dependent in sorted(self._dependents.pop(task_id, ())):
            if dependent in self._tasks:
                self._cancel_locked(dependent, f"dependency {task_id!r} did not complete",
                                    events)

    # -------------------------------------------------------------- the clock

    def _follow_wall_clock(self) -> None:
        """After a wall-clock step, re-derive the heap times of cron/datetime tasks."""
        offset = self._clock.offset()
        shift = self._offset - offset
        if abs(shift) <= _CLOCK_STEP_SECONDS:
            return
        _log.warning("wall clock stepped by %+.1f s; re-deriving cron and datetime times",
                     -shift)
        self._offset = offset
        entries = []
        for entry in self._timers.entries():
            if type(entry) is Task and type(entry[4]) is not str and entry[4].wall_clock:
                entry = entry.at(entry[0] + shift, entry[2])
                self._tasks[entry[3]] = entry
            entries.append(entry)
        self._timers.rebuild(entries)

    def _timer_is_live(self, entry: Any) -> bool:
        if type(entry) is Task:
            return self._tasks.get(entry[3]) is entry
        return entry[3] in self._tasks


# ------------------------------------------------------------------ helpers

_EVENT_OF_STATUS = {
    TaskStatus.COMPLETED: EventKind.COMPLETED,
    TaskStatus.ERROR: EventKind.FAILED,
    TaskStatus.TIMEOUT: EventKind.TIMEOUT,
    TaskStatus.CANCELED: EventKind.CANCELED,
}


def _outcome(run: Run) -> Any:
    if run.status is TaskStatus.COMPLETED:
        return run.result
    if run.status is TaskStatus.TIMEOUT:
        raise run.exception if isinstance(run.exception, TimeoutError) else \
            TimeoutError(f"task {run.task_id!r} timed out")
    if run.status is TaskStatus.CANCELED:
        raise CancelledError(f"task {run.task_id!r} run {run.run_number} was canceled"
                             + (f": {run.reason}" if run.reason else ""))
    raise run.exception  # type: ignore[misc]


def _overran(run: Run) -> TimeoutError:
    return TimeoutError(f"task {run.task_id!r} run {run.run_number} exceeded its "
                        f"timeout of {run.timeout!r} s")


def _error_line(exc: Optional[BaseException], status: TaskStatus) -> str:
    if exc is None:
        return status.label
    return f"{type(exc).__name__}: {exc}"


def _log_failure(run: Run) -> None:
    if run.status is TaskStatus.ERROR:
        _log.error("task %r run %d failed:\n%s", run.task_id, run.run_number,
                   run.traceback or run.exception)


def _same_definition(a: Task, b: Task) -> bool:
    return (a.trigger == b.trigger and a.interval == b.interval and a[1] == b[1]
            and a[6] == b[6] and a[7] == b[7] and a[8] == b[8]
            and a[9] == b[9])




def _remaining(deadline: Optional[float]) -> Optional[float]:
    return None if deadline is None else max(0.0, deadline - time.monotonic())
