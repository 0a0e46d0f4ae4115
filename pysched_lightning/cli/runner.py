"""``pysched run``: schedule the jobs folder's scripts until SIGINT/SIGTERM.

At start it logs one line per job (schedule, next run); then one line per
finished run (see :mod:`.reporting`). The folder is rescanned every
CHECK_FOR_NEW_JOBS_EVERY minutes: new jobs are added, jobs whose schedule
changed are replaced (their schedule restarts), jobs whose script is gone
are canceled (also those gone while pysched was down). A script's content
is read at each run, so editing it needs nothing. The scheduler waits for
due times exactly; SLEEP_DURATION only bounds how long the main loop sleeps
between checks.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Set

from ..records.owners import holder_text
from .common import (RUN_LOG_NAME, CommandFailed, UsageError, open_store, paths, shown,
                     stopped_by_signals)
from .config import Config
from .jobs import Job, describe_schedule, duration_words, retry_policy, scan_jobs
from .reporting import CLI_LOGGER, RunReporter
from .status import StatusScreen
from .text import LocalTime, relative

__all__ = ["JobRunner", "cmd_run", "DEFAULT_GRACE", "PRIORITY"]

_log = logging.getLogger(CLI_LOGGER)

#: Seconds running jobs get to finish on SIGINT/SIGTERM before they are killed.
DEFAULT_GRACE = 10.0
#: Every job has the same priority: they are ordered by due time, then FIFO.
PRIORITY = 1
#: The longest the main loop sleeps between two redraws of ``--status``.
_STATUS_TICK = 1.0


class JobRunner:
    """Keeps a scheduler's tasks equal to the jobs in the folder, and says
    what each job is when it is scheduled."""

    def __init__(self, sched: Any, jobs_dir: str, config: Config,
                 local: Optional[LocalTime] = None) -> None:
        self.sched = sched
        self.jobs_dir = jobs_dir
        self.config = config
        self.local = local or LocalTime()
        self.known: Dict[str, Job] = {}
        self._warned: Set[str] = set()

    def _warn_once(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            _log.warning("%s", message)

    def sync(self, first: bool = False) -> None:
        """Scan the folder; add, replace and cancel tasks to match it. Each
        job scheduled gets a line; at the *first* sync every job does."""
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
            what = "" if first else ("changed, " if task_id in self.known else "added, ")
            self.known[task_id] = job
            _log.info("job %s: %s%s", task_id, what, self.describe(job, retries, delay))

    def describe(self, job: Job, retries: int, delay: float) -> str:
        """``every 30 s, next run 2026-11-30 13:35:12 (in 30 s)``, and the re-runs."""
        text = describe_schedule(job.schedule)
        try:
            moment = self.sched.get_task(job.task_id)["next_run_time"]
        except KeyError:
            moment = None
        if moment is not None:
            due = moment.timestamp()
            if due < time.time() - 1:  # a slot that passed while no scheduler ran
                text += f", next run at once (due {self.local.text(due)}, while no " \
                        "scheduler ran)"
            else:
                text += f", next run {self.local.text(due)} ({relative(due - time.time())})"
        if retries:
            text += (f"; a failed run is re-run every {duration_words(delay)}, "
                     f"at most {retries} time{'s' if retries > 1 else ''}")
        return text


def cmd_run(args: argparse.Namespace, config: Config) -> int:
    """``pysched run``: schedule the folder's jobs until SIGINT/SIGTERM."""
    with stopped_by_signals() as (stop, received):
        return _run(args, config, stop, received)


def _claim_store(store_path: str, nuke: bool) -> None:
    """Refuse a store in use; clear it for ``--nuke``.

    This happens before the scheduler opens the store: a scheduler loads the
    stored tasks when it is made, and clearing under it would leave them
    scheduled in memory but missing from the store.
    """
    probe = open_store(store_path)
    try:
        holder = probe.holder()
        if holder is not None:
            raise CommandFailed(f"the store {shown(store_path)} is in use by another scheduler "
                                f"({holder_text(holder)}); stop it first")
        nodes = probe.nodes() if nuke and hasattr(probe, "nodes") else []
        if nodes:  # (a shared store's schedulers would lose what they run)
            raise CommandFailed(f"--nuke: the store {shown(store_path)} is shared by "
                                f"{len(nodes)} running scheduler(s); stop them first")
        if nuke:
            probe.clear()
            _log.warning("--nuke: cleared the store %s (tasks and run history)",
                         shown(store_path))
    finally:
        probe.close()


def _run(args: argparse.Namespace, config: Config, stop: threading.Event,
         received: List[str]) -> int:
    import pysched_lightning as psl

    jobs_dir, logs_dir, store_path = paths(args, config)
    if not os.path.isdir(jobs_dir):
        raise UsageError(f"the jobs folder {jobs_dir} does not exist (use -t or "
                         "[Folders] JOBS_FOLDER_DEFAULT)")
    if not os.path.isdir(os.path.dirname(logs_dir)):  # (checked before the store is made)
        raise UsageError(f"the logs folder {logs_dir} cannot be made: its parent folder does "
                         "not exist (use -l or [Folders] LOGS_FOLDER_DEFAULT)")
    _claim_store(store_path, args.nuke)
    try:  # the command's own folder: made in an existing one, as its store is
        if not os.path.isdir(logs_dir):
            os.mkdir(logs_dir)
    except OSError as exc:
        raise CommandFailed(f"cannot make the logs folder {logs_dir}: {exc.strerror}") from None
    run_log = os.path.join(logs_dir, RUN_LOG_NAME)
    workers = args.workers or max(8, os.cpu_count() or 1)
    # Any: the Executor protocol's submit() is narrower than the stdlib pool's.
    executor: Any = psl.ThreadPoolExecutor(workers)
    try:
        sched = psl.Scheduler(executor=executor, store=store_path, run_log=run_log)
    except OSError as exc:
        raise CommandFailed(f"cannot start: {exc}") from None
    local = LocalTime()
    _log.info("pysched: jobs %s, store %s, run log %s, config %s; times in %s", jobs_dir,
              shown(store_path), run_log, config.source or "(defaults)", local.name())
    reporter = RunReporter.for_scheduler(sched, local)
    sched.add_listener(reporter, RunReporter.KINDS)
    screen: Optional[StatusScreen] = None
    try:
        runner = JobRunner(sched, jobs_dir, config, local)
        runner.sync(first=True)
        if not runner.known:
            _log.warning("no jobs in %s yet; it is rescanned every %g min", jobs_dir,
                         config.check_for_new_jobs_every)
        sched.start()
        if args.status:
            screen = StatusScreen(sys.stdout, sched, reporter, f"pysched {jobs_dir}")
            if not screen.open():
                _log.info("--status: standard output is not a terminal, so no live status")
                screen = None
        _loop(runner, config, stop, screen)
    finally:
        if screen is not None:
            screen.close()
        why = received[0] if received else "an error"
        _log.info("%s: stopping; running jobs get %gs to finish", why, args.grace)
        sched.shutdown(wait=True, timeout=args.grace)
    # A run interrupted after the grace period is still being recorded (its
    # process group is being killed); the executor's threads are joined at
    # interpreter exit, after which the store and the run log have it.
    _log.info("stopped (store %s)", shown(store_path))
    return 0


def _loop(runner: JobRunner, config: Config, stop: threading.Event,
          screen: Optional[StatusScreen]) -> None:
    """Rescan the folder every CHECK_FOR_NEW_JOBS_EVERY minutes (and redraw
    the status screen every second) until *stop* is set."""
    scan_every = config.check_for_new_jobs_every * 60.0
    tick = min(config.sleep_duration * 60.0, scan_every)
    if screen is not None:
        tick = min(tick, _STATUS_TICK)
    next_scan = time.monotonic() + scan_every
    while not stop.is_set():
        if screen is not None:
            screen.draw()
        stop.wait(max(0.0, min(tick, next_scan - time.monotonic())))
        if stop.is_set():
            break
        if time.monotonic() >= next_scan:
            try:
                runner.sync()
            except Exception:
                _log.exception("rescanning the jobs folder failed")
            next_scan = time.monotonic() + scan_every
