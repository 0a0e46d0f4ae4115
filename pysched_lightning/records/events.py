"""Events: what happened to a task or the scheduler, delivered to listeners.

Listeners are called synchronously in the thread where the event happened
(the dispatcher or a worker), never while the scheduler's lock is held, so a
listener may call back into the scheduler. A listener that raises is logged
and the others still run.
"""
from __future__ import annotations

import enum
import logging
import queue
import threading
from datetime import datetime
from typing import TYPE_CHECKING, Callable, FrozenSet, Iterable, List, Optional, Tuple

from .runs import safe_repr

if TYPE_CHECKING:  # pragma: no cover
    from .runs import Run

__all__ = ["EventKind", "Event", "Listeners"]

_log = logging.getLogger("pysched_lightning")


class EventKind(enum.Enum):
    """The kinds of event a listener can ask for."""

    #: A task was added with ``delay()``.
    ADDED = "added"
    #: A run was handed to an executor.
    SUBMITTED = "submitted"
    #: A run began executing (for process runs: when it was handed over).
    STARTED = "started"
    #: A run returned normally.
    COMPLETED = "completed"
    #: A run raised (``exception`` and ``traceback`` are set).
    FAILED = "failed"
    #: A run exceeded its timeout.
    TIMEOUT = "timeout"
    #: A failed run will be tried again (``reason`` says when).
    RETRY = "retry"
    #: A run was skipped (``reason`` says why, ``lateness`` how late).
    MISSED = "missed"
    #: A task was canceled, by the user or because a dependency failed.
    CANCELED = "canceled"
    #: A task left the schedule: its last run is over.
    REMOVED = "removed"
    #: A task was paused.
    PAUSED = "paused"
    #: A task was resumed.
    RESUMED = "resumed"
    #: A task's trigger, priority or options changed.
    MODIFIED = "modified"
    #: ``start()`` was called.
    SCHEDULER_STARTED = "scheduler_started"
    #: ``shutdown()`` was called.
    SCHEDULER_SHUTDOWN = "scheduler_shutdown"
    #: The whole scheduler was paused.
    SCHEDULER_PAUSED = "scheduler_paused"
    #: The whole scheduler was resumed.
    SCHEDULER_RESUMED = "scheduler_resumed"

    # Members are singletons, so identity is their hash: Enum's own hashes the
    # name in Python code, and the kinds listened to are looked up per run.
    __hash__ = object.__hash__


class Event:
    """Something that happened; finished runs also carry their outcome."""

    __slots__ = ("kind", "task_id", "run", "timestamp", "status", "result",
                 "exception", "traceback", "reason", "lateness", "count")

    def __init__(self, kind: EventKind, task_id: Optional[str] = None,
                 run: Optional[Run] = None, timestamp: Optional[datetime] = None, *,
                 reason: Optional[str] = None, lateness: Optional[float] = None,
                 count: int = 1) -> None:
        self.kind = kind
        self.task_id = task_id
        self.run = run
        #: When it happened (wall clock), an aware UTC datetime.
        self.timestamp = timestamp
        self.status = getattr(run, "status", None)
        self.result = getattr(run, "result", None)
        self.exception = getattr(run, "exception", None)
        self.traceback = getattr(run, "traceback", None)
        #: Why (for MISSED, CANCELED, RETRY), in words.
        self.reason = reason
        #: How late the run was, in seconds (MISSED).
        self.lateness = lateness
        #: How many runs the event stands for (MISSED after a stall).
        self.count = count

    def __repr__(self) -> str:
        extra = f" reason={self.reason!r}" if self.reason else ""
        return f"<Event {self.kind.name} task={self.task_id!r}{extra}>"


_Listener = Tuple[Callable[[Event], object], Optional[FrozenSet[EventKind]]]


class Listeners:
    """The registered callbacks, copied on write so emitting takes no lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # serializes add/remove
        #: The registered (callback, kinds) pairs; empty (false) when none, so
        #: the scheduler's hot path skips building events at all.
        self.callbacks: Tuple[_Listener, ...] = ()

    def add(self, callback: Callable[[Event], object],
            kinds: Optional[Iterable[EventKind]] = None) -> None:
        if not callable(callback):
            raise TypeError(f"listener must be callable, got {callback!r}")
        wanted = _kinds(kinds)
        with self._lock:
            self.callbacks += ((callback, wanted),)

    def remove(self, callback: Callable[[Event], object]) -> None:
        with self._lock:
            kept = tuple(entry for entry in self.callbacks if entry[0] != callback)
            if len(kept) == len(self.callbacks):
                raise KeyError(f"listener {callback!r} is not registered")
            self.callbacks = kept

    def wanted(self) -> FrozenSet[EventKind]:
        """The kinds some listener wants (events of other kinds are not even
        made)."""
        kinds: FrozenSet[EventKind] = frozenset()
        for _, wanted in self.callbacks:
            kinds |= wanted if wanted is not None else frozenset(EventKind)
        return kinds

    def subscribe(self, kinds: Optional[Iterable[EventKind]] = None) -> "queue.Queue[Event]":
        events: "queue.Queue[Event]" = queue.Queue()
        self.add(events.put, kinds)
        return events

    def emit(self, events: List[Event]) -> Optional[BaseException]:
        """Call the listeners of each event. One that raises is logged and the
        others still run; the first that raises a ``BaseException`` that is
        no ``Exception`` (SystemExit, KeyboardInterrupt) has it returned, for
        the caller to raise once its own duties are done."""
        first: Optional[BaseException] = None
        for event in events:
            for callback, wanted in self.callbacks:
                if wanted is not None and event.kind not in wanted:
                    continue
                try:
                    callback(event)
                except Exception:
                    _log_failure(callback, event)
                except BaseException as exc:
                    if first is None:
                        first = exc
        return first


def _log_failure(callback: Callable[[Event], object], event: Event) -> None:
    try:
        _log.exception("event listener %s failed on %r", safe_repr(callback, 200), event)
    except Exception:  # a log handler that fails must not stop the others
        pass


def _kinds(kinds: Optional[Iterable[EventKind]]) -> Optional[FrozenSet[EventKind]]:
    if kinds is None:
        return None
    if isinstance(kinds, EventKind):
        return frozenset((kinds,))
    wanted = frozenset(kinds)
    bad = [k for k in wanted if not isinstance(k, EventKind)]
    if bad:
        raise TypeError(f"event kinds must be EventKind members, got {bad[0]!r}")
    return wanted
