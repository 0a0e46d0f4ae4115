"""The one place where tests look inside a scheduler.

Everything else in the tests uses the public API. Some invariants cannot
be seen from outside: whether every worker slot is free when nothing runs,
whether internal collections keep runs that are over, whether the
dispatcher is waiting; and the fault tests need the names of a few
internal functions. Each is read here, by a small function that says what
it reads and why; when the core is refactored, this file is adapted and
the tests that use it stay as they are.
"""
from __future__ import annotations

import sys
import threading
import traceback
from typing import Any, Dict, FrozenSet, Iterable, List, Optional, Tuple

from pysched_lightning.records.runs import FINAL, TaskStatus

#: At most this many entries of a lazily cleaned heap may be dead (their run
#: over, their task gone) beyond the number of live ones: lazy deletion is
#: fine, growth with the number of finished runs is not.
HEAP_SLACK = 1024

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
    ("events.py", "emit"), ("workers.py", "aftermath"), ("workers.py", "_prepared"),
    ("workers.py", "stop_runs"), ("journal.py", "flush"), ("journal.py", "prepare"),
    ("journal.py", "_step"), ("journal.py", "<lambda>"), ("journal.py", "save_and_claim"),
    ("journal.py", "_commit"), ("journal.py", "_commit_together"), ("journal.py", "_report"),
    ("journal.py", "_write_run_log"), ("journal.py", "_log_run"),
    ("journal.py", "_safe_record"), ("encoding.py", "run_record"),
    ("context.py", "_mark_timed_out"), ("context.py", "_call_safely"),
    ("runs.py", "_resolve_future"),
})


def _state(sched: Any) -> Any:
    return sched._state


def _done(run: Any) -> bool:
    return run.status in FINAL


def is_manual_run(run: Any) -> bool:
    """True for a run made by ``run_now()`` (a run's own flag, not in the README)."""
    return bool(getattr(run, "manual", False))


# -- threads ----------------------------------------------------------------------


def dispatcher_thread(sched: Any) -> Optional[threading.Thread]:
    return sched._dispatcher.thread


def dispatcher_alive(sched: Any) -> bool:
    """True while the scheduler's dispatcher thread runs."""
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


def scheduler_threads(sched: Any) -> List[Any]:
    """The threads the scheduler owns and which are still alive (its
    dispatcher; its pool's workers when it made the pool)."""
    return [dispatcher_thread(sched)] if dispatcher_alive(sched) else []


def pool_threads(sched: Any) -> List[threading.Thread]:
    """The worker threads of the scheduler's thread pool."""
    executor = _state(sched).lanes.threads.executor
    return list(getattr(executor, "_threads", ()))


def pool_queue_size(sched: Any) -> int:
    executor = _state(sched).lanes.threads.executor
    queue = getattr(executor, "_work_queue", None)
    return queue.qsize() if queue is not None else 0


def state_lock_held(sched: Any) -> bool:
    """True while some thread holds the scheduler's state lock (read
    without taking it: a leaked lock must not hang the test that asks)."""
    return _state(sched).lock.locked()


def thread_stacks() -> str:
    """Every thread's current stack, as text: what a test that found a hang
    prints to say where each thread is."""
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    parts = []
    for ident, frame in sys._current_frames().items():
        parts.append(f"--- thread {names.get(ident, '?')} ({ident})\n"
                     + "".join(traceback.format_stack(frame)))
    return "\n".join(parts)


# -- slots and runs ---------------------------------------------------------------


def _lane_name(lane: Any) -> str:
    return lane.mechanism.value + ("-processes" if lane.to_processes else "")


def free_slots(sched: Any) -> Dict[str, Tuple[Any, Any]]:
    """Per lane (``pull`` is the thread pool's): (free slots, capacity), both
    None when the executor sets no limit. With nothing running, free == capacity."""
    found = {}
    for lane in _state(sched).lanes.all():
        free = None if lane.capacity is None else lane.capacity - lane.used
        found[_lane_name(lane)] = (free, lane.capacity)
    return found


def leaked_slots(sched: Any) -> Dict[str, Tuple[Any, Any]]:
    """The lanes whose slots are not all free, as ``{lane: (free, capacity)}``.
    Only meaningful while nothing runs and nothing waits for a worker."""
    return {name: (free, capacity) for name, (free, capacity) in free_slots(sched).items()
            if capacity is not None and free != capacity}


def lanes(sched: Any) -> List[Dict[str, Any]]:
    """Each lane's slots and queues: ``kind`` (the executor's class name),
    ``free`` and ``capacity`` (None: unbounded), ``ready`` (live runs
    waiting for a slot), ``held`` (runs of paused tasks), ``returning``
    (workers on their way to the next ready run)."""
    found = []
    for lane in _state(sched).lanes.all():
        free = None if lane.capacity is None else lane.capacity - lane.used
        found.append({"kind": type(lane.executor).__name__, "free": free,
                      "capacity": lane.capacity, "ready": lane.ready.live(),
                      "held": sum(len(runs) for runs in lane.held.values()),
                      "returning": len(lane.returning)})
    return found


def slot_leaks(sched: Any) -> List[Tuple[str, Any, Any]]:
    """With nothing running and nothing waiting, every slot must be free:
    the lanes where it is not, as (kind, free, capacity). Call it only when
    the scheduler is idle (``running_count(sched) == 0``)."""
    return [(lane["kind"], lane["free"], lane["capacity"]) for lane in lanes(sched)
            if lane["capacity"] is not None and lane["ready"] == 0
            and lane["free"] != lane["capacity"]]


def running_count(sched: Any) -> int:
    """How many runs the scheduler counts as executing now (holding a slot)."""
    return _state(sched).running()


runs_going = running_count


def per_task_running(sched: Any) -> Dict[str, int]:
    runbook = _state(sched).runbook
    return {task_id: runbook.get(task_id).running for task_id in runbook
            if runbook.get(task_id) is not None and runbook.get(task_id).running}


def held_runs(sched: Any) -> int:
    """How many runs the scheduler holds back for paused tasks (or a paused
    scheduler), over all its lanes, finished ones included: a run kept there
    after its task is gone is a leak."""
    state = _state(sched)
    with state.lock:
        return sum(len(runs) for lane in state.lanes.all() for runs in lane.held.values())


def retained_finished_runs(sched: Any) -> Dict[str, List[Any]]:
    """Runs that are over but still referenced from a collection meant for
    runs that are not: the deadlines (runs with a timeout that are going),
    the held runs (of paused tasks or a paused scheduler) and the runs
    blocked behind a task's running run."""
    st = _state(sched)
    found: Dict[str, List[Any]] = {}
    deadlines = [run for run in st.deadlines._runs.values() if _done(run)]
    if deadlines:
        found["deadlines"] = deadlines
    held = [run for lane in st.lanes.all() for runs in lane.held.values() for run in runs
            if _done(run)]
    if held:
        found["held"] = held
    blocked = [run for state in st.runbook.states() for run in state.blocked or []
               if _done(run)]
    if blocked:
        found["waiting"] = blocked
    return found


def internal_sizes(sched: Any) -> Dict[str, int]:
    """Sizes of the scheduler's internal collections that must stay bounded:
    deadline entries (stale ones included), runs held for paused tasks,
    entries in the timer and ready heaps (dead ones included), waiters,
    journal writes pending, workers returning."""
    st = _state(sched)
    with st.lock:
        return {
            "deadlines": len(st.deadlines._heap),
            "held": sum(len(runs) for lane in st.lanes.all() for runs in lane.held.values()),
            "timers": len(st.timetable._timers),
            "ready": sum(len(lane.ready) for lane in st.lanes.all()),
            "waiters": sum(st.waiters.values()),
            "journal_pending": len(st.journal._pending) if st.journal is not None else 0,
            "returning": sum(len(lane.returning) for lane in st.lanes.all()),
        }


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
    for name, table in (("fired", timetable._fired), ("parked", timetable._parked),
                        ("failed", timetable.failed)):
        for task_id in table:
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


def workers_busy(sched: Any, waiting: int) -> bool:
    """True while a worker thread may still do something: more runs count as
    running than the *waiting* ones (tasks that wait for the test), calls
    are queued in the pool, or a worker that finished a run is on its way
    to take the next. (Read from counters, not from other threads' stacks,
    which are not safe to walk while those threads run.)"""
    st = _state(sched)
    return (st.running() > waiting or pool_queue_size(sched) > 0
            or bool(st.lanes.threads.returning) or bool(st.handing))


def activity(sched: Any) -> Any:
    """A fingerprint of what is going on: runs counted as running, runs
    waiting in the ready heaps, slots taken (quiescence: it stops changing)."""
    st = _state(sched)
    return (st.running(), tuple(len(lane.ready) for lane in st.lanes.all()),
            tuple(lane.used for lane in st.lanes.all()))


def statuses_of(runs: Iterable[Any]) -> List[TaskStatus]:
    return [run.status for run in runs]
