"""What each page and JSON answer holds, read from a source: filtering,
sorting and paging of tasks, a task's history, one run, the timeline and
the summary strip. Plain values in, plain values out; no HTTP here.

Bad parameters raise ``BadRequest`` (a ValueError) naming the value.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import math
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from ..records.owners import holder_text
from .data import Source, count_running, missed_total
from .model import (CANCELED, COMPLETED, ERROR, FAILING, INTERRUPTED, MISSED, RUNNING,
                    SUSPENDED, TIMEOUT, TaskRow, worst_status)
from .timeline import WINDOWS, Row

__all__ = ["BadRequest", "Summary", "summary", "filter_tasks", "sort_tasks", "paged",
           "parse_time", "parse_int", "STATUS_FILTERS", "SORTS", "timeline_rows",
           "TASKS_PER_PAGE", "ROWS_PER_PAGE", "RUNS_PER_PAGE", "NEXT_TIMES"]

TASKS_PER_PAGE = 200
ROWS_PER_PAGE = 50
RUNS_PER_PAGE = 50
MAX_RUNS_PER_PAGE = 1000
NEXT_TIMES = 10
#: Runs read per timeline row; of older ones in the window only those that did
#: not complete are drawn (the others are counted).
ROW_RUN_LIMIT = 1000
_NOT_COMPLETED = (ERROR, TIMEOUT, INTERRUPTED, MISSED, CANCELED, RUNNING)
#: Runs ``/api/timeline`` returns at most per call (``limit=`` up to this).
API_TIMELINE_LIMIT = 10_000
_DAY = 86400.0
#: The times a query may name: those a date shows (0001-01-01 to 9999-12-31 UTC).
_FIRST_TIME, _LAST_TIME = -62135596800.0, 253402300799.0

#: The status filter's choices: name -> (label, test).
STATUS_FILTERS: Mapping[str, Tuple[str, Callable[[TaskRow], bool]]] = {
    "": ("any status", lambda row: True),
    "failing": ("failing (error, timeout, interrupted)", lambda row: row.status in FAILING),
    "running": ("running", lambda row: row.status == RUNNING),
    "completed": ("completed", lambda row: row.status == COMPLETED),
    "missed": ("missed", lambda row: row.status == MISSED),
    "canceled": ("canceled", lambda row: row.status == CANCELED),
    "waiting": ("waiting (never run)", lambda row: row.status in (None, SUSPENDED)),
    "paused": ("paused", lambda row: row.paused),
}

_LAST = (1, 0.0)  # rows without a value sort after the others, either way
SORTS: Mapping[str, Tuple[str, Callable[[TaskRow], Any]]] = {
    "name": ("Task", lambda row: (row.name.lower(), row.id)),
    "next": ("Next run", lambda row: (0, row.next_run) if row.next_run is not None else _LAST),
    "status": ("Last status", lambda row: (0, -_severity(row.status))),
    "last": ("Last run", lambda row: (0, -row.last_run) if row.last_run is not None else _LAST),
    "duration": ("Duration", lambda row: (0, -row.last_duration)
                 if row.last_duration is not None else _LAST),
    "runs": ("Runs", lambda row: -row.runs),
    "missed": ("Missed", lambda row: -row.missed),
}


class BadRequest(ValueError):
    """A parameter that cannot be used; the message names it."""


def _severity(status: Optional[int]) -> int:
    order = [SUSPENDED, COMPLETED, CANCELED, RUNNING, MISSED, TIMEOUT, INTERRUPTED, ERROR]
    return order.index(status) if status in order else -1


@dataclasses.dataclass
class Summary:
    tasks: int
    paused: int
    running: int
    failures_24h: int
    missed_24h: int
    holder: Optional[str]
    live: bool

    def as_json(self) -> Dict[str, Any]:
        out = dataclasses.asdict(self)
        out["held_by"] = holder_text(self.holder) if self.holder is not None else None
        return out


def summary(source: Source, rows: List[TaskRow], now: float) -> Summary:
    """The strip above every page: counts over all tasks and the last 24 h."""
    since = now - _DAY
    missed = source.runs.select(since=since, statuses=(MISSED,), limit=API_TIMELINE_LIMIT)
    return Summary(tasks=len(rows), paused=sum(1 for row in rows if row.paused),
                   running=count_running(rows),
                   failures_24h=source.runs.count(since=since, statuses=FAILING),
                   missed_24h=missed_total(missed), holder=source.holder(), live=source.live)


def filter_tasks(rows: List[TaskRow], text: str, status: str) -> List[TaskRow]:
    if status not in STATUS_FILTERS:
        raise BadRequest(f"status={status!r} is not a filter; use one of "
                         f"{', '.join(repr(k) for k in STATUS_FILTERS if k)}")
    test = STATUS_FILTERS[status][1]
    needle = text.strip().lower()
    return [row for row in rows if test(row) and (not needle or row.matches(needle))]


def sort_tasks(rows: List[TaskRow], sort: str, order: str) -> List[TaskRow]:
    if sort not in SORTS:
        raise BadRequest(f"sort={sort!r} is not a column; use one of "
                         f"{', '.join(repr(k) for k in SORTS)}")
    if order not in ("asc", "desc"):
        raise BadRequest(f"order={order!r}: use 'asc' or 'desc'")
    key = SORTS[sort][1]
    ordered = sorted(rows, key=key)
    if order == "desc":
        with_value = [row for row in ordered if key(row) != _LAST]
        ordered = with_value[::-1] + [row for row in ordered if key(row) == _LAST]
    return ordered


def paged(items: List[Any], page: int, size: int) -> Tuple[List[Any], int]:
    """The items of page *page* (from 1) and the number of pages."""
    pages = max(1, math.ceil(len(items) / size))
    if page > pages:
        page = pages
    return items[(page - 1) * size:page * size], pages


def timeline_rows(source: Source, tasks: List[TaskRow], since: float) -> List[Row]:
    """Each task's runs since *since*: the newest ROW_RUN_LIMIT, and before
    them the ones that did not complete (failures always show); the
    completed ones among those are counted, not drawn."""
    rows = []
    for task in tasks:
        runs = source.runs.select(task.id, ROW_RUN_LIMIT, since=since)
        hidden, older = 0, None
        if len(runs) >= ROW_RUN_LIMIT:
            older = runs[-1]["scheduled"]
            problems = source.runs.select(task.id, ROW_RUN_LIMIT, since=since, before=older,
                                          statuses=_NOT_COMPLETED)
            hidden = source.runs.count(task.id, since=since) - len(runs) - len(problems)
            runs = runs + problems
        rows.append(Row(task, runs, max(hidden, 0), older))
    return rows


def window_of(name: str) -> float:
    if name not in WINDOWS:
        raise BadRequest(f"window={name!r}: use one of {', '.join(map(repr, WINDOWS))}")
    return WINDOWS[name]


def worst_of(runs: List[Dict[str, Any]]) -> Optional[int]:
    return worst_status(run["status"] for run in runs)


# -- parameters ------------------------------------------------------------------


def parse_int(name: str, text: Optional[str], default: int, low: int, high: int) -> int:
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise BadRequest(f"{name}={text!r} is not a whole number") from None
    if not low <= value <= high:
        raise BadRequest(f"{name}={text!r} must be from {low} to {high}")
    return value


def parse_time(name: str, text: Optional[str]) -> Optional[float]:
    """POSIX seconds (``1764500000.5``) or ISO 8601 (``2026-11-30T12:00:00Z``;
    without a zone, UTC) as POSIX seconds; None for nothing. A time outside
    the years 1 to 9999 is refused: no date can show it."""
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        value = _iso_seconds(name, text)
    if not _FIRST_TIME <= value <= _LAST_TIME:  # also NaN and the infinities
        raise BadRequest(f"{name}={text!r} is not a time from the year 1 to 9999")
    return value


def _iso_seconds(name: str, text: str) -> float:
    try:
        moment = _dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{name}={text!r} is neither POSIX seconds nor an ISO 8601 "
                         "time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.timezone.utc)
    try:
        return moment.timestamp()
    except (OverflowError, ValueError):  # a zone moves it past the year 1 or 9999
        raise BadRequest(f"{name}={text!r} is not a time from the year 1 to 9999") from None
