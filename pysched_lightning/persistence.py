"""Turning tasks and runs into store records and back.

A function is kept by import reference (``module:qualname``) when importing
that name gives back the very same object, else by value with cloudpickle;
arguments, options and triggers are pickled. A task that cannot be stored is
refused at ``delay()`` with a TypeError naming the part that failed.
"""
from __future__ import annotations

import datetime as _dt
import importlib
import json
import pickle
from typing import Any, Callable, Dict, Optional

import cloudpickle

from .executors import unpicklable_part
from .runs import Run, TaskStatus
from .stores.base import TaskRecord
from .task import DEFAULT_OPTIONS, Task, TaskOptions

__all__ = ["task_record", "load_function", "load_schedule", "run_record", "claim_key",
           "RunRecord"]


def task_record(task: Task, next_run: Optional[float], now_wall: float) -> TaskRecord:
    """The store record of *task* due at wall time *next_run*."""
    fn = task[6]
    ref = function_reference(fn)
    return TaskRecord(
        id=task[3], name=task.name, trigger=task.trigger,
        interval=_interval_text(task[5]), priority=task[1],
        fn_ref=ref, fn_pickle=None if ref else _dumps_function(fn),
        args=_dumps("args", task[7]), kwargs=_dumps("kwargs", task[8]),
        options=_dumps("options", task[9]),
        schedule=None if type(task[4]) is str else _dumps("trigger", task[4]),
        next_run=next_run, created=now_wall, updated=now_wall)


def function_reference(fn: Callable[..., Any]) -> Optional[str]:
    """``module:qualname`` if that imports back to *fn* itself, else None."""
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not module or not qualname or module == "__main__" or "<" in qualname:
        return None
    try:
        found: Any = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
    except Exception:
        return None
    return f"{module}:{qualname}" if found is fn else None


def load_function(record: TaskRecord) -> Callable[..., Any]:
    """The task's function, imported or unpickled."""
    if record.fn_ref:
        module, _, qualname = record.fn_ref.partition(":")
        found: Any = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
        return found
    return pickle.loads(record.fn_pickle)  # type: ignore[arg-type]


def load_args(record: TaskRecord) -> Any:
    return pickle.loads(record.args), pickle.loads(record.kwargs)


def load_options(record: TaskRecord) -> TaskOptions:
    return pickle.loads(record.options)


def load_schedule(record: TaskRecord) -> Any:
    return None if record.schedule is None else pickle.loads(record.schedule)


def run_record(run: Run, name: str, offset: float) -> Dict[str, Any]:
    """A finished (or starting) run as the store and the run log keep it."""
    exit_code = output = stderr = None
    outcome = run.result if run.status is TaskStatus.COMPLETED else \
        getattr(run.exception, "result", None)
    if _looks_like_command_result(outcome):
        exit_code, output, stderr = outcome[0], outcome[1], outcome[2]
    error = None
    if run.exception is not None:
        error = f"{type(run.exception).__name__}: {run.exception}"
    elif run.reason:
        error = run.reason
    return {
        "task_id": run.task_id, "name": name, "run": run.run_number,
        "attempt": run.attempt, "status": int(run.status),
        "scheduled": claim_key(run.scheduled + offset),
        "started": None if run.started is None else run.started + offset,
        "finished": None if run.finished is None else run.finished + offset,
        "duration": run.duration, "exit_code": exit_code,
        "result": None if run.status is not TaskStatus.COMPLETED else _short_repr(run.result),
        "error": error, "traceback": run.traceback, "output": output, "stderr": stderr,
    }


class RunRecord(dict):
    """A stored run: a dict of RUN_FIELDS that also reads as attributes
    (``record.status`` is a TaskStatus, ``record.run_number`` its run)."""

    def __getattr__(self, name: str) -> Any:
        if name == "run_number":
            name = "run"
        try:
            value = self[name]
        except KeyError:
            raise AttributeError(name) from None
        return TaskStatus(value) if name == "status" else value


def claim_key(scheduled_wall: float) -> float:
    """The scheduled time a run is keyed by, rounded so that two processes
    computing it from the same stored time agree."""
    return round(scheduled_wall, 3)


def _looks_like_command_result(value: Any) -> bool:
    return type(value).__name__ == "CommandResult" and isinstance(value, tuple)


def _short_repr(value: Any, limit: int = 2000) -> str:
    try:
        text = repr(value)
    except Exception as exc:  # a broken __repr__ must not lose the run record
        text = f"<unrepresentable {type(value).__name__}: {exc}>"
    return text if len(text) <= limit else text[:limit] + "..."


def _interval_text(interval: Any) -> str:
    if isinstance(interval, _dt.datetime):
        return json.dumps(interval.isoformat())
    if isinstance(interval, _dt.timedelta):
        return json.dumps(interval.total_seconds())
    try:
        return json.dumps(interval)
    except (TypeError, ValueError):
        return json.dumps(repr(interval))


def _dumps_function(fn: Any) -> bytes:
    """A function without an import name is kept by value (cloudpickle)."""
    return _dumps("fn", fn, by_value=True)


def _dumps(label: str, value: Any, by_value: bool = False) -> bytes:
    """Pickle with the fast standard pickler when the result can be loaded by
    another process; cloudpickle (by value) for lambdas and __main__ code."""
    if not by_value:
        if isinstance(value, (dict, tuple)) and not value:
            return _EMPTY_DICT if isinstance(value, dict) else _EMPTY_TUPLE
        if value is DEFAULT_OPTIONS:
            return _DEFAULT_OPTIONS
        try:
            data = pickle.dumps(value, protocol=_PROTOCOL)
            if b"__main__" not in data:
                return data
        except Exception:
            pass
    try:
        return cloudpickle.dumps(value, protocol=_PROTOCOL)
    except Exception as exc:
        raise TypeError(f"task cannot be stored: {_part_name(label, value)} cannot be "
                        f"pickled ({type(exc).__name__}: {exc})") from exc


def _part_name(label: str, value: Any) -> str:
    """Name the argument that fails, not just 'args'."""
    bad = None
    if label == "args" and isinstance(value, tuple):
        bad = unpicklable_part(None, value, {})
    elif label == "kwargs" and isinstance(value, dict):
        bad = unpicklable_part(None, (), value)
    return bad[0] if bad is not None else f"its {label} {value!r}"


_PROTOCOL = 4  # Python 3.4+: every supported interpreter reads it
_EMPTY_DICT = pickle.dumps({}, protocol=_PROTOCOL)
_EMPTY_TUPLE = pickle.dumps((), protocol=_PROTOCOL)
_DEFAULT_OPTIONS = pickle.dumps(DEFAULT_OPTIONS, protocol=_PROTOCOL)
