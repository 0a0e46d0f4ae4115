"""The ``pysched`` command: run a folder of job scripts, PyCron style.

::

    pysched run [-c CONFIG] [-t JOBS_DIR] [-l LOGS_DIR] [-s STORE] [--nuke]
                [--grace SECONDS] [--workers N] [--log-level LEVEL]
    pysched list [-c CONFIG] [-t JOBS_DIR] [-s STORE] [--json]
    pysched history [JOB] [-n N] [-c CONFIG] [-t JOBS_DIR] [-s STORE] [--json]

(also ``python -m pysched_lightning ...``; ``pysched -c CONFIG ...``, with
options but no command, means ``pysched run ...``, as ``pycron -c`` did).

The jobs folder needs no manifest. Each sub-folder's name is its schedule:

* ``<N><unit>`` with N a positive integer and the unit ``s``, ``m`` or
  ``min``, ``h``, ``d``, ``w`` (lower case): every N seconds, minutes,
  hours, days or weeks (at most 10 years); the first run is one interval
  after start, unless the store says an earlier slot was missed, which then
  runs once at start;
* a cron alias: ``@hourly``, ``@daily``, ``@midnight``, ``@weekly``,
  ``@monthly``, ``@yearly``, ``@annually``;
* any name, when the folder holds a file named ``schedule``: its first line
  that is neither blank nor a ``#`` comment is a cron expression (5 fields,
  or 6 with seconds first, or an alias), or an interval written as a folder
  name (``90s``). The file wins over the folder's name.

Every executable regular file in a schedule folder (but ``schedule`` and
hidden files) is a job, run as a command in its own folder, with the task id
``<folder>/<file>``. Deeper folders, hidden entries and other files are
ignored (so a job may keep data next to it); a warning names a script (a
``#!`` file) that is not executable and an executable at the top level. The
folder must exist. It is rescanned every CHECK_FOR_NEW_JOBS_EVERY minutes:
new jobs are added, jobs whose schedule changed are replaced (their schedule
restarts), jobs whose script is gone are canceled (also those gone while
pysched was down). A script's content is read at each run, so editing it
needs nothing. The scheduler itself waits for due times exactly, so
SLEEP_DURATION only bounds how long the main loop sleeps between checks.

A failed run is re-run every JOB_FAIL_TIMEOUT_PERIOD_MINUTES until it
succeeds, but only while that comes before the job's next normal slot:
``retries = ceil(period / fail_period) - 1`` (0 when the fail period is not
shorter than the period), where the period is the folder's interval or, for
a cron job, the shortest gap between two of its first 64 firings after
2001-01-01 UTC. The count depends only on the schedule and the config, so a
restart re-adds an identical task and keeps its stored schedule.

``run`` keeps tasks and runs in the SQLite store PERSISTENCE_FILE and writes
one JSON line per finished run to ``<logs>/job_status.log`` (rotated at UTC
midnight, 30 days kept). ``--nuke`` clears the store (tasks and run history)
before the scheduler opens it. A second ``pysched run`` on a store that is in
use refuses to start. SIGINT or SIGTERM stops it: no new runs start, running
jobs get ``--grace`` seconds (default 10) to finish, then their process groups
are killed; the state is saved and the exit code is 0.

``list`` and ``history`` only read the store (a running ``pysched run`` may
hold it). Times are local in tables and ISO 8601 UTC in ``--json``.

Exit codes: 0 success, 2 usage or configuration error, 1 any other failure.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import functools
import json
import logging
import math
import os
import re
import signal
import sys
import threading
import time
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from .config import Config, ConfigError, load_config, parse_log_level
from .remote.cli import add_serve_parser, cmd_serve

__all__ = ["main", "FolderSchedule", "Job", "parse_folder_name", "parse_schedule_file",
           "scan_jobs", "retry_policy"]

_log = logging.getLogger("pysched_lightning.cli")

PROG = "pysched"
#: The run log's file name inside the logs folder (PyCron's).
RUN_LOG_NAME = "job_status.log"
#: The file in a job folder that holds its cron expression.
SCHEDULE_FILE = "schedule"
#: Seconds running jobs get to finish on SIGINT/SIGTERM before they are killed.
DEFAULT_GRACE = 10.0
#: Every job has the same priority: they are ordered by due time, then FIFO.
PRIORITY = 1
#: Runs shown by ``history`` without ``-n``.
DEFAULT_HISTORY = 20

_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}
_INTERVAL = re.compile(r"^([0-9]+)(s|m|min|h|d|w)$", re.ASCII)
_MAX_INTERVAL = 3650 * 86400
_ALIASES = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
#: Where the shortest gap between cron firings is measured (2001-01-01 UTC, a Monday).
_GAP_REFERENCE = 978307200.0
_GAP_SAMPLES = 64
_STATUS_LABELS = {0: "Completed", 1: "Error", 2: "Suspended", 3: "Running", 4: "Canceled",
                  5: "Timeout"}


class UsageError(Exception):
    """A user mistake: reported on stderr, exit code 2."""


class CommandFailed(Exception):
    """An expected failure (a store in use, a file that cannot be read):
    reported on stderr without a traceback, exit code 1."""


# ----------------------------------------------------------------- schedules


@dataclasses.dataclass(frozen=True)
class FolderSchedule:
    """A job folder's schedule: ``Scheduler.delay(trigger, interval, ...)``."""

    trigger: str                 # 'recur' or 'cron'
    interval: Union[int, str]    # seconds, or the cron expression
    text: str                    # as written: '30s', '@hourly', '*/15 * * * *'

    @property
    def seconds(self) -> Optional[int]:
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
    from .triggers import make_trigger
    try:
        make_trigger("cron", text, now=0.0, wall_now=time.time())
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    return FolderSchedule("cron", text, text)


@functools.lru_cache(maxsize=256)
def _cron_period(expression: str) -> float:
    """The shortest gap between two of the first firings of *expression* (UTC)."""
    from .triggers import make_trigger
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
    period = float(schedule.seconds) if schedule.trigger == "recur" \
        else _cron_period(str(schedule.interval))
    if not math.isfinite(period):
        return 0, delay
    # The tolerance keeps 60 / 0.6 == 100.00000000000001 from adding a retry
    # that would land on the next slot itself.
    return max(0, math.ceil(period / delay - 1e-9) - 1), delay


# ---------------------------------------------------------------------- jobs


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


class JobRunner:
    """Keeps a scheduler's tasks equal to the jobs in the folder."""

    def __init__(self, sched: Any, jobs_dir: str, config: Config) -> None:
        self.sched = sched
        self.jobs_dir = jobs_dir
        self.config = config
        self.known: Dict[str, Job] = {}
        self._warned: set = set()

    def _warn_once(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            _log.warning("%s", message)

    def sync(self) -> None:
        """Scan the folder; add, replace and cancel tasks to match it."""
        import pysched_lightning as psl

        try:
            jobs, problems = scan_jobs(self.jobs_dir)
        except OSError as exc:
            # Keep the jobs as they are: a folder that vanished for a moment
            # (an unmounted disk) must not cancel everything.
            _log.error("cannot scan the jobs folder %s: %s; keeping the current jobs",
                       self.jobs_dir, exc)
            return
        for message in problems:
            self._warn_once(message)
        for task_id in list(self.sched.task):
            if task_id not in jobs:
                try:
                    self.sched.cancel(task_id)
                except KeyError:
                    pass  # finished or canceled meanwhile
                else:
                    _log.info("job %s: removed (its script is gone)", task_id)
                self.known.pop(task_id, None)
        for task_id in [t for t in self.known if t not in jobs]:
            del self.known[task_id]
        for task_id, job in jobs.items():
            if self.known.get(task_id) == job:
                continue
            retries, delay = retry_policy(job.schedule,
                                          self.config.job_fail_timeout_period_minutes)
            try:
                self.sched.delay(job.schedule.trigger, job.schedule.interval, PRIORITY,
                                 psl.command([job.path], cwd=job.folder),
                                 task_id=task_id, name=task_id, retries=retries,
                                 retry_delay=delay)
            except (ValueError, TypeError) as exc:
                self._warn_once(f"job {task_id}: cannot schedule it: {exc}")
                continue
            what = "changed" if task_id in self.known else "added"
            self.known[task_id] = job
            if retries:
                policy = f"re-run every {delay:g}s after a failure (at most {retries}x)"
            else:
                policy = ("no re-run after a failure (JOB_FAIL_TIMEOUT_PERIOD_MINUTES "
                          "is not shorter than its period)")
            _log.info("job %s: %s, schedule %s, %s", task_id, what, job.schedule.text,
                      policy)


# ----------------------------------------------------------------- commands


def _paths(args: argparse.Namespace, config: Config) -> Tuple[str, str, str]:
    """The jobs folder, the logs folder and the store file, absolute."""
    jobs = getattr(args, "target", None) or config.jobs_folder
    logs = getattr(args, "log_folder", None) or config.logs_folder
    store = getattr(args, "store", None) or config.persistence_file
    return (os.path.abspath(os.path.expanduser(jobs)),
            os.path.abspath(os.path.expanduser(logs)),
            os.path.abspath(os.path.expanduser(store)))


def _open_store(path: str) -> Any:
    from .stores import open_store
    try:
        return open_store(path)
    except Exception as exc:  # sqlite3.DatabaseError, OSError...
        why = str(exc) if path in str(exc) else f"{path}: {exc}"
        hint = ""
        if "not a database" in why:
            hint = (" (PERSISTENCE_FILE must name a pysched SQLite file, not a PyCron "
                    "pickle; point it to a new file)")
        raise CommandFailed(f"cannot open the store {why}{hint}") from None


def cmd_run(args: argparse.Namespace, config: Config) -> int:
    """``pysched run``: schedule the folder's jobs until SIGINT/SIGTERM."""
    stop = threading.Event()
    received: List[str] = []

    def on_signal(signum: int, frame: Any) -> None:
        received.append(signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return _run(args, config, stop, received)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run(args: argparse.Namespace, config: Config, stop: threading.Event,
         received: List[str]) -> int:
    import pysched_lightning as psl

    jobs_dir, logs_dir, store_path = _paths(args, config)
    if not os.path.isdir(jobs_dir):
        raise UsageError(f"the jobs folder {jobs_dir} does not exist (use -t or "
                         "[Folders] JOBS_FOLDER_DEFAULT)")
    # Clear the store before the scheduler opens it: a scheduler loads the
    # stored tasks when it is made, and clearing under it would leave them
    # scheduled in memory but missing from the store.
    probe = _open_store(store_path)
    try:
        holder = probe.holder()
        if holder is not None:
            raise CommandFailed(f"the store {store_path} is in use by another scheduler "
                               f"({holder}); stop it first")
        if args.nuke:
            probe.clear()
            _log.warning("--nuke: cleared the store %s (tasks and run history)", store_path)
    finally:
        probe.close()

    run_log = os.path.join(logs_dir, RUN_LOG_NAME)
    workers = args.workers or max(8, os.cpu_count() or 1)
    try:
        sched = psl.Scheduler(executor=psl.ThreadPoolExecutor(workers), store=store_path,
                              run_log=run_log)
    except OSError as exc:
        raise CommandFailed(f"cannot start: {exc}") from None
    _log.info("pysched: jobs %s, store %s, run log %s, config %s", jobs_dir, store_path,
              run_log, config.source or "(defaults)")
    try:
        runner = JobRunner(sched, jobs_dir, config)
        runner.sync()
        if not runner.known:
            _log.warning("no jobs in %s yet; it is rescanned every %g min", jobs_dir,
                         config.check_for_new_jobs_every)
        sched.start()
        scan_every = config.check_for_new_jobs_every * 60.0
        tick = min(config.sleep_duration * 60.0, scan_every)
        next_scan = time.monotonic() + scan_every
        while not stop.is_set():
            stop.wait(max(0.0, min(tick, next_scan - time.monotonic())))
            if stop.is_set():
                break
            if time.monotonic() >= next_scan:
                try:
                    runner.sync()
                except Exception:
                    _log.exception("rescanning the jobs folder failed")
                next_scan = time.monotonic() + scan_every
    finally:
        why = received[0] if received else "an error"
        _log.info("%s: stopping; running jobs get %gs to finish", why, args.grace)
        sched.shutdown(wait=True, timeout=args.grace)
    # A run interrupted after the grace period is still being recorded (its
    # process group is being killed); the executor's threads are joined at
    # interpreter exit, after which the store and the run log have it.
    _log.info("stopped (store %s)", store_path)
    return 0


def _status_label(code: Any) -> Optional[str]:
    if code is None:
        return None
    return _STATUS_LABELS.get(code, str(code))


def _iso(epoch: Optional[float]) -> Optional[str]:
    if epoch is None:
        return None
    return _dt.datetime.fromtimestamp(epoch, _dt.timezone.utc).isoformat(
        timespec="microseconds")


def _local(epoch: Optional[float]) -> str:
    if epoch is None:
        return "-"
    return _dt.datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S")


def _schedule_text(trigger: str, interval: Any) -> str:
    if trigger == "recur" and isinstance(interval, (int, float)):
        return f"{interval:g}s"
    return str(interval)


def _read_store(path: str) -> Tuple[Dict[str, Any], Optional[Any]]:
    """The stored task records by id and an open store (None if no file yet)."""
    if not os.path.exists(path):
        return {}, None
    store = _open_store(path)
    return {record.id: record for record in store.load_tasks()}, store


def cmd_list(args: argparse.Namespace, config: Config) -> int:
    """``pysched list``: the jobs, with schedule, next run and last status."""
    jobs_dir, _, store_path = _paths(args, config)
    jobs: Dict[str, Job] = {}
    if os.path.isdir(jobs_dir):
        try:
            jobs, problems = scan_jobs(jobs_dir)
        except OSError as exc:
            raise CommandFailed(f"cannot scan the jobs folder {jobs_dir}: {exc}") from None
        for message in problems:
            _log.warning("%s", message)
    else:
        _log.warning("the jobs folder %s does not exist; listing the store only", jobs_dir)
    records, store = _read_store(store_path)
    rows = []
    try:
        for task_id in sorted(set(jobs) | set(records)):
            job, record = jobs.get(task_id), records.get(task_id)
            latest = store.runs(task_id, 1) if store is not None else []
            last = latest[0] if latest else None
            if job is not None:
                trigger, interval, text = (job.schedule.trigger, job.schedule.interval,
                                           job.schedule.text)
            else:
                trigger, interval = record.trigger, json.loads(record.interval)
                text = _schedule_text(trigger, interval)
            note = ""
            if record is None:
                note = "not scheduled yet"
            elif job is None:
                note = "script gone; dropped at the next start"
            elif (record.trigger, json.loads(record.interval)) != (trigger, interval):
                note = "schedule changed; applied at the next start or rescan"
            rows.append({
                "job": task_id,
                "schedule": text,
                "trigger": trigger,
                "interval": interval,
                "next_run": record.next_run if record is not None else None,
                "last_run": (last["started"] or last["scheduled"]) if last else None,
                "last_status": _status_label(last["status"]) if last else None,
                "last_exit_code": last["exit_code"] if last else None,
                "runs": record.runs if record is not None else 0,
                "missed": record.missed if record is not None else 0,
                "in_folder": job is not None,
                "in_store": record is not None,
                "path": job.path if job is not None else None,
                "note": note or None,
            })
    finally:
        if store is not None:
            store.close()
    if args.json:
        for row in rows:
            row["next_run"], row["last_run"] = _iso(row["next_run"]), _iso(row["last_run"])
        _print_json(rows)
    else:
        _print_table(
            ["JOB", "SCHEDULE", "NEXT RUN", "LAST RUN", "LAST STATUS", "RUNS", "NOTE"],
            [[r["job"], r["schedule"], _local(r["next_run"]), _local(r["last_run"]),
              r["last_status"] or "-", str(r["runs"]), r["note"] or ""] for r in rows])
        if not rows:
            print(f"(no jobs in {jobs_dir})", file=sys.stderr)
    return 0


def _job_id(text: str, jobs_dir: str) -> str:
    """A JOB argument as a task id: ``5min/backup.sh``, also when given as a
    path to the script (``jobs/5min/backup.sh``, absolute or from here)."""
    absolute = os.path.abspath(text)
    rel = os.path.relpath(absolute, jobs_dir)
    inside = rel != os.pardir and not rel.startswith(os.pardir + os.sep)
    if inside and (os.path.isabs(text) or os.path.exists(absolute)):
        text = rel
    text = text.replace(os.sep, "/")
    while text.startswith("./"):
        text = text[2:]
    return text


def cmd_history(args: argparse.Namespace, config: Config) -> int:
    """``pysched history``: recent runs from the store, newest first."""
    jobs_dir, _, store_path = _paths(args, config)
    if args.n < 0:
        raise UsageError(f"-n must be 0 (all) or more, not {args.n}")
    limit = args.n or None
    task_id = _job_id(args.job, jobs_dir) if args.job else None
    records, store = _read_store(store_path)
    try:
        runs = store.runs(task_id, limit) if store is not None else []
    finally:
        if store is not None:
            store.close()
    if task_id is not None and not runs and task_id not in records:
        known = False
        if os.path.isdir(jobs_dir):
            try:
                known = task_id in scan_jobs(jobs_dir)[0]
            except OSError:
                pass
        if not known:
            raise UsageError(f"no job or task {task_id!r} in the store {store_path} or "
                             f"the jobs folder {jobs_dir}")
    if args.json:
        _print_json([_run_json(run) for run in runs])
    else:
        _print_table(
            ["STARTED", "JOB", "RUN", "ATTEMPT", "STATUS", "DURATION", "EXIT", "ERROR"],
            [[_local(r["started"] if r["started"] is not None else r["scheduled"]),
              r["name"] or r["task_id"], str(r["run"]), str(r["attempt"]),
              _status_label(r["status"]) or "-", _duration(r["duration"]),
              "-" if r["exit_code"] is None else str(r["exit_code"]),
              _one_line(r["error"])] for r in runs])
        if not runs:
            print("(no runs yet)", file=sys.stderr)
    return 0


def _run_json(run: Dict[str, Any]) -> Dict[str, Any]:
    """A stored run as the run log writes it: status label, ISO UTC times."""
    out = dict(run)
    out["status"] = _status_label(run["status"])
    for key in ("scheduled", "started", "finished"):
        out[key] = _iso(run[key])
    return out


def _duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def _one_line(text: Optional[str], limit: int = 60) -> str:
    if not text:
        return ""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[:limit - 3] + "..."


def _print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


def _print_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    rows = [list(headers)] + [list(row) for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(headers))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


# ---------------------------------------------------------------------- main


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a number >= 0")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be 1 or more")
    return value


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", metavar="CONFIG",
                        help="an INI file with PyCron's [Timings], [Folders] and [Logging] "
                             "settings (default: built-in defaults)")
    common.add_argument("-s", "--store", metavar="FILE",
                        help="the SQLite store (overrides [Folders] PERSISTENCE_FILE; "
                             "default ./pysched.db)")
    common.add_argument("--log-level", metavar="LEVEL",
                        help="overrides [Logging] LOG_LEVEL (default INFO)")
    jobs = argparse.ArgumentParser(add_help=False)
    jobs.add_argument("-t", "--target", metavar="JOBS_DIR",
                      help="the jobs folder (overrides [Folders] JOBS_FOLDER_DEFAULT; "
                           "default ./jobs)")
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true",
                         help="print a JSON array of objects instead of a table")

    parser = argparse.ArgumentParser(
        prog=PROG, description="Run a folder of job scripts on the schedules their folder "
                               "names give (PyCron), and show what ran.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    run = commands.add_parser(
        "run", parents=[common, jobs], help="run the jobs until SIGINT/SIGTERM",
        description="Run the jobs folder in the foreground until SIGINT or SIGTERM.")
    run.add_argument("-l", "--log-folder", metavar="LOGS_DIR",
                     help=f"where {RUN_LOG_NAME} goes (overrides [Folders] "
                          "LOGS_FOLDER_DEFAULT; default ./logs)")
    run.add_argument("--nuke", action="store_true",
                     help="clear the store (tasks and run history) before starting")
    run.add_argument("--grace", type=_positive_float, default=DEFAULT_GRACE,
                     metavar="SECONDS",
                     help="on SIGINT/SIGTERM, how long running jobs may finish before "
                          f"they are killed (default {DEFAULT_GRACE:g})")
    run.add_argument("--workers", type=_positive_int, metavar="N",
                     help="jobs that may run at the same time (default: max(8, CPUs))")

    commands.add_parser(
        "list", parents=[common, jobs, as_json], help="list the jobs and their state",
        description="List the jobs (in the folder or the store) with schedule, next run "
                    "and last status.")

    history = commands.add_parser(
        "history", parents=[common, jobs, as_json], help="show recent runs",
        description="Show recent runs from the store, newest first.")
    history.add_argument("job", nargs="?", metavar="JOB",
                         help="a job, as its path in the jobs folder (5min/backup.sh), or a "
                              "task id (default: all jobs)")
    history.add_argument("-n", type=int, default=DEFAULT_HISTORY, metavar="N",
                         help=f"how many runs (default {DEFAULT_HISTORY}; 0 for all)")
    add_serve_parser(commands)
    return parser


_COMMANDS = {"run": cmd_run, "list": cmd_list, "history": cmd_history, "serve": cmd_serve}


def _setup_logging(level: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The ``pysched`` console script; returns the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0].startswith("-") \
            and args_list[0] not in ("-h", "--help", "--version"):
        args_list.insert(0, "run")  # `pysched -c my.ini` runs, as `pycron -c` did
    parser = build_parser()
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else 2
    try:
        config = load_config(args.config)
        level = config.log_level
        if args.log_level:
            try:
                level = parse_log_level(args.log_level)
            except ValueError as exc:
                raise UsageError(f"--log-level: {exc}") from None
        _setup_logging(level)
        return _COMMANDS[args.command](args, config)
    except (ConfigError, UsageError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `pysched history | head`
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    except CommandFailed as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except Exception:
        _log.exception("%s failed", PROG)
        print(f"{PROG}: error: unexpected failure (see the traceback above)", file=sys.stderr)
        return 1
