"""Lanes: each executor with its free worker slots and the runs waiting for one.

The dispatcher hands a due run straight to its lane's executor while the
lane has a free slot; otherwise the run waits in the lane's ready heap,
ordered by (priority, due time, seq), so an urgent task overtakes a
backlog. Thread runs, process runs and coroutines have separate lanes, so
none blocks another. Pure data except for making and shutting down the
executors; the scheduler's state lock guards it.
"""
from __future__ import annotations

import collections
import concurrent.futures
import enum
import logging
from collections import namedtuple
from typing import Any, Callable, Deque, Dict, List, Optional, Set

import loky

from ..records.options import LaneKind
from ..records.runs import Phase, Run
from .heaps import LazyHeap

__all__ = ["Lane", "Lanes", "Mechanism"]

_log = logging.getLogger("pysched_lightning")

ReadyEntry = namedtuple("ReadyEntry", "priority due seq run")

# Members read on every run, bound once: on Python 3.11 reading an attribute
# of an Enum class goes through EnumType.__getattr__, several times slower.
_READY, _HELD, _THREADS = Phase.READY, Phase.HELD, LaneKind.THREADS

#: Runs in flight per worker process: enough that a worker never waits for
#: the round trip that sends its next run; the ready heap orders the rest.
PROCESS_PIPELINE = 8


class Mechanism(enum.Enum):
    """How a lane's runs reach their executor."""

    #: Our own worker threads: each runs a run, then pulls the next ready one.
    PULL = "pull"
    #: ``executor.submit()``; the outcome comes back through the future.
    FUTURE = "future"
    #: A coroutine on the scheduler's event loop.
    LOOP = "loop"


def _ready_is_live(entry: ReadyEntry) -> bool:
    # A queued run is READY until it starts or is dropped.
    return entry.run._phase is _READY


class Lane:
    """An executor, how many of its worker slots are taken, and who waits
    for one.

    A slot is taken by a run that starts (or by the reservation of a run to
    come) and given back when its executor returns it; a worker that pulls
    the next ready run keeps its slot for it. (After an interrupt the count
    is made again from the runs' phases: see ``State.repair``.)
    """

    __slots__ = ("executor", "mechanism", "capacity", "used", "reservations", "ready", "held",
                 "returning", "owned", "to_processes")

    def __init__(self, executor: Any, mechanism: Mechanism, capacity: Optional[int],
                 owned: bool, to_processes: bool = False) -> None:
        self.executor = executor
        self.mechanism = mechanism
        #: The executor is a process pool (a ``ProcessPool``): runs are sent
        #: through a hand-off thread, and the thread that hears a run end
        #: sends the next one.
        self.to_processes = to_processes
        #: How many slots there are; None when the executor sets no limit.
        self.capacity = capacity
        #: Slots taken (by runs, and by reservations of runs to come), and
        #: the reservations (the claims of runs to come).
        self.used = 0
        self.reservations: Set[Any] = set()
        self.ready = LazyHeap(_ready_is_live)
        #: Runs of paused tasks, by task id, until they are resumed.
        self.held: Dict[str, List[Run]] = {}
        #: One entry per worker whose run has returned and who is on its way
        #: to take the next ready run (a deque: appends and pops are atomic
        #: without the state lock). While one is coming, a new due run waits
        #: for it in the ready heap instead of waking another worker.
        self.returning: Deque[None] = collections.deque()
        self.owned = owned

    def has_room(self) -> bool:
        capacity = self.capacity
        return capacity is None or self.used < capacity

    def take(self) -> None:
        self.used += 1

    def give_back(self) -> None:
        self.used -= 1

    def reserve(self, claim: Any) -> None:
        """A slot for the run of *claim*, to come: it takes it (the
        reservation goes, the slot stays taken), or it is given back."""
        self.reservations.add(claim)
        self.used += 1

    def abandon(self, task_id: str, running: int) -> None:
        """An interrupt came around :meth:`reserve` for a new task: no
        reservation of *task_id* stays, and the slots taken are the
        reservations and the *running* runs again."""
        self.reservations = {claim for claim in self.reservations
                             if claim.task_id != task_id}
        self.used = len(self.reservations) + running

    def unreserve(self, claim: Any) -> None:
        """The reservation of *claim* is given back (nothing if its run took it)."""
        if claim in self.reservations:
            self.reservations.discard(claim)
            self.used -= 1

    def queue(self, run: Run, seq: int, later: float = 0.0) -> None:
        """*run* waits for a slot (ordered as if due *later* seconds later:
        see ``shares.py``)."""
        self.ready.push(ReadyEntry(run.task.priority, run._t_scheduled + later, seq, run))

    def requeue(self, later: Callable[[Run], float]) -> None:
        """Order the waiting runs again, each as if due ``later(run)``
        seconds later (this node's share of the tasks changed)."""
        self.ready.rebuild([ReadyEntry(entry.priority, entry.run._t_scheduled + later(entry.run),
                                       entry.seq, entry.run) for entry in self.ready.entries()])

    def upcoming(self) -> List[ReadyEntry]:
        """The ready heap's entries, a copy taken at once (read outside the
        lock, it is a hint only)."""
        return self.ready[:]

    def pop_ready(self) -> Optional[Run]:
        """The most urgent run waiting, removed; None when none waits."""
        entry = self.ready.pop_live()
        return None if entry is None else entry.run

    def waiting(self) -> List[Run]:
        """The runs in the ready heap, in no particular order."""
        return [entry.run for entry in self.ready.entries()]

    def hold(self, run: Run) -> None:
        """*run* waits until its task (or the scheduler) is resumed."""
        self.held.setdefault(run.task_id, []).append(run)

    def unhold(self, run: Run) -> None:
        """*run* no longer waits here (nothing if it did not)."""
        runs = self.held.get(run.task_id)
        if runs is not None and run in runs:
            runs.remove(run)
            if not runs:
                del self.held[run.task_id]

    def compact_held(self, task_id: Optional[str] = None) -> None:
        """Forget the entries of runs that are no longer held (of one task, or all)."""
        for key in [task_id] if task_id is not None else list(self.held):
            runs = [run for run in self.held.get(key, ()) if run._phase is _HELD]
            if runs:
                self.held[key] = runs
            else:
                self.held.pop(key, None)

    def held_runs(self, task_id: Optional[str] = None) -> List[Run]:
        """The runs held (of one task, or all); they stay held until each
        leaves with :meth:`unhold` (so an interrupted release loses none)."""
        if task_id is not None:
            return [run for run in self.held.get(task_id, ()) if run._phase is _HELD]
        return [run for runs in self.held.values() for run in runs if run._phase is _HELD]


class Lanes:
    """The scheduler's lanes: its executor's, and the process and event-loop
    lanes, made on first use.

    *process_pool(executor)* wraps a process executor (None: a new one) in a
    ``ProcessPool``; *loop* is the scheduler's event loop thread (it starts
    on first use).
    """

    def __init__(self, executor: Any, owned: bool, process_executor: Any,
                 process_pool: Callable[[Any], Any], loop: Any, max_async: int) -> None:
        self._process_pool = process_pool
        self._process_executor = process_executor
        #: The event loop of coroutines (also of coroutines thread tasks return).
        self.loop = loop
        self._max_async = max_async
        if _is_process_pool(executor):
            self.threads = self._pool_lane(process_pool(executor), owned)
        else:
            mechanism = Mechanism.PULL if _runs_in_threads(executor) else Mechanism.FUTURE
            self.threads = Lane(executor, mechanism, capacity(executor), owned)
        self._lanes: Dict[LaneKind, Lane] = {LaneKind.THREADS: self.threads}
        self._processes: Optional[Lane] = None
        self._coroutines: Optional[Lane] = None

    def of(self, run: Run) -> Lane:
        kind = run.lane
        if kind is _THREADS:  # identity checks: an enum's hash is Python code
            return self.threads
        return self.of_kind(kind)

    def of_kind(self, kind: LaneKind) -> Lane:
        if kind is _THREADS:  # identity checks: an enum's hash is Python code
            return self.threads
        if kind is LaneKind.PROCESSES:
            return self._processes or self._make(kind)
        return self._coroutines or self._make(kind)

    def all(self) -> List[Lane]:
        return list(self._lanes.values())

    def _make(self, kind: LaneKind) -> Lane:
        if kind is LaneKind.PROCESSES:
            given = self._process_executor
            lane = self._processes = self._pool_lane(self._process_pool(given),
                                                     owned=given is None)
        else:
            lane = self._coroutines = Lane(self.loop, Mechanism.LOOP, self._max_async, True)
        self._lanes[kind] = lane
        return lane

    @staticmethod
    def _pool_lane(pool: Any, owned: bool) -> Lane:
        # A few runs more than workers are in flight, so a worker process
        # never waits for the round trip that sends it its next run.
        return Lane(pool, Mechanism.FUTURE, pool.capacity * PROCESS_PIPELINE, owned,
                    to_processes=True)

    def shutdown(self, wait: bool) -> None:
        """Shut down every lane's executor (the scheduler's own and those it
        was given, as upstream did); a failure is logged, not raised."""
        executors = [lane.executor for lane in self.all()]
        if self.loop not in executors:
            executors.append(self.loop)
        first: Optional[BaseException] = None
        for executor in executors:  # each, whatever another raised
            try:
                executor.shutdown(wait=wait)
            except Exception:
                _log.exception("shutting down executor %r failed", executor)
            except BaseException as exc:
                first = first or exc
        if first is not None:
            raise first


def _is_process_pool(executor: Any) -> bool:
    return isinstance(executor, (loky.ProcessPoolExecutor,
                                 concurrent.futures.ProcessPoolExecutor))


def capacity(executor: Any) -> Optional[int]:
    """How many runs *executor* executes at once, or None if it does not say."""
    workers = getattr(executor, "_max_workers", None)
    return workers if isinstance(workers, int) and workers > 0 else None


def _runs_in_threads(executor: Any) -> bool:
    """True when work submitted to *executor* runs in this process's threads."""
    return isinstance(executor, concurrent.futures.ThreadPoolExecutor)
