"""``pysched run --status``: a live one-screen status on a terminal.

Running now, the next five runs and the last failures, redrawn in place on
the terminal's alternate screen (the shell's screen comes back at exit).
It is off when standard output is not a terminal: a file or a pipe gets no
escape sequences. While it is on, log lines that would go to the same
terminal are shown in the screen's last section instead.
"""
from __future__ import annotations

import collections
import logging
import os
import shutil
import threading
import time
from typing import Any, Deque, Dict, List, Optional, TextIO, Tuple

from ..records.protocols import ERROR, INTERRUPTED, TIMEOUT
from .reporting import CLI_LOGGER, RunReporter
from .text import LocalTime, relative, span, status_label, useful_line

__all__ = ["StatusScreen", "render"]

_log = logging.getLogger(CLI_LOGGER)

_ENTER = "\x1b[?1049h\x1b[?25l"   # the alternate screen, cursor hidden
_LEAVE = "\x1b[?25h\x1b[?1049l"
_HOME = "\x1b[H"
_CLEAR_LINE = "\x1b[K"
_CLEAR_BELOW = "\x1b[J"
#: How many of each the screen lists.
NEXT_RUNS = 5
LAST_FAILURES = 5


class _LogLines:
    """A stream for a logging handler that keeps the last lines written."""

    def __init__(self, keep: int = 50) -> None:
        self._lines_lock = threading.Lock()  # guards lines (handlers write from any thread)
        self.lines: Deque[str] = collections.deque(maxlen=keep)

    def write(self, text: str) -> int:
        with self._lines_lock:
            self.lines.extend(line for line in text.splitlines() if line.strip())
        return len(text)

    def flush(self) -> None:
        pass

    def last(self, count: int) -> List[str]:
        with self._lines_lock:
            return list(self.lines)[-count:] if count > 0 else []


def render(*, now: float, local: LocalTime, title: str,
           running: List[Tuple[str, int, int, Optional[float]]],
           upcoming: List[Tuple[float, str]], failures: List[Dict[str, Any]],
           log_lines: List[str], columns: int, rows: int) -> List[str]:
    """The screen's lines, at most *rows*, each cut to fit *columns*.

    *running* holds (task id, run number, attempt, started), *upcoming*
    (due time, task id), *failures* stored run rows, newest first.
    """
    lines = [f"{title}   {local.text(now)} {local.name(now)}", ""]
    lines.append(f"RUNNING NOW ({len(running)})")
    for task_id, number, attempt, started in sorted(running, key=lambda r: r[3] or now):
        since = f"since {local.clock(started)} ({span(now - started)})" \
            if started is not None else ""
        again = f" attempt {attempt}" if attempt > 1 else ""
        lines.append(f"  {task_id}  run {number}{again}  {since}".rstrip())
    if not running:
        lines.append("  (nothing)")
    lines += ["", f"NEXT {NEXT_RUNS} RUNS"]
    for due, task_id in upcoming[:NEXT_RUNS]:
        lines.append(f"  {local.clock(due)}  {relative(due - now):<11} {task_id}")
    if not upcoming:
        lines.append("  (none scheduled)")
    lines += ["", "LAST FAILURES"]
    for row in failures[:LAST_FAILURES]:
        when = row["finished"] or row["started"] or row["scheduled"]
        code = "" if row["exit_code"] is None else f"  exit {row['exit_code']}"
        lines.append(f"  {local.text(when)}  {row['task_id']}  run {row['run']}  "
                     f"{status_label(row['status'])}{code}  "
                     f"{useful_line(row['stderr'], row['error'])}".rstrip())
    if not failures:
        lines.append("  (none)")
    room = rows - len(lines) - 2
    if room > 0 and log_lines:
        lines += ["", "LOG"] + ["  " + line for line in log_lines[-room:]]
    width = max(columns - 1, 10)  # the last column would make some terminals wrap
    return [line[:width] for line in lines[:rows]]


class StatusScreen:
    """Draws :func:`render` for a live scheduler on *stream*, a terminal."""

    def __init__(self, stream: TextIO, sched: Any, reporter: RunReporter,
                 title: str) -> None:
        self.stream = stream
        self.sched = sched
        self.reporter = reporter
        self.title = title
        self.on = False
        self._log_lines = _LogLines()
        #: Log handlers whose terminal the screen took over, with their streams.
        self._taken: List[Tuple["logging.StreamHandler[Any]", Any]] = []

    def open(self) -> bool:
        """Take the terminal over; False (and nothing done) if *stream* is not one."""
        try:
            if not self.stream.isatty():
                return False
        except (AttributeError, ValueError):
            return False
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) \
                    and _same_terminal(handler.stream, self.stream):
                self._taken.append((handler, handler.setStream(self._log_lines)))
        self._write(_ENTER)
        self.on = True
        return True

    def draw(self) -> None:
        """Redraw the screen in place (nothing when it is off)."""
        if not self.on:
            return
        size = shutil.get_terminal_size()
        try:
            lines = render(now=time.time(), local=self.reporter.local, title=self.title,
                           running=self._running(), upcoming=self._upcoming(),
                           failures=self._failures(),
                           log_lines=self._log_lines.last(size.lines),
                           columns=size.columns, rows=max(size.lines, 1))
        except Exception:  # the screen is an extra: the jobs run on without it
            self.close()
            _log.exception("--status: drawing the status screen failed; it is off")
            return
        self._write(_HOME + "".join(line + _CLEAR_LINE + "\r\n" for line in lines[:-1])
                    + lines[-1] + _CLEAR_LINE + _CLEAR_BELOW)

    def close(self) -> None:
        """Give the terminal back, and the log lines to their stream."""
        if self.on:
            self.on = False
            self._write(_LEAVE)
        for handler, stream in self._taken:
            handler.setStream(stream)
        self._taken = []

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # the terminal went away: stop drawing
            self.on = False

    def _running(self) -> List[Tuple[str, int, int, Optional[float]]]:
        return [(task_id, number, attempt,
                 run.started.timestamp() if run.started is not None else None)
                for (task_id, number, attempt), run in self.reporter.running().items()]

    def _upcoming(self) -> List[Tuple[float, str]]:
        due: List[Tuple[float, str]] = []
        for info in self.sched.get_all():
            try:
                times = self.sched.next_run_times(info["id"], NEXT_RUNS)
            except KeyError:  # finished or removed meanwhile
                continue
            due.extend((moment.timestamp(), info["id"]) for moment in times)
        return sorted(due)[:NEXT_RUNS]

    def _failures(self) -> List[Dict[str, Any]]:
        store = self.sched.store
        if store is None:
            return []
        return store.runs(limit=LAST_FAILURES, statuses=(ERROR, TIMEOUT, INTERRUPTED))


def _same_terminal(one: Any, other: Any) -> bool:
    """Whether two streams write to the same terminal."""
    try:
        if not (one.isatty() and other.isatty()):
            return False
        return os.path.samestat(os.fstat(one.fileno()), os.fstat(other.fileno()))
    except (AttributeError, OSError, ValueError):
        return False
