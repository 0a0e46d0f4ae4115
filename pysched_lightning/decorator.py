"""The ``@task`` decorator: a function that schedules itself with ``.delay()``."""
from __future__ import annotations

import functools
from typing import Any, Callable, Protocol, Union

__all__ = ["task", "Delayable", "Delayer"]


class Delayer(Protocol):
    """What ``@task`` needs of a scheduler: its ``delay()``."""

    @property
    def delay(self) -> Callable[..., str]: ...


class Delayable(Protocol):
    """A function decorated with ``@task``: still callable, and it schedules
    itself with ``.delay(*args, **kwargs)`` (returning the task id)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...

    def delay(self, *args: Any, **kwargs: Any) -> str: ...


class task:
    """``@task(sched, 'recur', 3, 2)`` — the function gains ``.delay(*a, **kw)``.

    The function stays callable directly; ``fn.delay(...)`` schedules it with
    the decorator's trigger, interval, priority and options, and returns the
    task id.
    """

    def __init__(self, scheduler: Delayer, trigger: str, interval: Any,
                 priority: Union[int, float] = 1, **options: Any) -> None:
        self.scheduler = scheduler
        self.trigger = trigger
        self.interval = interval
        self.priority = priority
        self.options = options

    def __call__(self, fn: Callable[..., Any]) -> Delayable:
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
        return wrapper  # type: ignore[return-value]  # it has delay() now
