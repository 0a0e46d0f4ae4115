"""A run's claim of its slot in the store, as the journal writes it: one
by one (``Claim.decide``), or many in one statement where the store can
(``decide_all``); and the slots a shared store's other nodes claimed,
learnt for many runs at once (``ClaimedElsewhere``)."""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from ..records.runs import Phase, Run

__all__ = ["Claim", "EarlyClaim", "decide_all", "ClaimedElsewhere"]

Key = Tuple[str, str, int]

_log = logging.getLogger("pysched_lightning")


class Claim:
    """A run's claim of its slot in the store. ``granted`` is the store's
    answer (None until committed), ``reason`` why it was refused."""

    __slots__ = ("task_id", "slot", "attempt", "run", "name", "scheduled", "started",
                 "granted", "reason", "_source")

    def __init__(self, task_id: str, slot: str, attempt: int, run: int,
                 name: Optional[str], scheduled: float, started: float,
                 source: Optional[Run] = None) -> None:
        self.task_id, self.slot, self.attempt, self.run = task_id, slot, attempt, run
        self.name, self.scheduled, self.started = name, scheduled, started
        self.granted: Optional[bool] = None
        self.reason: Optional[str] = None
        #: The run whose name is read when the claim is written.
        self._source = source

    def decide(self, store: Any) -> None:
        """Claim the slot (once: a write tried again keeps the first answer)."""
        if self.name is None:
            self.name = self._source.name if self._source is not None else self.task_id
        self.answered(store.claim_run(self.task_id, self.slot, self.attempt, run=self.run,
                                      name=self.name, scheduled=self.scheduled,
                                      started=self.started))

    def row(self) -> Tuple[str, str, int, int, str, float, float]:
        """The claim as stores take many at once (``claim_runs``): task id,
        slot, attempt, run, name, scheduled, started."""
        return (self.task_id, self.slot, self.attempt, self.run,
                self.name if self.name is not None else self.task_id, self.scheduled,
                self.started)

    def answered(self, granted: bool) -> None:
        """The store's answer (the first one stands)."""
        if self.granted is None:
            self.granted = granted
        self._source = None  # the run holds its claim, not the other way round

    def refuse(self, reason: str) -> None:
        if self.granted is None:
            self.granted, self.reason = False, reason


def decide_all(claim_runs: Callable[[List[Tuple[Any, ...]]], List[bool]],
               claims: List[Claim]) -> None:
    """Decide *claims* with one ``claim_runs`` call (a write tried again
    keeps each claim's first answer)."""
    answers = claim_runs([claim.row() for claim in claims])
    for claim, granted in zip(claims, answers):
        claim.answered(bool(granted))


def EarlyClaim(task_id: str, slot: str, name: str, wall_time: float) -> Claim:
    """The claim of a new task's first run, written with the task itself."""
    return Claim(task_id, slot, 1, 1, name, wall_time, wall_time)


#: How many of the next ready runs one look asks the store about.
LOOK_AHEAD = 512
#: How long a slot found claimed is taken for claimed. (A claim given back
#: meanwhile, by a node that shut down before the run started, is a change
#: this node hears: it forgets what it knew of that task's claims.)
KEEP_SECONDS = 0.25
#: How long a claim read with a task's run records is known (see learn()).
LEARNT_SECONDS = 5.0
#: After a look that found few of the runs claimed (the other nodes are not
#: ahead of this one), no other look for this long.
QUIET_SECONDS = 0.1


class ClaimedElsewhere:
    """The slots of this node's next ready runs that other nodes of a shared
    store have claimed already.

    A node that has run out of its own share of the tasks (see
    ``core/shares.py``) takes the others' runs, most of which their own node
    ran already: told claim by claim, it would spend a refused claim, a
    round trip, on each. Instead, the first refused claim makes it ask the
    store about the next :data:`LOOK_AHEAD` ready runs in one statement;
    the runs found claimed do not start here, without a round trip (asked
    under the state lock when a run would start; a look runs outside it).
    """

    def __init__(self, claimed_keys: Callable[[List[Key]], Iterable[Key]]) -> None:
        self._claimed_keys = claimed_keys
        #: Keys found claimed, and when (monotonic seconds).
        self._known: Dict[Key, float] = {}
        #: One look at a time (the others' refused claims need no look of their own).
        self._looking = threading.Lock()
        self._quiet_until = 0.0

    def expects(self) -> bool:
        """True when some slots were found claimed (else none is asked about)."""
        return bool(self._known)

    def taken(self, key: Key) -> bool:
        """True (once) when *key* was found claimed a moment ago."""
        found = self._known.pop(key, None)
        return found is not None and time.monotonic() - found < KEEP_SECONDS

    def learn(self, keys: Iterable[Key]) -> None:
        """*keys* are claimed, as read by other means (the run records of a
        task this node loads as another node adds it, its first run already
        claimed there): their runs end here without a refused claim. Known
        for LEARNT_SECONDS: a claim only goes away when given back, which
        :meth:`forget` hears."""
        known_at = time.monotonic() + LEARNT_SECONDS - KEEP_SECONDS
        for key in keys:
            if len(self._known) > 4 * LOOK_AHEAD:
                self._known.clear()
            self._known[key] = known_at

    def forget(self, task_id: str) -> None:
        """A claim of *task_id* was given back: what was learnt of its
        claims may be stale."""
        for key in list(self._known):  # (a copy: other threads add keys meanwhile)
            if key[0] == task_id:
                self._known.pop(key, None)

    def look(self, upcoming: List[Run], slot_of: Callable[[Run], Optional[str]]) -> None:
        """Ask the store about the *upcoming* ready runs (the first
        :data:`LOOK_AHEAD` of a lane's, in order, read outside the lock: a
        hint only). A failed look is no loss: each claim asks the store
        again."""
        if not upcoming or not self._looking.acquire(False):
            return
        try:
            now = time.monotonic()
            if now < self._quiet_until:
                return
            keys = _keys(upcoming, slot_of)
            found = list(self._claimed_keys(keys)) if keys else []
            if len(self._known) > 4 * LOOK_AHEAD:
                self._known.clear()
            for key in found:
                self._known[key] = now
            _log.debug("looked ahead at %d waiting runs: %d claimed by other nodes",
                       len(keys), len(found))
            if len(found) * 8 < len(keys):
                self._quiet_until = now + QUIET_SECONDS
        except Exception:
            self._quiet_until = time.monotonic() + QUIET_SECONDS
        finally:
            self._looking.release()


def _keys(upcoming: List[Run], slot_of: Callable[[Run], Optional[str]]) -> List[Key]:
    """The store keys of the *upcoming* runs still ready, without a claim."""
    keys = []
    for run in upcoming:
        if run._phase is Phase.READY and run._claim is None:
            slot = slot_of(run)
            if slot is not None:
                keys.append((run.task_id, slot, run.attempt))
    return keys
