"""Executors: a thread pool, a loky process pool, and the glue for processes.

Both pools keep upstream's surface (``run(fn, args, kwargs)`` returning the
future and setting ``.future``) on top of the standard ``submit``. Work sent
to a process goes through ``call_in_process`` so an exception comes back
with its real traceback (tblib), naming the function and line in the worker.
"""
from __future__ import annotations

import concurrent.futures
import os
import sys
from concurrent.futures import Future
from typing import Any, Callable, Dict, Optional, Tuple

import loky
from tblib import pickling_support

from .orphans import watching_parent

__all__ = ["ThreadPoolExecutor", "ProcessPoolExecutor", "call_in_process", "fresh_pool_like"]


def _default_workers(max_workers: Optional[int]) -> int:
    if max_workers is None:
        return os.cpu_count() or 1
    if isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1:
        raise ValueError(f"max_workers must be a positive int, got {max_workers!r}")
    return max_workers


class _RunMixin:
    future: Optional[Future] = None

    def run(self, fn: Callable[..., Any], args: Tuple[Any, ...] = (),
            kwargs: Optional[Dict[str, Any]] = None) -> Future:
        """Submit ``fn(*args, **kwargs)``; the future is returned and kept as ``.future``."""
        self.future = self.submit(fn, *args, **(kwargs or {}))  # type: ignore[attr-defined]
        return self.future


class ThreadPoolExecutor(_RunMixin, concurrent.futures.ThreadPoolExecutor):
    """A thread pool; ``max_workers`` defaults to the number of CPU cores."""

    def __init__(self, max_workers: Optional[int] = None,
                 thread_name_prefix: str = "pysched-worker") -> None:
        super().__init__(_default_workers(max_workers), thread_name_prefix)


class ProcessPoolExecutor(_RunMixin, loky.ProcessPoolExecutor):
    """A loky process pool (lambdas and closures work, via cloudpickle). Its
    worker processes exit within a second of this process dying, even when
    it is killed (see ``orphans``)."""

    def __init__(self, max_workers: Optional[int] = None, **loky_options: Any) -> None:
        loky_options["initializer"], loky_options["initargs"] = watching_parent(
            loky_options.get("initializer"), loky_options.get("initargs", ()))
        super().__init__(_default_workers(max_workers), **loky_options)

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future:
        return super().submit(call_in_process, fn, args, kwargs)


def call_in_process(fn: Callable[..., Any], args: Tuple[Any, ...],
                     kwargs: Dict[str, Any]) -> Any:
    """Run in the worker; an exception travels back with its traceback."""
    try:
        return fn(*args, **kwargs)
    except BaseException as exc:
        pickling_support.install(exc)
        raise


def fresh_pool_like(executor: Any) -> Any:
    """A new process pool of the same kind (psl, loky or stdlib), size and
    options as *executor*, e.g. to replace it once it is broken."""
    options: Dict[str, Any] = {}
    initializer = getattr(executor, "_initializer", None)
    if initializer is not None:
        options.update(initializer=initializer, initargs=getattr(executor, "_initargs", ()))
    if isinstance(executor, loky.ProcessPoolExecutor):
        options.update(timeout=getattr(executor, "_timeout", None),
                       context=getattr(executor, "_context", None),
                       env=getattr(executor, "_env", None))
        kind = ProcessPoolExecutor if isinstance(executor, ProcessPoolExecutor) \
            else loky.ProcessPoolExecutor
        return kind(executor._max_workers, **options)
    options["mp_context"] = getattr(executor, "_mp_context", None)
    if sys.version_info >= (3, 11):
        options["max_tasks_per_child"] = getattr(executor, "_max_tasks_per_child", None)
    return concurrent.futures.ProcessPoolExecutor(executor._max_workers, **options)
