"""Killable runs: each call alone in a process of its own.

loky cannot kill one call without breaking its whole pool, so a call that
may have to be killed (a hard task with a timeout) gets a one-worker pool,
whose process is up before the call is sent (its start is not the call's
time). Idle ones are kept for the next call; one whose process died is not.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from typing import Any, Callable, List, Mapping, Optional, Set, Tuple

import loky

from ..records.errors import WorkerCrashedError
from .calls import Call, FutureSink
from .executors import _default_workers
from .orphans import watching_parent

__all__ = ["KillableProcesses", "ProcessHandle"]

_log = logging.getLogger("pysched_lightning.processes")

#: How many fresh processes a call may be sent to before it fails.
_MAX_SENDS = 3


class ProcessHandle:
    """A call given to ``KillableProcesses``: what ``kill()`` takes."""

    __slots__ = ("pid", "_worker", "_done", "_killed")

    def __init__(self, worker: "_Worker") -> None:
        #: The process running the call.
        self.pid: int = worker.pid
        self._worker = worker
        self._done = False
        self._killed = False

    def __repr__(self) -> str:
        state = "killed" if self._killed else "done" if self._done else "running"
        return f"<ProcessHandle pid={self.pid} {state}>"


class _Worker:
    """A one-worker loky pool whose process is up, and its pid."""

    __slots__ = ("executor", "pid")

    def __init__(self) -> None:
        initializer, initargs = watching_parent()
        self.executor = loky.ProcessPoolExecutor(max_workers=1, initializer=initializer,
                                                 initargs=initargs)
        try:
            self.pid: int = self.executor.submit(os.getpid).result()
        except BaseException:
            self.executor.shutdown(wait=False, kill_workers=True)
            raise


class KillableProcesses:
    """Each call alone in a process of its own, so that it can be killed.

    loky cannot kill one call without breaking its whole pool, so a call
    that may have to be killed (a hard task with a timeout) gets a
    one-worker pool. Idle ones (at most *max_idle*, default one per core)
    are kept for the next call; one whose process died is not.
    """

    def __init__(self, max_idle: Optional[int] = None) -> None:
        self._max_idle = _default_workers(max_idle)
        self._lock = threading.Lock()  # guards the attributes below
        self._idle: List[_Worker] = []
        self._busy: Set[_Worker] = set()
        self._stopping: List[threading.Thread] = []
        self._closed = False

    def submit(self, fn: Callable[..., Any], args: Tuple[Any, ...] = (),
               kwargs: Optional[Mapping[str, Any]] = None) -> Tuple[Future, ProcessHandle]:
        """Run ``fn(*args, **kwargs)`` in an idle worker process, or a new
        one: then this waits until the process is up, so that a timeout
        does not count its start."""
        for _ in range(_MAX_SENDS):
            worker = self._acquire()
            try:
                inner = worker.executor.submit(Call(fn, args, kwargs or {}))
            except BrokenProcessPool:  # its process died while idle
                self._drop(worker)
                continue
            future = FutureSink()
            future.attach(inner)
            handle = ProcessHandle(worker)
            inner.add_done_callback(partial(self._finished, handle, future))
            return future, handle
        raise WorkerCrashedError(message="new worker processes kept dying before they "
                                 "could take the call")

    def kill(self, handle: ProcessHandle) -> bool:
        """Kill the process running *handle*'s call, without waiting for it
        to go; its future then fails with ``WorkerCrashedError``. False if
        the call had already finished."""
        with self._lock:
            if handle._done or handle._killed:
                return False
            handle._killed = True
            self._busy.discard(handle._worker)
        self._stop(handle._worker, kill=True)
        return True

    def shutdown(self, wait: bool = True) -> None:
        """Stop every worker: with *wait*, let running calls finish and wait
        for the processes to go; without, kill them."""
        with self._lock:
            self._closed = True
            workers = self._idle + list(self._busy)
            self._idle, self._busy = [], set()
            stopping, self._stopping = self._stopping, []
        for worker in workers:
            worker.executor.shutdown(wait=wait, kill_workers=not wait)
        if wait:
            me = threading.current_thread()
            for thread in stopping:
                if thread is not me:
                    thread.join()

    def _acquire(self) -> _Worker:
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot run calls after shutdown")
            if self._idle:
                worker = self._idle.pop()
                self._busy.add(worker)
                return worker
        worker = _Worker()  # seconds, at worst; never under the lock
        with self._lock:
            if not self._closed:
                self._busy.add(worker)
                return worker
        worker.executor.shutdown(wait=False, kill_workers=True)
        raise RuntimeError("cannot run calls after shutdown")

    def _finished(self, handle: ProcessHandle, future: FutureSink, inner: Future) -> None:
        """A call ended (in its pool's thread): keep or drop its worker, and
        give *future* the outcome."""
        future.attach(None)
        exc = None if inner.cancelled() else inner.exception()
        worker = handle._worker
        broken = exc if isinstance(exc, BrokenProcessPool) else None
        died = broken is not None
        with self._lock:
            handle._done = True
            killed = handle._killed
            keep = not (killed or died or self._closed) and len(self._idle) < self._max_idle
            if not killed:
                self._busy.discard(worker)
            if keep:
                self._idle.append(worker)
        if not (keep or killed):
            self._stop(worker, kill=died)
        if killed:
            error: Optional[BaseException] = WorkerCrashedError(
                -signal.SIGKILL, "SIGKILL", "the worker process was killed on request "
                "(signal SIGKILL)")
        elif broken is not None:
            error = WorkerCrashedError.from_broken_pool(worker.executor, broken) or \
                WorkerCrashedError()
            error.__cause__ = broken
        elif inner.cancelled():
            future.drop()
            return
        else:
            error = exc
        if error is not None:
            future.fail(error)
        else:
            future.succeed(inner.result())

    def _drop(self, worker: _Worker) -> None:
        with self._lock:
            self._busy.discard(worker)
        self._stop(worker, kill=True)

    def _stop(self, worker: _Worker, kill: bool) -> None:
        """Shut *worker* down without waiting; its thread is joined at shutdown."""
        thread = getattr(worker.executor, "_executor_manager_thread", None)
        worker.executor.shutdown(wait=False, kill_workers=kill)
        if isinstance(thread, threading.Thread):
            with self._lock:
                self._stopping = [t for t in self._stopping if t.is_alive()]
                self._stopping.append(thread)
