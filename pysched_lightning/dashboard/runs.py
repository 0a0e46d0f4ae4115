"""Run history for the dashboard: from a store (indexed queries) or from the
runs a scheduler without a store keeps in memory.

Both give run dicts (``model.RUN_KEYS``), newest first, and page exactly:
a page never ends in the middle of several runs scheduled at the same
instant (a slot's retries share its time), so paging back by ``before``
skips nothing.
"""
from __future__ import annotations

import abc
import math
import reprlib
from typing import Any, Dict, Iterable, List, Optional, Tuple

from .model import run_dict

__all__ = ["RunHistory", "StoreRuns", "MemoryRuns", "run_from_live"]

_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 200


class RunHistory(abc.ABC):
    """The queries the pages make; subclasses provide ``select`` and ``count``."""

    @abc.abstractmethod
    def select(self, task_id: Optional[str] = None, limit: Optional[int] = None, *,
               before: Optional[float] = None, since: Optional[float] = None,
               statuses: Optional[Iterable[int]] = None) -> List[Dict[str, Any]]:
        """Runs newest first (by scheduled), filtered as ``Store.runs``."""

    @abc.abstractmethod
    def count(self, task_id: Optional[str] = None, *, since: Optional[float] = None,
              statuses: Optional[Iterable[int]] = None) -> int:
        """How many runs match, filtered as ``Store.count_runs``."""

    def at(self, task_id: str, scheduled: float) -> List[Dict[str, Any]]:
        """Every run of the task scheduled at exactly *scheduled*."""
        return self.select(task_id, since=scheduled, before=math.nextafter(scheduled, math.inf))

    def page(self, task_id: str, limit: int,
             before: Optional[float] = None) -> Tuple[List[Dict[str, Any]], Optional[float]]:
        """Up to about *limit* runs before *before*, newest first, and the
        cursor for the next page (None at the end). A page that would split
        runs scheduled alike takes all of them."""
        rows = self.select(task_id, limit + 1, before=before)
        if len(rows) <= limit:
            return rows, None
        rows, edge = rows[:limit], rows[limit]["scheduled"]
        if rows[-1]["scheduled"] == edge:
            rows = [run for run in rows if run["scheduled"] != edge] + self.at(task_id, edge)
        return rows, rows[-1]["scheduled"]

    def find(self, task_id: str, scheduled: float, attempt: int,
             slot: Optional[str]) -> Optional[Dict[str, Any]]:
        """The run with this scheduled time, attempt and (if given) slot."""
        for run in self.at(task_id, scheduled):
            if run["attempt"] == attempt and (not slot or run["slot"] == slot):
                return run
        return None


class StoreRuns(RunHistory):
    """A store's runs (its indexes serve every query here)."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def select(self, task_id: Optional[str] = None, limit: Optional[int] = None, *,
               before: Optional[float] = None, since: Optional[float] = None,
               statuses: Optional[Iterable[int]] = None) -> List[Dict[str, Any]]:
        return [run_dict(row) for row in self.store.runs(
            task_id, limit, before=before, since=since, statuses=statuses)]

    def count(self, task_id: Optional[str] = None, *, since: Optional[float] = None,
              statuses: Optional[Iterable[int]] = None) -> int:
        return int(self.store.count_runs(task_id, since=since, statuses=statuses))


class MemoryRuns(RunHistory):
    """The runs a scheduler without a store keeps (``Scheduler(history=)`` per task)."""

    def __init__(self, sched: Any) -> None:
        self.sched = sched

    def _all(self, task_id: Optional[str]) -> List[Dict[str, Any]]:
        ids = [task_id] if task_id is not None else [info["id"] for info in self.sched.get_all()]
        runs: List[Dict[str, Any]] = []
        for one in ids:
            try:
                runs.extend(run_from_live(run) for run in self.sched.runs(one))
            except KeyError:  # purged meanwhile
                continue
        runs.sort(key=lambda run: run["scheduled"] or 0.0, reverse=True)
        return runs

    def select(self, task_id: Optional[str] = None, limit: Optional[int] = None, *,
               before: Optional[float] = None, since: Optional[float] = None,
               statuses: Optional[Iterable[int]] = None) -> List[Dict[str, Any]]:
        wanted = None if statuses is None else set(statuses)
        out = [run for run in self._all(task_id)
               if (before is None or (run["scheduled"] or 0.0) < before)
               and (since is None or (run["scheduled"] or 0.0) >= since)
               and (wanted is None or run["status"] in wanted)]
        return out if limit is None else out[:limit]

    def count(self, task_id: Optional[str] = None, *, since: Optional[float] = None,
              statuses: Optional[Iterable[int]] = None) -> int:
        return len(self.select(task_id, since=since, statuses=statuses))


def run_from_live(run: Any) -> Dict[str, Any]:
    """A live ``Run`` as a run dict: POSIX times, the result as a short repr.
    Runs user code (the repr), so it is never called under a lock."""
    result = None
    if int(run.status) == 0:
        try:
            result = _REPR.repr(run.result)
        except Exception as exc:
            result = f"<unrepresentable: {type(exc).__name__}>"
    return run_dict({
        "task_id": run.task_id, "name": run.name, "run": run.run_number,
        "attempt": run.attempt, "slot": None, "status": int(run.status),
        "scheduled": _timestamp(run.scheduled), "started": _timestamp(run.started),
        "finished": _timestamp(run.finished), "duration": run.duration,
        "exit_code": run.exit_code, "result": result, "error": run.error,
        "traceback": run.traceback, "output": run.output, "stderr": run.stderr,
        "reason": run.reason, "count": run.count})


def _timestamp(moment: Any) -> Optional[float]:
    return moment.timestamp() if moment is not None else None
