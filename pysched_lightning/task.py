"""The Task record, its options, and the ``@task`` decorator.

A Task is an immutable tuple ordered as the timer heap wants it
(time, priority, seq, ...), so the heap compares tasks in C and a pending
task costs no extra heap entry. A recurring task gets a new Task, with the
next due time, each time it fires, as upstream's namedtuple did.
"""
from __future__ import annotations

import functools
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Tuple

if TYPE_CHECKING:  # pragma: no cover
    from .scheduler import Scheduler

__all__ = ["Task", "TaskOptions", "task"]


class TaskOptions:
    """Per-task policy; tasks without options share one default instance."""

    __slots__ = ("name", "timeout", "retries", "retry_delay", "retry_backoff",
                 "misfire_grace_time", "coalesce", "max_instances", "hard",
                 "depend_on")

    def __init__(self, name: Optional[str] = None, timeout: Optional[float] = None,
                 retries: int = 0, retry_delay: float = 0.0, retry_backoff: float = 1.0,
                 misfire_grace_time: Optional[float] = None, coalesce: bool = True,
                 max_instances: int = 1, hard: bool = False,
                 depend_on: Tuple[str, ...] = ()) -> None:
        self.name = name
        self.timeout = timeout
        self.retries = retries
        self.retry_delay = retry_delay
        self.retry_backoff = retry_backoff
        self.misfire_grace_time = misfire_grace_time
        self.coalesce = coalesce
        self.max_instances = max_instances
        self.hard = hard
        self.depend_on = depend_on

    def _values(self) -> Tuple[Any, ...]:
        return tuple(getattr(self, slot) for slot in self.__slots__)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TaskOptions):
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        fields = ", ".join(f"{s}={getattr(self, s)!r}" for s in self.__slots__)
        return f"TaskOptions({fields})"


DEFAULT_OPTIONS = TaskOptions()


class Task(tuple):
    """A scheduled task, with upstream's fields as attributes.

    ``trigger`` is the trigger's name ('once', 'recur', 'cron'), ``interval``
    what was given for it, ``time`` the next due time on the scheduler's
    clock. ``schedule`` is the trigger object (None for a one-shot delay).
    """

    __slots__ = ()
    _fields = ("trigger", "interval", "time", "priority", "fn", "args", "kwargs", "id")

    def __new__(cls, time: float, priority: int, seq: int, id: str, trigger: Any,
                interval: Any, fn: Callable[..., Any], args: Tuple[Any, ...],
                kwargs: Dict[str, Any], options: TaskOptions) -> "Task":
        return tuple.__new__(cls, (time, priority, seq, id, trigger, interval,
                                   fn, args, kwargs, options))

    time = property(itemgetter(0), doc="Next due time on the scheduler's clock.")
    priority = property(itemgetter(1), doc="Lower is more urgent.")
    seq = property(itemgetter(2), doc="Order of scheduling, for FIFO among equals.")
    id = property(itemgetter(3), doc="The task id.")
    interval = property(itemgetter(5), doc="The interval as given to delay().")
    fn = property(itemgetter(6))
    args = property(itemgetter(7))
    kwargs = property(itemgetter(8))
    options = property(itemgetter(9))

    @property
    def trigger(self) -> str:
        trig = self[4]
        return trig if type(trig) is str else trig.name

    @property
    def schedule(self) -> Any:
        """The trigger object, or None for a one-shot given as a delay."""
        trig = self[4]
        return None if type(trig) is str else trig

    @property
    def name(self) -> str:
        return self[9].name or _callable_name(self[6])

    def at(self, time: float, seq: int) -> "Task":
        """This task due at another time (a recurring task's next run)."""
        return tuple.__new__(Task, (time, self[1], seq) + self[3:])

    def _asdict(self) -> Dict[str, Any]:
        return {field: getattr(self, field) for field in self._fields}

    def __repr__(self) -> str:
        return (f"Task(id={self.id!r}, trigger={self.trigger!r}, interval={self.interval!r}, "
                f"time={self.time!r}, priority={self.priority!r}, fn={self.name})")

    def __reduce__(self):
        return (_rebuild_task, (tuple(self),))


def _rebuild_task(fields: Tuple[Any, ...]) -> Task:
    return tuple.__new__(Task, fields)


def _callable_name(fn: Any) -> str:
    name = getattr(fn, "name", None)
    if isinstance(name, str):
        return name
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)


class task:
    """``@task(sched, 'recur', 3, 2)`` — the function gains ``.delay(*a, **kw)``.

    The function stays callable directly; ``fn.delay(...)`` schedules it with
    the decorator's trigger, interval, priority and options, and returns the
    task id.
    """

    def __init__(self, scheduler: "Scheduler", trigger: str, interval: Any,
                 priority: int = 1, **options: Any) -> None:
        self.scheduler = scheduler
        self.trigger = trigger
        self.interval = interval
        self.priority = priority
        self.options = options

    def __call__(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        if not callable(fn):
            raise TypeError(f"@task must decorate a callable, got {fn!r}")
        spec = self

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return fn(*args, **kwargs)

        def delay(*args: Any, **kwargs: Any) -> str:
            return spec.scheduler.delay(spec.trigger, spec.interval, spec.priority,
                                        fn, args, kwargs, **spec.options)

        wrapper.delay = delay  # type: ignore[attr-defined]
        return wrapper
