"""Turning tasks and runs into store records and back.

A function is kept by import reference (``module:qualname``) when importing
that name gives back the very same object, else by value with cloudpickle;
arguments, options and triggers are pickled. A task that cannot be stored is
refused at ``delay()`` with a TypeError naming the part that failed. All of
this runs user code (pickling, ``repr``): never under the state lock.
"""
from __future__ import annotations

import datetime as _dt
import importlib
import json
import math
import pickle
import uuid
from typing import Any, Callable, Dict, Optional, Tuple

import cloudpickle

from ..records.options import DEFAULT_OPTIONS, TaskOptions
from ..records.pickles import loads as _loads
from ..records.pickles import unpicklable_part
from ..records.protocols import TaskRecord
from ..records.runs import Run, TaskStatus, error_line, outcome_bytes, safe_repr
from ..records.task import Task, callable_name

__all__ = ["task_record", "load_function", "load_args", "load_options", "load_schedule",
           "info_options", "stored_options",
           "run_record", "scheduler_time", "slot_of", "slot_offset", "function_reference",
           "task_info"]


def task_record(task: Task, next_run: Optional[float], now_wall: float) -> TaskRecord:
    """The store record of *task* due at wall time *next_run* (None: none)."""
    fn = task.fn
    ref = function_reference(fn)
    return TaskRecord(
        id=task.id, name=task.name, trigger=task.trigger,
        interval=_interval_text(task.interval), priority=task.priority,
        fn_ref=ref, fn_pickle=None if ref else _dumps_function(fn),
        args=_dumps("args", task.args), kwargs=_dumps("kwargs", task.kwargs),
        # the shared defaults are stored as NULL: a short row is a fast write
        options=None if task.options is DEFAULT_OPTIONS else _dumps("options", task.options),
        schedule=None if task.schedule is None else _dumps("trigger", task.schedule),
        next_run=next_run, created=now_wall, updated=now_wall, info=task_info(task))


def task_info(task: Task) -> str:
    """What a reader of the store (the dashboard, ``pysched list``) shows of a
    task without unpickling anything: its call, schedule, zone and options
    (left out when they are the defaults: see :func:`info_options`)."""
    schedule = task.schedule
    zone = getattr(schedule, "zone", None)
    info = {
        "call": call_text(task.fn, task.args, task.kwargs),
        "schedule": schedule.describe() if schedule is not None else "once",
        "tz": getattr(zone, "key", None) or (str(zone) if zone is not None else None),
    }
    if task.options is not DEFAULT_OPTIONS:
        info["options"] = task.options.as_dict()
    return json.dumps(info, default=str)


def info_options(info: Dict[str, Any]) -> Dict[str, Any]:
    """The options a task's stored info shows (the defaults when it has none)."""
    options = info.get("options")
    return options if isinstance(options, dict) else DEFAULT_OPTIONS.as_dict()


def stored_options(record: TaskRecord) -> bytes:
    """A record's pickled options (NULL in the store: the defaults)."""
    return _DEFAULT_OPTIONS if record.options is None else record.options


def call_text(fn: Any, args: Tuple[Any, ...], kwargs: Any, limit: int = 500) -> str:
    """``module.function(arg, key=value)``, each part a safe, short repr."""
    module = getattr(fn, "__module__", None)
    if isinstance(getattr(fn, "__qualname__", None), str) and isinstance(module, str):
        head = f"{module}.{callable_name(fn)}"
    else:
        head = safe_repr(fn, 200)
    parts = [safe_repr(arg, 100) for arg in args]
    parts += [f"{key}={safe_repr(value, 100)}" for key, value in dict(kwargs).items()]
    text = f"{head}({', '.join(parts)})"
    return text if len(text) <= limit else text[:limit] + "..."


def slot_of(run: Run, offset: float) -> str:
    """The key that names *run*'s occurrence in the store (with its
    attempt): the wall time of its slot, or a fresh name for a manual run.
    *offset* is the scheduler's wall - scheduler clock offset now."""
    if run.manual:
        return f"now:{uuid.uuid4().hex}"
    return slot_at(run.task, run._t_scheduled, offset)


def slot_at(task: Task, scheduled: float, offset: float) -> str:
    """The key of *task*'s occurrence due at *scheduled* (scheduler clock)."""
    return slot_named(scheduled + slot_offset(task, offset), task.when)


def slot_named(wall: float, when: Any) -> str:
    """The key of the occurrence of trigger *when* at *wall* (its wall
    time): ``1764500000.123``, or ``1764500000.123/2`` for an instant that
    comes a second time after the wall clock stepped back (a wildcard cron
    job's; see ``CronTrigger.repeating``)."""
    on_grid = getattr(when, "wall_slot", None)
    if on_grid is not None:
        wall = on_grid(wall)
    key = f"{wall:.3f}"
    if wall <= getattr(when, "repeat_until", _NEVER):
        return f"{key}/{when.repeat_pass}"
    return key


def scheduler_time(wall: float, offset: float) -> float:
    """The scheduler time whose wall time (``+ offset``) is *wall* itself, not
    a rounding off it: a task loaded from the store then names its slot
    exactly as the node that stored *wall* did (its claim is found)."""
    due = wall - offset
    for _ in range(3):
        miss = (due + offset) - wall
        if not miss:
            break
        due -= miss
    return due


def slot_pass(slot: str) -> int:
    """The pass of a slot named by :func:`slot_named` (1: the first)."""
    _, _, passes = slot.partition("/")
    return int(passes) if passes.isdigit() else 1


def slot_offset(task: Task, offset: float) -> float:
    """The offset that turns *task*'s times into the wall times that name its
    slots: a recurring grid's own, fixed when it was laid (so a wall clock
    that steps back cannot make two slots one), else *offset*."""
    return getattr(task.when, "wall_offset", offset)


def run_record(run: Run) -> Dict[str, Any]:
    """A run as the store and the run log keep it (wall-clock times)."""
    offset = run._offset
    return {
        "task_id": run.task_id, "name": run.name, "run": run.run_number,
        "attempt": run.attempt, "slot": run._slot, "status": int(run.status),
        "scheduled": _plus(run._t_scheduled, offset),
        "started": _plus(run._t_started, offset),
        "finished": _plus(run._t_finished, offset),
        "duration": run.duration, "exit_code": run.exit_code,
        "result": safe_repr(run.result) if run.status is TaskStatus.COMPLETED else None,
        "error": run.error, "traceback": run.traceback, "output": run.output,
        "stderr": run.stderr, "reason": run.reason, "count": run.count,
        "outcome": outcome_bytes(run),
    }


def _plus(t: Optional[float], offset: float) -> Optional[float]:
    return None if t is None else t + offset


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
    return _loads(record.fn_pickle)


def load_args(record: TaskRecord) -> Any:
    return _loads(record.args), _loads(record.kwargs)


def load_options(record: TaskRecord) -> TaskOptions:
    return DEFAULT_OPTIONS if record.options is None else _loads(record.options)


def load_schedule(record: TaskRecord) -> Any:
    return None if record.schedule is None else _loads(record.schedule)


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
                        f"pickled ({error_line(exc)})") from exc


def _part_name(label: str, value: Any) -> str:
    """Name the argument that fails, not just 'args'."""
    bad = None
    if label == "args" and isinstance(value, tuple):
        bad = unpicklable_part(None, value, {})
    elif label == "kwargs" and isinstance(value, dict):
        bad = unpicklable_part(None, (), value)
    return bad[0] if bad is not None else f"its {label} {safe_repr(value, 200)}"




_PROTOCOL = 4  # Python 3.4+: every supported interpreter reads it
_NEVER = -math.inf  # (a trigger whose instants never came twice)
_EMPTY_DICT = pickle.dumps({}, protocol=_PROTOCOL)
_EMPTY_TUPLE = pickle.dumps((), protocol=_PROTOCOL)
_DEFAULT_OPTIONS = pickle.dumps(DEFAULT_OPTIONS, protocol=_PROTOCOL)
