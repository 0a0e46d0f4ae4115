"""Rendering: the Jinja2 environment (autoescaped), the filters that write
times, durations and statuses, and the limits on how much text a page shows.

Times are written as ``<time datetime="...Z">`` in UTC with the zone named,
and relative ("in 4 min"); the page's script rewrites them in the viewer's
zone. Long texts (tracebacks, outputs) are cut to their last
``TEXT_LIMIT`` characters, with a link to the whole text.
"""
from __future__ import annotations

import datetime as _dt
import os
from typing import Any, Dict, Optional, Tuple

import jinja2
from markupsafe import Markup, escape

from ..records.owners import holder_text
from .model import SUSPENDED, error_summary, iso, status_class, status_label

__all__ = ["environment", "moment", "relative", "duration", "badge", "tail", "TEXT_LIMIT"]

#: Characters of a traceback or an output shown in a page (its end).
TEXT_LIMIT = 20_000
#: Characters of an error shown in a table cell (its start).
CELL_LIMIT = 160

_TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")


def environment() -> jinja2.Environment:
    """The templates, autoescaped, with the dashboard's filters."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(_TEMPLATES),
                             autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters.update(moment=moment, relative=relative, duration=duration, badge=badge,
                       status_label=status_label, status_class=status_class, cell=cell,
                       number=number, clock=clock, iso=iso, error_summary=error_summary,
                       holder=holder_text)
    env.globals.update(TEXT_LIMIT=TEXT_LIMIT, tail=tail)
    return env


def clock(epoch: Optional[float]) -> str:
    """``2026-11-30 13:33:00 UTC`` (what the page shows without JavaScript)."""
    if epoch is None:
        return "-"
    return _dt.datetime.fromtimestamp(epoch, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def moment(epoch: Optional[float], now: float, rel: bool = True) -> Markup:
    """A ``<time>`` element in UTC (the script shows it in the viewer's zone),
    followed by the relative time when *rel*."""
    if epoch is None:
        return Markup('<span class="none">-</span>')
    stamp = iso(epoch)
    text = Markup('<time datetime="{0}">{1}</time>').format(stamp, clock(epoch))
    if rel:
        text += Markup(' <span class="rel" data-time="{0}">{1}</span>').format(
            stamp, relative(epoch, now))
    return text


def relative(epoch: Optional[float], now: float) -> str:
    """``in 4 min``, ``12 s ago``, ``now``."""
    if epoch is None:
        return ""
    delta = epoch - now
    size = abs(delta)
    if size < 1:
        return "now"
    for unit, seconds in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if size >= seconds:
            count = int(size // seconds)
            break
    return f"in {count} {unit}" if delta > 0 else f"{count} {unit} ago"


def duration(seconds: Optional[float]) -> str:
    """``12 ms``, ``0.52 s``, ``3 min 05 s``, ``2 h 03 min``."""
    if seconds is None:
        return "-"
    if seconds < 0.001:
        return "<1 ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s"
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def badge(code: Optional[int], paused: bool = False) -> Markup:
    """A coloured status label. SUSPENDED reads "Waiting" here (for its time,
    a dependency or a worker): "suspended" would sound like paused."""
    if code is None or code == SUSPENDED:
        out = Markup('<span class="badge waiting" title="Suspended: waiting for its time, a '
                     'dependency or a free worker">Waiting</span>')
    else:
        out = Markup('<span class="badge {0}">{1}</span>').format(status_class(code),
                                                                  status_label(code))
    if paused:
        out += Markup(' <span class="badge paused">Paused</span>')
    return out


def cell(text: Optional[str], limit: int = CELL_LIMIT) -> Markup:
    """One line of *text* for a table cell; the whole text in its title."""
    if not text:
        return Markup("")
    line = " ".join(str(text).split())
    if len(line) <= limit:
        return escape(line)
    return Markup('<span title="{0}">{1}\u2026</span>').format(line[:2000], line[:limit])


def tail(text: Optional[str], limit: int = TEXT_LIMIT) -> Tuple[str, int]:
    """The last *limit* characters of *text* and how many were cut."""
    if not text:
        return "", 0
    if len(text) <= limit:
        return text, 0
    return text[-limit:], len(text) - limit


def number(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value)


def render(env: jinja2.Environment, name: str, context: Dict[str, Any]) -> str:
    return env.get_template(name).render(**context)
