"""The scheduler's two clocks: its own (``timefunc``) and the wall clock.

The heap runs on ``timefunc``. Cron and datetime triggers speak wall-clock
time. With the default monotonic ``timefunc`` the wall clock is the system's
(``time.time``), which may step (NTP, suspend): the dispatcher then looks at
it regularly. With an injected ``timefunc`` and no ``wallfunc`` the wall clock
is derived from it, so a virtual clock drives cron schedules too.
"""
from __future__ import annotations

import time
from typing import Callable, Optional

__all__ = ["Clock"]


class Clock:
    """Reads ``now`` and ``wall``; ``offset()`` converts between them."""

    __slots__ = ("now", "wall", "may_step")

    def __init__(self, timefunc: Callable[[], float],
                 wallfunc: Optional[Callable[[], float]] = None) -> None:
        self.now = timefunc
        if wallfunc is not None:
            self.wall = wallfunc
        elif timefunc is time.monotonic:
            self.wall = time.time
        else:
            start, wall_start = timefunc(), time.time()
            self.wall = lambda: wall_start + (timefunc() - start)
        #: True when the wall clock runs on its own and may step against ``now``
        #: (a wall clock that is the scheduler's own clock cannot).
        self.may_step = (wallfunc is not None and wallfunc != timefunc) \
            or timefunc is time.monotonic

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
