"""The hand-off: runs sent to process pools and to executors that are not
ours, whose outcomes come back through a future or a callback.

Sending to a process pool pickles and may spawn workers (seconds, the first
time), so the dispatcher hands its batches to a thread of the hand-off's
own; after that, the thread that hears a process run end sends the lane's
next ready run itself, keeping the worker processes busy without a round
trip through the dispatcher. A hard task with a timeout runs alone in a
killable process.
"""
from __future__ import annotations

import concurrent.futures
import types
from concurrent.futures import CancelledError
from functools import partial
from typing import Any, Callable, List, Optional

from .executors import call_in_process
from .lanes import Lane
from .options import LaneKind
from .runflow import finish
from .runs import Run, TaskStatus, error_line, format_exception
from .state import Effects, State, wait_while_busy

__all__ = ["Handoff"]


class Handoff:
    """Sends runs to futures-based executors and records their outcomes."""

    def __init__(self, st: State, workers: Any, killable: Callable[[], Any]) -> None:
        self._st = st
        #: The Workers: aftermath, claims, starts, failures to send.
        self._workers = workers
        self._killable_factory = killable
        #: One-process executors for hard tasks with a timeout (made on first use).
        self.killable: Any = None
        self._thread: Optional[concurrent.futures.ThreadPoolExecutor] = None
        #: Set once a process run came back: the pool's workers are up, and a
        #: send no longer waits for them to start.
        self._warm = False

    def send_soon(self, runs: List[Run]) -> None:
        """Send *runs* to processes: from the calling thread once the pool is
        up (a send is then cheap), else from the hand-off thread, which may
        wait seconds for worker processes to start."""
        if self._warm and all(run.timeout is None for run in runs):
            self._send_all(runs)
        else:
            self.send_later(runs)

    def send_later(self, runs: List[Run]) -> None:
        """Send *runs* from the hand-off thread (one job for the batch)."""
        if self._thread is None:
            self._thread = concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix="pysched-process-submit")
        self._thread.submit(self._send_all, runs)

    def _send_all(self, runs: List[Run]) -> None:
        for run in runs:
            self.send(self._st.lanes.of(run), run)

    def send(self, lane: Lane, run: Run) -> None:
        """Send a run to a process pool or another executor. (A run counts as
        started when it is sent: an executor may even run it inside submit.)"""
        task = run.task
        try:
            self._workers.started(run)
            if run.lane is LaneKind.PROCESSES and run.timeout is not None:
                if self.killable is None:
                    self.killable = self._killable_factory()
                future, run._handle = self.killable.submit(task.fn, task.args, task.kwargs)
                future.add_done_callback(partial(self._future_done, lane, run))
            elif lane.to_processes:
                lane.executor.send(task.fn, task.args, task.kwargs,
                                   partial(self._done, lane, run))
            else:
                future = run._handle = _submit_elsewhere(lane.executor, run)
                future.add_done_callback(partial(self._future_done, lane, run))
            if run.status is TaskStatus.TIMEOUT:  # its deadline passed meanwhile
                self._workers.stop_runs([run])
        except BaseException as exc:
            self._workers.not_sent(run, exc)

    def _future_done(self, lane: Lane, run: Run, future: Any) -> None:
        try:
            result = future.result()
        except BaseException as exc:
            self._done(lane, run, None, exc)
        else:
            self._done(lane, run, result, None)

    def _done(self, lane: Lane, run: Run, result: Any, exc: Optional[BaseException]) -> None:
        """The outcome of a run (in the executor's own thread: keep it short)."""
        if exc is None and type(result) is types.CoroutineType:
            # a plain function that returned a coroutine: it runs on the loop
            awaited = self._st.lanes.loop.run(result)
            awaited.add_done_callback(partial(self._future_done, lane, run))
            return
        self._warm = True
        text = error = None
        status = TaskStatus.COMPLETED
        if exc is not None:
            status = TaskStatus.CANCELED if isinstance(exc, CancelledError) \
                else TaskStatus.ERROR
            text, error = format_exception(exc), error_line(exc)
        fx = Effects()
        pull = lane.to_processes  # a process lane sends the next run itself
        wait_while_busy(self._st.lock)
        with self._st.lock:
            following = finish(self._st, run, status, result, exc, text, error, fx, pull)
        self._workers.aftermath(fx)
        following = self._workers.claimed(following, fx)
        if following is None:
            return
        if following.timeout is not None:  # a new killable process may take a while
            self.send_later([following])
        else:
            self.send(lane, following)

    def shutdown(self, wait: bool) -> None:
        """Stop the hand-off thread and the killable processes."""
        if self._thread is not None:
            self._thread.shutdown(wait=wait)
        if self.killable is not None:
            self.killable.shutdown(wait=wait)


def _submit_elsewhere(executor: Any, run: Run) -> Any:
    """Submit to an executor that is not ours: through the wrapper that keeps
    a remote exception's traceback, with the priority when it takes one."""
    task = run.task
    prioritized = getattr(executor, "submit_prioritized", None)
    if prioritized is not None:
        return prioritized(task.priority, call_in_process, task.fn, task.args, task.kwargs)
    return executor.submit(call_in_process, task.fn, task.args, task.kwargs)
