"""The one place where tests look inside a scheduler.

Tests use the public API everywhere else. Some invariants cannot be seen
through it: whether every worker slot is free once nothing runs, how many
runs the scheduler counts as running, whether its state lock is held, how
large its internal collections are; and the fault tests need the names of
a few internal functions. Every such read and name is here, so that when
the core's modules move only this file changes.
"""
from __future__ import annotations

from typing import Any, Dict, FrozenSet, List, Tuple

#: Functions of the package that busy-wait for the state lock: how many
#: times they turn depends on other threads, so the fault tests do not
#: count their lines (an injection index then names the same point
#: whatever the other threads did).
BUSY_WAIT_FUNCTIONS: FrozenSet[str] = frozenset({"wait_while_busy", "acquire_busy"})

#: The paths from the scheduler's threads into user code, as (file name,
#: function name): events to listeners, futures resolved, the journal
#: (records, store, run log), logging, timeout callbacks. A BaseException
#: raised by user code surfaces at one of their lines; the fault tests
#: raise one at each of them.
CALLBACK_PATHS: FrozenSet[Tuple[str, str]] = frozenset({
    ("events.py", "emit"), ("state.py", "emit_logs"), ("workers.py", "aftermath"),
    ("workers.py", "stop_runs"), ("journal.py", "flush"), ("journal.py", "_write"),
    ("journal.py", "_step"), ("journal.py", "<lambda>"), ("journal.py", "save_and_claim"),
    ("journal.py", "_commit"), ("journal.py", "_log_run"), ("journal.py", "_safe_record"),
    ("records.py", "run_record"), ("context.py", "_mark_timed_out"),
    ("context.py", "_call_safely"), ("runs.py", "_resolve_future"),
})


def _state(sched: Any) -> Any:
    return sched._state


def state_lock_held(sched: Any) -> bool:
    """True while some thread holds the scheduler's state lock (read
    without taking it: a leaked lock must not hang the test that asks)."""
    return _state(sched).lock.locked()


def running_count(sched: Any) -> int:
    """How many runs the scheduler counts as executing now."""
    return _state(sched).runbook.running


def lanes(sched: Any) -> List[Dict[str, Any]]:
    """Each lane's slots and queues: ``kind`` (the executor's class name),
    ``free`` and ``capacity`` (None: unbounded), ``ready`` (live runs
    waiting for a slot), ``held`` (runs of paused tasks), ``returning``
    (workers on their way to the next ready run)."""
    found = []
    for lane in _state(sched).lanes.all():
        found.append({"kind": type(lane.executor).__name__, "free": lane.free,
                      "capacity": lane.capacity, "ready": lane.ready.live(),
                      "held": len(lane.held), "returning": len(lane.returning)})
    return found


def slot_leaks(sched: Any) -> List[Tuple[str, Any, Any]]:
    """With nothing running and nothing waiting, every slot must be free:
    the lanes where it is not, as (kind, free, capacity). Call it only when
    the scheduler is idle (``running_count(sched) == 0``)."""
    return [(lane["kind"], lane["free"], lane["capacity"]) for lane in lanes(sched)
            if lane["capacity"] is not None and lane["ready"] == 0
            and lane["free"] != lane["capacity"]]


def internal_sizes(sched: Any) -> Dict[str, int]:
    """Sizes of the collections that must stay bounded."""
    st = _state(sched)
    return {"deadlines": len(st.deadlines._heap),
            "waiters": sum(st.waiters.values()),
            "journal_pending": len(st.journal._pending) if st.journal is not None else 0,
            "held": sum(len(lane.held) for lane in st.lanes.all()),
            "returning": sum(len(lane.returning) for lane in st.lanes.all())}


def dispatcher_alive(sched: Any) -> bool:
    """True while the scheduler's dispatcher thread runs."""
    thread = sched._dispatcher.thread
    return thread is not None and thread.is_alive()


def scheduler_threads(sched: Any) -> List[Any]:
    """The threads the scheduler owns and which are still alive (its
    dispatcher; its pool's workers when it made the pool)."""
    threads = []
    if dispatcher_alive(sched):
        threads.append(sched._dispatcher.thread)
    return threads
