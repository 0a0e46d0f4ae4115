"""The run a worker thread is executing, for tasks that want to cooperate.

A thread cannot be killed, so a thread task that overruns its timeout is only
*marked* TIMEOUT; the task can look at ``current_run().timed_out`` to stop on
its own, and helpers such as command tasks register a callback that kills
their child process at the deadline.
"""
from __future__ import annotations

import contextvars
import logging
import threading
from typing import Callable, List, Optional

__all__ = ["RunContext", "current_run"]

_log = logging.getLogger("pysched_lightning")
# A context variable, not a thread-local: each worker thread and each asyncio
# task of the scheduler's event loop sees its own run.
_current: "contextvars.ContextVar[Optional[RunContext]]" = contextvars.ContextVar(
    "pysched_lightning_current_run", default=None)
# Guards every run's callback list: registering callbacks is rare (timeouts,
# commands), so one lock serves all runs and a run costs no lock of its own.
_callbacks_lock = threading.Lock()


class RunContext:
    """What a running task may ask about its own run."""

    #: The run's timeout in seconds, or None when it has none.
    timeout: Optional[float] = None
    attempt = 1
    _timed_out = False
    _callbacks: Optional[List[Callable[[], None]]] = None
    #: Told the pid of a process started for the run (set by the journal of
    #: a scheduler with a store: it keeps the process with the run's claim).
    _on_process: Optional[Callable[[int], None]] = None

    def __init__(self, task_id: str, run_number: int, attempt: int = 1,
                 timeout: Optional[float] = None) -> None:
        self.task_id = task_id
        self.run_number = run_number
        self.attempt = attempt
        self.timeout = timeout

    @property
    def timed_out(self) -> bool:
        """True once the scheduler has marked this run TIMEOUT."""
        return self._timed_out

    def add_timeout_callback(self, callback: Callable[[], None]) -> None:
        """Call *callback* when the run times out (at once if it already has)."""
        with _callbacks_lock:
            if not self._timed_out:
                if self._callbacks is None:
                    self._callbacks = []
                self._callbacks.append(callback)
                return
        _call_safely(callback)

    def on_process(self, hook: Callable[[int], None]) -> None:
        """Tell *hook* the pid of each process started for the run (see
        :meth:`process_started`)."""
        self._on_process = hook

    def process_started(self, pid: int) -> None:
        """A helper started process *pid* for this run (a command's group
        leader). With a store it is kept with the run's claim, so that a
        restart after a crash kills it, if it still runs, instead of
        running the run a second time beside it. Never raises."""
        hook = self._on_process
        if hook is not None:
            try:
                hook(pid)
            except Exception:
                _log.exception("keeping process %d of task %r run %s with its claim "
                               "failed", pid, self.task_id, self.run_number)

    def remove_timeout_callback(self, callback: Callable[[], None]) -> None:
        with _callbacks_lock:
            if self._callbacks and callback in self._callbacks:
                self._callbacks.remove(callback)

    def _mark_timed_out(self) -> None:
        """Set by the scheduler at the deadline; runs the registered callbacks
        (each, whatever another raised: the first interrupt is raised last)."""
        with _callbacks_lock:
            if self._timed_out:
                return
            self._timed_out, callbacks, self._callbacks = True, self._callbacks or [], None
        first: Optional[BaseException] = None
        for callback in callbacks:
            try:
                _call_safely(callback)
            except BaseException as exc:  # (an Exception is logged there)
                first = first or exc
        if first is not None:
            raise first


def _call_safely(callback: Callable[[], None]) -> None:
    try:
        callback()
    except Exception:
        _log.exception("timeout callback %r failed", callback)


def current_run() -> Optional[RunContext]:
    """The run being executed by this thread or coroutine, or None outside a
    scheduled run."""
    return _current.get()


def _set_current_run(run: Optional[RunContext]) -> None:
    _current.set(run)
