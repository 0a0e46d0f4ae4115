"""The Scheduler: the public API, a thin facade over the parts.

State (timetable, run book, lanes) lives in ``State`` under one lock; the
transitions are in ``control``, ``firing`` and ``runflow``; ``Dispatcher``
is the thread that fires due work, ``Workers`` run it, ``Journal`` writes
the store and the run log, ``Standby`` loads stored tasks and takes over a
store. Each public method here checks its arguments, changes the state
with the lock held, then, with the lock released, does what the change left
to do: listeners, logs, store writes, handing runs to executors.
"""
from __future__ import annotations

import os
import socket
import time
import weakref
from concurrent.futures import CancelledError
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Union

from . import definitions, queries
from .arguments import check_scheduler_arguments
from .contrib.dask import as_dask_executor
from .core import control
from .core.dispatcher import Dispatcher
from .core.lanes import Lanes
from .core.cluster import Cluster
from .core.requests import ControlRequests
from .core.standby import Standby, shared_store
from .core.state import Effects, State, wait_while_busy
from .define import (build_task, changed_task, check_callable, check_kind, options_of,
                     when_of)
from .durability.folders import check_folder
from .durability.journal import Journal
from .durability.runlog import RunLog
from .durability.stores import open_store, sqlite_file
from .execution.aioloop import EventLoopThread
from .execution.executors import ThreadPoolExecutor
from .execution.processes import KillableProcesses, ProcessPool
from .execution.workers import Workers
from .records.events import Event, EventKind, Listeners
from .records.options import ASYNC_OPTIONS, DEFAULT_OPTIONS
from .records.protocols import Executor, Store
from .records.runs import Run, TaskStatus
from .records.task import Task
from .shutdown import Closer
from .timing.clock import Clock

__all__ = ["Scheduler"]


class Scheduler:
    """A priority scheduler running tasks on threads, in processes, or as
    coroutines on its own event loop.

    ``executor`` runs ordinary tasks (default: a thread pool made for this
    scheduler, one worker per core); ``process_executor`` runs ``hard=True``
    tasks (default: a loky process pool, made on first use); ``async def``
    functions run on an event loop thread of the scheduler's, at most
    ``max_async`` at once. ``timefunc``/``delayfunc`` may be replaced, e.g.
    by a virtual clock; ``wallfunc`` (POSIX seconds) is the wall clock that
    cron and datetime triggers read (by default ``time.time``, or derived
    from an injected ``timefunc``). ``history`` bounds the runs kept per task.

    ``store`` keeps tasks and runs across restarts (a path, 'sqlite:///relative.db',
    'sqlite:////absolute.db', 'postgresql://...', or a store object; the
    file's folder must exist, as the run log's must). On a SQLite store one
    scheduler at a time runs the tasks, another one waits as a standby; on
    a PostgreSQL store every scheduler is active and each run executes on
    one of them. ``run_log`` is a file (or an
    object with ``write(record)``) that gets one JSON line per finished run.
    """

    def __init__(self, executor: Optional[Executor] = None,
                 timefunc: Callable[[], float] = time.monotonic,
                 delayfunc: Callable[[float], Any] = time.sleep, *,
                 process_executor: Optional[Executor] = None, history: int = 100,
                 default_timeout: Optional[float] = None,
                 wallfunc: Optional[Callable[[], float]] = None,
                 store: Union[None, str, "os.PathLike[str]", Store] = None,
                 run_log: Any = None, max_async: int = 100) -> None:
        self._default_timeout = check_scheduler_arguments(
            executor, timefunc, delayfunc, process_executor, history, default_timeout,
            wallfunc, run_log, max_async)
        clock = Clock(timefunc, wallfunc)
        dask = as_dask_executor(executor)  # per-run priorities, cancel at a deadline
        lanes = Lanes(dask or executor or ThreadPoolExecutor(),
                      executor is None, process_executor, ProcessPool, EventLoopThread(),
                      max_async)
        store_file = sqlite_file(store)
        if store_file is not None:  # (before the run log makes its file)
            check_folder(store_file, "the store")
        log = RunLog(run_log) if isinstance(run_log, (str, os.PathLike)) else run_log
        try:
            opened = open_store(store)
        except BaseException:
            if log is not run_log:
                log.close()  # opened first, so nothing is left open
            raise
        st = State(clock, lanes, history, None)
        if opened is not None or log is not None:
            st.journal = Journal(opened, log, st.lock, opened is not store, log is not run_log)
        self._state = st
        self._listeners = Listeners()
        self._workers = Workers(st, self._listeners, KillableProcesses)
        self._id_prefix = os.urandom(3).hex() + "-"
        #: Functions of hard tasks that pickled once: not pickled at every delay().
        self._picklable: "weakref.WeakKeyDictionary[Any, bool]" = weakref.WeakKeyDictionary()
        self._standby: Optional[Standby] = None
        self._cluster: Optional[Cluster] = None
        #: Applies a dashboard's requests written to the store (if it has them).
        self._requests: Optional[ControlRequests] = None
        if opened is not None:
            owner = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
            self._standby = Standby(st, opened, owner, self._apply_changed)
            st.shared = shared_store(opened)
            if st.shared:  # (first: the changes from here on are applied, none missed)
                self._cluster = Cluster(st, opened, owner, self._standby, self._workers)
            st.standby = not self._standby.take()
            self._requests = ControlRequests.of(st, opened, owner, {
                "run_now": self.run_now, "pause": self.pause, "resume": self.resume,
                "cancel": self.cancel})
        before = self._standby.wait_to_take_over if st.standby else None  # type: ignore
        self._dispatcher = Dispatcher(st, self._workers,
                                      None if delayfunc is time.sleep else delayfunc, before)
        self._closer = Closer(st, self._workers, self._dispatcher, self._listeners,
                              self._requests)

    # ------------------------------------------------------------------ state

    @property
    def stopped(self) -> bool:
        """True until ``start()``, and again after ``shutdown()``."""
        return not self._state.started or self._state.closing

    @property
    def task(self) -> Mapping[str, Task]:
        """The scheduled tasks, ``{task_id: Task}`` (a read-only live view)."""
        return self._state.timetable.tasks

    @property
    def result(self) -> Mapping[str, Run]:
        """The latest run of each task, ``{task_id: run}``; a run reads as
        upstream's ``{'timestamp', 'task', 'future'}``."""
        return self._state.runbook.results

    @property
    def store(self) -> Optional[Store]:
        """The store this scheduler keeps its tasks in, or None."""
        journal = self._state.journal
        return journal.store if journal is not None else None

    # ------------------------------------------------------------- scheduling

    def delay(self, trigger: str, interval: Any, priority: Union[int, float],
              fn: Callable[..., Any], args: Iterable[Any] = (),
              kwargs: Optional[Mapping[str, Any]] = None, *,
              task_id: Optional[str] = None, replace_existing: bool = True,
              tz: Any = None, name: Optional[str] = None, hard: Optional[bool] = None,
              timeout: Optional[float] = None, retries: Optional[int] = None,
              retry_delay: Optional[float] = None, retry_backoff: Optional[float] = None,
              misfire_grace_time: Optional[float] = None, coalesce: Optional[bool] = None,
              max_instances: Optional[int] = None,
              depend_on: Union[None, str, Iterable[str]] = None) -> str:
        """Schedule ``fn(*args, **kwargs)`` and return its task id.

        ``trigger`` is 'once' (``interval`` = seconds, a timedelta or a
        datetime), 'recur' (every ``interval`` seconds) or 'cron' (a cron
        string, or a number meaning once after that many seconds). A lower
        ``priority`` is more urgent. Options left None take their defaults.
        Bad input raises before anything changes; with a store, the task is
        stored when this returns.
        """
        if not callable(fn):
            check_callable(fn)
        if (name is None and hard is None and timeout is None and retries is None
                and retry_delay is None and retry_backoff is None
                and misfire_grace_time is None and coalesce is None
                and max_instances is None and depend_on is None
                and self._default_timeout is None):  # no option: the shared defaults
            options = ASYNC_OPTIONS if check_kind(fn, None) else DEFAULT_OPTIONS
        else:
            options = options_of(dict(name=name, hard=hard, timeout=timeout,
                                      retries=retries, retry_delay=retry_delay,
                                      retry_backoff=retry_backoff,
                                      misfire_grace_time=misfire_grace_time,
                                      coalesce=coalesce, max_instances=max_instances,
                                      depend_on=depend_on), self._default_timeout, fn)
        if task_id is not None and not isinstance(task_id, str):
            raise TypeError(f"task_id must be a str, got {task_id!r}")
        st = self._state
        seq = next(st.seq)
        now = st.clock.now()
        task = build_task(trigger, interval, priority, fn, args, kwargs, options,
                          task_id or f"{self._id_prefix}{seq}", seq, tz, now, st.offset,
                          self._picklable)
        if task_id is not None or st.journal is not None:
            return definitions.add_checked(st, self._workers, self._standby, task,
                                           replace_existing, fresh_id=task_id is None)
        fx = Effects()  # a new id, no store: nothing to compare or write first
        if st.lock.locked():  # (the common case costs no call)
            wait_while_busy(st.lock)
        try:
            try:
                with st.lock:
                    try:
                        control.add_new(st, task, now, fx)
                    except BaseException:  # an interrupt halfway: as if never called
                        st.take_back(task.id, fx)
                        st.repair(fx)
                        raise
            finally:
                if fx.todo:  # (the common case costs no call)
                    self._workers.settle(fx)
        except BaseException:  # an interrupt on the line above: settle still
            if fx.todo:
                self._workers.settle(fx)
            raise
        return task.id

    def cancel(self, task_id: str) -> None:
        """Stop a task: no further runs, its queued runs dropped (their futures
        cancelled). A run in progress is not interrupted. KeyError if unknown."""
        self._change(control.cancel, task_id, control.complete_cancel)

    def pause(self, task_id: Optional[str] = None) -> None:
        """Pause one task (it keeps its place but does not run) or, with no
        argument, the whole scheduler (nothing new starts)."""
        self._change(control.pause, task_id, control.pause)

    def resume(self, task_id: Optional[str] = None) -> None:
        """Undo :meth:`pause`. A resumed recurring task runs next at its next
        future due time; runs that fell due while the whole scheduler was
        paused follow the misfire and coalesce rules."""
        resume = lambda st, tid, fx: control.resume(st, tid, st.clock.now(), fx)  # noqa: E731
        self._change(resume, task_id, resume)

    def reschedule(self, task_id: str, trigger: str, interval: Any, *, tz: Any = None) -> None:
        """Give a task a new trigger; its next run follows the new one."""
        st = self._state
        when, due = when_of(trigger, interval, tz, st.clock.now(), st.offset)
        old = queries.definition(st, task_id)
        definitions.replace_checked(st, self._workers, Task(
            due, old.priority, next(st.seq), task_id, when, interval, old.fn, old.args,
            old.kwargs, old.options), keep_time=False)

    def modify(self, task_id: str, **changes: Any) -> None:
        """Change a task's priority, fn, args, kwargs, name or options
        (timeout, retries, retry_delay, retry_backoff, misfire_grace_time,
        coalesce, max_instances); its schedule is kept (a run that fires
        while this is being changed is not undone)."""
        new = changed_task(queries.definition(self._state, task_id), changes)
        definitions.replace_checked(self._state, self._workers, new, keep_time=True)

    def run_now(self, task_id: str) -> None:
        """One extra run now; the regular schedule is unchanged."""
        self._change(lambda st, tid, fx: control.run_now(st, tid, st.clock.now()), task_id)

    def _change(self, change: Callable[[State, Any, Effects], None], task_id: Any,
                complete: Optional[Callable[[State, Any, Effects], None]] = None) -> None:
        """Make a change under the lock, then do what it left to do. An
        interrupt (KeyboardInterrupt) halfway is put right before it goes on:
        the change is completed when *complete* says how, and the counts are
        made to agree with the runs again."""
        st = self._state
        fx = Effects()
        try:
            try:
                with st.lock:
                    try:
                        change(st, task_id, fx)
                    except Exception:
                        raise
                    except BaseException:
                        if complete is not None:
                            complete(st, task_id, fx)
                        st.repair(fx)
                        raise
            finally:
                self._workers.settle(fx)
        except BaseException:  # an interrupt on the line above: settle still
            self._workers.settle(fx)
            raise
        if st.journal is not None:
            st.journal.flush()

    def _apply_changed(self, changed: List[Any]) -> None:
        """At takeover: the definitions a standby's delay() changed."""
        for task, _ in changed:
            definitions.add_checked(self._state, self._workers, None, task, True)

    # ---------------------------------------------------------------- control

    def start(self) -> None:
        """Start the dispatcher in the background; returns at once."""
        st = self._state
        with st.lock:
            if st.closing:
                raise RuntimeError("a scheduler cannot be restarted after shutdown")
            if st.started:
                return
            st.started = True
            if not st.standby:  # (a standby's takeover says when it runs)
                st.running_since = st.clock.now()
        if self._cluster is not None:  # (first: the dispatcher starts knowing its share)
            self._cluster.start()
        self._dispatcher.start()
        if self._requests is not None:
            self._requests.start()
        self._emit(EventKind.SCHEDULER_STARTED)

    def shutdown(self, wait: bool = True, timeout: Optional[float] = None) -> None:
        """Stop the dispatcher and the executors.

        With ``wait`` it lets running work finish (at most ``timeout``
        seconds, after which running tasks end as INTERRUPTED: they are told
        to stop, the processes of command tasks and hard tasks killed). Runs
        that never started are canceled; with a store they run after a
        restart. Without ``wait`` it returns at once and the running work
        is recorded when it ends. It may be called from inside a task or a
        listener: the calling run is not waited for.
        """
        self._closer.shutdown(wait, timeout)
        if wait and self._cluster is not None:  # (it ends once the store is let go)
            self._cluster.join(2.0)

    def run_forever(self) -> None:
        """Start, then block until SIGINT or SIGTERM (in the main thread) or
        until ``shutdown()`` is called from elsewhere; then shut down cleanly."""
        self._closer.run_forever(self.start)

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
        ``TimeoutError`` is raised too; ``RuntimeError`` if no run is over
        and the scheduler was never started (nothing would ever run).
        """
        run = queries.wait_for_result(self._state, task_id, timeout)
        if run is None:
            raise CancelledError(f"task {task_id!r} was canceled")
        return run.outcome()

    def get_status(self, task_id: str) -> TaskStatus:
        """The task's status: that of its latest run (SUSPENDED before the first)."""
        return queries.status(self._state, task_id)

    def get_status_str(self, task_id: str) -> str:
        """The status name: 'Completed', 'Error', 'Suspended', 'Running', ..."""
        return self.get_status(task_id).label

    def runs(self, task_id: str, limit: Optional[int] = None) -> List[Run]:
        """The task's runs, newest first; with a store, the stored ones
        (earlier processes' runs and missed runs included)."""
        return queries.runs(self._state, task_id, limit)

    def next_run_times(self, task_id: str, n: int = 5) -> List[Any]:
        """The next *n* due times as aware datetimes (in the cron time zone,
        else local), to check a schedule before trusting it."""
        return queries.next_run_times(self._state, task_id, n)

    def get_task(self, task_id: str) -> Dict[str, Any]:
        """What is known of a task, as a plain dict."""
        return queries.task_info(self._state, task_id)

    def get_all(self) -> List[Dict[str, Any]]:
        """:meth:`get_task` for every task the scheduler knows."""
        return queries.all_task_info(self._state)

    def workers(self) -> List[queries.LaneLoad]:
        """Each lane's workers now: size, busy, runs waiting, runs held (for
        a dashboard or a health check; a snapshot, read under the lock)."""
        return queries.workers(self._state)

    def purge(self, days: float = 0, hours: float = 0, minutes: float = 0) -> int:
        """Drop finished one-shot tasks and finished run records older than
        the given age (all finished ones with no argument), from the store
        too; returns how many run records were removed. Tasks that others
        depend on are kept."""
        return definitions.purge(self._state, days, hours, minutes)

    # ------------------------------------------------------------------ events

    def add_listener(self, callback: Callable[[Event], Any],
                     kinds: Optional[Iterable[EventKind]] = None) -> None:
        """Call ``callback(event)`` for each event (of ``kinds``, if given)."""
        self._listeners.add(callback, kinds)
        self._heard()

    def remove_listener(self, callback: Callable[[Event], Any]) -> None:
        self._listeners.remove(callback)
        self._heard()

    def subscribe(self, kinds: Optional[Iterable[EventKind]] = None) -> Any:
        """A ``queue.Queue`` that receives the events (of ``kinds``, if given)."""
        events = self._listeners.subscribe(kinds)
        self._heard()
        return events

    def _heard(self) -> None:
        """The listeners changed: events are made for the kinds they want."""
        wanted = self._listeners.wanted()
        with self._state.lock:
            self._state.wanted, self._state.listening = wanted, bool(wanted)

    def _emit(self, kind: EventKind) -> None:
        fx = Effects()
        with self._state.lock:
            self._state.event(fx, kind)
        self._workers.settle(fx)

