"""The runs view: every task's runs, newest first, filtered by status, task
(its id or its name), a time window and text in the error, paged by a
keyset cursor (``before``) so a page costs the same on a big store.

Status, task and window are the store's indexed filters. Text is matched
here, over pages read in turn, at most ``SCAN_LIMIT`` runs per page: a rare
text on a big store gives a page that says how far back it looked, and a
cursor to look further, rather than a slow answer.
"""
from __future__ import annotations

import dataclasses
import heapq
import math
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from .data import Source
from .model import (CANCELED, COMPLETED, ERROR, FAILING, INTERRUPTED, MISSED, RUNNING, STATUS,
                    TIMEOUT, error_summary, iso, run_json)
from .pages import BadRequest, MAX_RUNS_PER_PAGE, RUNS_PER_PAGE, parse_int, parse_time

__all__ = ["RUN_STATUSES", "RUN_WINDOWS", "RunQuery", "RunsPage", "parse_query", "runs_page",
           "SCAN_LIMIT"]

#: The status filter's choices: name -> (label, statuses; None: any).
RUN_STATUSES: Mapping[str, Tuple[str, Optional[Tuple[int, ...]]]] = {
    "": ("any status", None),
    "failing": ("failing (error, timeout, interrupted)", FAILING),
    "error": ("error", (ERROR,)), "timeout": ("timeout", (TIMEOUT,)),
    "interrupted": ("interrupted", (INTERRUPTED,)), "missed": ("missed", (MISSED,)),
    "canceled": ("canceled", (CANCELED,)), "running": ("running", (RUNNING,)),
    "completed": ("completed", (COMPLETED,)),
}
#: The windows offered, by name -> (label, seconds back from now; None: all).
RUN_WINDOWS: Mapping[str, Tuple[str, Optional[float]]] = {
    "": ("any time", None), "1h": ("last hour", 3600.0), "24h": ("last 24 h", 86400.0),
    "7d": ("last 7 days", 604800.0)}
#: Runs read at most per page when the text filter is on.
SCAN_LIMIT = 5000
#: With a text filter and no status, runs that completed are not read: they
#: hold no error.
_NOT_COMPLETED = tuple(code for code in STATUS if code != COMPLETED)


@dataclasses.dataclass
class RunQuery:
    """What the view is asked for (the URL's parameters, checked)."""

    status: str = ""
    task: str = ""
    text: str = ""
    window: str = ""
    before: Optional[float] = None
    limit: int = RUNS_PER_PAGE

    def params(self, **changes: Any) -> Dict[str, Any]:
        """The URL parameters of this query (those set), with *changes*."""
        out = {"status": self.status, "task": self.task, "q": self.text,
               "window": self.window, "limit": self.limit if self.limit != RUNS_PER_PAGE else None}
        out.update(changes)
        return {key: value for key, value in out.items() if value not in (None, "")}


@dataclasses.dataclass
class RunsPage:
    """One page: its runs, the cursor of the next page (None at the end),
    the tasks the task filter named, and how far back a text search looked
    when it stopped before filling the page."""

    runs: List[Dict[str, Any]]
    cursor: Optional[float]
    task_ids: Optional[List[str]]
    since: Optional[float]
    searched_to: Optional[float] = None

    def as_json(self, query: RunQuery) -> Dict[str, Any]:
        return {"filters": {"status": query.status, "task": query.task, "q": query.text,
                            "window": query.window, "since": iso(self.since),
                            "before": query.before, "task_ids": self.task_ids},
                "runs": [run_json(run) for run in self.runs], "next_before": self.cursor,
                "searched_to": iso(self.searched_to)}


def parse_query(query: Mapping[str, str]) -> RunQuery:
    status, window = query.get("status", ""), query.get("window", "")
    if status not in RUN_STATUSES:
        raise BadRequest(f"status={status!r} is not a run status filter; use one of "
                         f"{', '.join(repr(k) for k in RUN_STATUSES if k)}")
    if window not in RUN_WINDOWS:
        raise BadRequest(f"window={window!r}: use one of "
                         f"{', '.join(repr(k) for k in RUN_WINDOWS if k)}")
    return RunQuery(status=status, task=query.get("task", "").strip(),
                    text=query.get("q", "").strip(), window=window,
                    before=parse_time("before", query.get("before")),
                    limit=parse_int("limit", query.get("limit"), RUNS_PER_PAGE, 1,
                                    MAX_RUNS_PER_PAGE))


def task_ids(source: Source, task: str) -> Optional[List[str]]:
    """The tasks *task* names: its id, else every task of that name (any
    case); a name no task has is taken as the id of a removed task."""
    if not task:
        return None
    if source.task(task) is not None:
        return [task]
    wanted = task.casefold()
    named = [row.id for row in source.tasks() if row.name.casefold() == wanted]
    return named or [task]


def runs_page(source: Source, query: RunQuery, now: float) -> RunsPage:
    """The page of runs *query* asks for, newest first."""
    seconds = RUN_WINDOWS[query.window][1]
    since = None if seconds is None else now - seconds
    ids = task_ids(source, query.task)
    statuses = RUN_STATUSES[query.status][1]
    if query.text and statuses is None:
        statuses = _NOT_COMPLETED
    reader = _Reader(source, ids, since, statuses)
    if not query.text:
        runs, cursor = reader.page(query.limit, query.before)
        return RunsPage(runs, cursor, ids, since)
    needle = query.text.casefold()
    found: List[Dict[str, Any]] = []
    cursor, scanned = query.before, 0
    while len(found) < query.limit and scanned < SCAN_LIMIT:
        batch, cursor = reader.page(min(max(query.limit * 4, 200), SCAN_LIMIT), cursor)
        scanned += len(batch)
        found.extend(run for run in batch if _matches(run, needle))
        if cursor is None:
            break
    searched_to = cursor if len(found) < query.limit and cursor is not None else None
    return RunsPage(found, cursor, ids, since, searched_to)


def _matches(run: Mapping[str, Any], needle: str) -> bool:
    return any(needle in text.casefold() for text in (
        run.get("error"), run.get("reason"), error_summary(run)) if isinstance(text, str))


class _Reader:
    """Pages of the runs of some tasks (or all), since a time, of some
    statuses: a page never ends amid runs scheduled at the same instant."""

    def __init__(self, source: Source, ids: Optional[List[str]], since: Optional[float],
                 statuses: Optional[Iterable[int]]) -> None:
        self.history, self.ids, self.since = source.runs, ids, since
        self.statuses = None if statuses is None else tuple(statuses)

    def select(self, limit: Optional[int], before: Optional[float],
               since: Optional[float] = None) -> List[Dict[str, Any]]:
        since = self.since if since is None else max(since, self.since or since)
        one = [None] if self.ids is None else self.ids
        lists = [self.history.select(task_id, limit, before=before, since=since,
                                     statuses=self.statuses) for task_id in one]
        if len(lists) == 1:
            return lists[0]
        merged = list(heapq.merge(*lists, key=lambda run: run["scheduled"] or 0.0,
                                  reverse=True))
        return merged if limit is None else merged[:limit]

    def page(self, limit: int, before: Optional[float]
             ) -> Tuple[List[Dict[str, Any]], Optional[float]]:
        rows = self.select(limit + 1, before)
        if len(rows) <= limit:
            return rows, None
        rows, edge = rows[:limit], rows[limit]["scheduled"]
        if rows[-1]["scheduled"] == edge:  # take every run at the edge, or none
            rows = [run for run in rows if run["scheduled"] != edge] + self.select(
                None, math.nextafter(edge, math.inf), since=edge)
        return rows, rows[-1]["scheduled"]
