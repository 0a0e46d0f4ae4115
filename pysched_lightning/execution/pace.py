"""How long functions take in worker processes: which hard runs may share a message.

Each message to a worker process costs this process tens of microseconds
(pickling, the pipe, the pool's threads waking): more than a quick task
takes to run there. Runs of a function whose last run took at most
``QUICK_SECONDS`` in its worker are sent together, up to ``BATCH_SIZE`` in
one message; there they run one after another, and each run's outcome comes
back when the last one of its message ends: a few milliseconds late at
most, as long as the function stays quick. A run of any other function
(one not seen yet, a slow one) goes alone, so it never holds back another's
outcome. A function is known by its code, whatever its arguments: the last
run stands for the next.
"""
from __future__ import annotations

import functools
import types
import weakref
from typing import Any, Dict, List, Optional

__all__ = ["Pace", "QUICK_SECONDS", "BATCH_SIZE"]

#: A function whose last run took at most this long in a worker is quick.
QUICK_SECONDS = 0.0005
#: At most this many runs of quick functions in one message.
BATCH_SIZE = 8
#: Functions remembered; past that, the record starts afresh.
_REMEMBERED = 4096


class Pace:
    """The last run time in a worker of each function seen (by its code).

    Written by the thread that hears outcomes, read by those that send;
    each step is one dictionary operation, atomic under the GIL.
    """

    def __init__(self) -> None:
        #: id of what a call runs (see _identity_of) -> [weak reference to it,
        #: seconds of its last run]; the reference tells it from a later
        #: object at the same id.
        self._last: Dict[int, List[Any]] = {}

    def __len__(self) -> int:
        """How many functions are remembered."""
        return len(self._last)

    def note(self, fn: Any, seconds: Optional[float]) -> None:
        """*fn*'s run took *seconds* in a worker (None: it never ran there)."""
        what = _identity_of(fn)
        if what is None or seconds is None:
            return
        entry = self._last.get(id(what))
        if entry is not None and entry[0]() is what:
            entry[1] = seconds
            return
        try:
            ref = weakref.ref(what)
        except TypeError:  # cannot be told from a later object: not remembered
            return
        if len(self._last) >= _REMEMBERED:
            self._last.clear()
        self._last[id(what)] = [ref, seconds]

    def quick(self, fn: Any) -> bool:
        """True when *fn*'s last run in a worker took at most QUICK_SECONDS."""
        what = _identity_of(fn)
        entry = None if what is None else self._last.get(id(what))
        return entry is not None and entry[1] <= QUICK_SECONDS and entry[0]() is what


def _identity_of(fn: Any) -> Any:
    """What a call of *fn* runs, found without running any of the caller's
    code: a function's code object (through partials and methods), else the
    callable itself (a builtin, or a callable object: two objects of one
    class may do very different work)."""
    for _ in range(8):  # partials of partials, not forever
        kind = type(fn)
        if kind is types.FunctionType:
            return fn.__code__
        if kind is functools.partial:
            fn = fn.func
        elif kind is types.MethodType:
            fn = fn.__func__
        else:
            return fn
    return None
