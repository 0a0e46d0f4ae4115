"""The runs of a store several active schedulers (nodes) share: which of
them go first here, and which ran on another node instead.

Each node goes first for its share of the tasks (see ``shares.py``): in a
ready heap, a run of another node's share waits as if due
``STEAL_AFTER`` seconds later. A run whose slot another node claimed does
not run here: learnt from a refused claim, or ahead of its claim, for many
runs in one look at the store (``ClaimedElsewhere``), when a refused claim
shows that another node got there first. ``Sharing`` extends ``RunLife``
(``State`` is one); its methods run with the state lock held, but for
:meth:`look_ahead`, which takes it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Mapping, Optional

from ..durability.claims import LOOK_AHEAD
from ..durability.encoding import slot_of
from ..records.protocols import RUNNING
from ..records.runs import Phase, Run, TaskStatus
from .effects import Effects
from .heaps import smallest
from .runlife import RunLife
from .shares import STEAL_AFTER, Share

__all__ = ["Sharing", "RAN_ELSEWHERE"]

#: Why a run of a shared store did not execute here: another node claimed it.
RAN_ELSEWHERE = "another scheduler of the shared store claimed it first"

_DUE, _DROPPED = Phase.DUE, Phase.DROPPED
_CANCELED = TaskStatus.CANCELED


class Sharing(RunLife):
    """This node's part of a shared store's runs."""

    if TYPE_CHECKING:  # pragma: no cover - set by State
        lock: Any

    def _later(self, run: Run) -> float:
        """How much later than its due time *run* waits in a ready heap: a
        run of another node's share waits behind this node's own."""
        share = self.share
        if share is None or run.manual or share.prefers(run.task_id):
            return 0.0
        return STEAL_AFTER

    def reshare(self, share: Optional[Share]) -> None:
        """The live nodes changed: this node's new *share*, and its waiting
        runs ordered by it."""
        if share == self.share:
            return
        self.share = share
        for lane in self.lanes.all():
            lane.requeue(self._later)

    def _foreseen(self, run: Run, elsewhere: Any, fx: Effects) -> bool:
        """True when another node is known to have claimed *run*'s slot
        (learnt ahead): it runs there (DUE or READY -> DROPPED), without a
        refused claim."""
        if run.manual or run._claim is not None or not elsewhere.expects():
            return False
        if run._slot is None:
            run._slot = slot_of(run, self.offset)
        if not elsewhere.taken((run.task_id, run._slot, run.attempt)):
            return False
        run._phase = _DUE  # (a ready run was taken off its lane's heap)
        self.ran_elsewhere(run, self.clock.now(), fx)
        return True

    def ran_elsewhere(self, run: Run, now: float, fx: Effects) -> None:
        """Another node of a shared store claimed *run*'s slot first (DUE ->
        DROPPED): it runs there, so here it is neither a run nor a skip, and
        a one-shot is over here too. The node that runs it writes the task's
        state; this one writes nothing."""
        if run._phase is not _DUE:
            return
        run.status, run.reason, run._t_finished = _CANCELED, RAN_ELSEWHERE, now
        run._phase = _DROPPED
        if run._owns_future:
            fx.resolve(run)
        self.runbook.dropped(run, False, numbered=True)
        self.notify_waiters(run.task_id, fx)
        if self.timetable.has_fired_last(run.task_id):
            self.retire_if_over(run.task_id, now, fx, stored=False)

    def _elsewhere(self) -> Any:
        """What this node knows of the other nodes' claims (None when the
        store is not shared)."""
        journal = self.journal
        return None if journal is None else journal.elsewhere

    def claimed_in(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """A task's run records, read to load it: the runs they show claimed
        (RUNNING) end here without a claim the store would only refuse."""
        elsewhere = self._elsewhere()
        if elsewhere is not None:
            elsewhere.learn((row["task_id"], row["slot"], row["attempt"])
                            for row in rows if row.get("status") == RUNNING)

    def claim_given_back(self, task_id: str) -> None:
        """A claim of *task_id* was given back (its node shut down before
        the run began): what was known of the task's claims may be stale."""
        elsewhere = self._elsewhere()
        if elsewhere is not None:
            elsewhere.forget(task_id)

    def look_ahead(self, refused: Run) -> None:
        """Another node claimed *refused* first (so it is ahead of this one):
        learn in one look which of the runs waiting after it the others
        claimed too. Takes the state lock (call it without)."""
        elsewhere = self._elsewhere()
        if elsewhere is None:
            return
        with self.lock:
            upcoming = self.lanes.of(refused).upcoming()
            offset = self.offset
        first = [entry.run for entry in smallest(upcoming, LOOK_AHEAD)]
        elsewhere.look(first, lambda run: run._slot if run._slot is not None else
                       None if run.manual else slot_of(run, offset))
