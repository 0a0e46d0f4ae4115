"""The scheduler's two clocks: due times are kept on ``timefunc``, cron
times are read on the wall clock (``wallfunc``), and when the wall clock
steps, cron times are re-derived from it (README, "Clocks")."""
from __future__ import annotations

import math
from datetime import datetime, timezone

import pysched_lightning as psl
from conftest import InlineExecutor, VirtualClock, wait_for


class SteppingWallClock:
    """A wall clock that follows a virtual scheduler clock, and can be set
    back or forward as NTP or an administrator would."""

    def __init__(self, mono, start):
        self.mono = mono
        self.offset = start - mono.now()

    def now(self):
        return self.offset + self.mono.now()

    def step(self, seconds):
        self.offset += seconds


def test_a_wildcard_cron_keeps_firing_on_the_wall_clock_after_it_steps_back_an_hour():
    """Stepping the wall clock back 1 h shifted the stored due times of cron
    tasks by an hour instead of re-deriving them: '*/10 * * * * *' stayed
    silent for the length of the step. It runs at every wall-clock instant
    its expression matches, on the wall clock as it reads after the step."""
    mono = VirtualClock(0.0)
    wall = SteppingWallClock(mono, datetime(2030, 1, 1, 12, 0, 3, tzinfo=timezone.utc)
                             .timestamp())
    runs, step = [], {}
    sched = psl.Scheduler(executor=InlineExecutor(), timefunc=mono.now,
                          delayfunc=mono.sleep, wallfunc=wall.now)
    sched.delay('cron', '*/10 * * * * *', 1, lambda: runs.append(wall.now()), tz='UTC')

    def step_back():
        wall.step(-3600)  # 12:00:38 reads 11:00:38 from now on
        step.update(wall=wall.now(), runs=len(runs))

    sched.delay('once', 35, 1, step_back)
    sched.start()
    try:
        wait_for(lambda: step and len(runs) >= step["runs"] + 6)
    finally:
        sched.shutdown()
    first = math.floor(step["wall"] / 10) * 10 + 10  # the next */10 instant after the step
    after = runs[step["runs"]:step["runs"] + 6]
    assert [_utc(t) for t in after] == [_utc(first + 10 * k) for k in range(6)]


def _utc(seconds):
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%H:%M:%S")
