"""Shutting a scheduler down, and running one until a signal.

Shutdown stops new work at once (and the taking of control requests): runs that never got a worker slot are
canceled (with a store, a recurring task's stored next run goes back to the
earliest of them, and a one-shot keeps its stored due time, so a restart
runs them, once). A run that has a slot executes: it was handed over, or is
being handed over, to its worker. Running work may finish (at most
``timeout`` seconds, then it is told it timed out, and the executors are
closed without waiting for threads that cannot be stopped); the runs that
end meanwhile are written at once. Then the executors, the event loop, the
journal and the store are closed. ``shutdown(wait=False)`` returns at once
and leaves that last part to a closer thread.
"""
from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any, Callable, Dict, Optional

from .core.state import Effects, State
from .durability.encoding import slot_offset
from .records.context import current_run
from .records.events import EventKind, Listeners
from .records.runs import Run, TaskStatus

__all__ = ["Closer"]

_log = logging.getLogger("pysched_lightning")

#: After shutdown's timeout, how long interrupted runs get to return.
INTERRUPT_GRACE_SECONDS = 2.0


class Closer:
    """Shuts the scheduler down, once."""

    def __init__(self, st: State, workers: Any, dispatcher: Any,
                 listeners: Listeners, requests: Any = None) -> None:
        self._st = st
        #: The thread applying the store's control requests, or None.
        self._requests = requests
        self._workers = workers
        self._dispatcher = dispatcher
        self._listeners = listeners
        #: Set when shutdown() is called (run_forever waits for it).
        self.requested = threading.Event()
        #: Guards _closed: closing happens once.
        self._close_lock = threading.Lock()
        self._closed = False

    def shutdown(self, wait: bool, timeout: Optional[float]) -> None:
        st = self._st
        fx = Effects()
        try:
            try:
                with st.lock:
                    first = not st.closing
                    st.closing = True
                    try:
                        if first:
                            self._abandon_waiting(fx)
                            st.event(fx, EventKind.SCHEDULER_SHUTDOWN)
                    except BaseException:  # an interrupt must leave no run waiting
                        if first:
                            self._abandon_waiting(fx)
                        st.repair(fx)
                        raise
                    finally:
                        st.wakeup.notify_all()
                        st.run_done.notify_all()
            finally:
                self._workers.settle(fx)
        except BaseException:
            self._workers.settle(fx)  # (an interrupt on the line above)
            raise
        self.requested.set()
        if self._requests is not None:  # before the store closes, and takes no more
            self._requests.stop()
        inside = 1 if self._inside_own_run() else 0
        if not wait:
            if first:
                self._close_when_idle(inside)
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        thread = self._dispatcher.thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(_remaining(deadline))
        if self._wait_for_runs(inside, deadline):
            self._close(wait=not inside and thread is not threading.current_thread())
            return
        self._interrupt_running()
        finished = self._wait_for_runs(inside, time.monotonic() + INTERRUPT_GRACE_SECONDS)
        # A thread cannot be stopped: the executors close without waiting
        # for one that ignored its interruption (it ends on its own).
        self._close(wait=finished and not inside and thread is not threading.current_thread())

    def run_forever(self, start: Callable[[], None]) -> None:
        previous: Dict[signal.Signals, Any] = {}
        if threading.current_thread() is threading.main_thread():
            # first the handlers: a signal during start() must still stop cleanly
            for signum in (signal.SIGINT, signal.SIGTERM):
                previous[signum] = signal.signal(signum, self._on_signal)
        try:
            start()
            self.requested.wait()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self.shutdown(wait=True, timeout=None)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.requested.set()

    # -- with the lock held ---------------------------------------------------

    def _abandon_waiting(self, fx: Effects) -> None:
        """Runs that never got a worker slot are canceled; the store keeps
        what a restart needs to run them (doing it again is harmless)."""
        st = self._st
        now = st.clock.now()
        rewind: Dict[str, float] = {}
        for run in st.waiting_runs():
            schedule = run.task.schedule
            if schedule is not None and not run.manual and run.attempt == 1 \
                    and run.task_id in st.timetable:
                wall = run._t_scheduled + slot_offset(run.task, st.offset)
                rewind[run.task_id] = min(wall, rewind.get(run.task_id, wall))
            st.drop(run, TaskStatus.CANCELED, "the scheduler shut down before it started",
                    now, fx)
        if st.journal is not None:
            for task_id, wall in rewind.items():
                st.journal.task_changed(task_id, next_run=wall)
            fx.flush_now()

    def _interrupt_running(self) -> None:
        """Shutdown's grace is over: the runs still going end as INTERRUPTED (a
        late outcome is dropped), and are told so: cooperative tasks stop,
        command tasks and hard tasks have their processes killed (the
        process pools that run hard tasks without a timeout, whole)."""
        st = self._st
        fx = Effects()
        with st.lock:
            now = st.clock.now()
            going = st.in_flight()
            for run in going:
                st.interrupt(run, now, fx)
        try:
            self._workers.aftermath(fx)
        finally:
            self._workers.kill_pools_of(going)

    # -- without the lock ---------------------------------------------------------

    def _give_back_claims_of_unsent_runs(self, waited: bool) -> None:
        """The executors are closed: a run that got a worker slot but was
        never handed over (its thread is a listener's that called
        shutdown()) cannot execute now. Its claim is given back before the
        journal closes, so that a restart runs it (its thread cancels it
        when it finds the executor closed). Without *waited*, a run handed
        over may still start: its claim stays."""
        st = self._st
        journal = st.journal
        assert journal is not None
        with st.lock:
            for run in st.in_flight():
                if run._claim is not None and run._t_started is None \
                        and (waited or not run._sent):
                    journal.release(run._claim, "the scheduler shut down before it started")

    def _inside_own_run(self) -> bool:
        run = current_run()
        if not isinstance(run, Run):
            return False
        with self._st.lock:
            return run in self._st.in_flight()

    def _wait_for_runs(self, allowed: int, deadline: Optional[float]) -> bool:
        """Wait until at most *allowed* runs are going; False if time ran out.
        The runs' own deadlines still hold meanwhile (the dispatcher, which
        keeps them otherwise, has stopped)."""
        st = self._st
        while True:
            fx = Effects()
            with st.lock:
                now = st.clock.now()
                if st.deadlines:
                    st.expire_due(now, fx)
                if not fx:
                    going = _handed_over(st) - allowed
                    if going <= 0:
                        return True
                    remaining = _remaining(deadline)
                    if remaining is not None and remaining <= 0:
                        break
                    st.wait_run_done(None, _sooner(remaining, st.deadlines.next(), now))
                    continue
            self._workers.aftermath(fx)
        # (each is named at WARNING as it is interrupted)
        _log.debug("shutdown: %d run(s) still going after the timeout", going)
        return False

    def _close_when_idle(self, inside: int) -> None:
        """shutdown(wait=False): close now if nothing runs, else once the
        running work has ended and been recorded (a closer thread)."""
        with self._st.lock:
            idle = self._st.running() == 0
        if idle:
            self._close(wait=False)
            return

        def close_later() -> None:
            self._wait_for_runs(0, None)
            self._close(wait=not inside)
        threading.Thread(target=close_later, name="pysched-closer").start()

    def _close(self, wait: bool) -> None:
        """Close the executors, then the journal and the store; when called
        from inside a run, the journal waits (in a thread) for that run's
        record."""
        st = self._st
        try:
            with self._close_lock:
                if self._closed:
                    return
                self._closed = True
            st.lanes.shutdown(wait)
            self._workers.shutdown(wait)
        except BaseException:  # an interrupt: the next shutdown() closes them again
            with self._close_lock:
                self._closed = False
            raise
        if st.journal is None:
            return
        journal = st.journal
        self._give_back_claims_of_unsent_runs(waited=wait)
        if self._inside_own_run():
            def close_after_run() -> None:
                self._wait_for_runs(0, None)
                journal.close()
            threading.Thread(target=close_after_run, name="pysched-closer",
                             daemon=True).start()
        else:
            st.journal.close()


def _handed_over(st: State) -> int:
    """How many runs are with their executors. (A run that got a slot but
    is not handed over yet, by a thread whose listener called shutdown(),
    is not waited for: it is canceled when it finds the executor closed.)"""
    if not st.running():
        return 0
    return sum(1 for run in st.in_flight() if run._sent or run._t_started is not None)


def _remaining(deadline: Optional[float]) -> Optional[float]:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _sooner(remaining: Optional[float], due: Optional[float], now: float) -> Optional[float]:
    """How long to wait: until *remaining* runs out or a deadline is *due*."""
    if due is None:
        return remaining
    until = max(0.0, due - now)
    return until if remaining is None else min(remaining, until)
