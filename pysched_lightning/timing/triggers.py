"""Triggers: when a task is due (once, every N seconds, or on a cron schedule).

A trigger turns what the user wrote (``'recur', 3`` or ``'cron', '0 2 * * *'``)
into due times.  Delays and recurring intervals live on the scheduler's own
clock; cron expressions and datetimes live on the wall clock (POSIX epoch
seconds) and the scheduler converts them when it queues the task.  Cron
expressions and their DST rule are in :mod:`.cron`, time zones in :mod:`.zones`.
"""
from __future__ import annotations

import abc
import copy
import datetime as _dt
import math
import numbers
import threading
from typing import Any, Dict, Optional, Union

from croniter import croniter
from croniter.croniter import CroniterBadDateError

from .cron import CRON_ALIASES, next_fixed, next_wildcard, parse_cron
from .zones import datetime_to_epoch, local_zone, tz_spec, zone_from_key

__all__ = [
    "TRIGGER_NAMES",
    "CRON_ALIASES",
    "Trigger",
    "OnceTrigger",
    "RecurTrigger",
    "CronTrigger",
    "make_trigger",
]

#: The trigger names :func:`make_trigger` accepts.
TRIGGER_NAMES = ("once", "recur", "cron")


#: How far from a grid point a recurring occurrence's wall time may be read
#: and still be that point (float rounding and clock offsets are far below).
_ON_GRID_SECONDS = 1e-4

# --------------------------------------------------------------------------
# Triggers
# --------------------------------------------------------------------------

class Trigger(abc.ABC):
    """Common shape of all triggers: a name, the interval as given, due times.

    Subclasses set ``first_due`` in their constructor and implement
    :meth:`next_due`; instances are plain picklable objects.
    """

    name: str = ""
    interval: Any = None
    wall_clock: bool = False
    first_due: float = 0.0

    @abc.abstractmethod
    def next_due(self, after: float) -> Optional[float]:
        """The first due time strictly after *after*, or None if there is none."""

    @abc.abstractmethod
    def describe(self) -> str:
        """A short human description of the schedule."""

    def _public_state(self) -> Dict[str, Any]:
        """What defines the trigger: its public attributes and its zone key."""
        return {key: value for key, value in vars(self).items()
                if not key.startswith("_") or key == "_tz_key"}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Trigger) or type(other) is not type(self):
            return NotImplemented
        return self._public_state() == other._public_state()

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.name, self.first_due))

    def __repr__(self) -> str:
        domain = "wall" if self.wall_clock else "sched"
        return "<%s %s first_due=%r (%s clock)>" % (
            type(self).__name__, self.describe(), self.first_due, domain)


class OnceTrigger(Trigger):
    """Fires a single time, at ``first_due``.

    Used for ``'once'`` (a delay or a datetime) and for ``'cron'`` given a
    number, which upstream 0.1.x read as "once after that many seconds".
    """

    def __init__(self, first_due: float, *, wall_clock: bool, interval: Any = None,
                 name: str = "once") -> None:
        self.name = name
        self.interval = interval
        self.wall_clock = bool(wall_clock)
        self.first_due = _finite(first_due, "first_due")

    def next_due(self, after: float) -> Optional[float]:
        """``first_due`` while it is still ahead of *after*, else None."""
        after = _finite(after, "after")
        return self.first_due if self.first_due > after else None

    def describe(self) -> str:
        if isinstance(self.interval, _dt.datetime):
            text = "once at %s" % self.interval.isoformat()
        elif isinstance(self.interval, _dt.timedelta):
            text = "once in %s" % _format_seconds(self.interval.total_seconds())
        elif _is_number(self.interval):
            text = "once in %s" % _format_seconds(float(self.interval))
        else:
            text = "once"
        return text


class RecurTrigger(Trigger):
    """Fires every ``interval`` seconds on the scheduler clock, without drift.

    Run k is due at ``anchor + k * interval`` (k >= 1), however late earlier
    runs were, so a slow task or a stalled process never shifts the grid.
    ``wall_offset`` (wall clock - scheduler clock when the grid was laid)
    names each run's slot in a store: it does not move when the wall clock
    steps, so slots stay distinct however the wall clock moves.
    ``wall_anchor`` is the anchor on the wall clock of the node that first
    laid the grid: every node that loads it names each slot from it (see
    :meth:`wall_slot`).
    """

    _wall_offset = 0.0

    def __init__(self, interval: Union[float, _dt.timedelta], *, anchor: float,
                 name: str = "recur", wall_offset: float = 0.0,
                 wall_anchor: Optional[float] = None) -> None:
        self._wall_offset = _finite(wall_offset, "wall_offset")
        self.name = name
        self.interval = interval
        self.wall_clock = False
        self.seconds = _positive_seconds(interval, name)
        self.anchor = _finite(anchor, "now")
        self.first_due = self.anchor + self.seconds
        self._wall_anchor = (self.anchor + self._wall_offset if wall_anchor is None
                             else _finite(wall_anchor, "wall_anchor"))

    def next_due(self, after: float) -> float:
        """``anchor + k * interval`` for the smallest k >= 1 beyond *after*.

        Computed arithmetically, so a jump of a year costs the same as one
        step; the result is never <= *after* despite float rounding.
        """
        anchor, step = self.anchor, self.seconds
        # The common case, one step ahead, without the careful path below.
        due = anchor + ((after - anchor) // step + 1) * step
        if after < due <= after + step and due >= self.first_due:
            return due
        after = _finite(after, "after")
        if after < self.first_due:
            return self.first_due
        k = max(1, math.floor((after - anchor) / step) + 1)
        # The division may be off by one either way after rounding; settle it.
        while k > 1 and anchor + (k - 1) * step > after:
            k -= 1
        jump = 1
        while anchor + k * step <= after:
            # Below the float resolution of the anchor a single step may not
            # move the sum at all; grow the stride rather than spin.
            k += jump
            jump *= 2
        return anchor + k * step

    @property
    def wall_offset(self) -> float:
        return self._wall_offset

    @property
    def wall_anchor(self) -> float:
        # (a grid pickled before it was kept: the same sum on every node)
        anchor = self.__dict__.get("_wall_anchor")
        return self.anchor + self._wall_offset if anchor is None else anchor

    def wall_slot(self, wall: float) -> float:
        """The wall time that names the occurrence at *wall* in a store: the
        grid point ``wall_anchor + k * interval`` it is on, the same float on
        every node. Each node reaches *wall* through its own clock offset,
        a rounding off the others': named as it is, an occurrence a hair
        from a millisecond's edge would be two slots on two nodes, and run
        on both. A time off the grid (kept by ``modify()``) names itself."""
        anchor, step = self.wall_anchor, self.seconds
        point = anchor + round((wall - anchor) / step) * step
        return point if abs(point - wall) <= _ON_GRID_SECONDS else wall

    def relaid(self, due: float, offset: float) -> "RecurTrigger":
        """This grid on another process's clock (*offset*: its wall - scheduler
        clock), next due at *due* there; its slots keep their names."""
        return RecurTrigger(self.interval, anchor=due - self.seconds, name=self.name,
                            wall_offset=offset, wall_anchor=self.wall_anchor)

    def describe(self) -> str:
        return "every %s" % _format_seconds(self.seconds)


class CronTrigger(Trigger):
    """Fires on a cron schedule in a time zone, following the DESIGN DST rule.

    Due times are wall-clock epoch seconds.  The expression is validated
    field by field at construction, so errors name the offending field.
    """

    #: After the wall clock stepped back, a wildcard job's instants up to
    #: ``repeat_until`` (the wall time before the step) come a
    #: ``repeat_pass``-th time: their slots are named apart (see
    #: :meth:`repeating`). Not stored: a restart finds them from the claims.
    repeat_until: float = -math.inf
    repeat_pass: int = 1

    def __init__(self, expression: str, *, wall_now: float,
                 tz: Union[str, _dt.tzinfo, None] = None) -> None:
        self.name = "cron"
        self.interval = expression
        self.wall_clock = True
        spec = parse_cron(expression)
        self.expression: str = spec.canonical
        self.seconds_first: bool = spec.seconds_first
        self.wildcard: bool = spec.wildcard
        self._tz_key, self._tz_obj, self.tz_name = tz_spec(tz)
        self._zone_cache: Optional[_dt.tzinfo] = None
        self._cron: Optional[croniter] = None
        self._lock = threading.Lock()
        first = self.next_due(_finite(wall_now, "wall_now"))
        if first is None:
            raise ValueError("invalid cron expression %r: it never matches any date"
                             % (expression,))
        self.first_due = first

    # -- pickling: keep the croniter, the lock and the resolved zone out ----

    def __getstate__(self) -> Dict[str, Any]:
        state = self.__dict__.copy()
        state["_zone_cache"] = None
        state["_cron"] = None
        state["_lock"] = None
        state.pop("repeat_until", None)  # (the stored bytes name the definition only)
        state.pop("repeat_pass", None)
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # -- public --------------------------------------------------------------

    def describe(self) -> str:
        return "cron %r (%s)" % (self.interval, self.tz_name)

    def repeating(self, until: float, after_pass: int = 1) -> "CronTrigger":
        """This trigger, its instants up to *until* (wall time) coming once
        more: in pass ``max(repeat_pass, after_pass) + 1``."""
        twin = copy.copy(self)  # (shares the croniter and the lock that guards it)
        twin.repeat_until = max(self.repeat_until, until)
        twin.repeat_pass = max(self.repeat_pass, after_pass) + 1
        return twin

    @property
    def zone(self) -> _dt.tzinfo:
        """The time zone the expression is read in (resolved lazily)."""
        if self._zone_cache is None:
            if self._tz_key is not None:
                self._zone_cache = zone_from_key(self._tz_key)
            elif self._tz_obj is not None:
                self._zone_cache = self._tz_obj
            else:
                self._zone_cache = local_zone()[0]
        return self._zone_cache

    def next_due(self, after: float) -> Optional[float]:
        """The first firing instant strictly after *after* (epoch seconds).

        croniter is asked for the next matching local time starting from the
        local reading of *after*, so the cost does not depend on how many
        slots were missed; None if nothing matches within croniter's horizon.
        """
        after = _finite(after, "after")
        rule = next_wildcard if self.wildcard else next_fixed
        return rule(after, self.zone, self._next_naive, self.describe)

    def _next_naive(self, start: _dt.datetime) -> Optional[_dt.datetime]:
        """The first matching naive local time strictly after *start*."""
        with self._lock:
            if self._cron is None:
                self._cron = croniter(self.expression, _dt.datetime(2000, 1, 1),
                                      second_at_beginning=self.seconds_first)
            try:
                return self._cron.get_next(_dt.datetime, start_time=start)
            except CroniterBadDateError:
                return None


# --------------------------------------------------------------------------
# make_trigger
# --------------------------------------------------------------------------

def make_trigger(trigger: str, interval: Any, *, now: float, wall_now: float,
                 tz: Union[str, _dt.tzinfo, None] = None) -> Trigger:
    """Build the trigger for ``delay(trigger, interval, ...)``, validating the input.

    *now* is the scheduler clock and *wall_now* the wall clock (epoch seconds)
    at the same instant.  Raises ValueError/TypeError naming the bad value.
    """
    if not isinstance(trigger, str):
        raise TypeError("trigger must be a string, one of %s; got %r"
                        % (", ".join(map(repr, TRIGGER_NAMES)), trigger))
    if trigger not in TRIGGER_NAMES:
        raise ValueError("unknown trigger %r; expected one of %s"
                         % (trigger, ", ".join(map(repr, TRIGGER_NAMES))))
    now = _finite(now, "now")
    wall_now = _finite(wall_now, "wall_now")

    if trigger == "recur":
        if not (_is_number(interval) or isinstance(interval, _dt.timedelta)):
            raise TypeError("'recur' interval must be a number of seconds or a "
                            "timedelta, not %s %r" % (type(interval).__name__, interval))
        _reject_tz(tz, trigger, interval)
        return RecurTrigger(interval, anchor=now, wall_offset=wall_now - now)

    if trigger == "cron":
        if isinstance(interval, str):
            return CronTrigger(interval, wall_now=wall_now, tz=tz)
        if _is_number(interval):
            _reject_tz(tz, trigger, interval)
            delay = _delay_seconds(interval, trigger)
            return OnceTrigger(now + delay, wall_clock=False, interval=interval, name="cron")
        raise TypeError("'cron' interval must be a cron expression string or a number "
                        "of seconds, not %s %r" % (type(interval).__name__, interval))

    # once
    if isinstance(interval, _dt.datetime):
        due = datetime_to_epoch(interval, tz)
        return OnceTrigger(due, wall_clock=True, interval=interval)
    if _is_number(interval) or isinstance(interval, _dt.timedelta):
        _reject_tz(tz, trigger, interval)
        delay = _delay_seconds(interval, trigger)
        return OnceTrigger(now + delay, wall_clock=False, interval=interval)
    raise TypeError("'once' interval must be a delay in seconds, a timedelta or a "
                    "datetime, not %s %r" % (type(interval).__name__, interval))


def _reject_tz(tz: object, trigger: str, interval: object) -> None:
    """tz= only means something for cron strings and datetimes."""
    if tz is not None:
        raise ValueError("tz=%r is only allowed with a cron expression or a datetime, "
                         "not with %r interval %r" % (tz, trigger, interval))


# --------------------------------------------------------------------------
# Number and duration helpers
# --------------------------------------------------------------------------

def _is_number(value: Any) -> bool:
    """True for real numbers, excluding bool (True is not a delay of 1 s)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _finite(value: Any, what: str) -> float:
    """*value* as a finite float, or ValueError/TypeError naming *what*."""
    if not _is_number(value):
        raise TypeError("%s must be a number, not %s %r" % (what, type(value).__name__, value))
    try:
        number = float(value)
    except (OverflowError, ValueError) as exc:
        raise ValueError("%s %r is not a usable number: %s" % (what, value, exc)) from None
    if not math.isfinite(number):
        raise ValueError("%s must be finite, got %r" % (what, value))
    return number


def _seconds_of(value: Any, trigger: str) -> float:
    """A number or timedelta as finite float seconds (type already checked)."""
    if isinstance(value, _dt.timedelta):
        return value.total_seconds()
    try:
        seconds = float(value)
    except (OverflowError, ValueError):
        raise ValueError("%r interval %r is too large" % (trigger, value)) from None
    if not math.isfinite(seconds):
        raise ValueError("%r interval must be finite, got %r" % (trigger, value))
    return seconds


def _delay_seconds(value: Any, trigger: str) -> float:
    """A one-shot delay: finite and not negative (0 means at once)."""
    seconds = _seconds_of(value, trigger)
    if seconds < 0:
        raise ValueError("%r delay must not be negative, got %r" % (trigger, value))
    return seconds


def _positive_seconds(value: Any, trigger: str) -> float:
    """A recurring interval: finite and strictly positive."""
    if not (_is_number(value) or isinstance(value, _dt.timedelta)):
        raise TypeError("%r interval must be a number of seconds or a timedelta, "
                        "not %s %r" % (trigger, type(value).__name__, value))
    seconds = _seconds_of(value, trigger)
    if seconds <= 0:
        raise ValueError("%r interval must be positive, got %r" % (trigger, value))
    return seconds


def _format_seconds(seconds: float) -> str:
    """Compact duration text: '3s', '1.5s', '2m', '1h30m', '1d'."""
    if seconds != int(seconds) or seconds < 60:
        return "%gs" % seconds
    rest = int(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, rest = divmod(rest, size)
        if count:
            parts.append("%d%s" % (count, unit))
    return "".join(parts)
