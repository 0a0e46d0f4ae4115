"""The hand-over: a started run between the core and its executor.

A run that got a worker slot is handed to its executor (once), taken by the
worker of ours that got it, or taken back by an interrupt that came first
(and admitted again); the thread that executes it says when it began, and
what stops it at its deadline; a run whose claim the store refused does not
execute. ``HandOver`` extends ``Sharing`` (``State`` is one); its methods
run with the state lock held, but for those that say they need none.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, Set

from ..records.runs import Phase, Run, TaskStatus
from .effects import Effects
from .sharing import Sharing

__all__ = ["HandOver", "REFUSED"]

_DUE, _STARTED = Phase.DUE, Phase.STARTED
_MISSED = TaskStatus.MISSED

#: Why a run whose claim the store refused does not execute.
REFUSED = "its slot is already claimed in the store (it ran before)"


class HandOver(Sharing):
    """A started run's way to its executor."""

    if TYPE_CHECKING:  # pragma: no cover - set by State
        handing: Set[Run]
        shared: bool

    def handed(self, run: Run, ours: bool) -> None:
        """*run* is being handed to its executor (once: see ``Workers.submit``);
        to a thread or the event loop of *ours*, which takes it with
        :meth:`taken_back` (an interrupt in between may take it back first)."""
        if ours:
            self.handing.add(run)
        run._sent = True

    def taken_back(self, run: Run) -> bool:
        """Take *run* out of the hand-over: True for whoever does it first,
        the worker that got it or an interrupt's :meth:`unstart` (one step:
        no lock needed)."""
        try:
            self.handing.remove(run)
        except KeyError:
            return False
        return True

    def began(self, run: Run, now: float) -> None:
        """*run*'s executor began it (called by the thread that executes it,
        the only one that touches a started run's start time)."""
        if run._t_started is None:
            run._t_started = now

    def unstart(self, run: Run, fx: Effects) -> None:
        """*run* got a slot but no worker of ours took it (an interrupt came
        first): STARTED -> DUE, its slot given back, and it is admitted again
        (its claim, if any, still stands). Nothing if a worker took it."""
        if run._phase is not _STARTED or (run._sent and not self.taken_back(run)):
            return
        lane = self.lanes.of(run)
        lane.give_back()
        self.runbook.returned(run)
        run._phase, run._sent = _DUE, False
        run.status = TaskStatus.SUSPENDED
        self.admit(run, fx)

    def withdraw(self, run: Run, reason: str, fx: Effects) -> None:
        """*run* got a slot but was never handed over, and will not be: it
        is dropped, CANCELED for *reason* (a replacement cut short)."""
        if run._phase is not _STARTED or run._sent:
            return
        self.lanes.of(run).give_back()
        self.runbook.returned(run)
        run._phase, run.status = _DUE, TaskStatus.SUSPENDED
        self.drop(run, TaskStatus.CANCELED, reason, self.clock.now(), fx)

    def watch_deadline(self, run: Run, start: Optional[float] = None) -> bool:
        """A started run with a timeout gets its deadline, its timeout after
        *start* (by default its start); True when it is the earliest (the
        dispatcher must wake up for it)."""
        if run._phase is not _STARTED or run._deadline_key is not None:
            return False
        if start is None:
            start = run._t_started if run._t_started is not None else self.clock.now()
        run._deadline = start + run.timeout  # type: ignore[operator]
        run._deadline_key, earliest = self.deadlines.add(run, run._deadline)
        return earliest

    def attach(self, run: Run, handle: Any) -> None:
        """What stops *run* at its deadline (a process, a coroutine, a future)."""
        run._handle = handle

    def refuse(self, run: Run, fx: Effects, pull: bool) -> Optional[Run]:
        """The store refused *run*'s claim (its slot was claimed before, or
        the store failed): it does not execute (STARTED -> DROPPED). Like
        :meth:`finish`, returns the next ready run for a pulling worker."""
        if run._phase is not _STARTED:
            return None
        now = self.clock.now()
        lane = self.lanes.of(run)
        self._returned(run, fx)
        claim = run._claim
        reason = getattr(claim, "reason", None)
        run._phase, run.status = _DUE, TaskStatus.SUSPENDED  # it never ran
        if self.shared and reason is None:  # another node claimed it first: it runs there
            self.ran_elsewhere(run, now, fx)
        else:
            self.drop(run, _MISSED, reason or REFUSED, now, fx, 0.0, recorded=False)
        return self._next_for(run, lane, now, fx, pull)
