"""Workers: hand runs to their executors and bring their outcomes back.

Thread runs execute in ``_work``, a loop that runs a run and then pulls the
next ready one of its lane, so a busy pool never waits for the dispatcher.
Runs for processes and other executors go through the ``Handoff``,
coroutines through ``Coroutines``. User code runs here, never with the
state lock held; what a transition leaves to do (records, futures, events,
logs, more runs) is done by ``aftermath`` after the lock. A thread of ours
survives anything user code raises, ``SystemExit`` included.
"""
from __future__ import annotations

import logging
import types
from typing import Any, Callable, Dict, List, Optional

from ..core.lanes import Mechanism
from ..core.state import Effects, State, acquire_busy
from ..records.context import _current
from ..records.events import EventKind, Listeners
from ..records.options import LaneKind
from ..records.runs import Phase, Run, TaskStatus, error_line, format_exception
from .coroutines import Coroutines
from .handoff import Handoff

__all__ = ["Workers"]

_log = logging.getLogger("pysched_lightning")

_IN_SLOT = Phase.STARTED


# Members read on every run, bound once: on Python 3.11 reading an attribute
# of an Enum class goes through EnumType.__getattr__, several times slower.
_COMPLETED, _ERROR, _STARTED = TaskStatus.COMPLETED, TaskStatus.ERROR, EventKind.STARTED
_PULL, _LOOP, _FUTURE = Mechanism.PULL, Mechanism.LOOP, Mechanism.FUTURE


def _log_quietly(message: str) -> None:
    """Log the exception being handled, unless logging itself fails (a log
    handler is user code): a thread of ours outlives both."""
    try:
        _log.exception(message)
    except BaseException:
        pass


class _FirstInterrupt:
    """Runs each step of a duty whatever the others raise: an ``Exception``
    is logged, the first ``BaseException`` (KeyboardInterrupt, SystemExit)
    is kept and raised once every step has been done."""

    __slots__ = ("error",)

    def __init__(self) -> None:
        self.error: Optional[BaseException] = None

    def call(self, step: Callable[..., Any], *args: Any) -> None:
        try:
            step(*args)
        except Exception:
            _log_quietly(f"{getattr(step, '__name__', step)} failed (the scheduler goes on)")
        except BaseException as exc:
            if self.error is None:
                self.error = exc

    def raise_kept(self) -> None:
        error, self.error = self.error, None
        if error is not None:
            raise error


class Workers:
    """Sends runs to their lanes' executors; records what they did."""

    def __init__(self, st: State, listeners: Listeners, killable: Callable[[], Any]) -> None:
        self._st = st
        self._listeners = listeners
        self._handoff = Handoff(st, self, killable)
        self._coroutines = Coroutines(st, self)

    # -- after the lock ---------------------------------------------------------

    def aftermath(self, fx: Effects) -> None:
        """Do what a transition left to do, outside the state lock: every
        part is done, whatever another raises (the first interrupt is raised
        at the end), and runs that got a slot are sent even if an interrupt
        comes. A part that may be done twice (building records, resolving a
        future, telling a run it timed out, sending a run: each is done
        once) is taken off *fx* after it is done, the others before, so
        doing it again after an interrupt finishes the job (see
        :meth:`settle`)."""
        guard = _FirstInterrupt()
        try:
            if fx.records:
                guard.call(self._prepared, fx.records)
                if guard.error is None:  # (else done again: each is built once)
                    fx.records = None
            if fx.resolved:
                for run in fx.resolved:
                    guard.call(run._resolve_future)
                if guard.error is None:  # (else done again: a future is resolved once)
                    fx.resolved = None
            if fx.logs:
                logs, fx.logs = fx.logs, None
                for level, message, args in logs:
                    guard.call(_log.log, level, message, *args)
            if fx.events:
                events, fx.events = fx.events, None
                kept = self._listeners.emit(events)
                if kept is not None and guard.error is None:
                    guard.error = kept
            if fx.expired:
                kept = guard.error
                guard.call(self.stop_runs, fx.expired)
                if guard.error is kept:  # (else done again: telling twice is harmless)
                    fx.expired = None
            if fx.flush:
                fx.flush = False
                if self._st.journal is not None:
                    guard.call(self._st.journal.flush)
            if fx.wake:
                fx.wake = False
                guard.call(self._wake)
        finally:  # runs that got a slot are sent, even if a KeyboardInterrupt came
            if fx.runs:
                self.submit_noted(fx)
        fx.todo = bool(fx.records or fx.resolved or fx.expired)  # (left to do again)
        guard.raise_kept()

    def settle(self, fx: Effects) -> None:
        """:meth:`aftermath` in a caller's thread (the main thread: where a
        KeyboardInterrupt lands): what an interrupt left undone is done
        before it goes on. (Callers call it again from an outer handler: an
        interrupt may come on the line that calls it.)"""
        if not fx.todo:
            return
        try:
            self.aftermath(fx)
        finally:
            if fx.todo:
                self.aftermath(fx)

    def aftermath_quietly(self, fx: Effects) -> None:
        """:meth:`aftermath` in a thread of ours: what user code raised there
        (SystemExit included) is logged, and the thread goes on."""
        try:
            self.aftermath(fx)
        except BaseException:
            _log_quietly("after a transition (the scheduler goes on)")

    def _prepared(self, writes: List[Any]) -> None:
        """Build the records this thread noted, then let them be flushed."""
        st = self._st
        st.journal.prepare(writes)
        with st.lock:
            if st.closing:
                st.journal_due = None
            else:
                st.write_soon(st.clock.now())
        if st.closing:
            st.journal.flush()  # the dispatcher has stopped: nobody else will

    def _wake(self) -> None:
        with self._st.lock:
            self._st.run_done.notify_all()

    def stop_runs(self, runs: List[Run]) -> None:
        """Runs ended by a deadline or a shutdown: tell them, and stop what can
        be stopped (a process is killed, a coroutine or a remote call
        cancelled; a thread is only told, through ``timed_out``)."""
        guard = _FirstInterrupt()  # each is stopped, whatever another raised
        for run in runs:
            guard.call(self._stop, run)
        guard.raise_kept()

    def kill_pools_of(self, runs: List[Run]) -> None:
        """Shutdown's grace is over and *runs* still go: the process pools
        that run some of them are killed, workers and all. (A hard run
        without a timeout has no process of its own to kill, and one worker
        of a pool cannot be killed alone; the scheduler closes its pools
        next anyway.)"""
        st = self._st
        pools: Dict[int, Any] = {}
        with st.lock:
            for run in runs:
                lane = st.lanes.of(run)
                if lane.to_processes and run._handle is None:
                    pools[id(lane.executor)] = lane.executor
        for pool in pools.values():
            _log.warning("shutdown: killing the worker processes of a process pool: "
                         "hard tasks still ran in it after shutdown's timeout")
            try:
                pool.kill()
            except Exception:
                _log_quietly("killing a process pool's workers failed")

    def _stop(self, run: Run) -> None:
        run._mark_timed_out()
        handle = run._handle
        if handle is None:
            return
        try:
            if run.lane is LaneKind.PROCESSES:
                self._handoff.kill(handle)
            elif run.lane is LaneKind.ASYNC:
                self._st.lanes.of(run).executor.call_soon(handle.cancel)
            else:
                handle.cancel()
        except Exception as exc:
            _log.error("stopping %s run %d failed: %s", run.task.label,
                       run.run_number, error_line(exc))

    # -- sending --------------------------------------------------------------

    def submit_noted(self, fx: Effects) -> None:
        """Send the runs *fx* noted; they are taken off it once sent."""
        self.submit(fx.runs or [])
        fx.runs = None

    def submit(self, runs: List[Run]) -> None:
        """Hand started runs to their executors, each once (a run sent
        already is skipped). A run executes only once its claim in the store
        is committed: a thread worker sees to it itself (workers starting
        together share one commit); for the others the claims are committed
        here first. An interrupt ends the runs not handed over yet."""
        st = self._st
        index = 0
        guard = _FirstInterrupt()  # whatever a listener raises, every run is sent
        try:
            journal = st.journal
            if journal is not None and journal.store is not None and \
                    any(run._claim is not None and run._claim.granted is None
                        and st.lanes.of(run).mechanism is not _PULL for run in runs):
                journal.flush()
            to_processes = []
            for index, run in enumerate(runs):
                if run._sent or run._phase is not _IN_SLOT:
                    continue  # sent already, or ended meanwhile (taken back)
                try:
                    lane = st.lanes.of(run)
                    st.handed(run, lane.mechanism is not _FUTURE)
                    claim = run._claim
                    if claim is not None and claim.granted is False:
                        guard.call(self._refused, run)
                        continue
                    if lane.mechanism is _PULL:
                        lane.executor.submit(self._work, run)
                    elif lane.mechanism is _LOOP:
                        lane.executor.call_soon(self._coroutines.start, run)
                    elif lane.to_processes:
                        to_processes.append(run)
                    else:
                        self._handoff.send(lane, run)
                except Exception as exc:  # e.g. the executor was shut down
                    guard.call(self.not_sent, run, exc)
            index = len(runs)
            if to_processes:
                self._handoff.send_soon(to_processes)
        except BaseException as exc:
            # A KeyboardInterrupt (main thread): the runs not handed over end
            # here, so none is left waiting (one that was handed over after
            # all is skipped by its worker).
            for left in runs[index:]:
                if left is runs[index] or not left._sent:
                    guard.call(self.not_sent, left, exc)
            raise
        guard.raise_kept()

    def not_sent(self, run: Run, exc: BaseException) -> None:
        """*run* could not be sent. An interrupt (KeyboardInterrupt) came
        first: it goes back to wait for a worker, and runs. The scheduler
        shuts down: it is CANCELED and its claim given back, so that a
        restart runs it. Its executor failed: it ends as an ERROR."""
        st = self._st
        fx = Effects()
        with st.lock:
            if not st.closing and not isinstance(exc, Exception) \
                    and st.lanes.of(run).mechanism is not _FUTURE:
                st.unstart(run, fx)
            else:
                canceled = st.closing
                if canceled and run._claim is not None and st.journal is not None:
                    st.journal.release(run._claim,
                                       "the scheduler shut down before it started")
                st.finish(run, TaskStatus.CANCELED if canceled else TaskStatus.ERROR, None,
                          exc, format_exception(exc), error_line(exc), fx, False)
        self.aftermath(fx)

    def _refused(self, run: Run) -> None:
        fx = Effects()
        with self._st.lock:
            self._st.refuse(run, fx, False)
        self.aftermath(fx)

    def claimed(self, following: Optional[Run], fx: Effects) -> Optional[Run]:
        """Before a worker runs the next ready run: its claim must be decided;
        a refused one is skipped for the one after it."""
        journal = self._st.journal
        while following is not None:
            claim = following._claim
            if claim is None:
                break
            for _ in range(2):  # (a flush cut short by what a log handler raised:
                if claim.granted is None and journal is not None:  # once more)
                    try:
                        journal.flush()
                    except BaseException:
                        _log_quietly("committing a run's claim failed")
            if claim.granted is None:
                claim.refuse("its claim could not be committed")
            if claim.granted is not False:
                break
            if claim.reason is None:  # another node got there first: it may be ahead
                self._st.look_ahead(following)
            with self._st.lock:
                following = self._st.refuse(following, fx, True)
            self.aftermath_quietly(fx)
        return following

    def started(self, run: Run, deadline_from: Optional[float] = None) -> None:
        """A run began: it gets its deadline (counted from *deadline_from*,
        by default its start); listeners hear STARTED."""
        st = self._st
        st.began(run, st.clock.now())
        if run.timeout is None and _STARTED not in st.wanted:
            return
        fx = Effects()
        with st.lock:
            if run.timeout is not None and st.watch_deadline(run, deadline_from):
                st.wakeup.notify()
            st.event(fx, EventKind.STARTED, run.task_id, run)
        self.aftermath_quietly(fx)

    # -- thread workers ---------------------------------------------------------

    def _work(self, run: Optional[Run]) -> None:
        """A worker thread runs *run*, then whatever waits in its lane's ready
        heap, most urgent first, before it gives its slot back. Nothing
        raised by user code stops it."""
        st = self._st
        lane, lock, now = st.lanes.threads, st.lock, st.clock.now
        returning = lane.returning
        fx = Effects()
        if run is not None and not st.taken_back(run):
            return  # an interrupt took it back before this thread got it
        while run is not None:
            try:
                if run._claim is not None and run._claim.granted is not True:
                    run = self.claimed(run, fx)  # committed, or skipped if refused
                    if run is None:
                        break
                token = _current.set(run)
                if run.timeout is not None or _STARTED in st.wanted:
                    self.started(run)
                elif run._t_started is None:  # (a run pulled by a worker has it)
                    st.began(run, now())
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
                    acquire_busy(lock)  # a pool thread: see acquire_busy
                    try:
                        run = st.finish(run, _ERROR, None, exc, text, error, fx, True)
                    finally:
                        lock.release()
                else:
                    returning.append(None)
                    if not lock.acquire(False):  # (the common case costs no call)
                        acquire_busy(lock)
                    try:
                        run = st.finish(run, _COMPLETED, result, None, None, None, fx, True)
                    finally:
                        lock.release()
                finally:
                    _current.reset(token)
                if fx.todo:
                    self.aftermath_quietly(fx)
            except BaseException:  # pragma: no cover - the steps contain user code
                _log_quietly("a worker failed (the scheduler goes on)")
                run = None

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
