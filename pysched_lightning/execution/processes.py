"""Process pools for hard tasks that survive dying workers, and killable runs.

One worker process that dies (``os._exit``, a signal, a segfault) breaks a
whole loky or stdlib process pool: every later submit would fail. A
``ProcessPool`` replaces the broken pool once, fails only the calls that may
have reached a worker (with ``WorkerCrashedError``) and sends the others to
the new pool. ``KillableProcesses`` (in ``killable``) runs each call alone in a
one-worker pool, so killing it (a timeout) harms nothing else and never waits.
A ``ProcessPool`` is killed whole, at the end of shutdown's grace, when calls
still run in it.
"""
from __future__ import annotations

import concurrent.futures
import logging
import threading
import weakref
from concurrent.futures import CancelledError, Future
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from typing import Any, Callable, List, Mapping, Optional, Tuple, Union

import loky

from ..records.errors import WorkerCrashedError
from .calls import Batch, BatchSink, Call, CallbackSink, CallParts, FutureSink, Outcome
from .executors import ProcessPoolExecutor, _default_workers, fresh_pool_like
from .killable import KillableProcesses, ProcessHandle
from .orphans import watching_parent

__all__ = ["ProcessPool", "KillableProcesses", "ProcessHandle"]


_log = logging.getLogger("pysched_lightning.processes")

#: How many pools a call may be sent to before it fails: a call that never
#: reached a worker is sent again when its pool breaks, but not forever.
_MAX_SENDS = 3
#: How a broken pool's manager thread is waited for at shutdown: this many
#: times this long, its workers killed before each.
_RETIRED_JOINS, _RETIRED_JOIN_SECONDS = 20, 0.5
#: Where a call's outcome goes.
_Sink = Union[FutureSink, CallbackSink, BatchSink]
#: What goes to a worker in one message.
_Sent = Union[Call, Batch]


class _Breakage:
    """A pool broke: how its worker died, once the first to notice knows."""

    __slots__ = ("crash", "known")

    def __init__(self) -> None:
        #: What its lost calls fail with; None when no worker died.
        self.crash: Optional[WorkerCrashedError] = None
        self.known = threading.Event()


class ProcessPool:
    """A process pool that replaces itself when a worker dies.

    Wraps *executor* (a ``psl.ProcessPoolExecutor``, a loky or a
    ``concurrent.futures`` process pool), or a new loky pool of
    *max_workers* processes. A call whose worker died, or that was in a
    worker of the pool when another worker died (the pool kills them all),
    fails with ``WorkerCrashedError``; the pool is replaced by a fresh one
    of the same kind, size and options, once per breakage, with one WARNING.
    Calls that had not reached a worker yet run on the new pool.
    """

    def __init__(self, executor: Any = None, max_workers: Optional[int] = None) -> None:
        if executor is None:
            initializer, initargs = watching_parent()
            executor = loky.ProcessPoolExecutor(_default_workers(max_workers),
                                                initializer=initializer, initargs=initargs)
        elif max_workers is not None:
            raise ValueError(f"give executor or max_workers, not both "
                             f"(max_workers={max_workers!r})")
        elif not isinstance(executor, (loky.ProcessPoolExecutor,
                                       concurrent.futures.ProcessPoolExecutor)):
            raise TypeError(f"executor must be a loky or concurrent.futures "
                            f"ProcessPoolExecutor, got {executor!r}")
        self._workers: int = executor._max_workers
        self._lock = threading.Lock()  # guards the attributes below
        #: The pool in use and the function that sends it a call, as one
        #: tuple so that submit() reads them together without the lock.
        self._current: Tuple[Any, Callable[[_Sent], Future]] = (executor, _sender(executor))
        #: Each broken pool's breakage, so that it is handled once.
        self._breakages: "weakref.WeakKeyDictionary[Any, _Breakage]" = \
            weakref.WeakKeyDictionary()
        #: The broken pools still stopping: their workers and manager threads.
        self._retired: List[Any] = []
        self._closed = False
        #: Set by kill() (a later shutdown() must not undo it), with the
        #: thread that kills the pool's workers, for shutdown() to wait for.
        self._killed = False
        self._killer: Optional[threading.Thread] = None

    @property
    def capacity(self) -> int:
        """How many calls run at once: the number of worker processes."""
        return self._workers

    @property
    def executor(self) -> Any:
        """The process pool in use now (a new one after each breakage)."""
        return self._current[0]

    def submit(self, fn: Callable[..., Any], args: Tuple[Any, ...] = (),
               kwargs: Optional[Mapping[str, Any]] = None) -> Future:
        """Run ``fn(*args, **kwargs)`` in a worker; an exception comes back
        with its remote traceback. RuntimeError after shutdown."""
        future = FutureSink()
        self._dispatch(Call(fn, args, kwargs or {}), future)
        return future

    def send(self, fn: Callable[..., Any], args: Tuple[Any, ...],
             kwargs: Optional[Mapping[str, Any]],
             done: Callable[[Any, Optional[BaseException]], Any]) -> None:
        """Like ``submit``, without a future: ``done(result, None)`` or
        ``done(None, exception)`` is called once, in the pool's own thread
        (keep it short, and let it not raise). For callers that need only
        the outcome, it saves making and settling a second future."""
        self._dispatch(Call(fn, args, kwargs or {}), CallbackSink(done))

    def send_batch(self, calls: List[Tuple[Any, Callable[..., Any], Tuple[Any, ...],
                                           Mapping[str, Any]]],
                   done: Callable[[List[Outcome]], Any]) -> None:
        """Send ``(key, fn, args, kwargs)`` calls to one worker in one message
        (which costs this process more than a quick call takes), to run there
        in order. ``done(outcomes)`` gets ``(key, result, exception, seconds)``
        for every call, once, in the pool's own thread (once per part if a
        call that could not be pickled made the calls go again one by one)."""
        parts: List[CallParts] = [(fn, args, kwargs or {}) for _, fn, args, kwargs in calls]
        self._dispatch(Batch(parts), BatchSink([call[0] for call in calls], done))

    def _dispatch(self, call: _Sent, sink: _Sink) -> None:
        for _ in range(_MAX_SENDS):
            executor, send = self._current
            try:
                inner = send(call)
            except BrokenProcessPool as exc:  # it broke before taking the call
                if self._closed:
                    raise RuntimeError("the process pool is shut down") from exc
                self._replace(executor, exc)
                continue
            sink.attach(inner)
            inner.add_done_callback(partial(self._relay, call, sink, executor))
            return
        raise WorkerCrashedError(message="new process pools kept breaking before they "
                                 "could take the call")

    def _relay(self, call: _Sent, sink: _Sink, executor: Any, inner: Future) -> None:
        """Give *sink* the outcome of *inner* (in the pool's own thread)."""
        sink.attach(None)
        try:
            exc = inner.exception()
        except CancelledError:
            sink.drop()
            return
        if exc is None:  # the hot path: a few µs per call matter here
            if isinstance(call, Batch) and call.refused is not None:
                self._split(call, sink)
                return
            sink.succeed(inner.result())
            return
        if isinstance(exc, BrokenProcessPool):
            try:
                lost = self._broken(call, sink, executor, exc)
            except BaseException as error:  # the caller must hear of it
                lost = error
            if lost is None:
                return
            if isinstance(lost, CancelledError):
                sink.drop()
                return
            exc = lost
        sink.fail(exc)

    def _split(self, batch: Batch, sink: _Sink) -> None:
        """A batch that could not be pickled ran nothing: each of its calls
        goes alone, so that only the one that cannot be pickled fails."""
        assert isinstance(sink, BatchSink) and batch.refused is not None
        parts = batch.split() if len(batch) > 1 else []
        for index, one in enumerate(parts):
            try:
                self._dispatch(one, sink.part(index))
            except BaseException as error:  # e.g. shut down meanwhile
                sink.part(index).fail(error)
        if not parts:  # the one that cannot be pickled
            sink.fail(batch.refused)

    def _broken(self, call: _Sent, sink: _Sink, executor: Any,
                exc: BrokenProcessPool) -> Optional[BaseException]:
        """The call's pool broke: send it again if it never reached a worker
        (None), else what it fails with (CancelledError: it will not run)."""
        crash = self._replace(executor, exc)
        if call.take_back() and call.sends < _MAX_SENDS:
            try:  # it never reached a worker: it runs on the new pool
                self._dispatch(call.again(), sink)
            except RuntimeError as closed:  # shut down meanwhile
                return CancelledError(str(closed))
            return None
        if crash is None:  # the pool broke, but not by a death (e.g. unpickling)
            return exc
        lost = WorkerCrashedError(crash.exitcode, crash.signal)  # one per call
        lost.__cause__ = exc
        return lost

    def _replace(self, broken: Any, exc: BrokenProcessPool) -> Optional[WorkerCrashedError]:
        """Put a fresh pool in place of *broken*, the first time only; what
        its lost calls fail with (None when no worker died)."""
        with self._lock:
            breakage = self._breakages.get(broken)
            first, replaced, failed = breakage is None, False, None
            if breakage is None:
                breakage = self._breakages[broken] = _Breakage()
                if self._current[0] is broken and not self._closed:
                    try:
                        fresh = fresh_pool_like(broken)
                    except Exception as error:  # later submits fail with the pool's error
                        failed = error
                    else:
                        self._current, replaced = (fresh, _sender(fresh)), True
                # The broken pool stops itself; what is left of it is stopped
                # at shutdown (see _stop_retired).
                self._retired = [pool for pool in self._retired if _stopping(pool)]
                self._retired.append(broken)
        if failed is not None:
            _log.error("could not replace the broken process pool", exc_info=failed)
        if not first:
            breakage.known.wait()
            return breakage.crash
        try:  # may wait a moment for an exit code: not under the lock
            breakage.crash = WorkerCrashedError.from_broken_pool(broken, exc)
        finally:
            breakage.known.set()
        if replaced:
            why = "it broke" if breakage.crash is None else str(breakage.crash)
            _log.warning("process pool broken: %s (%s: %s); replaced by a new pool of %d "
                         "workers", why, type(exc).__name__, str(exc).split("\n")[0],
                         self._workers)
        return breakage.crash

    def shutdown(self, wait: bool = True) -> None:
        """Stop the pool; with *wait*, return once its processes are gone
        (without, they exit after the calls already sent)."""
        with self._lock:
            self._closed = True
            executor = self._current[0]
            retired, self._retired = self._retired, []
            killed, killer, self._killer = self._killed, self._killer, None
        _shut(executor, wait, kill=killed)
        for pool in retired:
            _stop_retired(pool, wait)
        if wait and killer is not None and killer is not threading.current_thread():
            killer.join(_RETIRED_JOINS * _RETIRED_JOIN_SECONDS)

    def kill(self) -> None:
        """Stop the pool now, without waiting: its worker processes are
        killed (grandchildren included, for a loky pool), the calls they run
        or were sent fail, and no new pool replaces it. For shutdown, once
        the runs still going have had their grace."""
        with self._lock:
            self._closed = True
            executor = self._current[0]
            retired = list(self._retired)  # (shutdown() joins their threads)
            self._killed = True
            # The pool forgets the thread that kills its workers once told
            # to stop: kept here for shutdown() to wait for.
            thread = getattr(executor, "_executor_manager_thread", None)
            if isinstance(thread, threading.Thread):
                self._killer = thread
        _shut(executor, wait=False, kill=True)
        for pool in retired:
            _stop_retired(pool, wait=False)

    def __enter__(self) -> "ProcessPool":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.shutdown(wait=True)


def _shut(executor: Any, wait: bool, kill: bool) -> None:
    """Shut *executor* down; with *kill*, its workers are killed first."""
    if not kill:
        executor.shutdown(wait=wait)
    elif isinstance(executor, loky.ProcessPoolExecutor):
        # loky fails the calls still pending and kills each worker's process
        # tree (asked again at every call: a plain shutdown would clear it).
        executor.shutdown(wait=wait, kill_workers=True)
    else:  # the standard library's: the calls fail once a worker is gone
        for process in _processes_of(executor):  # (shutdown forgets them)
            try:
                process.kill()
            except (AttributeError, ValueError, OSError):  # never started, or closed
                pass
        executor.shutdown(wait=wait, cancel_futures=True)


def _stopping(pool: Any) -> bool:
    """True while a broken *pool*'s manager thread or a worker is alive."""
    thread = getattr(pool, "_executor_manager_thread", None)
    if isinstance(thread, threading.Thread) and thread.is_alive():
        return True
    return any(process.is_alive() for process in _processes_of(pool))


def _processes_of(pool: Any) -> List[Any]:
    return list((getattr(pool, "_processes", None) or {}).values())


def _stop_retired(pool: Any, wait: bool) -> None:
    """Kill what is left of a broken *pool*'s workers, then (with *wait*)
    join its manager thread. A worker that a submit racing the breakage
    started after the pool terminated its workers (CPython's pool, 3.11)
    would otherwise wait for work forever, and the manager thread with it."""
    thread = getattr(pool, "_executor_manager_thread", None)
    for _ in range(_RETIRED_JOINS):
        for process in _processes_of(pool):
            try:
                process.kill()
            except (AttributeError, ValueError, OSError):  # never started, or closed
                pass
        if not wait or not isinstance(thread, threading.Thread) \
                or thread is threading.current_thread():
            return
        thread.join(_RETIRED_JOIN_SECONDS)  # (a worker may be starting: kill again)
        if not thread.is_alive():
            return
    _log.warning("the manager thread of a broken process pool did not stop")


def _sender(executor: Any) -> Callable[[_Sent], Future]:
    if isinstance(executor, ProcessPoolExecutor):  # its submit would wrap the call again
        return partial(loky.ProcessPoolExecutor.submit, executor)
    return executor.submit
