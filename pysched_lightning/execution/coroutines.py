"""Coroutines: ``async def`` tasks run as tasks of the scheduler's event loop.

A run's coroutine is made and awaited in the loop's thread; when it ends,
the same thread starts the lane's next ready coroutine. A deadline cancels
the coroutine (it sees ``CancelledError``).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from typing import Any, Optional

from ..core.state import Effects, State
from ..records.context import _current
from ..records.runs import Run, TaskStatus, error_line, format_exception

__all__ = ["Coroutines"]

_log = logging.getLogger("pysched_lightning")


class Coroutines:
    """Runs coroutine runs on the scheduler's event loop."""

    def __init__(self, st: State, workers: Any) -> None:
        self._st = st
        #: The Workers: aftermath, claims, starts.
        self._workers = workers

    def start(self, run: Run, handed: bool = True) -> None:
        """In the loop's thread: run *run*'s coroutine as a task of the loop
        (one *handed* over by ``Workers.submit`` unless an interrupt took it
        back first)."""
        if handed and not self._st.taken_back(run):
            return
        self._st.attach(run, self._st.lanes.loop.create_task(self._run(run)))

    async def _run(self, run: Run) -> None:
        st = self._st
        _current.set(run)  # this task's own context
        self._workers.started(run)
        task = run.task
        status, result = TaskStatus.COMPLETED, None
        exc: Optional[BaseException] = None
        try:
            result = await task.fn(*task.args, **task.kwargs)
        except (asyncio.CancelledError, concurrent.futures.CancelledError) as cancelled:
            status, exc = TaskStatus.CANCELED, cancelled
        except BaseException as error:
            status, exc = TaskStatus.ERROR, error
        text = error_text = None
        if exc is not None:
            if exc.__traceback__ is not None:  # start the traceback in the task
                exc.__traceback__ = exc.__traceback__.tb_next
            text, error_text = format_exception(exc), error_line(exc)
        fx = Effects()
        with st.lock:
            following = st.finish(run, status, result, exc, text, error_text, fx, True)
        self._workers.aftermath_quietly(fx)
        following = self._workers.claimed(following, fx)
        if following is not None:
            self.start(following, handed=False)
