"""``@client.task``: a function that can also be launched on the service.

The decorated function stays callable here, as itself. Its launch
parameters (delay, hard, lifetimes, priority) are set once with
``set_parameters`` and apply to every later launch, as in SchedulerGodX;
lifetimes left unset follow the client's defaults at launch time.
"""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Callable, Optional

from .messages import Request
from .protocol import check_number, check_priority

if TYPE_CHECKING:  # pragma: no cover
    from .client import Client

__all__ = ["RemoteTask"]


class _Default:
    def __repr__(self) -> str:
        return "<client default>"


#: A lifetime not set on the task: the client's default applies.
CLIENT_DEFAULT: Any = _Default()
_KEEP: Any = object()  # a set_parameters() argument not given


class RemoteTask:
    """A function with a client to launch it; calling it runs it here."""

    def __init__(self, client: "Client", fn: Callable[..., Any]) -> None:
        if not callable(fn):
            raise TypeError(f"@client.task needs a callable, got {fn!r}")
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.client = client
        self._delay: Optional[float] = None
        self._hard = False
        self._task_lifetime: Any = CLIENT_DEFAULT
        self._hard_task_lifetime: Any = CLIENT_DEFAULT
        self._priority = 1

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<RemoteTask {getattr(self.fn, '__qualname__', self.fn)!r} via {self.client!r}>"

    def set_parameters(self, *, delay: Any = _KEEP, hard: Any = _KEEP,
                       task_lifetime: Any = _KEEP, hard_task_lifetime: Any = _KEEP,
                       priority: Any = _KEEP) -> "RemoteTask":
        """Set launch parameters (seconds; None for no delay or no lifetime).
        Checks everything before changing anything; returns the task."""
        changes = {}
        if delay is not _KEEP:
            changes["_delay"] = check_number("delay", delay)
        if hard is not _KEEP:
            if not isinstance(hard, bool):
                raise TypeError(f"hard must be True or False, got {hard!r}")
            changes["_hard"] = hard
        for label, value in (("task_lifetime", task_lifetime),
                             ("hard_task_lifetime", hard_task_lifetime)):
            if value is not _KEEP:
                changes["_" + label] = check_number(label, value, allow_min=False)
        if priority is not _KEEP:
            changes["_priority"] = check_priority(priority)
        self.__dict__.update(changes)
        return self

    @property
    def parameters(self) -> dict:
        """The launch parameters now in force (lifetimes: the task's or the client's)."""
        request = self.request()
        return {"delay": request.delay, "hard": request.hard, "priority": request.priority,
                "lifetime": request.lifetime}

    def request(self, *args: Any, **kwargs: Any) -> Request:
        """The :class:`Request` a launch with these arguments sends."""
        if self._hard:
            lifetime = self._hard_task_lifetime
            if lifetime is CLIENT_DEFAULT:
                lifetime = self.client.hard_task_lifetime
        else:
            lifetime = self._task_lifetime
            if lifetime is CLIENT_DEFAULT:
                lifetime = self.client.task_lifetime
        return Request(self.fn, args, kwargs, delay=self._delay, priority=self._priority,
                       hard=self._hard, lifetime=lifetime,
                       enable_overdue=self.client.enable_overdue)

    def launch(self, *args: Any, **kwargs: Any) -> str:
        """Send ``fn(*args, **kwargs)`` to the service; returns the message id
        once the broker has the message."""
        return self.client.push(self.request(*args, **kwargs))
