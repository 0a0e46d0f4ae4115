"""A run's claim of its slot in the store, as the journal writes it: one
by one (``Claim.decide``), or many in one statement where the store can
(``decide_all``)."""
from __future__ import annotations

from typing import Any, Callable, List, Optional, Tuple

from ..records.runs import Run

__all__ = ["Claim", "EarlyClaim", "decide_all"]


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
