"""The timeline: a Gantt-like SVG of the runs in a window, one row per task,
drawn on the server (no charting library, no JavaScript needed).

Bars are coloured by status; a late start draws a whisker from the due time;
missed and canceled runs that never started are diamonds at their due time.
Runs too short to see that start in the same 3-pixel column are drawn as one
mark (the most alarming status wins; its title counts them), so a row holds
at most a few hundred marks however many runs the window holds. Every text is
escaped here, since the SVG is written as markup.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
from collections import Counter
from html import escape
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from .model import MISSED, RUNNING, TaskRow, iso, status_class, status_label, worst_status

__all__ = ["WINDOWS", "WINDOW_LABELS", "Row", "draw", "LATE_AFTER", "utc_text", "html_text"]

#: The windows offered, by their name in the URL.
WINDOWS: Mapping[str, float] = {"1m": 60.0, "2m": 120.0, "5m": 300.0, "10m": 600.0,
                                "1h": 3600.0, "24h": 86400.0, "7d": 604800.0}
#: Each window's name on the page.
WINDOW_LABELS: Mapping[str, str] = {"1m": "1 min", "2m": "2 min", "5m": "5 min", "10m": "10 min",
                                    "1h": "hour", "24h": "day", "7d": "week"}
#: A run that started more than this many seconds after its due time is late.
LATE_AFTER = 1.0

WIDTH, LABEL, ROW, HEADER, BAR = 1200, 230, 24, 30, 14
_X0, _X1 = LABEL + 10, WIDTH - 14
_BUCKET = 3.0  # pixels: shorter runs starting in one such column are drawn as one mark
_STEPS = (5, 10, 15, 30, 60, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800)


@dataclasses.dataclass
class Row:
    """One task's row: its runs in the window; before *complete_since*, only
    those that did not complete (*not_drawn* completed ones are left out)."""

    task: TaskRow
    runs: List[Dict[str, Any]]
    not_drawn: int = 0
    complete_since: Optional[float] = None


@dataclasses.dataclass
class _Mark:
    x0: float
    x1: float
    runs: List[Dict[str, Any]]
    started: bool


def draw(rows: Sequence[Row], since: float, until: float, now: float,
         run_url: Callable[[Mapping[str, Any]], str], task_url: Callable[[str], str]) -> str:
    """The SVG markup of *rows* between *since* and *until* (POSIX seconds)."""
    span = max(until - since, 1e-9)

    def x_of(t: float) -> float:
        return _X0 + (min(max(t, since), until) - since) / span * (_X1 - _X0)

    height = HEADER + ROW * max(len(rows), 1) + 6
    out = [f'<svg class="timeline" xmlns="http://www.w3.org/2000/svg" role="img" '
           f'viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" '
           f'aria-label="runs from {iso(since)} to {iso(until)}">']
    out.extend(_axis(since, until, height, x_of))
    if not rows:
        out.append(f'<text class="empty" x="{_X0}" y="{HEADER + 16}">no tasks to show</text>')
    for index, row in enumerate(rows):
        top = HEADER + index * ROW
        out.append(f'<g class="row" data-task="{html_text(row.task.id)}">')
        if index % 2:
            out.append(f'<rect class="stripe" x="0" y="{top}" width="{WIDTH}" height="{ROW}"/>')
        label = row.task.name if len(row.task.name) <= 30 else row.task.name[:29] + "\u2026"
        out.append(f'<a href="{html_text(task_url(row.task.id))}"><text class="label" x="8" '
                   f'y="{top + 16}"><title>{html_text(row.task.id)}</title>{html_text(label)}</text></a>')
        if row.not_drawn and row.complete_since is not None:
            out.append(f'<rect class="hidden-runs" x="{_X0}" y="{top + 4}" '
                       f'width="{max(x_of(row.complete_since) - _X0, 2):.1f}" '
                       f'height="{BAR + 2}"><title>{row.not_drawn:,} completed runs before '
                       f'{utc_text(row.complete_since)} are not drawn (failures and missed runs '
                       f'are); the task\'s history lists them all</title></rect>')
        for mark in _marks(row.runs, x_of, now):
            out.append(_draw_mark(mark, top, x_of, run_url, task_url, row.task.id))
        out.append("</g>")
    if since <= now <= until:
        x = x_of(now)
        out.append(f'<line class="now" x1="{x:.1f}" y1="{HEADER - 6}" x2="{x:.1f}" '
                   f'y2="{height - 4}"><title>now</title></line>')
    out.append("</svg>")
    return "".join(out)


def _axis(since: float, until: float, height: int, x_of: Callable[[float], float]) -> List[str]:
    step = next((s for s in _STEPS if (until - since) / s <= 12), _STEPS[-1])
    daily, seconds = step >= 86400, step < 60
    out = [f'<line class="axis" x1="{_X0}" y1="{HEADER - 4}" x2="{_X1}" y2="{HEADER - 4}"/>']
    tick = (since // step + 1) * step
    while tick < until:
        x = x_of(tick)
        moment = _dt.datetime.fromtimestamp(tick, _dt.timezone.utc)
        text = moment.strftime("%a %d %b" if daily else "%H:%M:%S" if seconds else "%H:%M")
        out.append(f'<line class="grid" x1="{x:.1f}" y1="{HEADER - 8}" x2="{x:.1f}" '
                   f'y2="{height - 4}"/>')
        out.append(f'<text class="tick" x="{x:.1f}" y="{HEADER - 12}" data-time="{iso(tick)}" '
                   f'data-format="{"day" if daily else "seconds" if seconds else "time"}">'
                   f'{text}</text>')
        tick += step
    out.append(f'<text class="tick zone" x="{_X0 - 8}" y="{HEADER - 12}">UTC</text>')
    return out


def _marks(runs: Sequence[Mapping[str, Any]], x_of: Callable[[float], float],
           now: float) -> List[_Mark]:
    """The runs as marks. A run at least ``_BUCKET`` pixels long is a bar of
    its own; shorter ones that start in the same ``_BUCKET``-pixel column
    (and diamonds likewise) become one mark, so one failure among thousands
    of runs still shows as one red mark in its own place."""
    marks: List[_Mark] = []
    columns: Dict[Any, _Mark] = {}
    for run in runs:
        started = run.get("started")
        begin = started if started is not None else run["scheduled"]
        end = run.get("finished")
        if end is None:
            end = now if run.get("status") == RUNNING and started is not None else begin
        x0 = x_of(begin)
        x1 = max(x_of(end), x0 + (2.0 if started is not None else 0.0))
        if x1 - x0 >= _BUCKET:
            marks.append(_Mark(x0, x1, [dict(run)], True))
            continue
        key = (int((x0 - _X0) // _BUCKET), started is not None)
        column = columns.get(key)
        if column is None:
            columns[key] = _Mark(x0, x1, [dict(run)], started is not None)
        else:
            column.x0, column.x1 = min(column.x0, x0), max(column.x1, x1)
            column.runs.append(dict(run))
    return sorted(marks + _spans(columns), key=lambda mark: mark.x0)


def _spans(columns: Dict[Any, _Mark]) -> List[_Mark]:
    """Neighbouring columns whose runs all ended alike become one span: a
    week of a task every 20 minutes is a few marks, not hundreds, and a
    failure among them keeps a mark of its own."""
    spans: List[_Mark] = []
    last_key: Any = None
    for key in sorted(columns):
        mark = columns[key]
        prev = spans[-1] if spans else None
        if (prev is not None and last_key is not None and key[1] == last_key[1]
                and key[0] - last_key[0] <= 1 and _uniform(prev) and _uniform(mark)
                and prev.runs[0]["status"] == mark.runs[0]["status"]):
            prev.x1 = max(prev.x1, mark.x1)
            prev.runs.extend(mark.runs)
        else:
            spans.append(mark)
        last_key = key
    return spans


def _uniform(mark: _Mark) -> bool:
    first = mark.runs[0]["status"]
    return all(run["status"] == first for run in mark.runs)


def _draw_mark(mark: _Mark, top: int, x_of: Callable[[float], float],
               run_url: Callable[[Mapping[str, Any]], str],
               task_url: Callable[[str], str], task_id: str) -> str:
    status = worst_status(run["status"] for run in mark.runs)
    css = status_class(status)
    middle = top + ROW / 2
    if len(mark.runs) == 1:  # a run links to its page; a group is a title on its row
        run = mark.runs[0]
        title = _run_title(run)
        parts = [f'<a href="{html_text(run_url(run))}" class="mark {css}">']
    else:
        title = _group_title(mark.runs)
        parts = [f'<g class="mark group {css}">']
    if not mark.started:  # missed or canceled before it started: a diamond at its due time
        x, r = mark.x0, 5
        shape = "missed" if status == MISSED else "unstarted"
        parts.append(f'<path class="{shape}" d="M{x:.1f} {middle - r}l{r} {r}l{-r} {r}'
                     f'l{-r} {-r}z"><title>{html_text(title)}</title></path>')
    else:
        late = [run for run in mark.runs if _lateness(run) > LATE_AFTER]
        if len(mark.runs) == 1 and late:
            due = x_of(late[0]["scheduled"])
            parts.append(f'<path class="late" d="M{due:.1f} {middle - 4}v8M{due:.1f} '
                         f'{middle}H{mark.x0:.1f}"/>')
        parts.append(f'<rect class="bar" x="{mark.x0:.1f}" y="{middle - BAR / 2}" '
                     f'width="{mark.x1 - mark.x0:.1f}" height="{BAR}" rx="2">'
                     f'<title>{html_text(title)}</title></rect>')
        if late and len(mark.runs) > 1:  # a merged mark: a dot says some started late
            parts.append(f'<circle class="late-dot" cx="{mark.x0:.1f}" cy="{middle - BAR / 2}" '
                         f'r="2.5"/>')
    parts.append("</a>" if len(mark.runs) == 1 else "</g>")
    return "".join(parts)


def _lateness(run: Mapping[str, Any]) -> float:
    started, scheduled = run.get("started"), run.get("scheduled")
    return 0.0 if started is None or scheduled is None else started - scheduled


def _run_title(run: Mapping[str, Any]) -> str:
    """The tooltip of one run: what, when, how long, how it ended."""
    bits = [f"run {run.get('run')}" if run.get("run") else "skipped"]
    if (run.get("attempt") or 1) > 1:
        bits[0] += f" attempt {run['attempt']}"
    bits.append(status_label(run.get("status")))
    when = run.get("started") if run.get("started") is not None else run.get("scheduled")
    bits.append(utc_text(when))
    if run.get("duration") is not None:
        bits.append(f"{run['duration']:.2f} s")
    if run.get("exit_code") is not None:
        bits.append(f"exit {run['exit_code']}")
    late = _lateness(run)
    if late > LATE_AFTER:
        bits.append(f"late by {late:.1f} s")
    if (run.get("count") or 1) > 1:
        bits.append(f"{run['count']} runs skipped")
    if run.get("reason"):
        bits.append(str(run["reason"]))
    if run.get("error"):
        bits.append(str(run["error"])[:200])
    return " \u00b7 ".join(bits)


def _group_title(runs: Sequence[Mapping[str, Any]]) -> str:
    counts = Counter(status_label(run.get("status")) for run in runs)
    first = min(run["scheduled"] for run in runs)
    last = max(run["scheduled"] for run in runs)
    what = ", ".join(f"{count} {label.lower()}" for label, count in counts.most_common())
    return f"{len(runs)} runs from {utc_text(first)} to {utc_text(last)}: {what}"


def utc_text(epoch: Optional[float]) -> str:
    """A time as the charts label it (UTC, to the second); "-" for none."""
    if epoch is None:
        return "-"
    return _dt.datetime.fromtimestamp(epoch, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def html_text(text: Any) -> str:
    """*text* made safe inside SVG markup and its attributes."""
    return escape(str(text), quote=True)
