"""The hand-off: runs sent to process pools and to executors that are not
ours, whose outcomes come back through a future or a callback.

Sending to a process pool may spawn workers (seconds, the first time), so
the dispatcher hands its batches to a thread of the hand-off's own. The
pool's own thread, which also feeds the worker processes, only notes a
run's outcome for that thread; there it is recorded and the lane's next
ready run sent, keeping the worker processes busy without a round trip
through the dispatcher. Runs of quick functions share messages to the
workers (see ``pace``). A hard task with a timeout runs alone in a
killable process.
"""
from __future__ import annotations

import logging
import queue
import threading
import types
from concurrent.futures import CancelledError
from functools import partial
from typing import Any, Callable, List, Optional, Tuple

from ..core.lanes import Lane
from ..core.state import Effects, State, wait_while_busy
from ..records.options import LaneKind
from ..records.runs import Run, TaskStatus, error_line, format_exception
from .calls import Outcome
from .executors import call_in_process
from .pace import BATCH_SIZE, Pace

__all__ = ["Handoff"]

_log = logging.getLogger("pysched_lightning")


# Members read on every run, bound once: on Python 3.11 reading an attribute
# of an Enum class goes through EnumType.__getattr__, several times slower.
_PROCESSES, _COMPLETED = LaneKind.PROCESSES, TaskStatus.COMPLETED
#: A run ended while it was being sent: its deadline passed, or shutdown cut it.
_CUT = frozenset({TaskStatus.TIMEOUT, TaskStatus.INTERRUPTED})


class Handoff:
    """Sends runs to futures-based executors and records their outcomes."""

    def __init__(self, st: State, workers: Any, killable: Callable[[], Any]) -> None:
        self._st = st
        #: The Workers: aftermath, claims, starts, failures to send.
        self._workers = workers
        self._killable_factory = killable
        #: One-process executors for hard tasks with a timeout (made on first use).
        self.killable: Any = None
        #: Jobs for the hand-off thread: ("send", runs) or ("done", lane,
        #: outcomes) with an ``Outcome`` per run; None ends it.
        self._jobs: "queue.SimpleQueue[Any]" = queue.SimpleQueue()
        self._thread: Optional[threading.Thread] = None
        #: Guards starting the thread.
        self._thread_lock = threading.Lock()
        #: Set once a process run came back: the pool's workers are up, and a
        #: send no longer waits for them to start.
        self._warm = False
        #: How long each function's runs take in the worker processes.
        self._pace = Pace()

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
        self._job(("send", runs))

    def _job(self, job: Any) -> None:
        if self._thread is None:
            with self._thread_lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._serve, daemon=True,
                                                    name="pysched-process-handoff")
                    self._thread.start()
        self._jobs.put(job)

    def _serve(self) -> None:
        """The hand-off thread: sends batches, records process outcomes (all
        the outcomes that came meanwhile at once: one hold of the lock)."""
        jobs = self._jobs
        while True:
            batch = [jobs.get()]
            while not jobs.empty():  # all that came meanwhile: one hold of the lock
                batch.append(jobs.get())
            outcomes = [(job[1], run, result, exc) for job in batch
                        if job is not None and job[0] == "done"
                        for run, result, exc, _ in self._paced(job[2])]
            try:
                if outcomes:
                    self._record(outcomes)
            finally:  # runs that got a slot are sent, whatever a listener raised
                try:
                    for job in batch:
                        if job is not None and job[0] == "send":
                            self._send_all(job[1])
                except BaseException:  # pragma: no cover - each step contains its own
                    _log_quietly("the process hand-off failed (it goes on)")
            if None in batch:
                return

    def _paced(self, outcomes: List[Outcome]) -> List[Outcome]:
        note = self._pace.note
        for run, _, _, seconds in outcomes:
            note(run.task.fn, seconds)
        return outcomes

    def _send_all(self, runs: List[Run]) -> None:
        """Send process runs: those of quick functions together, up to
        BATCH_SIZE in a message, the others alone."""
        quick, lanes = self._pace.quick, self._st.lanes
        together: List[Run] = []
        for run in runs:
            lane = lanes.of(run)
            if run.timeout is None and lane.to_processes and quick(run.task.fn):
                together.append(run)
                if len(together) == BATCH_SIZE:
                    self._send_together(lane, together)
                    together = []
            else:
                self.send(lane, run)
        if together:
            self._send_together(lanes.of(together[0]), together)

    def _send_together(self, lane: Lane, runs: List[Run]) -> None:
        """Send *runs* to one worker process in one message."""
        try:
            for run in runs:
                self._workers.started(run)
            lane.executor.send_batch([(run, run.task.fn, run.task.args, run.task.kwargs)
                                      for run in runs], partial(self._outcomes, lane))
        except BaseException as exc:
            for run in runs:
                self._workers.not_sent(run, exc)

    def kill(self, handle: Any) -> None:
        """Kill the process of a hard run with a timeout."""
        if self.killable is not None:
            self.killable.kill(handle)

    def send(self, lane: Lane, run: Run) -> None:
        """Send a run to a process pool or another executor. (A run counts as
        started when it is sent: an executor may even run it inside submit.)"""
        task, st = run.task, self._st
        try:
            if run.lane is _PROCESSES and run.timeout is not None:
                self._send_killable(lane, run)
                return
            self._workers.started(run)
            if lane.to_processes:  # a message of its own, timed like the others
                lane.executor.send_batch([(run, task.fn, task.args, task.kwargs)],
                                         partial(self._outcomes, lane))
            else:
                future = _submit_elsewhere(lane.executor, run)
                st.attach(run, future)
                future.add_done_callback(partial(self._future_done, lane, run))
            if run.status in _CUT:  # it ended meanwhile
                self._workers.stop_runs([run])
        except BaseException as exc:
            self._workers.not_sent(run, exc)

    def _send_killable(self, lane: Lane, run: Run) -> None:
        """A hard run with a timeout runs alone in a process of its own; its
        deadline counts from when that process is up and has the call (a
        new process takes a while to start, which is not the task's time)."""
        st, task = self._st, run.task
        st.began(run, st.clock.now())
        if self.killable is None:
            self.killable = self._killable_factory()
        future, handle = self.killable.submit(task.fn, task.args, task.kwargs)
        st.attach(run, handle)
        self._workers.started(run, deadline_from=st.clock.now())
        future.add_done_callback(partial(self._future_done, lane, run))
        if run.status in _CUT:  # it ended meanwhile
            self._workers.stop_runs([run])

    def _future_done(self, lane: Lane, run: Run, future: Any) -> None:
        try:
            result = future.result()
        except BaseException as exc:
            self._done(lane, run, None, exc)
        else:
            self._done(lane, run, result, None)

    def _outcomes(self, lane: Lane, outcomes: List[Outcome]) -> None:
        """In the pool's own thread: note the outcomes for the hand-off thread
        (that thread also feeds the worker processes: it must not wait)."""
        self._jobs.put(("done", lane, outcomes))

    def _done(self, lane: Lane, run: Run, result: Any, exc: Optional[BaseException]) -> None:
        """The outcome of a run of an executor that is not a process pool (in
        that executor's own thread)."""
        self._record([(lane, run, result, exc)])

    def _record(self, outcomes: List[Tuple[Lane, Run, Any, Optional[BaseException]]]) -> None:
        """Record runs' outcomes under one hold of the lock; a process lane
        sends its next ready runs itself."""
        self._warm = True
        ended = []
        for lane, run, result, exc in outcomes:
            if exc is None and type(result) is types.CoroutineType:
                # a plain function that returned a coroutine: it runs on the loop
                awaited = self._st.lanes.loop.run(result)
                awaited.add_done_callback(partial(self._future_done, lane, run))
                continue
            status, text, error = _COMPLETED, None, None
            if exc is not None:
                status = TaskStatus.CANCELED if isinstance(exc, CancelledError) \
                    else TaskStatus.ERROR
                text, error = format_exception(exc), error_line(exc)
            ended.append((lane, run, status, result, exc, text, error))
        fx = Effects()
        following = []
        st = self._st
        wait_while_busy(st.lock)
        with st.lock:
            for lane, run, status, result, exc, text, error in ended:
                # a process lane sends its next run itself
                nxt = st.finish(run, status, result, exc, text, error, fx, lane.to_processes)
                if nxt is not None:
                    following.append(nxt)
        self._workers.aftermath_quietly(fx)
        claimed = [self._workers.claimed(nxt, fx) for nxt in following]
        self._send_all([run for run in claimed if run is not None])

    def shutdown(self, wait: bool) -> None:
        """Stop the hand-off thread and the killable processes."""
        thread = self._thread
        if thread is not None:
            self._jobs.put(None)
            if wait and thread is not threading.current_thread():
                thread.join()
        if self.killable is not None:
            self.killable.shutdown(wait=wait)


def _log_quietly(message: str) -> None:
    """Log the exception being handled, unless logging fails too."""
    try:
        _log.exception(message)
    except BaseException:
        pass


def _submit_elsewhere(executor: Any, run: Run) -> Any:
    """Submit to an executor that is not ours: through the wrapper that keeps
    a remote exception's traceback, with the priority when it takes one."""
    task = run.task
    prioritized = getattr(executor, "submit_prioritized", None)
    if prioritized is not None:
        return prioritized(task.priority, call_in_process, task.fn, task.args, task.kwargs)
    return executor.submit(call_in_process, task.fn, task.args, task.kwargs)
