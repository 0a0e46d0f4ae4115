"""Recovery: what a stored task is owed when a scheduler takes the store.

Read from the task's record and its newest run records (claims included),
after the runs a dead process left RUNNING were marked interrupted:

* run numbers go on from the highest ever given (a claim counts, and so
  do the runs of a replaced definition), so no number is used twice;
* an occurrence that was claimed is never fired again: a one-shot whose
  slot has a claim is over, unless it is owed a retry; a recurring task
  goes on with the occurrence after it (a ``modify()`` racing a firing may
  have stored the occurrence that had just fired);
* a failed attempt (an error, a timeout, or a run the crash interrupted)
  with retries left is owed its next attempt (one judged by an earlier
  definition, only if the task was left waiting for it), due when it
  would have been (or now, if that passed; its delay counted from now if
  the wall clock stepped back past the failure): retries go on across
  restarts. A recurring
  task whose next occurrence is due already runs that one instead (the
  catch-up stands for what was missed, as coalescing does; the retries it
  stands for are recorded as skipped, so no later restart owes them). A
  skipped attempt is owed nothing more, and a definition is owed nothing
  of the one it replaced (its records were set aside);
* the task reads SUSPENDED while a retry is owed, else its newest run's
  status (a stored "waiting" or "running" is what a crash left).

Pure: no store, no lock, no user code.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional

from ..records.options import TaskOptions
from ..records.protocols import (COMPLETED, ERROR, INTERRUPTED, MISSED, RUNNING, SUSPENDED,
                                 TIMEOUT, TaskRecord)

__all__ = ["Recovery", "RetryOwed", "recover", "skipped_retry", "RECOVERY_ROWS"]

#: How many of a task's newest run records recovery reads.
RECOVERY_ROWS = 50

_FAILED = frozenset({ERROR, TIMEOUT, INTERRUPTED})
_OVER = _FAILED | {COMPLETED}


class RetryOwed(NamedTuple):
    """The next attempt of a failed run: due at *wall_time* (POSIX seconds)."""

    attempt: int
    number: int
    slot: str
    wall_time: float
    #: When the slot it retries was due (POSIX seconds).
    scheduled: float


class Recovery(NamedTuple):
    """What a stored task is owed."""

    #: The highest run number given so far.
    runs: int
    #: The stored ``next_run`` names a slot that was claimed: not to fire again.
    slot_taken: bool
    #: When the task is due next (POSIX seconds); None: no occurrence is left
    #: to fire (a one-shot that ran, a trigger that has ended).
    next_run: Optional[float]
    #: The status the task reads (None: the stored one): SUSPENDED while a
    #: retry is owed, else that of the last attempt of the slot that ran, or
    #: of the newest run over when the stored one says a run was waiting.
    status: Optional[int]
    #: Retries owed, oldest first.
    retries: List[RetryOwed]
    #: Retries the catch-up stands for: to be recorded as skipped.
    dropped: List[RetryOwed]


def recover(record: TaskRecord, rows: List[Mapping[str, Any]], options: TaskOptions,
            following: Optional[Callable[[float], Optional[float]]],
            wall_now: float, slot_key: Callable[[float], str]) -> Recovery:
    """What *record* is owed, from its newest *rows* (newest first), at wall
    time *wall_now*. *following*: a recurring task's next occurrence after
    a wall time (None for a one-shot); *slot_key*: the slot that names the
    task's occurrence at a wall time."""
    runs = max([record.runs] + [row.get("run") or 0 for row in rows])
    last = _last_attempts(rows)
    next_run = record.next_run
    next_slot = None if next_run is None else slot_key(next_run)
    taken = next_slot is not None and next_slot in last
    status = last[next_slot]["status"] if taken else None  # type: ignore[index]
    if taken:
        next_run = following(next_run) if following is not None else None  # type: ignore
    skipped = _skipped_attempts(rows)
    owed = (_owed(row, options, record, wall_now) for row in last.values()
            if skipped.get(row["slot"], 0) <= (row.get("attempt") or 1))
    retries = sorted((retry for retry in owed if retry is not None),
                     key=lambda retry: retry.wall_time)
    dropped: List[RetryOwed] = []
    if following is not None and next_run is not None and next_run <= wall_now:
        dropped, retries = retries, []  # the catch-up stands for them
    if retries:
        status = SUSPENDED  # a run waits
    elif status is None and record.status in (SUSPENDED, RUNNING) and last:
        # (what a run in progress or a retry waiting left; nothing is now)
        status = next(row["status"] for row in rows
                      if row.get("slot") in last and row.get("status") in _OVER)
    return Recovery(runs, taken, next_run, status, retries, dropped)


def skipped_retry(record: TaskRecord, retry: RetryOwed) -> Dict[str, Any]:
    """The run record of a retry that the catch-up stands for (dated as its
    slot, which a purge keeps while it is the task's latest)."""
    return {"task_id": record.id, "name": record.name, "run": retry.number,
            "attempt": retry.attempt, "slot": retry.slot, "status": MISSED,
            "scheduled": retry.scheduled, "count": 1,
            "reason": "the scheduler restarted after the task's next slot, which runs "
                      "instead of this retry"}


def _last_attempts(rows: List[Mapping[str, Any]]) -> Dict[str, Mapping[str, Any]]:
    """Per slot, the record of its last attempt (skipped runs, and the runs
    of a replaced definition, set aside: ``slot~run.attempt``, aside)."""
    last: Dict[str, Mapping[str, Any]] = {}
    for row in rows:
        slot = row.get("slot")
        if not slot or "~" in slot or row.get("status") not in _OVER:
            continue
        if slot not in last or (row.get("attempt") or 1) > (last[slot].get("attempt") or 1):
            last[slot] = row
    return last


def _skipped_attempts(rows: List[Mapping[str, Any]]) -> Dict[str, int]:
    """Per slot, its highest attempt that was skipped (a retry)."""
    skipped: Dict[str, int] = {}
    for row in rows:
        slot, attempt = row.get("slot"), row.get("attempt") or 1
        if slot and attempt > 1 and row.get("status") == MISSED:
            skipped[slot] = max(attempt, skipped.get(slot, 0))
    return skipped


def _owed(row: Mapping[str, Any], options: TaskOptions, record: TaskRecord,
          wall_now: float) -> Optional[RetryOwed]:
    """The retry owed after the failed attempt *row*, if any. An attempt
    that ended before the definition was stored (a ``modify()`` after it)
    was judged by the one before: it is owed a retry only if the task was
    left waiting for one (or running, by a crash). Its wait counts from
    when it ended, or from *wall_now* if that is earlier (the wall clock
    stepped back since: the retry waits its delay, not the step too)."""
    attempt = row.get("attempt") or 1
    if row.get("status") not in _FAILED or attempt > options.retries:
        return None
    ended = row.get("finished") or row.get("started") or row.get("scheduled") or 0.0
    if ended <= record.updated and record.status not in (SUSPENDED, RUNNING):
        return None
    return RetryOwed(attempt + 1, row.get("run") or 0, row["slot"],
                     min(ended, wall_now) + options.retry_wait(attempt),
                     row.get("scheduled") or ended)
