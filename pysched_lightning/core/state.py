"""Everything the scheduler's state lock guards.

``State`` gathers the parts (timetable, run book, lanes, deadlines), the
runs in flight and the scheduler-wide flags; its run transitions come from
``RunLife``, ``HandOver`` and ``TaskLife``. The transitions (``runlife``, ``firing``, ``control``) change
them with the lock held and never call user code: what needs user code or
I/O is noted in an ``Effects`` and done by the caller after the lock is
released (see ``effects.py``).
"""
from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from datetime import datetime, timezone
from typing import Any, Dict, FrozenSet, List, Optional, Protocol, Set, Tuple

from ..records.events import Event, EventKind
from ..records.runs import Phase, Run
from ..timing.clock import Clock
from .deadlines import Deadlines
from .effects import Effects
from .lanes import Lanes
from .runbook import RunBook
from .shares import Share
from .handover import HandOver
from .tasklife import TaskLife
from .timetable import Timetable

__all__ = ["State", "Effects", "Hands"]

_log = logging.getLogger("pysched_lightning")

#: How long noted writes may wait to be flushed together with others.
JOURNAL_LINGER_SECONDS = 0.01

_STARTED, _OVERDUE, _DUE = Phase.STARTED, Phase.OVERDUE, Phase.DUE


class Hands(Protocol):
    """Who does what a transition left to do (the workers)."""

    def aftermath(self, fx: Effects) -> None: ...


class State(TaskLife, HandOver):
    """The parts and flags guarded by ``lock``, and the run transitions."""

    def __init__(self, clock: Clock, lanes: Lanes, history: int, journal: Any) -> None:
        #: Guards this object and every part in it.
        self.lock = threading.Lock()
        #: The dispatcher waits here for due work.
        self.wakeup = threading.Condition(self.lock)
        #: get_result() and shutdown() wait here for runs to finish.
        self.run_done = threading.Condition(self.lock)
        #: Threads waiting on run_done, by task id (None: any run).
        self.waiters: Dict[Optional[str], int] = {}
        self.clock = clock
        #: wall - scheduler clock, re-measured when the wall clock steps.
        self.offset = clock.offset()
        self.timetable = Timetable()
        self.runbook = RunBook(history)
        self.lanes = lanes
        self.deadlines = Deadlines()
        #: Runs handed to a worker of ours that has not taken them yet.
        self.handing: Set[Run] = set()
        #: The journal (store and run log writes), or None.
        self.journal = journal
        self.seq = itertools.count()
        #: True once start() ran the dispatcher (due tasks fire only then).
        self.started = False
        self.closing = False
        self.paused = False
        self.resumed_at = -math.inf
        #: Since when this scheduler runs its tasks (its start, or a
        #: standby's takeover): runs due before were due while none ran.
        self.running_since = math.inf
        #: True while a standby waits for the store: tasks are stored only.
        self.standby = False
        #: True with a store that several active schedulers share: a claim
        #: the store refuses was won by another node, which runs it.
        self.shared = False
        #: On a shared store, this node's share of the tasks (None: all are
        #: its own); replaced whole when the live nodes change.
        self.share: Optional[Share] = None
        #: Whether anybody listens for events (else none are built), and to
        #: which kinds (events of others are not built either).
        self.listening = False
        self.wanted: FrozenSet[EventKind] = frozenset()
        #: When the journal's pending writes are to be flushed by the
        #: dispatcher (None: nothing pending, or flushed by its writer).
        self.journal_due: Optional[float] = None

    def event(self, fx: Effects, kind: EventKind, task_id: Optional[str] = None,
              run: Optional[Run] = None, **extra: Any) -> None:
        """Note an event, if anybody listens to its kind."""
        if kind in self.wanted:
            try:
                wall = self.clock.wall()
            except Exception:  # a user's wall clock must not break a transition
                wall = time.time()
            fx.add_event(Event(kind, task_id, run, datetime.fromtimestamp(wall, timezone.utc),
                               **extra))

    def write_soon(self, now: float) -> None:
        """Writes were noted that nobody flushes at once: the dispatcher
        flushes them after a short linger, taking others along."""
        if self.journal_due is None:
            self.journal_due = now + JOURNAL_LINGER_SECONDS
            self.wakeup.notify()

    def notify_waiters(self, task_id: Optional[str], fx: Effects) -> None:
        """A run of *task_id* ended: threads waiting for it are woken once the
        listeners have heard of it (see ``Workers.aftermath``)."""
        waiters = self.waiters
        if waiters and (None in waiters or task_id in waiters):
            fx.wake_waiters()

    def wait_run_done(self, key: Optional[str], timeout: Optional[float]) -> None:
        """With the lock held: wait until a run of *key* (None: any) finishes."""
        waiters = self.waiters
        waiters[key] = waiters.get(key, 0) + 1
        try:
            self.run_done.wait(timeout)
        finally:
            waiters[key] -= 1
            if not waiters[key]:
                del waiters[key]

    def in_flight(self) -> List[Run]:
        """The runs that hold a worker slot (STARTED and OVERDUE)."""
        return [run for state in self.runbook.executing() for run in state.kept_runs()
                if run._phase is _STARTED or run._phase is _OVERDUE]

    def running(self) -> int:
        """How many runs hold a worker slot."""
        return sum(lane.used - len(lane.reservations) for lane in self.lanes.all())

    def repair(self, fx: Effects) -> None:
        """After an interrupt inside a transition (a KeyboardInterrupt in the
        main thread): make what is counted agree with the runs' phases again,
        so no slot stays taken, no run is sent twice or half-started, and
        every scheduled task is due somewhere."""
        runs = list(dict.fromkeys(fx.runs or ()))
        holders = set(self.in_flight()).union(runs)
        flying = {run for run in holders if run._phase is _STARTED or run._phase is _OVERDUE}
        fx.runs = [run for run in runs if run._phase is _STARTED] or None
        for lane in self.lanes.all():
            lane.used = len(lane.reservations) + sum(1 for run in flying
                                                     if self.lanes.of(run) is lane)
        states = {id(run._state): run._state for run in holders}
        states.update((id(state), state) for state in self.runbook.states())
        for state in states.values():
            state.running = sum(1 for run in flying if run._state is state)
        for state in self.runbook.states():
            for run in state.kept_runs():
                if run._phase is _DUE:  # made but never placed
                    self.admit(run, fx)
                elif run.done and run._future is not None and not run._future.done():
                    fx.resolve(run)  # ended, but its future was not told
        self.timetable.reschedule_lost()


def wait_while_busy(lock: Any) -> None:
    """Before ``with lock:``, when the lock is busy: yield the GIL a few times
    to its holder rather than go to sleep in the kernel at once.

    The state lock is held for microseconds of Python code, and its holder
    needs the GIL to finish: a waiter that sleeps makes every hand-over a
    wake-up round trip, and under load the threads queue up behind each
    other (a lock convoy, which halves the throughput of four workers). The
    lock is only watched here, never taken, so the ``with lock:`` that
    follows stays the plain, interrupt-safe acquire.
    """
    if lock.locked():
        for _ in range(BUSY_YIELDS):
            time.sleep(0)  # lets the holder run
            if not lock.locked():
                return


def acquire_busy(lock: Any) -> None:
    """Take *lock* the way :func:`wait_while_busy` waits for it, trying to
    take it between yields: a worker that finishes a run gets it at once
    far more often than by waiting, then blocking. Only for the threads the
    scheduler owns (its workers, its dispatcher): a KeyboardInterrupt lands
    in the main thread only, so it cannot come between a successful try and
    the caller's ``try: ... finally: lock.release()``."""
    if lock.acquire(False):
        return
    for _ in range(BUSY_YIELDS):
        time.sleep(0)  # lets the holder run
        if lock.acquire(False):
            return
    lock.acquire()


#: How many times a thread yields the GIL for a busy lock before it blocks.
BUSY_YIELDS = 100


def emit_logs(logger: logging.Logger,
              logs: List[Tuple[int, str, Tuple[Any, ...]]]) -> None:
    """Write the noted log lines (outside the lock: handlers are user code)."""
    for level, message, args in logs:
        try:
            logger.log(level, message, *args)
        except Exception:  # pragma: no cover - logging reports its own errors
            pass
