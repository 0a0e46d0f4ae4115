"""The only place where tests look inside a scheduler.

Some invariants cannot be seen through the public API: "with nothing
running, every worker slot is free", "the runs held for a paused task are
let go", "the internal collections stay bounded". Every such read is a
small function here, so that when the core's internals move only this file
changes, not the tests that use it.
"""
from __future__ import annotations

import sys
import threading
import traceback
from typing import Any, Dict, Tuple


def held_runs(sched: Any) -> int:
    """How many runs the scheduler holds back for paused tasks (or a paused
    scheduler), over all its lanes, finished ones included: a run kept there
    after its task is gone is a leak."""
    state = sched._state
    with state.lock:
        return sum(len(runs) for lane in state.lanes.all() for runs in lane.held.values())


def free_slots(sched: Any) -> Dict[str, Tuple[int, int]]:
    """``{lane: (free slots, capacity)}`` for each lane that counts its
    slots (a lane whose executor sets no limit is left out)."""
    st = sched._state
    with st.lock:
        lanes = {kind.value: lane for kind, lane in st.lanes._lanes.items()}
        return {name: (lane.capacity - lane.used, lane.capacity)
                for name, lane in lanes.items() if lane.capacity is not None}


def leaked_slots(sched: Any) -> Dict[str, Tuple[int, int]]:
    """The lanes whose slots are not all free, as ``{lane: (free, capacity)}``.
    Only meaningful while nothing runs and nothing waits for a worker."""
    return {name: (free, capacity) for name, (free, capacity) in free_slots(sched).items()
            if free != capacity}


def runs_going(sched: Any) -> int:
    """How many runs the scheduler counts as executing now (holding a slot)."""
    st = sched._state
    with st.lock:
        return st.running()


def internal_sizes(sched: Any) -> Dict[str, int]:
    """Sizes of the scheduler's internal collections that must stay bounded:
    deadline entries (stale ones included), runs held for paused tasks,
    entries in the timer and ready heaps (dead ones included)."""
    st = sched._state
    with st.lock:
        return {
            "deadlines": len(st.deadlines._heap),
            "held": sum(len(runs) for lane in st.lanes.all() for runs in lane.held.values()),
            "timers": len(st.timetable._timers),
            "ready": sum(len(lane.ready) for lane in st.lanes.all()),
        }


def thread_stacks() -> str:
    """Every thread's current stack, as text: what a test that found a hang
    prints to say where each thread is."""
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    parts = []
    for ident, frame in sys._current_frames().items():
        parts.append(f"--- thread {names.get(ident, '?')} ({ident})\n"
                     + "".join(traceback.format_stack(frame)))
    return "\n".join(parts)
