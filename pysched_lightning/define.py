"""Making a Task from what ``delay()``, ``modify()`` and ``reschedule()`` are
given, checking every part before anything changes."""
from __future__ import annotations

import functools
import inspect
import math
import types
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from .execution.aioloop import is_coroutine_function
from .records.options import (ASYNC_OPTIONS, DEFAULT_OPTIONS, OPTION_NAMES, TaskOptions,
                              make_options)
from .records.pickles import check_picklable
from .records.runs import safe_repr
from .records.task import Task
from .records.validation import check_args, check_kwargs, check_priority
from .timing.triggers import make_trigger

__all__ = ["build_task", "when_of", "options_of", "check_callable", "check_kind"]

_ASYNC_FLAGS = inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR


def check_callable(fn: Any) -> Callable[..., Any]:
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {fn!r}")
    return fn


def check_kind(fn: Any, hard: Any) -> bool:
    """Refuse what cannot run as asked, naming it; True for a coroutine function."""
    code = getattr(fn, "__code__", None)
    if code is not None and not code.co_flags & _ASYNC_FLAGS:
        return False  # a plain function, the common case: no more to ask
    if type(fn) is types.BuiltinFunctionType:
        return False  # C code: never a coroutine function
    if inspect.isasyncgenfunction(fn):
        raise TypeError(f"fn {safe_repr(fn, 200)} is an async generator function: it "
                        "makes an async iterator, not a result; schedule a coroutine "
                        "function that consumes it")
    is_async = is_coroutine_function(fn)
    if is_async and hard is True:
        raise TypeError(f"fn {safe_repr(fn, 200)} is an async def function: it runs on "
                        "the scheduler's event loop and cannot be a hard task "
                        "(hard=True runs it in a process)")
    return is_async


def options_of(given: Mapping[str, Any], default_timeout: Optional[float],
               fn: Any) -> TaskOptions:
    """The TaskOptions for *given* keyword options (None means: default)."""
    is_async = check_kind(fn, given.get("hard"))
    if default_timeout is None and all(value is None for value in given.values()):
        return ASYNC_OPTIONS if is_async else DEFAULT_OPTIONS
    values = dict(given)
    if values.get("timeout") is None:
        values["timeout"] = default_timeout
    try:
        # keyed by type too: True == 1 == 1.0, but only 1 is a count of retries
        key = tuple((name, type(value), value) for name, value in values.items())
        return _options(key, is_async)
    except TypeError:  # an unhashable value (a list of dependencies): no cache
        return make_options(is_async=is_async, **values)


@functools.lru_cache(maxsize=256)
def _options(values: Tuple[Tuple[str, type, Any], ...], is_async: bool) -> TaskOptions:
    """The same options given again (a task delayed in a loop) share one,
    already checked, TaskOptions (it is never changed in place)."""
    return make_options(is_async=is_async, **{name: value for name, _, value in values})


def when_of(trigger: Any, interval: Any, tz: Any, now: float,
            offset: float) -> Tuple[Any, float]:
    """The trigger object (or 'once' for a plain delay) and the first due
    time on the scheduler's clock."""
    if trigger == "once" and tz is None and type(interval) in (int, float) \
            and 0 <= interval < math.inf:
        return "once", now + interval
    trig = make_trigger(trigger, interval, now=now, wall_now=now + offset, tz=tz)
    if trig.wall_clock:
        return trig, trig.first_due - offset
    return trig, trig.first_due  # it keeps the interval as given (a timedelta...)


def build_task(trigger: Any, interval: Any, priority: Any, fn: Any, args: Any, kwargs: Any,
               options: TaskOptions, task_id: str, seq: int, tz: Any, now: float,
               offset: float, picklable: Any = None) -> Task:
    """A new Task; raises TypeError/ValueError naming the first bad value."""
    if type(priority) is not int:
        priority = check_priority(priority)
    if type(args) is not tuple:
        args = check_args(args)
    kwargs = check_kwargs(kwargs)
    if options.hard:
        check_picklable(fn, args, kwargs, picklable)
    if trigger == "once" and tz is None and type(interval) in (int, float) \
            and 0 <= interval < math.inf:  # a plain delay, the common case
        when, due = "once", now + interval
    else:
        when, due = when_of(trigger, interval, tz, now, offset)
    return tuple.__new__(Task, (due, priority, seq, task_id, when, interval, fn, args,
                                kwargs, options))


def changed_task(old: Task, changes: Dict[str, Any]) -> Task:
    """*old* with ``modify()``'s *changes* (checked as ``delay()`` checks them)."""
    unknown = sorted(set(changes) - _MODIFIABLE)
    if unknown:
        raise TypeError(f"modify() got unknown option {unknown[0]!r}; "
                        f"allowed: {', '.join(sorted(_MODIFIABLE))}")
    fn = check_callable(changes.get("fn", old.fn))
    merged = {name: getattr(old.options, name) for name in OPTION_NAMES}
    merged["depend_on"] = merged["depend_on"] or None
    merged.update({k: v for k, v in changes.items() if k in merged})
    options = make_options(is_async=check_kind(fn, merged["hard"]), **merged)
    priority = changes.get("priority", old.priority)
    if type(priority) is not int:
        priority = check_priority(priority)
    args = check_args(changes.get("args", old.args))
    kwargs = check_kwargs(changes.get("kwargs", old.kwargs))
    if options.hard:
        check_picklable(fn, args, kwargs)
    return Task(old.time, priority, old.seq, old.id, old.when, old.interval, fn, args,
                kwargs, options)


_MODIFIABLE = frozenset({"priority", "fn", "args", "kwargs", "name", "timeout", "retries",
                         "retry_delay", "retry_backoff", "misfire_grace_time", "coalesce",
                         "max_instances"})
