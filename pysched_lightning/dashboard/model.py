"""What the dashboard shows, as plain values: a task row, run dicts, statuses
and schedules in words.

Both data sources (a store, a live scheduler) produce these, so the pages and
the JSON never care where a value came from. Times are POSIX seconds (UTC);
nothing here holds a user object, only text and numbers.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

__all__ = ["TaskRow", "STATUS", "status_label", "status_class", "FAILING", "RUN_KEYS",
           "schedule_words", "every_text", "display_status", "last_finished", "worst_status",
           "run_dict", "run_json", "interval_of", "iso", "error_summary"]

#: Status codes (the store's, ``TaskStatus``'s) and their labels.
STATUS: Mapping[int, str] = {0: "Completed", 1: "Error", 2: "Suspended", 3: "Running",
                             4: "Canceled", 5: "Timeout", 6: "Missed", 7: "Interrupted"}
COMPLETED, ERROR, SUSPENDED, RUNNING, CANCELED, TIMEOUT, MISSED, INTERRUPTED = range(8)
#: Statuses that count as failures (the summary, the "failing" filter).
FAILING = (ERROR, TIMEOUT, INTERRUPTED)
#: The CSS class (and colour) of each status.
_CLASSES = {0: "ok", 1: "error", 2: "waiting", 3: "running", 4: "canceled", 5: "timeout",
            6: "missed", 7: "interrupted"}
#: When runs are drawn as one mark, the most alarming status wins.
_SEVERITY = {ERROR: 7, INTERRUPTED: 6, TIMEOUT: 5, MISSED: 4, RUNNING: 3, CANCELED: 2,
             COMPLETED: 1, SUSPENDED: 0}
#: The fields of a run as the dashboard shows it (the store's, without the
#: pickled outcome, which a reader never loads).
RUN_KEYS = ("task_id", "name", "run", "attempt", "slot", "status", "scheduled", "started",
            "finished", "duration", "exit_code", "result", "error", "traceback", "output",
            "stderr", "reason", "count")
_ALIASES = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
            "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
            "@hourly": "0 * * * *"}


def iso(epoch: Optional[float]) -> Optional[str]:
    """POSIX seconds as ISO 8601 UTC (``2026-11-30T13:33:00.123000+00:00``)."""
    if epoch is None:
        return None
    return _dt.datetime.fromtimestamp(epoch, _dt.timezone.utc).isoformat(
        timespec="microseconds")


def status_label(code: Optional[int]) -> str:
    """``'Error'`` for 1; ``'-'`` for None; the number for an unknown code."""
    if code is None:
        return "-"
    return STATUS.get(code, str(code))


def status_class(code: Optional[int]) -> str:
    return _CLASSES.get(code, "none") if code is not None else "none"


def worst_status(codes: Iterable[int]) -> Optional[int]:
    """The most alarming of *codes* (error first), or None for none."""
    return max(codes, key=lambda code: _SEVERITY.get(code, 0), default=None)


@dataclasses.dataclass
class TaskRow:
    """One task as the tasks page and ``/api/tasks`` show it."""

    id: str
    name: str
    trigger: Optional[str]            # 'once', 'recur', 'cron', or None if unknown
    written: str                      # the schedule as written: '*/5 * * * *', 'every 30 s'
    words: str                        # in words: 'Every 5 minutes'
    tz: Optional[str]
    next_run: Optional[float]
    status: Optional[int]             # what to show: running, else the latest record's
    last_run: Optional[float]         # when the latest run started (or was due)
    last_duration: Optional[float]
    last_exit_code: Optional[int]
    last_error: Optional[str]
    runs: int
    missed: int
    paused: bool
    priority: Any = None
    call: Optional[str] = None        # 'module.fn(1, x=2)' or the command line
    options: Dict[str, Any] = dataclasses.field(default_factory=dict)
    stored_as: Optional[str] = None   # 'import' or 'pickle' with a store
    scheduled: bool = True            # False once finished or canceled

    @property
    def running(self) -> bool:
        return self.status == RUNNING

    @property
    def failing(self) -> bool:
        return self.status in FAILING

    def matches(self, text: str) -> bool:
        """True if *text* (lower case) is in the id, name, call or schedule."""
        return any(text in (value or "").lower()
                   for value in (self.id, self.name, self.call, self.written, self.words))

    def as_json(self) -> Dict[str, Any]:
        out = dataclasses.asdict(self)
        out["status"] = status_label(self.status) if self.status is not None else None
        out["status_code"] = self.status
        out["next_run"], out["last_run"] = iso(self.next_run), iso(self.last_run)
        return out


def display_status(latest: List[Mapping[str, Any]], stored: Optional[int]) -> Optional[int]:
    """The status to show for a task from its newest run records: RUNNING if
    one of them is (a skipped overlapping run may be newer than the run still
    going), else that of the record that happened last, else the task's own
    (*stored*). A run happened when it started, a skipped one when it was
    due: a late catch-up run after a stall is newer than the MISSED record of
    the slots it skipped."""
    if any(run.get("status") == RUNNING for run in latest):
        return RUNNING
    if latest:
        return by_happening(latest)[0].get("status")
    return stored


def by_happening(runs: List[Mapping[str, Any]]) -> List[Mapping[str, Any]]:
    """*runs*, the one that happened last first (started, else due)."""
    return sorted(runs, key=_happened, reverse=True)


def _happened(run: Mapping[str, Any]) -> float:
    started = run.get("started")
    return float(started if started is not None else run.get("scheduled") or 0.0)


def last_finished(latest: List[Mapping[str, Any]]) -> Optional[Mapping[str, Any]]:
    """The record of the run that started last, or None."""
    return next((run for run in by_happening(latest) if run.get("started") is not None), None)


def every_text(seconds: float) -> str:
    """``'every 30 s'``, ``'every 5 min'``, ``'every 2 h'``, ``'every 1.5 s'``."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"every {seconds // size:g} {unit}"
    return f"every {seconds:g} s"


def _every_words(seconds: float) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"Every {unit}" if count == 1 else f"Every {count:g} {unit}s"
    return "Every second" if seconds == 1 else f"Every {seconds:g} seconds"


def schedule_words(trigger: Optional[str], interval: Any,
                   tz: Optional[str] = None) -> Tuple[str, str]:
    """``(as written, in words)`` for a trigger and its interval as given
    (a number of seconds, a cron string, an ISO time for a datetime)."""
    if trigger == "recur" and _is_seconds(interval):
        return every_text(float(interval)), _every_words(float(interval))
    if trigger == "cron" and isinstance(interval, str):
        zone = f" ({tz})" if tz else ""
        return interval, _cron_words(interval) + zone
    if trigger in ("once", "cron"):
        if isinstance(interval, str):
            return f"once at {interval}", "Once"
        return "once", "Once"
    text = "-" if interval is None else f"{trigger} {interval}"
    return text, text


def _is_seconds(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _cron_words(expression: str) -> str:
    """The expression in English (cron-descriptor, part of the dashboard
    extra); the expression itself if that is not installed or fails."""
    text = _ALIASES.get(expression.strip().lower(), expression)
    try:
        from cron_descriptor import ExpressionDescriptor, Options
    except ImportError:
        return expression
    options = Options()
    options.use_24hour_time_format = True
    options.throw_exception_on_parse_error = True
    try:
        return str(ExpressionDescriptor(text, options).get_description())
    except Exception:  # a syntax cron-descriptor does not know; the scheduler accepted it
        return expression


def interval_of(text: Optional[str]) -> Any:
    """A stored interval (JSON text) as a value; the text itself if not JSON."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def error_summary(run: Optional[Mapping[str, Any]]) -> Optional[str]:
    """What went wrong, in one line: for a command, its exit code and the last
    line of its stderr (its traceback is the library's, not the job's);
    otherwise the error line."""
    if run is None:
        return None
    code, stderr = run.get("exit_code"), run.get("stderr")
    if code is not None and code != 0:
        lines = [line.strip() for line in (stderr or "").splitlines() if line.strip()]
        return f"exit {code}: {lines[-1]}" if lines else f"exit {code}"
    return run.get("error")


def run_dict(record: Mapping[str, Any]) -> Dict[str, Any]:
    """A run record with the dashboard's keys only (never the pickled outcome)."""
    out = {key: record.get(key) for key in RUN_KEYS}
    if out["count"] is None:
        out["count"] = 1
    return out


def run_json(run: Mapping[str, Any]) -> Dict[str, Any]:
    """A run for the JSON API: status as label and code, ISO UTC times."""
    out = run_dict(run)
    out["status_code"] = out["status"]
    out["status"] = status_label(out["status"])
    for key in ("scheduled", "started", "finished"):
        out[key] = iso(out[key])
    out["scheduled_ts"] = run.get("scheduled")
    return out
