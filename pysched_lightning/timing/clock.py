"""The scheduler's two clocks: its own (``timefunc``) and the wall clock.

The heap runs on ``timefunc``. Cron and datetime triggers speak wall-clock
time. With the default monotonic ``timefunc`` the wall clock is the system's
(``time.time``), which may step (NTP, suspend): the dispatcher then looks at
it regularly. With an injected ``timefunc`` and no ``wallfunc`` the wall clock
is derived from it, so a virtual clock drives cron schedules too.
"""
from __future__ import annotations

import time
from typing import Callable, List, Optional

__all__ = ["Clock"]


class _Steady:
    """A clock function given by the user, read so that a failing reading
    cannot break the scheduler halfway through a change: it gives the last
    good reading instead, and keeps the error for the dispatcher to log."""

    __slots__ = ("func", "last", "errors")

    def __init__(self, func: Callable[[], float], label: str) -> None:
        self.func = func
        self.last = _reading(func, label)
        self.errors: List[BaseException] = []

    def __call__(self) -> float:
        try:
            value = self.func()
        except Exception as exc:
            if len(self.errors) < 100:
                self.errors.append(exc)
            return self.last
        self.last = value
        return value


def _reading(func: Callable[[], float], label: str) -> float:
    """One reading of a clock function, refused unless it is a finite number."""
    value = func()
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or value != value or value in (float("inf"), float("-inf")):
        raise TypeError(f"{label} must return a finite number of seconds, got {value!r}")
    return float(value)


class Clock:
    """Reads ``now`` and ``wall``; ``offset()`` converts between them."""

    __slots__ = ("now", "wall", "may_step")

    def __init__(self, timefunc: Callable[[], float],
                 wallfunc: Optional[Callable[[], float]] = None) -> None:
        if timefunc is not time.monotonic:
            timefunc = _Steady(timefunc, "timefunc")
        self.now: Callable[[], float] = timefunc
        self.wall: Callable[[], float]
        if wallfunc is not None:
            self.wall = _Steady(wallfunc, "wallfunc")
        elif timefunc is time.monotonic:
            self.wall = time.time
        else:
            start, wall_start = timefunc(), time.time()
            self.wall = lambda: wall_start + (timefunc() - start)
        #: True when the wall clock runs on its own and may step against ``now``
        #: (a wall clock that is the scheduler's own clock cannot).
        self.may_step = (wallfunc is not None
                         and wallfunc != getattr(timefunc, "func", timefunc)) \
            or timefunc is time.monotonic

    def take_errors(self) -> List[BaseException]:
        """The errors the user's clock functions raised since last asked."""
        errors: List[BaseException] = []
        for func in (self.now, self.wall):
            if isinstance(func, _Steady) and func.errors:
                errors.extend(func.errors)
                func.errors.clear()
        return errors

    def offset(self) -> float:
        """wall − now: add it to a scheduler time to get a wall time.

        Read between two readings of ``now``, three times, keeping the
        tightest: a thread switch between the two clock reads would otherwise
        put the offset off by that long, and cron jobs would fire that early.
        """
        now, wall = self.now, self.wall
        best_span, best = float("inf"), 0.0
        for _ in range(3):
            before = now()
            at = wall()
            after = now()
            if after - before < best_span:
                best_span, best = after - before, at - (before + after) / 2
        return best
