"""Everything the scheduler's state lock guards, and what a change under it
leaves to do once the lock is released.

``State`` gathers the parts (timetable, run book, lanes, deadlines) and the
scheduler-wide flags. The transitions (``firing``, ``admission``,
``completion``, ``control``) change them with the lock held and never call
user code: what needs user code or I/O — listeners, logging, handing runs
to executors, killing processes, store writes — is noted in an ``Effects``
and done by the caller after the lock is released.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import math
import threading
import time
from datetime import datetime, timezone
from typing import Any, Dict, FrozenSet, List, Optional, Protocol, Tuple

from ..records.events import Event, EventKind
from ..records.runs import Run
from ..timing.clock import Clock
from .lanes import Lanes
from .runbook import RunBook
from .timetable import Timetable

__all__ = ["State", "Effects", "Deadlines"]

_log = logging.getLogger("pysched_lightning")

#: How long noted writes may wait to be flushed together with others.
JOURNAL_LINGER_SECONDS = 0.01


class Deadlines:
    """Runs with a timeout, by deadline (on the scheduler's clock)."""

    def __init__(self) -> None:
        self._heap: List[Tuple[float, int, Run]] = []
        self._seq = itertools.count()

    def __bool__(self) -> bool:
        return bool(self._heap)

    def add(self, run: Run, deadline: float) -> bool:
        """True when it is now the earliest deadline."""
        run._deadline = deadline
        heapq.heappush(self._heap, (deadline, next(self._seq), run))
        return self._heap[0][2] is run

    def next(self) -> Optional[float]:
        return self._heap[0][0] if self._heap else None

    def pop_expired(self, now: float) -> List[Run]:
        expired = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            run = heapq.heappop(heap)[2]
            if not run.done:
                expired.append(run)
        return expired


class State:
    """The parts and flags guarded by ``lock``."""

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
        #: The journal (store and run log writes), or None.
        self.journal = journal
        self.seq = itertools.count()
        #: True once start() ran the dispatcher (due tasks fire only then).
        self.started = False
        self.closing = False
        self.paused = False
        self.resumed_at = -math.inf
        #: True while a standby waits for the store: tasks are stored only.
        self.standby = False
        #: Whether anybody listens for events (else none are built), and to
        #: which kinds (events of others are not built either).
        self.listening = False
        self.wanted: FrozenSet[EventKind] = frozenset()
        #: When the journal's pending writes are to be flushed by the
        #: dispatcher (None: nothing pending, or flushed by its writer).
        self.journal_due: Optional[float] = None

    def event(self, fx: "Effects", kind: EventKind, task_id: Optional[str] = None,
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

    def notify_waiters(self, task_id: Optional[str], fx: "Effects") -> None:
        """A run of *task_id* ended: threads waiting for it are woken once the
        listeners have heard of it (see ``Workers.aftermath``)."""
        waiters = self.waiters
        if waiters and (None in waiters or task_id in waiters):
            fx.wake = True

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


class Hands(Protocol):
    """Who does what a transition left to do (the workers)."""

    def aftermath(self, fx: "Effects") -> None: ...


class Effects:
    """What a transition leaves to do after the state lock is released."""

    __slots__ = ("events", "logs", "runs", "expired", "wake")

    def __init__(self) -> None:
        self.events: Optional[List[Event]] = None
        #: (level, message, args) for the logger, formatted later.
        self.logs: Optional[List[Tuple[int, str, Tuple[Any, ...]]]] = None
        #: Runs that got a slot, to hand to their executors.
        self.runs: Optional[List[Run]] = None
        #: Runs past their deadline, to be told (and killed or cancelled).
        self.expired: Optional[List[Run]] = None
        #: Wake the threads waiting for runs to end (get_result, shutdown).
        self.wake = False

    def add_event(self, event: Event) -> None:
        if self.events is None:
            self.events = []
        self.events.append(event)

    def log(self, level: int, message: str, *args: Any) -> None:
        if not _log.isEnabledFor(level):  # (reads the logger's level cache: no handler runs)
            return
        if self.logs is None:
            self.logs = []
        self.logs.append((level, message, args))

    def submit(self, run: Run) -> None:
        if self.runs is None:
            self.runs = []
        self.runs.append(run)

    def expire(self, run: Run) -> None:
        if self.expired is None:
            self.expired = []
        self.expired.append(run)

    def __bool__(self) -> bool:
        return bool(self.events or self.logs or self.runs or self.expired or self.wake)

    def clear(self) -> None:
        self.events = self.logs = self.runs = self.expired = None
        self.wake = False




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
