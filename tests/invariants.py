"""The one place where tests look inside a scheduler.

Everything else in the tests uses the public API. Some invariants cannot
be seen from outside: whether every worker slot is free when nothing runs,
whether internal collections keep runs that are over, whether the
dispatcher is waiting. Each is read here, by a small function that says
what it reads and why; when the core is refactored, this file is adapted
and the tests that use it stay as they are.
"""
from __future__ import annotations

import threading
from typing import Any, Dict, Iterable, List, Optional

from pysched_lightning.runs import FINAL, TaskStatus

#: At most this many entries of a lazily cleaned heap may be dead (their run
#: over, their task gone) beyond the number of live ones: lazy deletion is
#: fine, growth with the number of finished runs is not.
HEAP_SLACK = 1024


def _state(sched: Any) -> Any:
    return sched._state


def is_manual_run(run: Any) -> bool:
    """True for a run made by ``run_now()`` (a run's own flag, not in the README)."""
    return bool(getattr(run, "manual", False))


def dispatcher_thread(sched: Any) -> Optional[threading.Thread]:
    return sched._dispatcher.thread


def dispatcher_alive(sched: Any) -> bool:
    thread = dispatcher_thread(sched)
    return thread is not None and thread.is_alive()


def dispatcher_parked(sched: Any) -> bool:
    """True when the dispatcher waits on its wake-up condition (with an
    injected ``delayfunc`` it does so only when nothing is due at any time,
    or the scheduler is paused) and has not been notified since: it has
    nothing to do."""
    thread = dispatcher_thread(sched)
    if thread is None or not thread.is_alive():
        return False
    # (A standby's retry and the dispatcher's pause after an error wait
    # there too; the test uses no standby, and an error is logged.)
    return bool(_state(sched).wakeup._waiters)


def free_slots(sched: Any) -> Dict[str, Any]:
    """Per lane: (free slots, capacity). With nothing running, free == capacity."""
    return {lane.mechanism.value + ("-processes" if lane.to_processes else ""):
            (lane.free, lane.capacity) for lane in _state(sched).lanes.all()}


def running_count(sched: Any) -> int:
    """How many runs the scheduler counts as executing now."""
    return _state(sched).runbook.running


def per_task_running(sched: Any) -> Dict[str, int]:
    runbook = _state(sched).runbook
    return {task_id: runbook.get(task_id).running for task_id in runbook
            if runbook.get(task_id) is not None and runbook.get(task_id).running}


def _done(run: Any) -> bool:
    return run.status in FINAL


def retained_finished_runs(sched: Any) -> Dict[str, List[Any]]:
    """Runs that are over but still referenced from a collection meant for
    runs that are not: the deadlines (runs with a timeout that are going),
    the held runs (of paused tasks or a paused scheduler) and the runs
    waiting for a task's running run to return."""
    st = _state(sched)
    found: Dict[str, List[Any]] = {}
    deadlines = [entry[2] for entry in st.deadlines._heap if _done(entry[2])]
    if deadlines:
        found["deadlines"] = deadlines
    held = [run for lane in st.lanes.all() for run in lane.held if _done(run)]
    if held:
        found["held"] = held
    waiting = [run for task_id in st.runbook for run in
               (st.runbook.get(task_id).waiting or []) if _done(run)]
    if waiting:
        found["waiting"] = waiting
    return found


def heap_sizes(sched: Any) -> Dict[str, Any]:
    """For each lazily cleaned heap: (entries, live entries)."""
    st = _state(sched)
    timers = st.timetable._timers
    sizes = {"timers": (len(timers), len(timers.entries()))}
    for index, lane in enumerate(st.lanes.all()):
        sizes[f"ready[{index}]"] = (len(lane.ready), len(lane.ready.entries()))
    return sizes


def known_task_ids(sched: Any) -> List[str]:
    """Every task id the scheduler keeps anything for (scheduled or finished)."""
    st = _state(sched)
    return sorted(set(st.timetable) | set(st.runbook))


def timetable_consistency(sched: Any) -> List[str]:
    """Entries of the timetable's side tables for tasks it no longer holds."""
    timetable = _state(sched).timetable
    problems = []
    for name in ("_fired", "_parked"):
        for task_id in getattr(timetable, name):
            if task_id not in timetable:
                problems.append(f"{name} holds {task_id!r}, which is not scheduled")
    return problems


def waiter_count(sched: Any) -> int:
    """Threads registered as waiting for a run to end (get_result, shutdown)."""
    return sum(_state(sched).waiters.values())


def journal_pending(sched: Any) -> int:
    journal = _state(sched).journal
    return len(journal._pending) if journal is not None else 0


def standby(sched: Any) -> bool:
    """True while the scheduler waits as a standby for its store."""
    return bool(_state(sched).standby)


def pool_threads(sched: Any) -> List[threading.Thread]:
    """The worker threads of the scheduler's thread pool."""
    executor = _state(sched).lanes.threads.executor
    return list(getattr(executor, "_threads", ()))


def pool_queue_size(sched: Any) -> int:
    executor = _state(sched).lanes.threads.executor
    queue = getattr(executor, "_work_queue", None)
    return queue.qsize() if queue is not None else 0


def workers_busy(sched: Any, waiting: int) -> bool:
    """True while a worker thread may still do something: more runs count as
    running than the *waiting* ones (tasks that wait for the test), calls
    are queued in the pool, or a worker that finished a run is on its way
    to take the next. (Read from counters, not from other threads' stacks,
    which are not safe to walk while those threads run.)"""
    st = _state(sched)
    return (st.runbook.running > waiting or pool_queue_size(sched) > 0
            or bool(st.lanes.threads.returning))


def activity(sched: Any) -> Any:
    """A fingerprint of what is going on: runs counted as running and runs
    waiting in the ready heaps (quiescence: it stops changing)."""
    st = _state(sched)
    return (st.runbook.running, tuple(len(lane.ready) for lane in st.lanes.all()),
            tuple(lane.free for lane in st.lanes.all()))


def statuses_of(runs: Iterable[Any]) -> List[TaskStatus]:
    return [run.status for run in runs]
