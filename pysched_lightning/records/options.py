"""A task's options (timeout, retries, misfire policy...), checked once.

``make_options`` is the one place where ``delay()``, ``modify()`` and
``@task`` options are validated: every path through ``delay()`` uses it
unless no option was given at all, so validation never depends on the path.
"""
from __future__ import annotations

import enum
import math
from typing import Any, Dict, Optional, Tuple

from .validation import check_depend_on, check_seconds

__all__ = ["LaneKind", "TaskOptions", "DEFAULT_OPTIONS", "make_options", "OPTION_NAMES"]


class LaneKind(enum.Enum):
    """Where a task's runs execute."""

    #: The scheduler's executor (a thread pool by default).
    THREADS = "threads"
    #: A process: ``hard=True``.
    PROCESSES = "processes"
    #: The scheduler's event loop: ``async def`` functions.
    ASYNC = "async"


class TaskOptions:
    """Per-task policy; tasks given no options share one default instance."""

    __slots__ = ("name", "timeout", "retries", "retry_delay", "retry_backoff",
                 "misfire_grace_time", "coalesce", "max_instances", "hard",
                 "depend_on", "lane")

    def __init__(self, name: Optional[str] = None, timeout: Optional[float] = None,
                 retries: int = 0, retry_delay: float = 0.0, retry_backoff: float = 1.0,
                 misfire_grace_time: Optional[float] = None, coalesce: bool = True,
                 max_instances: int = 1, hard: bool = False,
                 depend_on: Tuple[str, ...] = (), lane: LaneKind = LaneKind.THREADS) -> None:
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
        self.lane = lane

    def retry_wait(self, attempt: int) -> float:
        """Seconds before attempt ``attempt + 1``, after attempt ``attempt`` failed."""
        return _retry_wait(self.retry_delay, self.retry_backoff, attempt)

    def as_dict(self) -> Dict[str, Any]:
        """The options as plain values (for display and the store's info)."""
        values = {slot: getattr(self, slot) for slot in self.__slots__}
        values["depend_on"] = list(self.depend_on)
        values["lane"] = self.lane.value
        return values

    def _values(self) -> Tuple[Any, ...]:
        return tuple(getattr(self, slot) for slot in self.__slots__)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TaskOptions):
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __setstate__(self, state: Any) -> None:
        # Options pickled by an older version lack the newer slots: defaults.
        self.__init__()  # type: ignore[misc]
        slots = state[1] if isinstance(state, tuple) else state
        for key, value in (slots or {}).items():
            setattr(self, key, value)

    def __getstate__(self) -> Any:
        return (None, {slot: getattr(self, slot) for slot in self.__slots__})

    def __repr__(self) -> str:
        fields = ", ".join(f"{s}={getattr(self, s)!r}" for s in self.__slots__)
        return f"TaskOptions({fields})"


DEFAULT_OPTIONS = TaskOptions()
ASYNC_OPTIONS = TaskOptions(lane=LaneKind.ASYNC)

#: The keywords of delay() that make a TaskOptions.
OPTION_NAMES = ("name", "hard", "timeout", "retries", "retry_delay", "retry_backoff",
                "misfire_grace_time", "coalesce", "max_instances", "depend_on")

#: The longest wait before a retry: a backoff that grows past it is refused.
MAX_RETRY_WAIT = 10 * 365 * 86400.0


def make_options(*, name: Any = None, hard: Any = None, timeout: Any = None,
                 retries: Any = None, retry_delay: Any = None, retry_backoff: Any = None,
                 misfire_grace_time: Any = None, coalesce: Any = None,
                 max_instances: Any = None, depend_on: Any = None,
                 is_async: bool = False) -> TaskOptions:
    """Validate delay()'s options (None = the default) into a TaskOptions."""
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a str, got {name!r}")
    hard = _flag("hard", hard, False)
    coalesce = _flag("coalesce", coalesce, True)
    retries = _count("retries", retries, 0, minimum=0)
    max_instances = _count("max_instances", max_instances, 1, minimum=1)
    retry_delay = check_seconds("retry_delay", retry_delay, allow_zero=True) or 0.0
    if retry_backoff is None:
        retry_backoff = 1.0
    elif isinstance(retry_backoff, bool) or not isinstance(retry_backoff, (int, float)) \
            or not 1 <= retry_backoff < math.inf:
        raise ValueError(f"retry_backoff must be a number >= 1, got {retry_backoff!r}")
    if retries and _retry_wait(retry_delay, float(retry_backoff), retries) > MAX_RETRY_WAIT:
        raise ValueError(f"retry_delay={retry_delay!r} with retry_backoff={retry_backoff!r} "
                         f"makes the wait before retry {retries} longer than ten years")
    if hard and is_async:
        raise TypeError("an async def function cannot be a hard task: a coroutine runs on "
                        "the scheduler's event loop, not in a process")
    lane = LaneKind.PROCESSES if hard else LaneKind.ASYNC if is_async else LaneKind.THREADS
    return TaskOptions(
        name=name, timeout=check_seconds("timeout", timeout), retries=retries,
        retry_delay=retry_delay, retry_backoff=float(retry_backoff),
        misfire_grace_time=check_seconds("misfire_grace_time", misfire_grace_time,
                                         allow_zero=True),
        coalesce=coalesce, max_instances=max_instances, hard=hard,
        depend_on=check_depend_on(depend_on), lane=lane)


def _flag(label: str, value: Any, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise TypeError(f"{label} must be True or False, got {value!r}")
    return value


def _count(label: str, value: Any, default: int, minimum: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{label} must be an int >= {minimum}, got {value!r}")
    return value


def _retry_wait(delay: float, backoff: float, attempt: int) -> float:
    if delay == 0:
        return 0.0
    try:
        return delay * backoff ** (attempt - 1)
    except OverflowError:
        return math.inf
