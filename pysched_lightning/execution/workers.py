"""Workers: hand runs to their executors and bring their outcomes back.

Thread runs execute in ``_work``, a loop that runs a run and then pulls the
next ready one of its lane, so a busy pool never waits for the dispatcher.
Runs for processes and other executors go through the ``Handoff``,
coroutines through ``Coroutines``. User code runs here, never with the
state lock held; what a finish leaves to do (events, logs, more runs) is
done by ``aftermath`` after the lock.
"""
from __future__ import annotations

import logging
import types
from typing import Any, Callable, List, Optional

from ..core.lanes import Mechanism
from ..core.runflow import finish, refuse
from ..core.state import Effects, State, acquire_busy, emit_logs
from ..records.context import _current
from ..records.events import EventKind, Listeners
from ..records.options import LaneKind
from ..records.runs import Run, TaskStatus, error_line, format_exception
from .coroutines import Coroutines
from .handoff import Handoff

__all__ = ["Workers"]

_log = logging.getLogger("pysched_lightning")


# Members read on every run, bound once: on Python 3.11 reading an attribute
# of an Enum class goes through EnumType.__getattr__, several times slower.
_RUNNING, _COMPLETED, _STARTED = TaskStatus.RUNNING, TaskStatus.COMPLETED, EventKind.STARTED
_PULL, _LOOP = Mechanism.PULL, Mechanism.LOOP


class Workers:
    """Sends runs to their lanes' executors; records what they did."""

    def __init__(self, st: State, listeners: Listeners, killable: Callable[[], Any]) -> None:
        self._st = st
        self._listeners = listeners
        self._handoff = Handoff(st, self, killable)
        self._coroutines = Coroutines(st, self)

    # -- after the lock ---------------------------------------------------------

    def aftermath(self, fx: Effects) -> None:
        """Do what a transition left to do, outside the state lock. (Each
        part is taken off *fx* first, so doing it twice, after an error,
        never sends a run twice.)"""
        logs, events, expired, wake, runs = fx.logs, fx.events, fx.expired, fx.wake, fx.runs
        fx.logs = fx.events = fx.expired = fx.runs = None
        fx.wake = False
        try:
            if logs:
                emit_logs(_log, logs)
            if events:
                self._listeners.emit(events)
            if expired:
                self.stop_runs(expired)
            if wake:
                with self._st.lock:
                    self._st.run_done.notify_all()
        finally:  # runs that got a slot are sent, even if a KeyboardInterrupt came
            if runs:
                self.submit(runs)

    def stop_runs(self, runs: List[Run]) -> None:
        """Runs ended by a deadline or a shutdown: tell them, and stop what can
        be stopped (a process is killed, a coroutine or a remote call
        cancelled; a thread is only told, through ``timed_out``)."""
        for run in runs:
            run._mark_timed_out()
            handle = run._handle
            if handle is None:
                continue
            try:
                if run.lane is LaneKind.PROCESSES:
                    self._handoff.killable.kill(handle)
                elif run.lane is LaneKind.ASYNC:
                    self._st.lanes.of(run).executor.call_soon(handle.cancel)
                else:
                    handle.cancel()
            except Exception as exc:
                _log.error("stopping task %r run %d failed: %s", run.task_id,
                           run.run_number, error_line(exc))

    # -- sending --------------------------------------------------------------

    def submit(self, runs: List[Run]) -> None:
        """Hand started runs to their executors. A run executes only once its
        claim in the store is committed: a thread worker sees to it itself
        (workers starting together share one commit); for the others the
        claims are committed here first."""
        st = self._st
        journal = st.journal
        if journal is not None and journal.store is not None and \
                any(run._claimed is None and st.lanes.of(run).mechanism is not _PULL
                    for run in runs):
            journal.flush()
        now = st.clock.now()
        to_processes = []
        for index, run in enumerate(runs):
            try:
                if run._claimed is False:
                    self._refused(run)
                    continue
                lane = st.lanes.of(run)
                run._t_timestamp = now
                if lane.mechanism is _PULL:
                    lane.executor.submit(self._work, run)
                elif lane.mechanism is _LOOP:
                    lane.executor.call_soon(self._coroutines.start, run)
                elif lane.to_processes:
                    to_processes.append(run)
                else:
                    self._handoff.send(lane, run)
            except Exception as exc:  # e.g. the executor was shut down
                self.not_sent(run, exc)
            except BaseException as exc:
                # A KeyboardInterrupt (main thread): the runs not handed over
                # end here, so none is left waiting; one that was handed over
                # after all is skipped by its worker.
                for left in runs[index:]:
                    self.not_sent(left, exc)
                raise
        if to_processes:
            self._handoff.send_soon(to_processes)

    def not_sent(self, run: Run, exc: BaseException) -> None:
        """*run* could not be sent: it ends (CANCELED during shutdown or when
        interrupted, else ERROR)."""
        status = TaskStatus.CANCELED if self._st.closing or not isinstance(exc, Exception) \
            else TaskStatus.ERROR
        fx = Effects()
        with self._st.lock:
            finish(self._st, run, status, None, exc, format_exception(exc),
                   error_line(exc), fx, False)
        self.aftermath(fx)

    def _refused(self, run: Run) -> None:
        fx = Effects()
        with self._st.lock:
            refuse(self._st, run, fx, False)
        self.aftermath(fx)

    def claimed(self, following: Optional[Run], fx: Effects) -> Optional[Run]:
        """Before a worker runs the next ready run: its claim must be decided;
        a refused one is skipped for the one after it."""
        journal = self._st.journal
        while following is not None and journal is not None and journal.store is not None:
            if following._claimed is None:
                journal.flush()
            if following._claimed is not False:
                break
            with self._st.lock:
                following = refuse(self._st, following, fx, True)
            self.aftermath(fx)
        return following

    def started(self, run: Run) -> None:
        """A run began: it gets its deadline; listeners hear STARTED."""
        st = self._st
        if run._t_started is None:
            run._t_started = st.clock.now()
        if run.timeout is None and _STARTED not in st.wanted:
            return
        fx = Effects()
        with st.lock:
            if run.timeout is not None and not run.done:
                if st.deadlines.add(run, run._t_started + run.timeout):
                    st.wakeup.notify()
            st.event(fx, EventKind.STARTED, run.task_id, run)
        self.aftermath(fx)

    # -- thread workers ---------------------------------------------------------

    def _work(self, run: Optional[Run]) -> None:
        """A worker thread runs *run*, then whatever waits in its lane's ready
        heap, most urgent first, before it gives its slot back."""
        st = self._st
        lane, now, lock = st.lanes.threads, st.clock.now, st.lock
        returning = lane.returning
        fx = Effects()
        store = st.journal is not None and st.journal.store is not None
        while run is not None:
            if store and run._claimed is not True:
                run = self.claimed(run, fx)  # committed, or skipped if refused
                if run is None:
                    break
            token = _current.set(run)
            run._t_started = now()
            if run.timeout is not None or _STARTED in st.wanted:
                self.started(run)
            task = run.task
            try:
                if run.status is not _RUNNING:
                    result = None  # a shutdown gave up on it before it began
                else:
                    result = task.fn(*task.args, **task.kwargs)
                if type(result) is types.CoroutineType:
                    result = self._await(result, run)
            except BaseException as exc:
                returning.append(None)  # this worker is about to take the next run
                if exc.__traceback__ is not None:  # start the traceback in the task
                    exc.__traceback__ = exc.__traceback__.tb_next
                text, error = format_exception(exc), error_line(exc)
                acquire_busy(lock)  # a pool thread: see acquire_busy
                try:
                    run = finish(st, run, TaskStatus.ERROR, None, exc, text, error, fx, True)
                finally:
                    lock.release()
            else:
                returning.append(None)
                if not lock.acquire(False):  # (the common case costs no call)
                    acquire_busy(lock)
                try:
                    run = finish(st, run, _COMPLETED, result, None, None, None,
                                 fx, True)
                finally:
                    lock.release()
            finally:
                _current.reset(token)
            if fx.runs or fx.wake or fx.events or fx.logs or fx.expired:  # (no call)
                self.aftermath(fx)

    def _await(self, coro: Any, run: Run) -> Any:
        """A thread task returned a coroutine: run it on the event loop and
        wait for it here (a timeout cancels it)."""
        loop = self._st.lanes.loop
        future = loop.run(coro)
        run.add_timeout_callback(future.cancel)
        try:
            return future.result()
        finally:
            run.remove_timeout_callback(future.cancel)

    def shutdown(self, wait: bool) -> None:
        """Stop the hand-off thread and the killable processes."""
        self._handoff.shutdown(wait)
