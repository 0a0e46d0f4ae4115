"""The scheduler's two clocks: its own (``timefunc``) and the wall clock.

The heap runs on ``timefunc``. Cron and datetime triggers speak wall-clock
time; with the default monotonic ``timefunc`` the wall clock is the real one
(so a step of it can be noticed), with an injected ``timefunc`` it is derived
from it, so a virtual clock drives cron schedules too.
"""
from __future__ import annotations

import time
from typing import Callable

__all__ = ["Clock"]


class Clock:
    """Reads ``now`` and ``wall``, and converts wall instants to ``now``'s scale."""

    __slots__ = ("now", "wall", "real")

    def __init__(self, timefunc: Callable[[], float]) -> None:
        self.now = timefunc
        #: True when the wall clock is the system's and may step on its own.
        self.real = timefunc is time.monotonic
        if self.real:
            self.wall = time.time
        else:
            start, wall_start = timefunc(), time.time()
            self.wall = lambda: wall_start + (timefunc() - start)

    def offset(self) -> float:
        """wall − now: add it to a scheduler time to get a wall time."""
        return self.wall() - self.now()
