"""Triggers: when a task is due (once, every N seconds, or on a cron schedule).

A trigger turns what the user wrote (``'recur', 3`` or ``'cron', '0 2 * * *'``)
into due times.  Delays and recurring intervals live on the scheduler's own
clock; cron expressions and datetimes live on the wall clock (POSIX epoch
seconds) and the scheduler converts them when it queues the task.

Cron follows the rule in DESIGN.md ("Time, cron and DST"): croniter does the
calendar arithmetic on naive local times, and this module maps each matching
local time to real instants itself, so the DST policy is explicit here rather
than an accident of croniter's time-zone code:

* a *wildcard* job (minute or hour field begins with ``*``) fires at every real
  instant whose local time matches: twice in a repeated autumn hour, never
  for local times that do not exist;
* a *fixed-time* job fires at the first instant the wall clock reaches each
  matching local time: once in a repeated hour (the first occurrence), and at
  the first valid instant after a spring gap for a time inside the gap.
"""
from __future__ import annotations

import abc
import datetime as _dt
import logging
import math
import numbers
import os
import re
import threading
from types import MappingProxyType
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from croniter import croniter
from croniter.croniter import CroniterBadDateError, CroniterError

try:  # Python 3.9+: the standard library time-zone database.
    import zoneinfo as _zoneinfo
except ImportError:  # pragma: no cover - only on interpreters without zoneinfo
    _zoneinfo = None  # type: ignore[assignment]

__all__ = [
    "TRIGGER_NAMES",
    "CRON_ALIASES",
    "Trigger",
    "OnceTrigger",
    "RecurTrigger",
    "CronTrigger",
    "make_trigger",
]

_log = logging.getLogger("pysched_lightning")

#: The trigger names :func:`make_trigger` accepts.
TRIGGER_NAMES = ("once", "recur", "cron")

#: Cron aliases and the 5-field expressions they stand for (read-only).
CRON_ALIASES: Mapping[str, str] = MappingProxyType({
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
})

_UTC = _dt.timezone.utc
_ONE_MICROSECOND = _dt.timedelta(microseconds=1)
_ONE_SECOND = _dt.timedelta(seconds=1)
# How far around a spring gap the bisection for its end may look, on top of
# the two readings of the non-existent time (covers tzinfos without PEP 495).
_GAP_SEARCH_MARGIN = 7200
# Safety bound on loops that, for a sane zone, run once or twice.
_MAX_CANDIDATES = 10000


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
        if type(other) is not type(self):
            return NotImplemented
        return self._public_state() == other._public_state()  # type: ignore[attr-defined]

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
    """

    _wall_offset = 0.0

    def __init__(self, interval: Union[float, _dt.timedelta], *, anchor: float,
                 name: str = "recur", wall_offset: float = 0.0) -> None:
        self._wall_offset = _finite(wall_offset, "wall_offset")
        self.name = name
        self.interval = interval
        self.wall_clock = False
        self.seconds = _positive_seconds(interval, name)
        self.anchor = _finite(anchor, "now")
        self.first_due = self.anchor + self.seconds

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

    def describe(self) -> str:
        return "every %s" % _format_seconds(self.seconds)


class CronTrigger(Trigger):
    """Fires on a cron schedule in a time zone, following the DESIGN DST rule.

    Due times are wall-clock epoch seconds.  The expression is validated
    field by field at construction, so errors name the offending field.
    """

    def __init__(self, expression: str, *, wall_now: float, tz: Any = None) -> None:
        self.name = "cron"
        self.interval = expression
        self.wall_clock = True
        spec = _parse_cron(expression)
        self.expression: str = spec.canonical
        self.seconds_first: bool = spec.seconds_first
        self.wildcard: bool = spec.wildcard
        self._tz_key, self._tz_obj, self.tz_name = _tz_spec(tz)
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
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # -- public --------------------------------------------------------------

    def describe(self) -> str:
        return "cron %r (%s)" % (self.interval, self.tz_name)

    @property
    def zone(self) -> _dt.tzinfo:
        """The time zone the expression is read in (resolved lazily)."""
        if self._zone_cache is None:
            if self._tz_key is not None:
                self._zone_cache = _zone_from_key(self._tz_key)
            elif self._tz_obj is not None:
                self._zone_cache = self._tz_obj
            else:
                self._zone_cache = _local_zone()[0]
        return self._zone_cache

    def next_due(self, after: float) -> Optional[float]:
        """The first firing instant strictly after *after* (epoch seconds).

        croniter is asked for the next matching local time starting from the
        local reading of *after*, so the cost does not depend on how many
        slots were missed; None if nothing matches within croniter's horizon.
        """
        after = _finite(after, "after")
        zone = self.zone
        if self.wildcard:
            return self._next_wildcard(after, zone)
        return self._next_fixed(after, zone)

    # -- DST policy ----------------------------------------------------------

    def _next_fixed(self, after: float, zone: _dt.tzinfo) -> Optional[float]:
        """Fixed-time job: the first instant the wall clock reaches a match.

        Matches at or below the highest local time already shown by the clock
        are spent, which is what makes a repeated hour fire once.
        """
        local = _dt.datetime.fromtimestamp(after, zone)
        start = local.replace(tzinfo=None)
        if local.fold == 1 and _is_ambiguous(start, zone):
            # Second pass through a repeated hour: the clock has shown every
            # local time up to the end of that hour already.
            first_pass = min(_instants(start, zone))
            change = _transition(first_pass, after, zone)
            start = _naive_at(change - 1, zone) + _ONE_SECOND - _ONE_MICROSECOND
        candidate = self._next_naive(start)
        for _ in range(_MAX_CANDIDATES):
            if candidate is None:
                return None
            instant = _first_reaching(candidate, zone)
            if instant > after:
                return instant
            candidate = self._next_naive(candidate)
        raise RuntimeError("no due time found after %r for %s" % (after, self.describe()))

    def _next_wildcard(self, after: float, zone: _dt.tzinfo) -> Optional[float]:
        """Wildcard job: the first real instant after *after* whose local time matches."""
        local = _dt.datetime.fromtimestamp(after, zone)
        local_naive = local.replace(tzinfo=None)
        best: Optional[float] = None
        candidate = self._next_naive(local_naive)
        for _ in range(_MAX_CANDIDATES):
            if candidate is None:
                break
            instants = _instants(candidate, zone)
            if not instants:
                # Inside a spring gap: nothing fires; resume at the gap's end.
                gap_end = _naive_at(_first_reaching(candidate, zone), zone)
                candidate = self._next_naive(gap_end - _ONE_MICROSECOND)
                continue
            later = [t for t in instants if t > after]
            if later:
                best = min(later)
                break
            candidate = self._next_naive(candidate)
        else:
            raise RuntimeError("no due time found after %r for %s" % (after, self.describe()))
        if local.fold == 0 and _is_ambiguous(local_naive, zone):
            # First pass through a repeated hour: matches earlier in that
            # hour come round again on the second pass, before anything later.
            second_pass = max(_instants(local_naive, zone))
            change = _transition(after, second_pass, zone)
            repeat = self._next_naive(_naive_at(change, zone) - _ONE_MICROSECOND)
            if repeat is not None and repeat <= local_naive:
                again = max(_instants(repeat, zone))
                if again > after and (best is None or again < best):
                    best = again
        return best

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
                 tz: Any = None) -> Trigger:
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
        due = _datetime_to_epoch(interval, tz)
        return OnceTrigger(due, wall_clock=True, interval=interval)
    if _is_number(interval) or isinstance(interval, _dt.timedelta):
        _reject_tz(tz, trigger, interval)
        delay = _delay_seconds(interval, trigger)
        return OnceTrigger(now + delay, wall_clock=False, interval=interval)
    raise TypeError("'once' interval must be a delay in seconds, a timedelta or a "
                    "datetime, not %s %r" % (type(interval).__name__, interval))


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


# --------------------------------------------------------------------------
# Time zones
# --------------------------------------------------------------------------

def _zone_from_key(key: str) -> _dt.tzinfo:
    """The IANA zone *key* as a ZoneInfo; ValueError naming it if unknown."""
    if _zoneinfo is None:  # pragma: no cover
        from dateutil import tz as _dutz
        zone = _dutz.gettz(key)
        if zone is None:
            raise ValueError("unknown time zone %r" % (key,))
        return zone
    try:
        return _zoneinfo.ZoneInfo(key)
    except (_zoneinfo.ZoneInfoNotFoundError, ValueError, OSError, TypeError):
        raise ValueError("unknown time zone %r" % (key,)) from None


def _key_from_path(path: str) -> Optional[str]:
    """The zone key in a path such as /usr/share/zoneinfo/Europe/Berlin."""
    marker = "zoneinfo" + os.sep
    index = path.rfind(marker)
    if index < 0:
        return None
    key = path[index + len(marker):]
    for prefix in ("posix" + os.sep, "right" + os.sep):
        if key.startswith(prefix):
            key = key[len(prefix):]
    return key or None


def _local_zone() -> Tuple[_dt.tzinfo, Optional[str]]:
    """The machine's local zone as a DST-aware tzinfo, with its key if known.

    Order: the TZ environment variable when it names a zone; else the zone
    behind /etc/localtime (by key, or read from the file); else dateutil's
    tzlocal(), which follows whatever the C library uses.
    """
    from dateutil import tz as _dutz

    env = os.environ.get("TZ")
    if env is not None:
        key = env[1:] if env.startswith(":") else env
        if key == "":
            return _zone_from_key("UTC"), "UTC"
        if os.path.isabs(key):
            path_key = _key_from_path(os.path.realpath(key))
            if path_key is not None:
                try:
                    return _zone_from_key(path_key), path_key
                except ValueError:
                    pass
        else:
            try:
                return _zone_from_key(key), key
            except ValueError:
                pass
        # A POSIX rule string (e.g. 'CET-1CEST,M3.5.0,M10.5.0/3'): only the C
        # library knows what it means, so /etc/localtime would be wrong here.
        _log.debug("TZ=%r is not a zone key; using dateutil.tz.tzlocal()", env)
        return _dutz.tzlocal(), None

    localtime = "/etc/localtime"
    if os.path.exists(localtime):
        key = _key_from_path(os.path.realpath(localtime))
        if key is not None:
            try:
                return _zone_from_key(key), key
            except ValueError:
                pass
        if _zoneinfo is not None:
            try:
                with open(localtime, "rb") as handle:
                    return _zoneinfo.ZoneInfo.from_file(handle), None
            except (OSError, ValueError):
                pass
    _log.debug("local time zone unknown; using dateutil.tz.tzlocal()")
    return _dutz.tzlocal(), None


def _tz_spec(tz: Any) -> Tuple[Optional[str], Optional[_dt.tzinfo], str]:
    """Split a ``tz=`` argument into (key, tzinfo object, display name).

    A zone with a key is kept as the key (so it pickles and reloads by
    name); a local zone known only from a file is kept as neither, meaning
    "the machine's local zone", resolved again after unpickling.
    """
    if tz is None:
        zone, key = _local_zone()
        if key is not None:
            return key, None, key
        if _zoneinfo is not None and isinstance(zone, _zoneinfo.ZoneInfo):
            return None, None, "local"
        return None, zone, "local"
    if isinstance(tz, str):
        _zone_from_key(tz)
        return tz, None, tz
    if not isinstance(tz, _dt.tzinfo):
        raise TypeError("tz must be a zone name or a tzinfo, not %s %r"
                        % (type(tz).__name__, tz))
    key = getattr(tz, "key", None)
    if _zoneinfo is not None and isinstance(tz, _zoneinfo.ZoneInfo) and key:
        return key, None, key
    pytz_name = getattr(tz, "zone", None)
    if hasattr(tz, "localize") and isinstance(pytz_name, str):
        # pytz zones give wrong offsets with datetime.replace(); use the key.
        _zone_from_key(pytz_name)
        return pytz_name, None, pytz_name
    return None, tz, str(tz)


def _resolve_tz(tz: Any) -> _dt.tzinfo:
    """The tzinfo a ``tz=`` argument (or None: local) stands for."""
    key, obj, _name = _tz_spec(tz)
    if key is not None:
        return _zone_from_key(key)
    if obj is not None:
        return obj
    return _local_zone()[0]


def _reject_tz(tz: Any, trigger: str, interval: Any) -> None:
    """tz= only means something for cron strings and datetimes."""
    if tz is not None:
        raise ValueError("tz=%r is only allowed with a cron expression or a datetime, "
                         "not with %r interval %r" % (tz, trigger, interval))


def _datetime_to_epoch(moment: _dt.datetime, tz: Any) -> float:
    """Epoch seconds of an aware datetime, or of a naive one read in *tz*/local.

    A naive time in a repeated hour follows its ``fold``; one in a spring
    gap means the first valid instant after the gap (the cron rule).
    """
    if moment.tzinfo is not None and moment.utcoffset() is not None:
        if tz is not None:
            _tz_spec(tz)  # still reject nonsense
        return moment.timestamp()
    zone = _resolve_tz(tz)
    naive = moment.replace(tzinfo=None)
    instants = _instants(naive, zone)
    if not instants:
        return _first_reaching(naive, zone)
    return instants[-1] if moment.fold == 1 else instants[0]


def _naive_at(instant: float, zone: _dt.tzinfo) -> _dt.datetime:
    """The local wall reading (naive) at epoch *instant*."""
    return _dt.datetime.fromtimestamp(instant, zone).replace(tzinfo=None)


def _instants(naive: _dt.datetime, zone: _dt.tzinfo) -> List[float]:
    """Every real instant whose local reading is *naive*: 0, 1 or 2, sorted."""
    first = naive.replace(tzinfo=zone, fold=0)
    if first.astimezone(_UTC).astimezone(zone).replace(tzinfo=None) != naive:
        return []  # in a spring gap
    second = naive.replace(tzinfo=zone, fold=1)
    return sorted({first.timestamp(), second.timestamp()})


def _is_ambiguous(naive: _dt.datetime, zone: _dt.tzinfo) -> bool:
    """True when *naive* occurs twice (a repeated autumn hour)."""
    return len(_instants(naive, zone)) == 2


def _first_reaching(naive: _dt.datetime, zone: _dt.tzinfo) -> float:
    """The first instant at which the wall clock shows *naive* or later.

    That is the instant itself when it exists (its first occurrence when it
    is repeated) and the end of the gap when it falls in one.
    """
    instants = _instants(naive, zone)
    if instants:
        return instants[0]
    readings = (naive.replace(tzinfo=zone, fold=0).timestamp(),
                naive.replace(tzinfo=zone, fold=1).timestamp())
    low = math.floor(min(readings)) - _GAP_SEARCH_MARGIN
    high = math.ceil(max(readings)) + _GAP_SEARCH_MARGIN
    if _naive_at(low, zone) >= naive or _naive_at(high, zone) < naive:
        raise RuntimeError("cannot place local time %s in zone %r" % (naive, zone))
    while high - low > 1:
        middle = (low + high) // 2
        if _naive_at(middle, zone) >= naive:
            high = middle
        else:
            low = middle
    return float(high)


def _transition(before: float, after: float, zone: _dt.tzinfo) -> float:
    """The instant in (before, after] where the zone's UTC offset changes.

    Transitions fall on whole seconds, so a bisection over integers finds it.
    """
    low, high = math.floor(before), math.ceil(after)
    offset = _dt.datetime.fromtimestamp(low, zone).utcoffset()
    while high - low > 1:
        middle = (low + high) // 2
        if _dt.datetime.fromtimestamp(middle, zone).utcoffset() == offset:
            low = middle
        else:
            high = middle
    return float(high)


# --------------------------------------------------------------------------
# Cron parsing and validation
# --------------------------------------------------------------------------

class _CronSpec:
    """A validated cron expression: the croniter text and the DST class."""

    __slots__ = ("canonical", "seconds_first", "wildcard")

    def __init__(self, canonical: str, seconds_first: bool, wildcard: bool) -> None:
        self.canonical = canonical
        self.seconds_first = seconds_first
        self.wildcard = wildcard


_MONTH_NAMES = {name: number for number, name in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"),
    start=1)}
_DOW_NAMES = {name: number for number, name in enumerate(
    ("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}

# (name, low, high, names) for each field, in 5-field order.
_FIELDS = (
    ("minute", 0, 59, None),
    ("hour", 0, 23, None),
    ("day of month", 1, 31, None),
    ("month", 1, 12, _MONTH_NAMES),
    ("day of week", 0, 7, _DOW_NAMES),
)
_SECOND_FIELD = ("second", 0, 59, None)
_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_FIELD_SEPARATOR = re.compile(r"[ \t]+")
_LAST_DAY = "L"


class _FieldError(ValueError):
    """A problem inside one field; turned into the full message by _parse_cron."""


def _parse_cron(expression: Any) -> _CronSpec:
    """Validate a cron string field by field and build its croniter form.

    Accepted: 5 fields, 6 fields with seconds first, or an alias.  Each field
    is a list of ``*``, ``N``, ``A-B``, with an optional ``/STEP`` (``N/STEP``
    runs to the field maximum); months and weekdays take names; day of week 7
    is Sunday; day of month takes ``L`` (last day).
    """
    if not isinstance(expression, str):
        raise TypeError("cron expression must be a string, not %s %r"
                        % (type(expression).__name__, expression))
    text = expression.strip()
    if text.startswith("@"):
        alias = text.lower()
        if alias == "@reboot":
            raise ValueError("invalid cron expression %r: '@reboot' is not supported "
                             "(a scheduler has no boot to run at); use 'once' instead"
                             % (expression,))
        if alias not in CRON_ALIASES:
            raise ValueError("invalid cron expression %r: unknown alias; accepted: %s"
                             % (expression, ", ".join(CRON_ALIASES)))
        text = CRON_ALIASES[alias]
    fields = [part for part in _FIELD_SEPARATOR.split(text) if part]
    if len(fields) == 5:
        specs = _FIELDS
        seconds_first = False
    elif len(fields) == 6:
        specs = (_SECOND_FIELD,) + _FIELDS
        seconds_first = True
    else:
        raise ValueError(
            "invalid cron expression %r: %d field%s given; expected 5 (minute hour "
            "day-of-month month day-of-week), 6 with seconds first (second minute hour "
            "day-of-month month day-of-week), or an alias (%s)"
            % (expression, len(fields), "" if len(fields) == 1 else "s",
               ", ".join(CRON_ALIASES)))

    values = []
    for field, spec in zip(fields, specs):
        try:
            values.append(_parse_field(field, spec))
        except _FieldError as exc:
            raise ValueError("invalid cron expression %r: %s field %r: %s"
                             % (expression, spec[0], field, exc)) from None

    offset = 1 if seconds_first else 0
    minute_text, hour_text = fields[offset], fields[offset + 1]
    dom_text, dow_text = fields[offset + 2], fields[offset + 4]
    dom, month, dow = values[offset + 2], values[offset + 3], values[offset + 4]
    dow = {0 if day == 7 else day for day in dow}
    full_dom = set(range(1, 32)) <= dom
    full_dow = len(dow) == 7

    # Day rule: when both day fields are restricted (neither is exactly '*'),
    # either may match.  Rewritten here so croniter's own shortcuts (it reads
    # a full list as '*', which would turn the OR into an AND) cannot differ.
    if dom_text == "*" or dow_text == "*":
        dom_out = "*" if dom_text == "*" or full_dom else _join(dom)
        dow_out = "*" if dow_text == "*" or full_dow else _join(dow)
        if dow_text == "*" and dom_text != "*" and _LAST_DAY not in dom:
            longest = max(_DAYS_IN_MONTH[m - 1] for m in month)
            if min(dom) > longest:
                raise ValueError(
                    "invalid cron expression %r: day of month field %r never occurs in "
                    "the months allowed by the month field %r"
                    % (expression, dom_text, fields[offset + 3]))
    elif full_dom or full_dow:
        dom_out = dow_out = "*"
    else:
        dom_out, dow_out = _join(dom), _join(dow)

    out = []
    for index, (value, spec) in enumerate(zip(values, specs)):
        if index == offset + 2:
            out.append(dom_out)
        elif index == offset + 4:
            out.append(dow_out)
        elif value == set(range(spec[1], spec[2] + 1)):
            out.append("*")
        else:
            out.append(_join(value))
    canonical = " ".join(out)
    wildcard = minute_text.startswith("*") or hour_text.startswith("*")
    try:
        croniter(canonical, _dt.datetime(2000, 1, 1), second_at_beginning=seconds_first)
    except (CroniterError, ValueError, TypeError) as exc:  # pragma: no cover - defensive
        raise ValueError("invalid cron expression %r: %s" % (expression, exc)) from None
    return _CronSpec(canonical, seconds_first, wildcard)


def _join(values: Any) -> str:
    """A value set as a croniter list ('l' for the last day of the month)."""
    numbers_ = sorted(v for v in values if v != _LAST_DAY)
    text = [str(v) for v in numbers_]
    if _LAST_DAY in values:
        text.append("l")
    return ",".join(text)


def _parse_field(field: str, spec: Tuple[str, int, int, Any]) -> set:
    """The set of values a field allows; _FieldError says what is wrong."""
    name, low, high, names = spec
    result: set = set()
    for item in field.split(","):
        if item == "":
            raise _FieldError("empty list item")
        if item.upper() == _LAST_DAY and name == "day of month":
            result.add(_LAST_DAY)
            continue
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or not step_text.isascii():
                raise _FieldError("step %r is not a whole number" % (step_text,))
            step = int(step_text)
            if step == 0:
                raise _FieldError("step must be at least 1, got 0")
        if base == "*":
            start, end = low, high
            if name == "day of week":
                end = 6  # 7 repeats Sunday; '*/2' is Sun, Tue, Thu, Sat
        elif "-" in base:
            first, _, last = base.partition("-")
            start = _field_value(first, spec)
            end = _field_value(last, spec)
            if name == "day of week" and end == 0 and start > 0:
                end = 7  # 'fri-sun' reads as 5-7
            if end < start:
                raise _FieldError("range %r runs backwards" % (base,))
        else:
            start = _field_value(base, spec)
            end = high if slash else start
            if slash and name == "day of week":
                end = 6
        result.update(range(start, end + 1, step))
    return result


def _field_value(text: str, spec: Tuple[str, int, int, Any]) -> int:
    """One number or name in a field, checked against the field's range."""
    name, low, high, names = spec
    if text.isdigit() and text.isascii():
        value = int(text)
    elif names is not None and text.lower() in names:
        return names[text.lower()]
    else:
        if text == "":
            raise _FieldError("missing value")
        if names is not None:
            raise _FieldError("%r is neither a number %d-%d nor a name (%s)"
                              % (text, low, high, ", ".join(names)))
        raise _FieldError("%r is not a number %d-%d" % (text, low, high))
    if not low <= value <= high:
        raise _FieldError("%d is out of range %d-%d" % (value, low, high))
    return value
