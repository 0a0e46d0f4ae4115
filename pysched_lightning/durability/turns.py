"""Whose turn it is to flush the journal: one thread commits at a time, in
the order the writes were noted; a thread that finds a flush under way
waits until its own writes are done, or until that flush ends without them
(then one waiting thread takes the next turn). A thread waiting for its
claim therefore never commits the writes noted after it asked, and the
group of each worker lets that worker go as soon as it is committed.

An interrupt (Ctrl-C in the main thread) may land between any two lines:
the turn is a ``with`` block (given back whatever cuts it short), writes
are marked done in one step, and a waiter whose wake-up an interrupt cut
off looks again after :data:`RECHECK_SECONDS` (a safety net, not a poll:
every wake-up is sent as it happens)."""
from __future__ import annotations

import collections
import itertools
import threading
from typing import Any, Callable, List, Tuple

from .writes import Write

__all__ = ["Turns", "mark_done"]

Failures = List[Tuple[Write, BaseException]]

#: How long a waiter waits for a wake-up before it looks again by itself.
RECHECK_SECONDS = 0.5


def mark_done(writes: List[Write]) -> None:
    """Set ``done`` on every one of *writes* in one step (a C loop: no
    interrupt can leave some of them unmarked, and their waiters waiting)."""
    collections.deque(map(setattr, writes, itertools.repeat("done"),
                          itertools.repeat(True)), maxlen=0)


class _Waiter:
    """A thread's writes to wait for, and its gate (a held lock, let go
    once they are done or a flush ends without them)."""

    __slots__ = ("writes", "_checked", "gate")

    def __init__(self, writes: List[Write]) -> None:
        self.writes = writes
        #: How many of the writes, from the first, are known done (they are
        #: settled nearly in order: each is looked at about once).
        self._checked = 0
        self.gate: Any = None

    def done(self) -> bool:
        writes, checked = self.writes, self._checked
        while checked < len(writes) and writes[checked].done:
            checked += 1
        self._checked = checked
        return checked == len(writes)


class Turns:
    """Flushes one at a time; threads wait for their writes, not their turn."""

    def __init__(self) -> None:
        #: Held by the thread whose flush is under way.
        self._flushing = threading.Lock()
        #: Threads waiting for the flush under way.
        self._waiters: List[_Waiter] = []
        #: Guards ``_waiters``.
        self._waiters_lock = threading.Lock()

    def flush(self, wanted: List[Write], flush_ready: Callable[[], Failures]) -> Failures:
        """Return once *wanted* are done: committed by this thread's turns
        (``flush_ready`` commits every ready write) or by another's."""
        failures: Failures = []
        waiter = _Waiter(wanted)
        while not waiter.done():
            if self._flushing.locked():
                self._await(waiter)
                continue
            with self._flushing:  # (given back whatever an interrupt cuts short)
                if not waiter.done():  # (a flush that took it first did them)
                    failures.extend(flush_ready())
            self._wake(next_turn=True)
        return failures

    def settled(self, writes: List[Write]) -> None:
        """*writes* are committed (or failed): whoever waits for them goes on."""
        mark_done(writes)
        if self._waiters:
            self._wake(next_turn=False)

    def _await(self, waiter: _Waiter) -> None:
        waiter.gate = gate = threading.Lock()
        gate.acquire()
        with self._waiters_lock:
            if waiter.done() or not self._flushing.locked():
                return  # (checked under the waiters' lock: no wake is missed)
            self._waiters.append(waiter)
        woken = False
        try:
            woken = gate.acquire(timeout=RECHECK_SECONDS)  # (let go by _wake)
        finally:
            if not woken:  # a wake-up lost to an interrupt, or this one's own
                with self._waiters_lock:
                    self._waiters = [other for other in self._waiters if other is not waiter]
                if not self._flushing.locked():  # (it may have had the next turn)
                    self._wake(next_turn=True)

    def _wake(self, next_turn: bool) -> None:
        """Let go the waiters whose writes are done; with *next_turn* (a
        flush ended), one of the others too, to flush theirs."""
        with self._waiters_lock:
            going: List[_Waiter] = []
            waiting: List[_Waiter] = []
            for waiter in self._waiters:
                (going if waiter.done() else waiting).append(waiter)
            if next_turn and waiting:
                going.append(waiting.pop(0))
            self._waiters = waiting  # (first: an interrupt below leaves the
            for waiter in going:     # others to their recheck, never twice listed)
                _open(waiter.gate)


def _open(gate: Any) -> None:
    try:
        gate.release()
    except RuntimeError:  # opened already (a wake-up sent twice after an interrupt)
        pass
