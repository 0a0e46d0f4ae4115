"""The jobs folder: schedules written as folder names, and the scripts in it.

The folder needs no manifest. Each sub-folder's name is its schedule:

* ``<N><unit>`` with N a positive integer and the unit ``s``, ``m`` or
  ``min``, ``h``, ``d``, ``w`` (lower case): every N seconds, minutes,
  hours, days or weeks (at most 10 years);
* a cron alias: ``@hourly``, ``@daily``, ``@midnight``, ``@weekly``,
  ``@monthly``, ``@yearly``, ``@annually``;
* any name, when the folder holds a file named ``schedule``: its first line
  that is neither blank nor a ``#`` comment is a cron expression (5 fields,
  or 6 with seconds first, or an alias), or an interval written as a folder
  name (``90s``). The file wins over the folder's name.

Every executable regular file in a schedule folder (but ``schedule`` and
hidden files) is a job with the task id ``<folder>/<file>``. Deeper folders,
hidden entries and other files are ignored (so a job may keep data next to
it); a warning names a script (a ``#!`` file) that is not executable and an
executable at the top level.

A failed run is re-run every JOB_FAIL_TIMEOUT_PERIOD_MINUTES while that
comes before the job's next normal slot: ``retries = ceil(period /
fail_period) - 1``, where the period is the folder's interval or, for a cron
job, the shortest gap between two of its first 64 firings after 2001-01-01
UTC. The count depends only on the schedule and the config, so a restart
re-adds an identical task and keeps its stored schedule.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
import time
from typing import Dict, List, Optional, Tuple, Union

__all__ = ["FolderSchedule", "Job", "parse_folder_name", "parse_schedule_file", "scan_jobs",
           "retry_policy", "describe_schedule", "duration_words", "SCHEDULE_FILE"]

#: The file in a job folder that holds its cron expression.
SCHEDULE_FILE = "schedule"

_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}
_INTERVAL = re.compile(r"^([0-9]+)(s|m|min|h|d|w)$", re.ASCII)
_MAX_INTERVAL = 3650 * 86400
_ALIASES = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
#: Where the shortest gap between cron firings is measured (2001-01-01 UTC, a Monday).
_GAP_REFERENCE = 978307200.0
_GAP_SAMPLES = 64


@dataclasses.dataclass(frozen=True)
class FolderSchedule:
    """A job folder's schedule: ``Scheduler.delay(trigger, interval, ...)``."""

    trigger: str                 # 'recur' or 'cron'
    interval: Union[int, str]    # seconds, or the cron expression
    text: str                    # as written: '30s', '@hourly', '*/15 * * * *'

    @property
    def seconds(self) -> Optional[int]:
        """The interval in seconds; None for a cron schedule."""
        return self.interval if self.trigger == "recur" else None  # type: ignore[return-value]


def parse_folder_name(name: str) -> FolderSchedule:
    """The schedule a folder name stands for; ValueError if it is none.

    >>> parse_folder_name("5min")
    FolderSchedule(trigger='recur', interval=300, text='5min')
    """
    match = _INTERVAL.match(name)
    if match:
        count, unit = int(match.group(1)), match.group(2)
        seconds = count * _UNITS[unit]
        if count == 0:
            raise ValueError(f"{name!r}: the interval must be positive")
        if seconds > _MAX_INTERVAL:
            raise ValueError(f"{name!r}: the interval is longer than 10 years")
        return FolderSchedule("recur", seconds, name)
    if name in _ALIASES:
        return FolderSchedule("cron", name, name)
    if name.lower() in _ALIASES or _INTERVAL.match(name.lower()):
        raise ValueError(f"{name!r}: write schedule folder names in lower case "
                         f"({name.lower()!r})")
    raise ValueError(f"{name!r} is not a schedule: use <N>s, <N>m or <N>min, <N>h, <N>d, "
                     f"<N>w, or one of {', '.join(_ALIASES)}, or put a cron expression "
                     f"in a file named {SCHEDULE_FILE!r} in the folder")


def parse_schedule_file(path: str) -> FolderSchedule:
    """The schedule in a ``schedule`` file; ValueError (naming the file) if bad."""
    try:
        with open(path, encoding="utf-8") as stream:
            lines = stream.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read it: {exc}") from None
    text = next((line.strip() for line in lines
                 if line.strip() and not line.lstrip().startswith("#")), None)
    if text is None:
        raise ValueError(f"{path}: holds no schedule (only blank lines and comments)")
    if _INTERVAL.match(text):
        try:
            return parse_folder_name(text)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
    from ..timing.triggers import make_trigger
    try:
        make_trigger("cron", text, now=0.0, wall_now=time.time())
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    return FolderSchedule("cron", text, text)


@functools.lru_cache(maxsize=256)
def _cron_period(expression: str) -> float:
    """The shortest gap between two of the first firings of *expression* (UTC)."""
    from ..timing.triggers import make_trigger
    trig = make_trigger("cron", expression, now=0.0, wall_now=_GAP_REFERENCE, tz="UTC")
    due: Optional[float] = trig.first_due
    gap = math.inf
    for _ in range(_GAP_SAMPLES):
        following = trig.next_due(due) if due is not None else None
        if following is None:
            break
        gap = min(gap, following - due)  # type: ignore[operator]
        due = following
    return gap


def retry_policy(schedule: FolderSchedule, fail_minutes: float) -> Tuple[int, float]:
    """``(retries, retry_delay)`` for a job: re-run a failure every
    *fail_minutes* while that lands before the next normal slot."""
    delay = fail_minutes * 60.0
    seconds = schedule.seconds
    period = float(seconds) if seconds is not None else _cron_period(str(schedule.interval))
    if not math.isfinite(period):
        return 0, delay
    # The tolerance keeps 60 / 0.6 == 100.00000000000001 from adding a retry
    # that would land on the next slot itself.
    return max(0, math.ceil(period / delay - 1e-9) - 1), delay


@dataclasses.dataclass(frozen=True)
class Job:
    """A script found in the jobs folder."""

    task_id: str                 # '<folder>/<file>'
    path: str                    # the script, absolute
    folder: str                  # its folder, absolute (the run's working directory)
    schedule: FolderSchedule


def scan_jobs(jobs_dir: str) -> Tuple[Dict[str, Job], List[str]]:
    """The jobs in *jobs_dir*, by task id, and warnings about what was skipped.

    Raises OSError if the folder itself cannot be listed.
    """
    jobs: Dict[str, Job] = {}
    problems: List[str] = []
    root = os.path.abspath(jobs_dir)
    with os.scandir(root) as entries:
        top = sorted(entries, key=lambda e: e.name)
    for entry in top:
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            if entry.is_file() and os.access(entry.path, os.X_OK):
                problems.append(f"{entry.path}: a script at the top of the jobs folder is "
                                "not a job (put it in a schedule folder such as 5min/)")
            continue
        folder = entry.path
        schedule_path = os.path.join(folder, SCHEDULE_FILE)
        try:
            if os.path.isfile(schedule_path):
                schedule = parse_schedule_file(schedule_path)
            else:
                schedule = parse_folder_name(entry.name)
        except ValueError as exc:
            problems.append(f"{folder}: skipped: {exc}")
            continue
        try:
            with os.scandir(folder) as inner:
                files = sorted(inner, key=lambda e: e.name)
        except OSError as exc:
            problems.append(f"{folder}: skipped: cannot list it: {exc}")
            continue
        for item in files:
            if item.name.startswith(".") or item.name == SCHEDULE_FILE:
                continue
            if not item.is_file():
                continue  # nested folders are not scanned (a job may keep data there)
            if not os.access(item.path, os.X_OK):
                if _has_shebang(item.path):  # a script, surely meant to be a job
                    problems.append(f"{item.path}: not executable, so not a job "
                                    f"(chmod +x to make it one)")
                continue
            task_id = f"{entry.name}/{item.name}"
            jobs[task_id] = Job(task_id, item.path, folder, schedule)
    return jobs, problems


def _has_shebang(path: str) -> bool:
    try:
        with open(path, "rb") as stream:
            return stream.read(2) == b"#!"
    except OSError:
        return False


def describe_schedule(schedule: FolderSchedule) -> str:
    """The schedule in words: ``every 30 s``, ``every 5 min``, ``cron @hourly``."""
    if schedule.trigger == "recur" and schedule.seconds is not None:
        return f"every {duration_words(schedule.seconds)}"
    return f"cron {schedule.text}"


def duration_words(seconds: float) -> str:
    """A whole number of seconds in its largest exact unit: ``90 s``, ``5 min``, ``2 h``."""
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size:g} {unit}"
    return f"{seconds:g} s"
