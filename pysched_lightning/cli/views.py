"""``pysched list`` and ``pysched history``: what the store says, for people.

Both only read the store: a ``pysched run`` may hold it meanwhile. Tables
give local times and name their zone; ``--json`` gives ISO 8601 UTC.
"""
from __future__ import annotations

import argparse
import ast
import json
import logging
import os
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from ..records.owners import holder_text
from ..records.protocols import CANCELED, MISSED, RUNNING, STATUS_NAMES, TaskRecord
from ..durability.stores import is_shared
from .common import CommandFailed, UsageError, missing_store, open_store, paths, shown
from .config import Config
from .jobs import Job, duration_words, scan_jobs
from .reporting import CLI_LOGGER
from .text import (LocalTime, duration, iso, print_json, print_table, status_label,
                   table_width, useful_line)

__all__ = ["cmd_list", "cmd_history", "DEFAULT_HISTORY", "holder_text", "stored_script"]

_log = logging.getLogger(CLI_LOGGER)

#: Runs shown by ``history`` without ``-n``.
DEFAULT_HISTORY = 20
#: Statuses of runs that executed (or are executing): a job's last status.
_EXECUTED = tuple(code for code in STATUS_NAMES if code not in (MISSED, CANCELED))


def stored_script(record: TaskRecord) -> Optional[str]:
    """The script a job's stored command runs (an absolute path), read from
    the task's display info; None for anything else."""
    try:
        call = json.loads(record.info or "{}").get("call")
        tree = ast.parse(call, mode="eval").body
        while isinstance(tree, ast.Call) and not (isinstance(tree.func, ast.Name)
                                                  and tree.func.id == "Command"):
            tree = tree.func  # ``Command([...], cwd=...)()``: the inner call
        argv = ast.literal_eval(tree.args[0]) if isinstance(tree, ast.Call) else None
    except (ValueError, TypeError, SyntaxError, AttributeError, IndexError):
        return None
    if isinstance(argv, list) and argv and isinstance(argv[0], str) \
            and os.path.isabs(argv[0]):
        return argv[0]
    return None


def _read_store(path: str) -> Tuple[Dict[str, TaskRecord], Any]:
    """The stored task records by id and the open store; CommandFailed,
    creating nothing, when the store is not there."""
    missing = missing_store(path)
    if missing is not None:
        raise CommandFailed(missing)
    store = open_store(path, read_only=is_shared(path))  # (a SQLite reader's upgrade is kept)
    return {record.id: record for record in store.load_tasks()}, store


def _scan(jobs_dir: str) -> Dict[str, Job]:
    if not os.path.isdir(jobs_dir):
        _log.warning("the jobs folder %s does not exist (give it with -t); listing the "
                     "store only", jobs_dir)
        return {}
    try:
        jobs, problems = scan_jobs(jobs_dir)
    except OSError as exc:
        raise CommandFailed(f"cannot scan the jobs folder {jobs_dir}: {exc}") from None
    for message in problems:
        _log.warning("%s", message)
    return jobs


def schedule_text(trigger: str, interval: Any, due: Optional[float],
                  when: Callable[[Optional[float]], Any]) -> str:
    """A schedule in one canonical form, whoever wrote it how (a folder
    ``60s`` or ``1min``, a stored 60): ``every 1 min``, ``cron @hourly``;
    a one-shot as the time it is (or was) due, written by *when*."""
    if trigger == "recur" and isinstance(interval, (int, float)) \
            and not isinstance(interval, bool):
        return f"every {duration_words(interval)}"
    if trigger == "once":
        return f"once at {when(due)}" if due is not None else "once"
    return f"{trigger} {interval}"


def _last_status(store: Any, task_id: str, held: bool) -> Tuple[Optional[str], Any]:
    """A job's last status and the run it comes from: 'Running' while a run
    goes on (never a skip's 'Missed'), else its last executed run's status,
    else its last record's (a job that only ever missed)."""
    going = store.runs(task_id, 1, statuses=(RUNNING,))
    if going:
        # A run left RUNNING with no scheduler holding the store was cut
        # short; the next start records it as interrupted.
        return ("Running" if held else "Interrupted"), going[0]
    latest = store.runs(task_id, 1, statuses=_EXECUTED) or store.runs(task_id, 1)
    if not latest:
        return None, None
    return status_label(latest[0]["status"]), latest[0]


def _note(job: Optional[Job], record: Optional[TaskRecord], script: Optional[str],
          held: bool, now: float) -> str:
    if record is None:
        return "not scheduled yet"
    if script is not None and not os.path.exists(script):
        return "script gone; dropped at the next " + ("rescan" if held else "start")
    if job is not None and (script is None or script == job.path) and \
            (record.trigger, json.loads(record.interval)) != (job.schedule.trigger,
                                                              job.schedule.interval):
        return "schedule changed; applied at the next " + ("rescan" if held else "start")
    if record.paused:
        return "paused"
    if record.next_run is None:
        return "finished"
    if not held and record.next_run < now:
        return "due while no scheduler ran: runs once at the next start"
    return ""


def _list_rows(jobs: Dict[str, Job], records: Dict[str, TaskRecord], store: Any,
               held: bool) -> List[Dict[str, Any]]:
    rows = []
    now = time.time()
    for task_id in sorted(set(jobs) | set(records)):
        job, record = jobs.get(task_id), records.get(task_id)
        script = stored_script(record) if record is not None else None
        status, last = _last_status(store, task_id, held) if store is not None \
            else (None, None)
        if job is not None:
            trigger, interval = job.schedule.trigger, job.schedule.interval
        else:
            assert record is not None
            trigger, interval = record.trigger, json.loads(record.interval)
        next_run = record.next_run if record is not None else None
        note = _note(job, record, script, held, now)
        rows.append({
            "job": task_id,
            "trigger": trigger,
            "interval": interval,
            # a one-shot's delay says nothing later: the time it is (was) due does
            "due": next_run if next_run is not None or trigger != "once" or not last
            else last["scheduled"],
            "next_run": next_run,
            "last_run": (last["started"] or last["scheduled"]) if last else None,
            "last_status": status,
            "last_exit_code": last["exit_code"] if last else None,
            "running": status == "Running",
            "runs": record.runs if record is not None else 0,
            "missed": record.missed if record is not None else 0,
            "in_folder": job is not None,
            "in_store": record is not None,
            "path": job.path if job is not None else script,
            "note": note or None,
        })
    return rows


def cmd_list(args: argparse.Namespace, config: Config) -> int:
    """``pysched list``: the jobs, with schedule, next run and last status."""
    jobs_dir, _, store_path = paths(args, config)
    jobs = _scan(jobs_dir)
    records, store = _read_store(store_path)
    try:
        holder = store.holder() if store is not None else None
        nodes = store.nodes() if store is not None and hasattr(store, "nodes") else []
        rows = _list_rows(jobs, records, store, holder is not None or bool(nodes))
    finally:
        if store is not None:
            store.close()
    local = LocalTime()
    for row in rows:
        row["schedule"] = schedule_text(row["trigger"], row["interval"], row.pop("due"),
                                        iso if args.json else local.text)
    if args.json:
        for row in rows:
            row["next_run"], row["last_run"] = iso(row["next_run"]), iso(row["last_run"])
        print_json(rows)
        return 0
    if nodes:
        state = (f"shared by {len(nodes)} running scheduler(s) ("
                 + ", ".join(f"pid {n['pid']} on {n['host']}" for n in nodes) + ")")
    elif holder is None:
        state = "not in use: no scheduler is running on it"
    else:
        state = f"in use by a running scheduler ({holder_text(holder)})"
    print(f"store: {shown(store_path)}, {state}")
    print(f"times: {local.name()}")
    print()
    print_table(
        ["JOB", "SCHEDULE", "NEXT RUN", "LAST RUN", "LAST STATUS", "EXIT", "RUNS", "MISSED",
         "NOTE"],
        [[r["job"], r["schedule"], local.text(r["next_run"]), local.text(r["last_run"]),
          r["last_status"] or "-",
          "-" if r["last_exit_code"] is None else str(r["last_exit_code"]),
          str(r["runs"]), str(r["missed"]), r["note"] or ""] for r in rows],
        table_width())
    if not rows:
        print(f"(no jobs in {jobs_dir} or the store)", file=sys.stderr)
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


def _named(name: str, records: Dict[str, TaskRecord], store_path: str) -> Optional[str]:
    """The id of the one stored task called *name*; None if none is. Several
    are: a UsageError lists their ids, since any one might be meant."""
    ids = sorted(task_id for task_id, record in records.items() if record.name == name)
    if len(ids) > 1:
        raise UsageError(f"{len(ids)} tasks in the store {shown(store_path)} are named "
                         f"{name!r}: give one of their ids: {', '.join(ids)}")
    return ids[0] if ids else None


def _shared_names(records: Dict[str, TaskRecord], runs: List[Dict[str, Any]]) -> Set[str]:
    """The names that more than one task has (the stored tasks' and the runs')."""
    ids: Dict[str, Set[str]] = {}
    for task_id, name in [(r.id, r.name) for r in records.values()] + \
            [(r["task_id"], r["name"]) for r in runs]:
        ids.setdefault(name or task_id, set()).add(task_id)
    return {name for name, owners in ids.items() if len(owners) > 1}


def _job_text(run: Dict[str, Any], shared: Set[str]) -> str:
    """A run's task by its name, with its id when another task has that name."""
    name = run["name"] or run["task_id"]
    return f"{name} ({run['task_id']})" if name in shared and name != run["task_id"] \
        else name


def _detail(run: Dict[str, Any]) -> str:
    """What a history row says beyond its columns: why it failed or was skipped."""
    if run["status"] == MISSED:
        times = f" {run['count']} times" if (run["count"] or 1) > 1 else ""
        return f"skipped{times}: {run['reason'] or 'no reason recorded'}"
    if run["status"] == RUNNING:
        return ""
    return useful_line(run["stderr"], run["error"])


def _run_json(run: Dict[str, Any]) -> Dict[str, Any]:
    """A stored run, every field but the pickled outcome: status as a label
    (and its code), ISO 8601 UTC times."""
    out = {key: value for key, value in run.items() if key != "outcome"}
    out["status"] = status_label(run["status"])
    out["status_code"] = run["status"]
    for key in ("scheduled", "started", "finished"):
        out[key] = iso(run[key])
    return out


def cmd_history(args: argparse.Namespace, config: Config) -> int:
    """``pysched history``: recent runs from the store, newest first."""
    jobs_dir, _, store_path = paths(args, config)
    if args.n < 0:
        raise UsageError(f"-n must be 0 (all) or more, not {args.n}")
    limit = args.n or None
    task_id = _job_id(args.job, jobs_dir) if args.job else None
    records, store = _read_store(store_path)
    try:
        if task_id is not None and task_id not in records:
            task_id = _named(args.job, records, store_path) or task_id
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
            raise UsageError(f"no job or task {task_id!r} (by path, id or name) in the store "
                             f"{shown(store_path)} or the jobs folder {jobs_dir}")
    if args.json:
        print_json([_run_json(run) for run in runs])
        return 0
    local = LocalTime()
    shared = _shared_names(records, runs)
    print(f"times: {local.name()}")
    print_table(
        ["STARTED", "JOB", "RUN", "ATTEMPT", "STATUS", "DURATION", "EXIT", "DETAIL"],
        [[local.text(r["started"] if r["started"] is not None else r["scheduled"]),
          _job_text(r, shared), "-" if r["status"] == MISSED else str(r["run"]),
          "-" if r["status"] == MISSED else str(r["attempt"]),
          status_label(r["status"]) or "-", duration(r["duration"]),
          "-" if r["exit_code"] is None else str(r["exit_code"]), _detail(r)]
         for r in runs],
        table_width())
    if not runs:
        print("(no runs yet)", file=sys.stderr)
    return 0
