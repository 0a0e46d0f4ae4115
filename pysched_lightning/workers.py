"""Workers: hand runs to their executors and bring their outcomes back.

Thread runs execute in ``_work``, a loop that runs a run and then pulls the
next ready one of its lane, so a busy pool never waits for the dispatcher.
Runs for processes (and any executor that returns futures) are sent through
a hand-off thread, since pickling and spawning can take long, and report
back through their future. Coroutines run on the scheduler's event loop.
User code runs here, never with the state lock held; what a finish leaves
to do (events, logs, more runs) is done by ``aftermath`` after the lock.
"""
from __future__ import annotations

import concurrent.futures
import logging
import types
from concurrent.futures import CancelledError
from functools import partial
from typing import Any, Callable, List, Optional

from .context import _current
from .events import EventKind, Listeners
from .executors import call_in_process
from .lanes import Lane, Mechanism
from .options import LaneKind
from .runflow import finish, refuse
from .runs import Run, TaskStatus, error_line, format_exception
from .state import Effects, State, emit_logs

__all__ = ["Workers"]

_log = logging.getLogger("pysched_lightning")


class Workers:
    """Sends runs to their lanes' executors; records what they did."""

    def __init__(self, st: State, listeners: Listeners, killable: Callable[[], Any]) -> None:
        self._st = st
        self._listeners = listeners
        #: Makes (on first use) the one-process executors for hard tasks
        #: with a timeout, which can be killed alone.
        self._killable_factory = killable
        self._killable: Any = None
        #: Sending to a process pool pickles and may spawn workers (seconds
        #: the first time): a thread of its own does it, never the dispatcher.
        self._handoff: Optional[concurrent.futures.ThreadPoolExecutor] = None

    # -- after the lock ---------------------------------------------------------

    def aftermath(self, fx: Effects) -> None:
        """Do what a transition left to do, outside the state lock. (Each
        part is taken off *fx* first, so doing it twice, after an error,
        never sends a run twice.)"""
        logs, events, expired, wake, runs = fx.logs, fx.events, fx.expired, fx.wake, fx.runs
        fx.logs = fx.events = fx.expired = fx.runs = None
        fx.wake = False
        if logs:
            emit_logs(_log, logs)
        if events:
            self._listeners.emit(events)
        if expired:
            self.stop_runs(expired)
        if wake:
            with self._st.lock:
                self._st.run_done.notify_all()
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
                    self._killable.kill(handle)
                elif run.lane is LaneKind.ASYNC:
                    self._st.lanes.of(run).executor.call_soon(handle.cancel)
                else:
                    handle.cancel()
            except Exception as exc:
                _log.error("stopping task %r run %d failed: %s", run.task_id,
                           run.run_number, error_line(exc))

    # -- sending --------------------------------------------------------------

    def submit(self, runs: List[Run]) -> None:
        """Hand started runs to their executors (claims are decided first)."""
        journal = self._st.journal
        if journal is not None and journal.store is not None:
            journal.flush()
        for run in runs:
            run._t_timestamp = self._st.clock.now()
            if run._claimed is False:
                self._refused(run)
                continue
            lane = self._st.lanes.of(run)
            try:
                if lane.mechanism is Mechanism.PULL:
                    lane.executor.submit(self._work, run)
                elif lane.mechanism is Mechanism.LOOP:
                    lane.executor.call_soon(self._start_coroutine, run)
                elif lane.to_processes:
                    self._handoff_thread().submit(self._send, lane, run)
                else:
                    self._send(lane, run)
            except BaseException as exc:  # e.g. the executor was shut down
                self._not_sent(run, exc)

    def _handoff_thread(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._handoff is None:
            self._handoff = concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix="pysched-process-submit")
        return self._handoff

    def _send(self, lane: Lane, run: Run) -> None:
        """Send a run to a process pool or another executor; its outcome
        comes back through the future. (A run counts as started when it is
        sent: an executor may even run it inside ``submit``.)"""
        task = run.task
        try:
            self._started(run)
            if run.lane is LaneKind.PROCESSES and run.timeout is not None:
                if self._killable is None:
                    self._killable = self._killable_factory()
                future, run._handle = self._killable.submit(task.fn, task.args, task.kwargs)
            elif lane.to_processes:
                future = lane.executor.submit(task.fn, task.args, task.kwargs)
            else:
                future = _submit_elsewhere(lane.executor, run)
                run._handle = future
            if run.status is TaskStatus.TIMEOUT:  # its deadline passed meanwhile
                self.stop_runs([run])
            future.add_done_callback(partial(self._future_done, lane, run))
        except BaseException as exc:
            self._not_sent(run, exc)

    def _future_done(self, lane: Lane, run: Run, future: Any) -> None:
        try:
            result = future.result()
        except CancelledError as exc:
            self._done(lane, run, TaskStatus.CANCELED, None, exc)
        except BaseException as exc:
            self._done(lane, run, TaskStatus.ERROR, None, exc)
        else:
            self._done(lane, run, TaskStatus.COMPLETED, result, None)

    def _done(self, lane: Lane, run: Run, status: TaskStatus, result: Any,
              exc: Optional[BaseException]) -> None:
        text = error = None
        if exc is not None:
            text, error = format_exception(exc), error_line(exc)
        fx = Effects()
        pull = lane.to_processes  # a process lane sends the next run itself
        with self._st.lock:
            following = finish(self._st, run, status, result, exc, text, error, fx, pull)
        self.aftermath(fx)
        following = self._claimed(following, fx)
        if following is not None:
            self._handoff_thread().submit(self._send, lane, following)

    def _not_sent(self, run: Run, exc: BaseException) -> None:
        status = TaskStatus.CANCELED if self._st.closing else TaskStatus.ERROR
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

    def _claimed(self, following: Optional[Run], fx: Effects) -> Optional[Run]:
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

    def _started(self, run: Run) -> None:
        """A run began: it gets its deadline; listeners hear STARTED."""
        st = self._st
        now = st.clock.now()
        if run._t_started is None:
            run._t_started = now
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
        while run is not None:
            token = _current.set(run)
            run._t_started = now()
            if run.timeout is not None or st.listening:
                self._started(run)
            task = run.task
            try:
                result = task.fn(*task.args, **task.kwargs)
                if type(result) is types.CoroutineType:
                    result = self._await(result, run)
            except BaseException as exc:
                returning.append(None)  # this worker is about to take the next run
                if exc.__traceback__ is not None:  # start the traceback in the task
                    exc.__traceback__ = exc.__traceback__.tb_next
                text, error = format_exception(exc), error_line(exc)
                with lock:
                    run = finish(st, run, TaskStatus.ERROR, None, exc, text, error, fx, True)
            else:
                returning.append(None)
                with lock:
                    run = finish(st, run, TaskStatus.COMPLETED, result, None, None, None,
                                 fx, True)
            finally:
                _current.reset(token)
            if fx:
                self.aftermath(fx)
            if run is not None and run._claimed is not True and st.journal is not None:
                run = self._claimed(run, fx)

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

    # -- coroutines -------------------------------------------------------------

    def _start_coroutine(self, run: Run) -> None:
        """In the loop's thread: run *run*'s coroutine as a task of the loop."""
        loop = self._st.lanes.of(run).executor
        run._handle = loop.create_task(self._run_coroutine(run, loop))

    async def _run_coroutine(self, run: Run, loop: Any) -> None:
        st = self._st
        _current.set(run)  # this task's own context
        run._t_started = st.clock.now()
        if run.timeout is not None or st.listening:
            self._started(run)
        task = run.task
        status, result = TaskStatus.COMPLETED, None
        exc: Optional[BaseException] = None
        try:
            result = await task.fn(*task.args, **task.kwargs)
        except CancelledError as cancelled:
            status, exc = TaskStatus.CANCELED, cancelled
        except BaseException as error:
            status, exc = TaskStatus.ERROR, error
        text = error_text = None
        if exc is not None:
            text, error_text = format_exception(exc), error_line(exc)
        fx = Effects()
        with st.lock:
            following = finish(st, run, status, result, exc, text, error_text, fx, True)
        self.aftermath(fx)
        following = self._claimed(following, fx)
        if following is not None:
            self._start_coroutine(following)

    def shutdown(self, wait: bool) -> None:
        """Stop the hand-off thread and the killable processes."""
        if self._handoff is not None:
            self._handoff.shutdown(wait=wait)
        if self._killable is not None:
            self._killable.shutdown(wait=wait)


def _submit_elsewhere(executor: Any, run: Run) -> Any:
    """Submit to an executor that is not ours: through the wrapper that keeps
    a remote exception's traceback, with the priority when it takes one."""
    task = run.task
    prioritized = getattr(executor, "submit_prioritized", None)
    if prioritized is not None:
        return prioritized(task.priority, call_in_process, task.fn, task.args, task.kwargs)
    return executor.submit(call_in_process, task.fn, task.args, task.kwargs)
