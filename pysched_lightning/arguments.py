"""Checks of what ``Scheduler(...)`` is given: a bad argument is refused at
construction, naming the value, before anything is opened or started."""
from __future__ import annotations

import os
from typing import Any, Optional

from .records.validation import check_seconds

__all__ = ["check_scheduler_arguments", "check_executor", "check_run_log"]


def check_executor(label: str, executor: Any) -> None:
    """An executor needs ``submit(fn, *args, **kwargs)`` and ``shutdown(wait)``."""
    if executor is None:
        return
    missing = [name for name in ("submit", "shutdown")
               if not callable(getattr(executor, name, None))]
    if missing or isinstance(executor, type):
        raise TypeError(f"{label} must be an executor (with submit() and shutdown(), "
                        f"e.g. psl.ThreadPoolExecutor()), got {executor!r}")


def check_run_log(run_log: Any) -> None:
    """A run log is a path, or an object with ``write(record)``."""
    if run_log is None or isinstance(run_log, (str, os.PathLike)):
        if isinstance(run_log, str) and not run_log.strip():
            raise ValueError("run_log must not be an empty path")
        return
    if not callable(getattr(run_log, "write", None)):
        raise TypeError(f"run_log must be a path or an object with write(record), "
                        f"got {run_log!r}")


def check_scheduler_arguments(executor: Any, timefunc: Any, delayfunc: Any,
                              process_executor: Any, history: Any, default_timeout: Any,
                              wallfunc: Any, run_log: Any, max_async: Any) -> Optional[float]:
    """Raise TypeError/ValueError for the first bad argument; return the
    default timeout in seconds."""
    check_executor("executor", executor)
    check_executor("process_executor", process_executor)
    for label, func in (("timefunc", timefunc), ("delayfunc", delayfunc)):
        if not callable(func):
            raise TypeError(f"{label} must be callable, got {func!r}")
    if wallfunc is not None and not callable(wallfunc):
        raise TypeError(f"wallfunc must be callable, got {wallfunc!r}")
    for label, count in (("history", history), ("max_async", max_async)):
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"{label} must be a positive int, got {count!r}")
    check_run_log(run_log)
    return check_seconds("default_timeout", default_timeout)
