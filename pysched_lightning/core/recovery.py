"""Recovery: what a stored task is owed when a scheduler takes the store.

Read from the task's record and its newest run records (claims included),
after the runs a dead process left RUNNING were marked interrupted:

* run numbers go on from the highest ever given (a claim counts), so no
  number is used twice;
* an occurrence that was claimed is never fired again: a one-shot whose
  slot has a claim is over, unless it is owed a retry;
* a failed attempt (an error, a timeout, or a run the crash interrupted)
  with retries left is owed its next attempt, due when it would have been
  (or now, if that passed): retries go on across restarts. A recurring
  task whose next occurrence is due already runs that one instead (the
  catch-up stands for what was missed, as coalescing does).

Pure: no store, no lock, no user code.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, NamedTuple, Optional

from ..records.options import TaskOptions
from ..records.protocols import COMPLETED, ERROR, TIMEOUT, TaskRecord

__all__ = ["Recovery", "RetryOwed", "recover", "RECOVERY_ROWS"]

#: How many of a task's newest run records recovery reads.
RECOVERY_ROWS = 50

_FAILED = frozenset({ERROR, TIMEOUT})


class RetryOwed(NamedTuple):
    """The next attempt of a failed run: due at *wall_time* (POSIX seconds)."""

    attempt: int
    number: int
    slot: str
    wall_time: float


class Recovery(NamedTuple):
    """What a stored task is owed."""

    #: The highest run number given so far.
    runs: int
    #: The stored ``next_run`` names a slot that was claimed: not to fire again.
    slot_taken: bool
    #: The status of the last attempt of that slot, when it is over.
    slot_status: Optional[int]
    #: Retries owed, oldest first.
    retries: List[RetryOwed]


def recover(record: TaskRecord, rows: List[Mapping[str, Any]], options: TaskOptions,
            recurring: bool, wall_now: float) -> Recovery:
    """What *record* is owed, from its newest *rows* (newest first), at wall
    time *wall_now*."""
    runs = max([record.runs] + [row.get("run") or 0 for row in rows])
    last = _last_attempts(rows)
    next_slot = None if record.next_run is None else f"{record.next_run:.3f}"
    taken = next_slot is not None and next_slot in last
    status = last[next_slot]["status"] if taken else None  # type: ignore[index]
    caught_up = recurring and record.next_run is not None and record.next_run <= wall_now
    retries = [] if caught_up else [_owed(row, options) for row in last.values()]
    owed = sorted((retry for retry in retries if retry is not None),
                  key=lambda retry: retry.wall_time)
    return Recovery(runs, taken, status, owed)


def _last_attempts(rows: List[Mapping[str, Any]]) -> Dict[str, Mapping[str, Any]]:
    """Per slot, the record of its last attempt (skipped runs aside)."""
    last: Dict[str, Mapping[str, Any]] = {}
    for row in rows:
        slot = row.get("slot")
        if not slot or row.get("status") not in _FAILED | {COMPLETED}:
            continue
        if slot not in last or (row.get("attempt") or 1) > (last[slot].get("attempt") or 1):
            last[slot] = row
    return last


def _owed(row: Mapping[str, Any], options: TaskOptions) -> Optional[RetryOwed]:
    """The retry owed after the failed attempt *row*, if any."""
    attempt = row.get("attempt") or 1
    if row.get("status") not in _FAILED or attempt > options.retries:
        return None
    ended = row.get("finished") or row.get("started") or row.get("scheduled") or 0.0
    return RetryOwed(attempt + 1, row.get("run") or 0, row["slot"],
                     ended + options.retry_wait(attempt))
