"""The Task record: one scheduled occurrence of a task's definition.

A Task is an immutable named tuple ordered as the timer heap wants it
(time, priority, seq, ...): the heap compares tasks in C, and a pending task
costs no extra heap entry. A recurring task gets a new Task, with the next
due time, each time it fires, as upstream's namedtuple did.
"""
from __future__ import annotations

import types
from collections import namedtuple
from functools import partial
from typing import Any, Callable, Mapping, Optional, Tuple, Union

from .options import TaskOptions
from .protocols import Trigger

__all__ = ["Task", "callable_name", "task_label"]

#: Callables whose name is read without running user code (an object's
#: ``name`` or ``__qualname__`` may be a property).
_PLAIN_CALLABLES = (types.FunctionType, types.MethodType, types.BuiltinFunctionType)

_TaskFields = namedtuple("_TaskFields",
                         "time priority seq id when interval fn args kwargs options")


class Task(_TaskFields):
    """A scheduled task, with upstream's fields as attributes.

    ``trigger`` is the trigger's name ('once', 'recur', 'cron'), ``interval``
    what was given for it, ``time`` the next due time on the scheduler's
    clock, ``priority`` lower-is-more-urgent, ``seq`` the order of
    scheduling (FIFO among equals). ``when`` is the trigger object, or the
    string 'once' for a plain delay (it needs no object).
    """

    __slots__ = ()

    time: float
    priority: Union[int, float]
    seq: int
    id: str
    when: Union[str, Trigger]
    interval: Any
    fn: Callable[..., Any]
    args: Tuple[Any, ...]
    kwargs: Mapping[str, Any]
    options: TaskOptions

    @property
    def trigger(self) -> str:
        when = self.when
        return when if type(when) is str else when.name  # type: ignore[union-attr]

    @property
    def schedule(self) -> Optional[Trigger]:
        """The trigger object, or None for a one-shot given as a delay."""
        when = self.when
        return None if type(when) is str else when  # type: ignore[return-value]

    @property
    def name(self) -> str:
        """The name given to delay(), else the function's. May run user code
        (a callable's ``name``/``__qualname__``): never read under a lock."""
        return self.options.name or callable_name(self.fn)

    @property
    def label(self) -> str:
        """How log lines name this task (see :func:`task_label`). Safe under
        a lock: a callable's name is read only when that runs no user code."""
        name = self.options.name
        if name is None:
            fn = self.fn
            while type(fn) is partial:
                fn = fn.func
            if type(fn) in _PLAIN_CALLABLES:  # (their attributes are plain data)
                name = callable_name(fn)
        return task_label(self.id, name)

    def at(self, time: float, seq: int) -> "Task":
        """This task due at another time (a recurring task's next run)."""
        # The tuple is built directly: _replace() costs several times more,
        # and this runs at every firing of a recurring task.
        return tuple.__new__(Task, (time, self.priority, seq) + self[3:])

    def __repr__(self) -> str:
        return (f"Task(id={self.id!r}, trigger={self.trigger!r}, "
                f"interval={self.interval!r}, time={self.time!r}, "
                f"priority={self.priority!r}, fn={callable_name(self.fn)})")


def callable_name(fn: Any) -> str:
    """A readable name for a task's callable (a command's own name first)."""
    try:
        name = getattr(fn, "name", None)
        if isinstance(name, str):
            return name
        func = getattr(fn, "func", None)  # functools.partial
        if func is not None and getattr(fn, "args", None) is not None:
            return callable_name(func)
        found = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
        return found if isinstance(found, str) else type(fn).__name__
    except Exception:  # a hostile property must not break a listing
        return type(fn).__name__


def task_label(task_id: str, name: Optional[str] = None) -> str:
    """How log lines name a task: ``task 'scrape the site' (860c4d-3)``, or
    ``task '860c4d-3'`` when it has no other name; a bare id says little to
    people who named their tasks."""
    if name and name != task_id:
        return f"task {name!r} ({task_id})"
    return f"task {task_id!r}"
