"""Checks of what delay() and modify() are given: each raises TypeError or
ValueError naming the bad value, before anything changes."""
from __future__ import annotations

import datetime as _dt
import math
from typing import Any, Mapping, NoReturn, Optional, Tuple

__all__ = ["EMPTY_KWARGS", "check_priority", "check_args", "check_kwargs", "check_seconds",
           "check_depend_on"]


class _NoKwargs(dict[str, Any]):
    """The kwargs of tasks given none: one shared, read-only empty dict."""

    def _read_only(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("a task's kwargs cannot be changed in place; use modify()")

    __setitem__ = __delitem__ = update = setdefault = pop = popitem = clear = _read_only

    def __reduce__(self) -> Any:
        return (dict, ())


EMPTY_KWARGS: Mapping[str, Any] = _NoKwargs()


def check_priority(priority: object) -> float:
    if isinstance(priority, bool) or not isinstance(priority, (int, float)) \
            or priority != priority:
        raise TypeError(f"priority must be a number, got {priority!r}")
    return priority


def check_args(args: object) -> Tuple[Any, ...]:
    if type(args) is tuple:
        return args
    if isinstance(args, (list, tuple)):
        return tuple(args)
    raise TypeError(f"args must be a tuple or list, got {args!r}")


def check_kwargs(kwargs: object) -> Mapping[str, Any]:
    if not kwargs:
        if kwargs is None or isinstance(kwargs, Mapping):
            return EMPTY_KWARGS
    elif isinstance(kwargs, Mapping):
        bad = [key for key in kwargs if not isinstance(key, str)]
        if bad:
            raise TypeError(f"kwargs keys must be str, got {bad[0]!r}")
        return dict(kwargs)
    raise TypeError(f"kwargs must be a dict, got {kwargs!r}")


def check_seconds(label: str, value: object, allow_zero: bool = False) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, _dt.timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{label} must be a number of seconds, got {value!r}")
    if not (value > 0 or (allow_zero and value == 0)) or value == math.inf:
        raise ValueError(f"{label} must be a positive number of seconds, got {value!r}")
    return float(value)


def check_depend_on(depend_on: Any) -> Tuple[str, ...]:
    if depend_on is None:
        return ()
    if isinstance(depend_on, str):
        return (depend_on,)
    try:
        deps = tuple(depend_on)
    except TypeError:
        raise TypeError(f"depend_on must be a task id or a list of them, "
                        f"got {depend_on!r}") from None
    bad = [d for d in deps if not isinstance(d, str)]
    if bad:
        raise TypeError(f"depend_on must hold task ids (str), got {bad[0]!r}")
    return deps
