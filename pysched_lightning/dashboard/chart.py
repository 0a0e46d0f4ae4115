"""A task's chart: each run's duration over time, coloured by how it ended,
drawn on the server as SVG (like the timeline; no charting library).

A run that executed is a dot at its start time and duration (a line joins
them, to show a trend); a run that never started (missed, canceled) or is
still going is a diamond on the baseline. Every dot links to its run.
"""
from __future__ import annotations

import datetime as _dt
from typing import Any, Callable, Mapping, Sequence

from .model import MISSED, iso, status_class, status_label
from .timeline import utc_text, html_text
from .views import duration

__all__ = ["draw_chart", "CHART_RUNS"]

#: The newest runs a task's chart shows.
CHART_RUNS = 300
WIDTH, HEIGHT, LEFT, RIGHT, TOP, BOTTOM = 1200, 190, 70, 16, 12, 26


def draw_chart(runs: Sequence[Mapping[str, Any]], run_url: Callable[[Mapping[str, Any]], str]
               ) -> str:
    """The SVG markup of *runs* (any order): duration against time."""
    runs = sorted(runs, key=_when)
    base = HEIGHT - BOTTOM
    out = [f'<svg class="chart-runs" xmlns="http://www.w3.org/2000/svg" role="img" '
           f'viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
           f'aria-label="duration and outcome of the last {len(runs)} runs">']
    out.append(f'<line class="axis" x1="{LEFT}" y1="{base}" x2="{WIDTH - RIGHT}" y2="{base}"/>')
    if not runs:
        out.append(f'<text class="empty" x="{LEFT + 8}" y="{base - 12}">no runs yet</text></svg>')
        return "".join(out)
    first, last = _when(runs[0]), _when(runs[-1])
    span = max(last - first, 1.0)
    longest = max((run["duration"] for run in runs if run.get("duration") is not None),
                  default=0.0) or 1.0

    def x_of(t: float) -> float:
        return LEFT + 6 + (t - first) / span * (WIDTH - LEFT - RIGHT - 12)

    def y_of(seconds: float) -> float:
        return base - 4 - seconds / longest * (base - TOP - 8)

    for share in (0.0, 0.5, 1.0):
        y = y_of(longest * share)
        out.append(f'<line class="grid" x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" '
                   f'y2="{y:.1f}"/><text class="ylabel" x="{LEFT - 6}" y="{y + 4:.1f}">'
                   f'{html_text(duration(longest * share))}</text>')
    daily = span > 2 * 86400
    for k in range(5):
        t = first + span * k / 4
        moment = _dt.datetime.fromtimestamp(t, _dt.timezone.utc)
        out.append(f'<text class="tick" x="{x_of(t):.1f}" y="{HEIGHT - 8}" data-time="{iso(t)}" '
                   f'data-format="{"day" if daily else "seconds"}">'
                   f'{moment.strftime("%d %b" if daily else "%H:%M:%S")}</text>')
    timed = [run for run in runs if run.get("duration") is not None]
    if len(timed) > 1:
        points = " ".join(f"{x_of(_when(run)):.1f},{y_of(run['duration']):.1f}" for run in timed)
        out.append(f'<polyline class="trend" points="{points}"/>')
    for run in runs:
        out.append(_mark(run, x_of, y_of, base, run_url))
    out.append("</svg>")
    return "".join(out)


def _mark(run: Mapping[str, Any], x_of: Callable[[float], float],
          y_of: Callable[[float], float], base: float,
          run_url: Callable[[Mapping[str, Any]], str]) -> str:
    css = status_class(run.get("status"))
    title = html_text(_title(run))
    x = x_of(_when(run))
    if run.get("duration") is not None:
        shape = (f'<circle class="dot" cx="{x:.1f}" cy="{y_of(run["duration"]):.1f}" r="3.5">'
                 f'<title>{title}</title></circle>')
    else:
        kind = "missed" if run.get("status") == MISSED else "unstarted"
        shape = (f'<path class="{kind}" d="M{x:.1f} {base - 9}l4 4l-4 4l-4 -4z">'
                 f'<title>{title}</title></path>')
    return f'<a href="{html_text(run_url(run))}" class="mark {css}">{shape}</a>'


def _title(run: Mapping[str, Any]) -> str:
    bits = [f"run {run['run']}" if run.get("run") else "skipped",
            status_label(run.get("status")), utc_text(_when(run))]
    if run.get("duration") is not None:
        bits.append(duration(run["duration"]))
    if run.get("error"):
        bits.append(str(run["error"])[:200])
    return " \u00b7 ".join(bits)


def _when(run: Mapping[str, Any]) -> float:
    started = run.get("started")
    return float(started if started is not None else run.get("scheduled") or 0.0)

