"""The only place the tests look inside a scheduler.

Everything else in the suite goes through the public API. Some invariants
have no public reading, though: that the runs held for a paused task are let
go, that every worker slot is free when nothing runs. Each such read is one
small function here, so that when the core's internals move, this file is
the one to adapt.
"""
from __future__ import annotations

from typing import Any


def held_runs(sched: Any) -> int:
    """How many runs the scheduler holds back for paused tasks (or a paused
    scheduler), over all its lanes, finished ones included: a run kept there
    after its task is gone is a leak."""
    state = sched._state
    with state.lock:
        return sum(len(runs) for lane in state.lanes.all() for runs in lane.held.values())

