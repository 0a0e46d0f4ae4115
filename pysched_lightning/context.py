"""The run a worker thread is executing, for tasks that want to cooperate.

A thread cannot be killed, so a thread task that overruns its timeout is only
*marked* TIMEOUT; the task can look at ``current_run().timed_out`` to stop on
its own, and helpers such as command tasks register a callback that kills
their child process at the deadline.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable, List, Optional

__all__ = ["RunContext", "current_run"]

_log = logging.getLogger("pysched_lightning")
_local = threading.local()


class RunContext:
    """What a running task may ask about its own run."""

    __slots__ = ("task_id", "run_number", "attempt", "timeout", "_timed_out",
                 "_callbacks", "_callbacks_lock")

    def __init__(self, task_id: str, run_number: int, attempt: int = 1,
                 timeout: Optional[float] = None) -> None:
        self.task_id = task_id
        self.run_number = run_number
        self.attempt = attempt
        #: The run's timeout in seconds, or None when it has none.
        self.timeout = timeout
        self._timed_out = False
        self._callbacks: List[Callable[[], None]] = []
        self._callbacks_lock = threading.Lock()

    @property
    def timed_out(self) -> bool:
        """True once the scheduler has marked this run TIMEOUT."""
        return self._timed_out

    def add_timeout_callback(self, callback: Callable[[], None]) -> None:
        """Call *callback* when the run times out (at once if it already has)."""
        with self._callbacks_lock:
            if not self._timed_out:
                self._callbacks.append(callback)
                return
        _call_safely(callback)

    def remove_timeout_callback(self, callback: Callable[[], None]) -> None:
        with self._callbacks_lock:
            try:
                self._callbacks.remove(callback)
            except ValueError:
                pass

    def _mark_timed_out(self) -> None:
        """Set by the scheduler at the deadline; runs the registered callbacks."""
        with self._callbacks_lock:
            if self._timed_out:
                return
            self._timed_out = True
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            _call_safely(callback)


def _call_safely(callback: Callable[[], None]) -> None:
    try:
        callback()
    except Exception:
        _log.exception("timeout callback %r failed", callback)


def current_run() -> Optional[RunContext]:
    """The run being executed by this thread, or None outside a scheduled run."""
    return getattr(_local, "run", None)


def _set_current_run(run: Optional[RunContext]) -> None:
    _local.run = run
