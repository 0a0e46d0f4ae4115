"""How ``pysched`` writes things for people: statuses, local times with their
zone, durations, a command's stderr in a line or a tail, and tables."""
from __future__ import annotations

import datetime as _dt
import json
import math
import re
import shutil
import sys
import textwrap
from typing import Any, List, Optional, Sequence, TextIO, Tuple

from ..records.runs import TaskStatus
from ..timing.zones import local_zone

__all__ = ["status_label", "iso", "LocalTime", "duration", "span", "relative", "useful_line",
           "stderr_tail", "format_table", "print_table", "print_json", "table_width"]

_UTC = _dt.timezone.utc
_TRACEBACK_HEAD = "Traceback (most recent call last):"
_TRUNCATED = re.compile(r"^\[\.\.\. [0-9]+ bytes truncated \.\.\.\]$")
_ERROR_WORDS = re.compile(
    r"\b(errors?|fail(s|ed|ure)?|fatal|cannot|can't|could ?n[o']t|unable|denied|refused|"
    r"not found|no such|invalid|exception|abort(ed)?|panic|killed|timed? ?out|"
    r"segmentation)\b", re.IGNORECASE)
#: The narrowest a wrapped last column gets; a wider table wraps it below the row.
_MIN_WRAP = 24


def status_label(code: Any) -> Optional[str]:
    """'Completed', 'Missed'... for a stored status code (None stays None)."""
    if code is None:
        return None
    try:
        return TaskStatus(code).label
    except ValueError:
        return str(code)


def iso(epoch: Optional[float]) -> Optional[str]:
    """POSIX seconds as ISO 8601 UTC with microseconds, as the run log writes them."""
    if epoch is None:
        return None
    return _dt.datetime.fromtimestamp(epoch, _UTC).isoformat(timespec="microseconds")


class LocalTime:
    """Times in the machine's zone, and that zone's name for the reader."""

    def __init__(self) -> None:
        self.zone, self.key = local_zone()

    def name(self, epoch: Optional[float] = None) -> str:
        """``Europe/Berlin (CET, UTC+01:00)``: the key when known, with the
        abbreviation and offset in force at *epoch* (default now)."""
        moment = self.at(epoch)
        abbreviation = moment.tzname() or ""
        offset = moment.strftime("%z")
        utc = "UTC" if offset in ("", "+0000") else f"UTC{offset[:3]}:{offset[3:]}"
        said = [abbreviation] if abbreviation and abbreviation not in (utc, self.key) else []
        said.append(utc)
        if self.key is None:
            return ", ".join(said)
        return self.key if self.key == utc else f"{self.key} ({', '.join(said)})"

    def at(self, epoch: Optional[float] = None) -> _dt.datetime:
        moment = _dt.datetime.now(_UTC) if epoch is None else \
            _dt.datetime.fromtimestamp(epoch, _UTC)
        return moment.astimezone(self.zone)

    def text(self, epoch: Optional[float], seconds: bool = True) -> str:
        """``2026-11-30 13:35:12`` in the local zone; ``-`` for None."""
        if epoch is None:
            return "-"
        return self.at(epoch).strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")

    def clock(self, epoch: float) -> str:
        """``13:35:12``, the time of day only."""
        return self.at(epoch).strftime("%H:%M:%S")


def duration(seconds: Optional[float]) -> str:
    """``0.25s``, ``3.00s``, ``4m05s``, ``1h02m03s``; ``-`` for None."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def span(seconds: float) -> str:
    """A length of time in whole units, rounded down: ``12 s``, ``4 min``, ``2 h``."""
    amount = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if amount >= size:
            return f"{amount // size:.0f} {unit}"
    return f"{amount // 1:.0f} s"


def relative(seconds: float) -> str:
    """A time from now in words: ``in 4 min``, ``12 s ago``, ``now``. A time
    ahead counts whole seconds up (0.3 s ahead is ``in 1 s``)."""
    if seconds > 0:
        return f"in {span(math.ceil(seconds))}"
    return "now" if seconds > -1 else f"{span(seconds)} ago"


def _lines(text: Optional[str]) -> List[str]:
    """The non-blank lines of *text*, without a truncation marker."""
    return [line.rstrip() for line in (text or "").splitlines()
            if line.strip() and not _TRUNCATED.match(line.strip())]


def useful_line(stderr: Optional[str], error: Optional[str] = None) -> str:
    """The line of a run's stderr that says what went wrong, whole.

    For a Python traceback that is its last unindented line (the exception);
    otherwise the first line that reads as an error (``fatal: ...``,
    ``cp: cannot stat ...``), else the last line, leaving out ``sh -x``
    traces (``+ cmd``): programs log progress to stderr too, and their last
    word is likelier to matter than their first. A run without stderr gives
    the first line of *error*.
    """
    lines = _lines(stderr)
    if any(line.startswith(_TRACEBACK_HEAD) for line in lines):
        for line in reversed(lines):
            if not line[:1].isspace() and not line.startswith(_TRACEBACK_HEAD):
                return line.strip()
    said = [line.strip() for line in lines if not line.startswith("+")] or \
        [line.strip() for line in lines]
    for line in said:
        if _ERROR_WORDS.search(line):
            return line
    if said:
        return said[-1]
    return (error or "").strip().split("\n", 1)[0]


def stderr_tail(stderr: Optional[str], count: int = 5,
                width: int = 300) -> Tuple[List[str], int]:
    """The last *count* non-blank lines of *stderr* (each cut to *width*
    characters) and how many non-blank lines there were in all."""
    lines = _lines(stderr)
    tail = [line if len(line) <= width else line[:width - 3] + "..."
            for line in lines[-count:]]
    return tail, len(lines)


def table_width(stream: TextIO = sys.stdout) -> Optional[int]:
    """The width to wrap tables to: the terminal's, or $COLUMNS; None (no
    wrapping) when writing to a pipe or a file without $COLUMNS."""
    import os
    if "COLUMNS" in os.environ or (hasattr(stream, "isatty") and stream.isatty()):
        return shutil.get_terminal_size().columns
    return None


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]],
                 width: Optional[int] = None) -> List[str]:
    """Aligned columns; with *width*, the last column is wrapped (never cut)
    to fit, its continuation lines indented under it."""
    table = [list(headers)] + [list(row) for row in rows]
    count = len(headers)
    widths = [max(len(row[i]) for row in table) for i in range(count)]
    lead = sum(widths[:-1]) + 2 * (count - 1)
    out = []
    for index, row in enumerate(table):
        head = "  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths[:-1]))
        last = row[-1]
        if width is None or index == 0 or lead + len(last) <= width:
            out.append(f"{head}  {last}".rstrip() if count > 1 else last)
            continue
        room = width - lead - 2
        indent = lead + 2
        if room < _MIN_WRAP:  # no room beside the row: wrap below it instead
            out.append(head.rstrip())
            room, indent = max(width - 4, _MIN_WRAP), 4
            pieces = textwrap.wrap(last, room, break_on_hyphens=False)
            out.extend(" " * indent + piece for piece in pieces)
            continue
        pieces = textwrap.wrap(last, room, break_on_hyphens=False) or [""]
        out.append(f"{head}  {pieces[0]}")
        out.extend(" " * indent + piece for piece in pieces[1:])
    return out


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]],
                width: Optional[int] = None) -> None:
    for line in format_table(headers, rows, width):
        print(line)


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")
