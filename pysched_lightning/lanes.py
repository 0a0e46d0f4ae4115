"""A lane is one executor with its free worker slots and its ready heap.

The dispatcher hands a due run straight to the executor while the lane has a
free slot; otherwise the run waits in the lane's ready heap, ordered by
(priority, due time, seq), so an urgent task overtakes a backlog. Runs for
processes and runs for threads have separate lanes, so neither blocks the
other.
"""
from __future__ import annotations

import collections
import concurrent.futures
import logging
import threading
from typing import Any, Deque, List, Optional

import loky

from .executors import capacity, runs_in_threads
from .queue import LazyHeap

__all__ = ["Lane", "KillableProcesses"]

_log = logging.getLogger("pysched_lightning")


def _is_process_pool(executor: Any) -> bool:
    return isinstance(executor, (loky.ProcessPoolExecutor,
                                 concurrent.futures.ProcessPoolExecutor))


def _ready_is_live(entry: Any) -> bool:
    return not entry[3]._state.canceled


class Lane:
    """An executor, how many runs it may still take, and who waits for it."""

    __slots__ = ("executor", "free", "ready", "in_threads", "owned", "handoff", "returning")

    def __init__(self, executor: Any, owned: bool) -> None:
        self.executor = executor
        #: Free worker slots; None when the executor does not say its size.
        self.free: Optional[int] = capacity(executor)
        self.ready = LazyHeap(_ready_is_live)
        #: True when runs execute in this process's threads (so they can
        #: report their own start and see ``current_run()``).
        self.in_threads = runs_in_threads(executor)
        self.owned = owned
        #: One entry per worker whose run has returned and who is on its way
        #: to take the next ready run (a deque: appends and pops are atomic
        #: without the scheduler's lock). While one is coming, a new due run
        #: waits for it in the ready heap instead of waking another worker.
        self.returning: Deque[None] = collections.deque()
        #: Sending work to a process pool pickles it and may spawn workers
        #: (seconds, the first time): a thread of its own does that, so the
        #: dispatcher never waits on it.
        self.handoff: Optional[concurrent.futures.ThreadPoolExecutor] = None
        if _is_process_pool(executor):
            self.handoff = concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix="pysched-process-submit")

    def shutdown(self, wait: bool) -> None:
        """Stop the hand-off thread, then the executor."""
        for executor in (self.handoff, self.executor):
            if executor is None:
                continue
            try:
                executor.shutdown(wait=wait)
            except Exception:
                _log.exception("shutting down executor %r failed", executor)

    def has_room(self) -> bool:
        return self.free is None or self.free > 0

    def take(self) -> None:
        if self.free is not None:
            self.free -= 1

    def give_back(self) -> None:
        if self.free is not None:
            self.free += 1


class KillableProcesses:
    """One-process loky executors for hard tasks with a timeout.

    loky cannot kill one task without breaking its whole pool, so a hard task
    that may have to be killed runs alone in its own process; killing it harms
    nothing else. Idle executors are kept for reuse.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: List[Any] = []
        self._all: List[Any] = []

    def acquire(self) -> Any:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        executor = loky.ProcessPoolExecutor(max_workers=1)
        # Start the worker now, so a task's timeout does not count its spawn.
        executor.submit(int).result()
        with self._lock:
            self._all.append(executor)
        return executor

    def release(self, executor: Any) -> None:
        with self._lock:
            if executor in self._all:
                self._idle.append(executor)

    def kill(self, executor: Any) -> None:
        with self._lock:
            if executor in self._idle:
                self._idle.remove(executor)
            if executor in self._all:
                self._all.remove(executor)
        executor.shutdown(wait=True, kill_workers=True)

    def shutdown(self, wait: bool) -> None:
        with self._lock:
            executors, self._all, self._idle = self._all, [], []
        for executor in executors:
            executor.shutdown(wait=wait, kill_workers=not wait)
