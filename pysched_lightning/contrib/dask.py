"""Run scheduled tasks on a dask.distributed cluster.

``Scheduler(executor=DaskExecutor(client_or_address))`` sends every run to
the cluster. This module implements the executor contract the scheduler
drives, which any executor may follow:

- ``submit(fn, /, *args, **kwargs) -> concurrent.futures.Future`` and
  ``shutdown(wait=True)``, as in :mod:`concurrent.futures`;
- ``submit_prioritized(priority, fn, /, *args, **kwargs)``, optional: the
  scheduler calls it when present, with its own priority (a lower number is
  more urgent);
- ``future.cancel()`` at a run's deadline must stop the run even while it
  runs, and then report the future cancelled;
- ``_max_workers``, optional: the scheduler keeps at most that many runs in
  flight. A DaskExecutor has none, since dask queues runs and orders them
  by priority itself.

dask is imported on first use, so :func:`as_dask_executor` can be asked
about any executor on a machine without dask.
"""
from __future__ import annotations

import concurrent.futures
import functools
import logging
import sys
import threading
import types
import uuid
from typing import Any, Callable, Dict, Optional, Set, Tuple

from ..execution.executors import call_in_process
from ..records.errors import install_hint
from ..records.pickles import unpicklable_part
from ..records.validation import check_priority

__all__ = ["DaskExecutor", "as_dask_executor", "SUBMIT_OPTIONS"]

_log = logging.getLogger("pysched_lightning.contrib.dask")

#: The ``client.submit`` options a DaskExecutor passes on to every call.
SUBMIT_OPTIONS = frozenset({"workers", "resources", "allow_other_workers", "retries"})

# Set while a thread copies a dask outcome into a future: shutdown(wait=True)
# there must not wait for outcomes that only this thread can deliver.
_settling = threading.local()


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:
        raise ImportError(f"DaskExecutor needs dask.distributed: "
                          f"{install_hint('dask')}") from exc
    return distributed


def _check_options(options: Dict[str, Any]) -> None:
    if "pure" in options:
        raise TypeError(f"DaskExecutor does not take pure={options['pure']!r}: every run "
                        "of a task is a new execution (pure=False)")
    unknown = sorted(set(options) - SUBMIT_OPTIONS)
    if unknown:
        raise TypeError(f"unknown DaskExecutor option(s) {', '.join(map(repr, unknown))}; "
                        f"expected some of {sorted(SUBMIT_OPTIONS)}")
    retries = options.get("retries")
    if retries is not None and (isinstance(retries, bool) or not isinstance(retries, int)
                                or retries < 0):
        raise ValueError(f"retries must be an int >= 0, got {retries!r}")


def _key(fn: Callable[..., Any], args: Tuple[Any, ...]) -> str:
    """A unique dask key named for the user's function, which dask's
    dashboard shows (not the scheduler's ``call_in_process`` wrapper)."""
    from dask.utils import funcname

    target = args[0] if fn is call_in_process and args and callable(args[0]) else fn
    return f"{funcname(target)}-{uuid.uuid4().hex}"


def _raise_if_unpicklable(fn: Callable[..., Any], args: Tuple[Any, ...],
                          kwargs: Dict[str, Any], error: Exception) -> None:
    """dask's error for a call it cannot pickle does not say which part:
    name it (the user's function and arguments, inside the scheduler's wrapper)."""
    if fn is call_in_process and len(args) == 3 and not kwargs:
        fn, args, kwargs = args
    bad = unpicklable_part(fn, tuple(args), kwargs)
    if bad is not None:
        part, exc = bad
        raise TypeError(f"cannot send the call to the dask cluster: {part} cannot be "
                        f"pickled ({type(exc).__name__}: {exc})") from error


class DaskExecutor(concurrent.futures.Executor):
    """Runs calls on a dask.distributed cluster, returning concurrent.futures futures.

    *client_or_address* is a ``distributed.Client`` (used, never closed), a
    scheduler address such as ``"tcp://10.0.0.5:8786"``, or a cluster object
    such as a ``LocalCluster``; for the last two a client is made, and closed
    by :meth:`shutdown` (a cluster is left running: it is not ours).
    *options* go to every ``client.submit``: ``workers``, ``resources``,
    ``allow_other_workers``, ``retries``.

    Every call is a new execution (``pure=False``). Functions the workers
    cannot import (lambdas, closures, ``__main__``) travel by value
    (cloudpickle). Exceptions come back with the worker's traceback.
    """

    def __init__(self, client_or_address: Any, **options: Any) -> None:
        _check_options(options)
        target = client_or_address
        distributed = _import_distributed()
        from distributed.deploy import Cluster

        if isinstance(target, distributed.Client):
            client, owned = target, False
        elif isinstance(target, str) and not target.strip():
            raise ValueError(f"the dask scheduler address is empty: {target!r}")
        elif isinstance(target, (str, Cluster)):
            client, owned = distributed.Client(target, set_as_default=False), True
        else:
            raise TypeError("DaskExecutor needs a distributed.Client, a scheduler address "
                            f"or a dask cluster, got {target!r}")
        self._client = client
        self._owns_client = owned
        self._options = options
        #: A ClientExecutor this executor stands in for (shut down with it).
        self._wrapped: Optional[concurrent.futures.Executor] = None
        # Guards _pending and _shut_down.
        self._pending_lock = threading.Lock()
        self._pending: Set[_DaskFuture] = set()
        self._shut_down = False

    @property
    def client(self) -> Any:
        """The ``distributed.Client`` the calls go through."""
        return self._client

    def submit(self, fn: Callable[..., Any], /, *args: Any,
               **kwargs: Any) -> concurrent.futures.Future:
        """Run ``fn(*args, **kwargs)`` on the cluster at dask's default priority (0)."""
        return self._submit(0, fn, args, kwargs)

    def submit_prioritized(self, priority: float, fn: Callable[..., Any], /, *args: Any,
                           **kwargs: Any) -> concurrent.futures.Future:
        """Like :meth:`submit`, with pysched_lightning's *priority*: a lower
        number is more urgent (dask's is the other way round; it is negated)."""
        check_priority(priority)
        return self._submit(-priority, fn, args, kwargs)

    def _submit(self, dask_priority: float, fn: Callable[..., Any], args: Tuple[Any, ...],
                kwargs: Dict[str, Any]) -> concurrent.futures.Future:
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {fn!r}")
        if self._shut_down:
            raise RuntimeError("cannot schedule new futures after shutdown")
        key = _key(fn, args)
        call = functools.partial(fn, **kwargs) if kwargs else fn
        # fifo_timeout=0: equal priorities run in submission order, as in the
        # scheduler (dask's default lets calls 100 ms apart run in any order).
        try:
            dask_future = self._client.submit(call, *args, key=key, priority=dask_priority,
                                              fifo_timeout=0, **self._options)
        except Exception as exc:
            _raise_if_unpicklable(fn, args, kwargs, exc)
            raise
        future = _DaskFuture(self, key, dask_future)
        with self._pending_lock:
            refused = self._shut_down
            if not refused:
                self._pending.add(future)
        if refused:  # shutdown() came while the call was being sent
            dask_future.cancel()
            raise RuntimeError("cannot schedule new futures after shutdown")
        dask_future.add_done_callback(future._settle)
        return future

    def _forget(self, future: "_DaskFuture") -> None:
        with self._pending_lock:
            self._pending.discard(future)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Take no more calls. With *wait*, wait for the calls in flight (or
        cancel them, with *cancel_futures*); without *wait*, cancel them, so
        nothing keeps running on the cluster for an executor that is gone.
        Then close the client if this executor made it.

        Called from the thread that delivers outcomes (say, by a listener of
        a run that just ended), it cannot wait for them, and cancels them."""
        with self._pending_lock:
            if self._shut_down:
                return
            self._shut_down = True
            pending = list(self._pending)
        if wait and not cancel_futures and pending and getattr(_settling, "active", False):
            _log.warning("shutdown(wait=True) from the thread that delivers dask outcomes "
                         "cannot wait for them: cancelling %d call(s) in flight", len(pending))
            cancel_futures = True
        if wait and not cancel_futures:
            concurrent.futures.wait(pending)
        else:
            for future in pending:
                future.cancel()
        if self._wrapped is not None:
            self._wrapped.shutdown(wait=wait)
        if self._owns_client:
            self._client.close()

    def __repr__(self) -> str:
        with self._pending_lock:
            state = "shut down" if self._shut_down else f"{len(self._pending)} in flight"
        address = getattr(getattr(self._client, "scheduler", None), "address", "?")
        return f"<DaskExecutor {address} {state}>"


class _DaskFuture(concurrent.futures.Future):
    """The outcome of one call on the cluster.

    Unlike a plain Future, ``cancel()`` also works while the call runs: it
    cancels the dask future, which releases the task on the cluster, then
    reports cancelled. dask cannot interrupt a running function: the
    worker's thread runs it to its end and drops the result. ``running()``
    stays False, as the client is not told when a worker starts a call.
    """

    def __init__(self, executor: DaskExecutor, key: str, dask_future: Any) -> None:
        super().__init__()
        self._executor = executor
        #: The call's dask key, as dask's dashboard and logs name it.
        self.key = key
        self._dask: Any = dask_future
        # Taken by the one caller that wakes wait()/as_completed() on cancel.
        self._notify_token = threading.Lock()

    def cancel(self) -> bool:
        """Cancel the call on the cluster, then report cancelled; False if
        its outcome came first."""
        if self.done():
            return self.cancelled()
        dask_future = self._dask
        if dask_future is not None:
            try:
                dask_future.cancel()
            except Exception:  # e.g. the client closed: nothing left to release
                _log.debug("cancelling dask task %s failed", self.key, exc_info=True)
        return self._cancel_here()

    def _cancel_here(self) -> bool:
        if not super().cancel():
            return False
        if self._notify_token.acquire(blocking=False):
            self.set_running_or_notify_cancel()  # wakes wait() and as_completed()
        self._executor._forget(self)
        return True

    def _settle(self, dask_future: Any) -> None:
        """On dask's callback thread: copy the dask future's outcome here,
        then let the cluster drop the result."""
        _settling.active = True
        try:
            status = dask_future.status
            if status == "cancelled":
                self._cancel_here()
            elif status == "error":
                exc = dask_future.exception()
                tb = dask_future.traceback()
                if isinstance(tb, types.TracebackType):
                    exc = exc.with_traceback(tb)
                self._settle_with(False, exc)
            else:
                self._settle_with(True, dask_future.result())
        except BaseException as exc:  # e.g. the client closed before the result came
            self._settle_with(False, exc)
        finally:
            self._dask = None
            try:
                dask_future.release()
            finally:
                self._executor._forget(self)
                _settling.active = False

    def _settle_with(self, ok: bool, value: Any) -> None:
        try:
            if ok:
                self.set_result(value)
            else:
                self.set_exception(value)
        except concurrent.futures.InvalidStateError:
            pass  # cancelled meanwhile: the late outcome is dropped


def as_dask_executor(executor: Any) -> Optional[DaskExecutor]:
    """*executor* as a DaskExecutor when it belongs to dask, else None.

    A DaskExecutor is returned as it is. A ``distributed.Client``, or the
    ``ClientExecutor`` of ``client.get_executor(**options)`` (which has no
    per-call priority, and its options are kept), is wrapped; its client is
    never closed, and the ClientExecutor is shut down with the wrapper. This
    never imports dask: an object can only be dask's once dask is imported.
    """
    if isinstance(executor, DaskExecutor):
        return executor
    distributed = sys.modules.get("distributed")
    if distributed is None:
        return None
    if isinstance(executor, distributed.Client):
        return DaskExecutor(executor)
    cfexecutor = sys.modules.get("distributed.cfexecutor")
    if cfexecutor is None or not isinstance(executor, cfexecutor.ClientExecutor):
        return None
    options = dict(getattr(executor, "_kwargs", {}))
    if options.pop("pure", False):
        _log.warning("%r: pure=True is ignored: every run of a task is a new execution",
                     executor)
    wrapper = DaskExecutor(executor._client, **options)
    wrapper._wrapped = executor
    return wrapper
