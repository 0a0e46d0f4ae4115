"""The dispatcher: the one thread that waits until something is due and
hands it on.

It sleeps on the state lock's condition until the head of the timer heap
or the earliest deadline is due (or, with an injected ``delayfunc``, calls
it), and is woken at once by an earlier task, a cancel, a free worker or
shutdown. No polling: with the real clocks it only wakes every
``CLOCK_CHECK_SECONDS`` to notice a wall clock that stepped.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Optional, Tuple

from ..records.runs import error_line
from .effects import Effects
from .firing import expire_deadlines, fire_due, follow_wall_clock, time_to_next
from .state import JOURNAL_LINGER_SECONDS, Hands, State, acquire_busy

__all__ = ["Dispatcher"]

_log = logging.getLogger("pysched_lightning")


def _log_quietly(message: str) -> None:
    """Log the exception being handled, unless logging fails too (a log
    handler is user code): the dispatcher outlives both."""
    try:
        _log.exception(message)
    except BaseException:
        pass


class Dispatcher:
    """Fires due tasks, expires deadlines, fills free worker slots."""

    def __init__(self, st: State, workers: Hands,
                 delayfunc: Optional[Callable[[float], Any]],
                 before: Optional[Callable[[], bool]] = None) -> None:
        self._st = st
        self._workers = workers
        #: None: wait on the condition (so an earlier task wakes us).
        self._delayfunc = delayfunc
        #: Called first in the thread (a standby waits there); False: stop.
        self._before = before
        self.thread: Optional[threading.Thread] = None

    def start(self) -> None:
        thread = threading.Thread(target=self._run, name="pysched-dispatcher", daemon=True)
        thread.start()
        self.thread = thread  # (only once started: a shutdown racing start() may join it)

    def _run(self) -> None:
        """Wait for due work, hand it to the workers; never dies silently."""
        if self._before is not None and not self._before():
            return
        while True:
            fx = Effects()
            try:
                step = self._next_step(fx)
                if step is None:
                    return  # shutdown
                flush, delay = step
                if flush and self._st.journal is not None:
                    self._st.journal.flush()
                self._workers.aftermath(fx)
                for error in self._st.clock.take_errors():
                    _log.error("reading the clock failed (its last reading was used): %s",
                               error_line(error))
                if delay is not None:
                    self._delayfunc(delay)  # type: ignore[misc]
            except BaseException:  # user code (a listener, a log handler) included
                _log_quietly("dispatcher error (the scheduler goes on)")
                try:
                    self._workers.aftermath(fx)  # runs that got a slot are sent, always
                except BaseException:
                    _log_quietly("dispatcher error (the scheduler goes on)")
                with self._st.lock:
                    self._st.wakeup.wait(0.05)  # don't spin if the error repeats

    def _next_step(self, fx: Effects) -> Optional[Tuple[bool, Optional[float]]]:
        """Under the lock: collect due work in *fx*, or wait until something
        may be due. Returns (flush the journal?, seconds for delayfunc), or
        None at shutdown."""
        st = self._st
        acquire_busy(st.lock)  # the dispatcher's own thread: see acquire_busy
        try:
            while not st.closing:
                now = st.clock.now()
                if st.clock.may_step:
                    follow_wall_clock(st, fx)
                expire_deadlines(st, now, fx)
                more = not st.paused and fire_due(st, now, fx)
                st.fill_slots(now, fx)
                flush = self._flush_due(now)
                if fx or more or flush:
                    return flush, None
                wait = self._wait_time(now)
                if self._delayfunc is not None and wait is not None:
                    return False, wait
                st.wakeup.wait(wait)
            return None
        finally:
            st.lock.release()

    def _flush_due(self, now: float) -> bool:
        """Writes left by workers are flushed once they have waited a moment
        (other flushes usually take them along before that)."""
        st = self._st
        if st.journal is None or not st.journal.has_pending():
            st.journal_due = None
            return False
        if st.journal_due is None:
            st.journal_due = now + JOURNAL_LINGER_SECONDS
            return False
        if now < st.journal_due:
            return False
        st.journal_due = None
        return True

    def _wait_time(self, now: float) -> Optional[float]:
        wait = time_to_next(self._st, now)
        due = self._st.journal_due
        if due is not None:
            wait = due - now if wait is None else min(wait, due - now)
        return wait
