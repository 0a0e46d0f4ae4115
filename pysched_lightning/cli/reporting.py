"""What ``pysched run`` logs: one line per finished run, and nothing twice.

A :class:`RunReporter` listens to the scheduler's run events and logs one
concise line per finished run: job, status, duration, exit code, and for a
failure the tail of its stderr (a Python task's traceback, once). Skipped
overlapping runs are counted into the line of the run they overlapped,
after one warning per job. The library logs the same outcomes its own way
(a failed command with the library's traceback, each skip); the CLI owns its
handlers, so :class:`LibraryRecords` shows those only at DEBUG.
"""
from __future__ import annotations

import logging
import re
import sys
import threading
from typing import Callable, Dict, Optional, Set, TextIO, Tuple

from ..execution.commands import Command, CommandError
from ..records.events import Event, EventKind
from ..records.runs import Run, TaskStatus
from .text import LocalTime, duration, stderr_tail

__all__ = ["RunReporter", "LibraryRecords", "setup_logging", "CLI_LOGGER"]

CLI_LOGGER = "pysched_lightning.cli"
_LIBRARY_LOGGER = "pysched_lightning"

#: The library's messages that the CLI's own lines replace: a run's outcome
#: (the reporter's), a task loaded, replaced or canceled (the job lines').
#: Matched by their format string, as the core writes them.
_REPLACED = frozenset({
    "%s run %d failed:\n%s",                                   # with the traceback
    "%s run %d failed: %s",                                    # a command's
    "%s attempt %d %s; retrying in %g s",
    "%s: run skipped, %.3f s late (%s)",
    "%s: %d run(s) coalesced into one, %.3f s late (%s)",
    "shutdown: interrupted %s run %d, still going after shutdown's timeout",
    "loaded %s, next run at %s",                               # the job lines say these
    "%s: definition changed, replacing it",
    "%s canceled: %s",
})
_RETRY_WHEN = re.compile(r"retrying in [^;]*$")
_INTERRUPTED = TaskStatus.INTERRUPTED


class LibraryRecords(logging.Filter):
    """Shows the library's own run-outcome records at DEBUG only, since the
    reporter says the same in one line (a run's timeout is one of them)."""

    def __init__(self, show_debug: bool) -> None:
        super().__init__()
        self.show_debug = show_debug

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != _LIBRARY_LOGGER or not self._replaced(record):
            return True
        if not self.show_debug:
            return False
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True

    @staticmethod
    def _replaced(record: logging.LogRecord) -> bool:
        if record.msg in _REPLACED:
            return True
        # A timeout is logged as the run's bare error line.
        args = record.args
        return (record.msg == "%s" and isinstance(args, tuple) and len(args) == 1
                and isinstance(args[0], str) and "Timeout" in args[0].split(":", 1)[0])


class _Formatter(logging.Formatter):
    """``2026-11-30 13:35:12 INFO message``; other loggers' records name their logger."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")

    def formatMessage(self, record: logging.LogRecord) -> str:
        if record.name != CLI_LOGGER and not record.name.startswith(CLI_LOGGER + "."):
            record.message = f"{record.name}: {record.message}"
        return super().formatMessage(record)


def setup_logging(level: int, stream: Optional[TextIO] = None) -> logging.Handler:
    """The CLI's one handler on the root logger (the old ones removed), at
    *level*, with :class:`LibraryRecords`; returned so a status screen can
    take its stream over."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(_Formatter())
    handler.addFilter(LibraryRecords(show_debug=level <= logging.DEBUG))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler


_RunKey = Tuple[str, int, int]  # task id, run number, attempt


class RunReporter:
    """Logs one line per finished run of a scheduler; knows which runs go on.

    Attach it with ``sched.add_listener(reporter, RunReporter.KINDS)``. It
    is called in the scheduler's threads, never under the scheduler's lock.
    """

    KINDS = (EventKind.STARTED, EventKind.COMPLETED, EventKind.FAILED, EventKind.TIMEOUT,
             EventKind.RETRY, EventKind.MISSED)

    def __init__(self, local: Optional[LocalTime] = None, tail_lines: int = 5,
                 is_command: Optional[Callable[[str], bool]] = None,
                 logger: Optional[logging.Logger] = None) -> None:
        self.local = local or LocalTime()
        self.tail_lines = tail_lines
        #: Whether a task runs a command: its failures show stderr, not a traceback.
        self.is_command = is_command or (lambda task_id: False)
        self._log = logger or logging.getLogger(CLI_LOGGER)
        self._runs_lock = threading.Lock()  # guards _running, _skipped, _overlaps
        self._running: Dict[_RunKey, Run] = {}
        self._skipped: Dict[str, int] = {}  # skips while a run went on, per task
        self._overlaps: Set[str] = set()    # tasks already warned about overlapping

    @classmethod
    def for_scheduler(cls, sched: object, local: Optional[LocalTime] = None) -> "RunReporter":
        """A reporter that asks *sched* which tasks are commands."""
        def is_command(task_id: str) -> bool:
            task = getattr(sched, "task", {}).get(task_id)
            return isinstance(getattr(task, "fn", None), Command)
        return cls(local, is_command=is_command)

    def running(self) -> Dict[_RunKey, Run]:
        """The runs going on now, by (task id, run number, attempt)."""
        with self._runs_lock:
            return dict(self._running)

    def __call__(self, event: Event) -> None:
        run, task_id = event.run, event.task_id
        if run is None or task_id is None:
            return
        key = (task_id, run.run_number, run.attempt)
        if event.kind is EventKind.STARTED:
            with self._runs_lock:
                self._running[key] = run
            return
        if event.kind is EventKind.MISSED:
            self._missed(event, run, task_id)
            return
        with self._runs_lock:
            self._running.pop(key, None)
            skipped = self._skipped.pop(task_id, 0)
        level, line = self.describe(event, run, task_id, skipped)
        self._log.log(level, "%s", line)

    def describe(self, event: Event, run: Run, task_id: str,
                 skipped: int = 0) -> Tuple[int, str]:
        """The level and the line (or lines, for a stderr tail) for a finished run."""
        head = f"job {task_id} run {run.run_number}"
        if run.attempt > 1 or event.kind is EventKind.RETRY:
            head += f" attempt {run.attempt}"
        done = event.kind is EventKind.COMPLETED
        line = f"{head}: {run.status.label} {'in' if done else 'after'} " \
               f"{duration(run.duration)}"
        if run.exit_code is not None:
            line += f", exit code {run.exit_code}"
        if skipped:
            line += (f" ({skipped} overlapping run{'s' if skipped != 1 else ''} skipped "
                     "while it ran)")
        if done:
            return logging.INFO, line
        tail, total = stderr_tail(run.stderr, self.tail_lines)
        block = ""
        if len(tail) == 1 and total == 1:
            line += f": {tail[0]}"
        elif tail:
            shown = f"last {len(tail)} of {total} lines" if total > len(tail) else \
                f"{total} lines"
            line += f"; stderr ({shown}) below"
            block = "".join(f"\n    {text}" for text in tail)
        elif run.status is _INTERRUPTED and run.error:
            line += ": " + run.error.split("interrupted: ", 1)[-1]  # (the status says it)
        elif run.error and type(run.exception) is not CommandError:
            line += f": {run.error}"  # (the exit code says all a CommandError would)
        if event.kind is EventKind.RETRY:
            when = _RETRY_WHEN.search(event.reason or "")
            line += f"; {when.group(0) if when else event.reason}"
        if run.traceback and not self.is_command(task_id) \
                and not isinstance(run.exception, (CommandError, TimeoutError)):
            block += "\n" + run.traceback.rstrip("\n")  # a Python task's, once
        # (an interrupted run was stopped on purpose: a shutdown is no failure)
        level = logging.WARNING if event.kind is EventKind.RETRY \
            or run.status is _INTERRUPTED else logging.ERROR
        return level, line + block

    def _missed(self, event: Event, run: Run, task_id: str) -> None:
        count = max(1, event.count or 1)
        with self._runs_lock:
            overlapping = any(key[0] == task_id for key in self._running)
            if overlapping:
                self._skipped[task_id] = self._skipped.get(task_id, 0) + count
                if task_id in self._overlaps:
                    return
                self._overlaps.add(task_id)
        due = self.local.clock(run.scheduled.timestamp()) if run.scheduled else "?"
        if overlapping:
            self._log.warning("job %s: its run due at %s was skipped: the previous run is "
                              "still going (it takes longer than its interval); later "
                              "overlapping runs are skipped too and counted in its run "
                              "lines", task_id, due)
        elif count > 1:
            self._log.warning("job %s: %d runs from %s on were skipped (%s)", task_id, count,
                              due, event.reason)
        else:
            self._log.warning("job %s: its run due at %s was skipped (%s)", task_id, due,
                              event.reason)
