"""Cron expressions: parsing them field by field, and the DST rule for their instants.

croniter does the calendar arithmetic on naive local times; this module
checks an expression (so errors name the offending field) and maps each
matching local time to real instants itself, so the DST policy of DESIGN.md
("Time, cron and DST") is explicit here rather than an accident of
croniter's time-zone code:

* a *wildcard* job (minute or hour field begins with ``*``) fires at every real
  instant whose local time matches: twice in a repeated autumn hour, never
  for local times that do not exist;
* a *fixed-time* job fires at the first instant the wall clock reaches each
  matching local time: once in a repeated hour (the first occurrence), and at
  the first valid instant after a spring gap for a time inside the gap.
"""
from __future__ import annotations

import datetime as _dt
import re
from types import MappingProxyType
from typing import Callable, List, Mapping, Optional, Set, Tuple, Union

from croniter import croniter
from croniter.croniter import CroniterError

from .zones import first_reaching, instants, is_ambiguous, naive_at, transition

__all__ = ["CRON_ALIASES", "CronSpec", "parse_cron", "next_fixed", "next_wildcard"]

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

#: The next matching naive local time strictly after a given one, or None.
NextNaive = Callable[[_dt.datetime], Optional[_dt.datetime]]

_ONE_MICROSECOND = _dt.timedelta(microseconds=1)
_ONE_SECOND = _dt.timedelta(seconds=1)
# Safety bound on loops that, for a sane zone, run once or twice.
_MAX_CANDIDATES = 10000


# --------------------------------------------------------------------------
# The DST rule
# --------------------------------------------------------------------------

def next_fixed(after: float, zone: _dt.tzinfo, next_naive: NextNaive,
               describe: Callable[[], str]) -> Optional[float]:
    """Fixed-time job: the first instant the wall clock reaches a match.

    Matches at or below the highest local time already shown by the clock
    are spent, which is what makes a repeated hour fire once.  *describe*
    names the schedule in the error raised if the search runs away.
    """
    local = _dt.datetime.fromtimestamp(after, zone)
    start = local.replace(tzinfo=None)
    if local.fold == 1 and is_ambiguous(start, zone):
        # Second pass through a repeated hour: the clock has shown every
        # local time up to the end of that hour already.
        first_pass = min(instants(start, zone))
        change = transition(first_pass, after, zone)
        start = naive_at(change - 1, zone) + _ONE_SECOND - _ONE_MICROSECOND
    candidate = next_naive(start)
    for _ in range(_MAX_CANDIDATES):
        if candidate is None:
            return None
        instant = first_reaching(candidate, zone)
        if instant > after:
            return instant
        candidate = next_naive(candidate)
    raise RuntimeError("no due time found after %r for %s" % (after, describe()))


def next_wildcard(after: float, zone: _dt.tzinfo, next_naive: NextNaive,
                  describe: Callable[[], str]) -> Optional[float]:
    """Wildcard job: the first real instant after *after* whose local time matches."""
    local = _dt.datetime.fromtimestamp(after, zone)
    local_naive = local.replace(tzinfo=None)
    best: Optional[float] = None
    candidate = next_naive(local_naive)
    for _ in range(_MAX_CANDIDATES):
        if candidate is None:
            break
        found = instants(candidate, zone)
        if not found:
            # Inside a spring gap: nothing fires; resume at the gap's end.
            gap_end = naive_at(first_reaching(candidate, zone), zone)
            candidate = next_naive(gap_end - _ONE_MICROSECOND)
            continue
        later = [t for t in found if t > after]
        if later:
            best = min(later)
            break
        candidate = next_naive(candidate)
    else:
        raise RuntimeError("no due time found after %r for %s" % (after, describe()))
    if local.fold == 0 and is_ambiguous(local_naive, zone):
        # First pass through a repeated hour: matches earlier in that
        # hour come round again on the second pass, before anything later.
        second_pass = max(instants(local_naive, zone))
        change = transition(after, second_pass, zone)
        repeat = next_naive(naive_at(change, zone) - _ONE_MICROSECOND)
        if repeat is not None and repeat <= local_naive:
            again = max(instants(repeat, zone))
            if again > after and (best is None or again < best):
                best = again
    return best


# --------------------------------------------------------------------------
# Parsing and validation
# --------------------------------------------------------------------------

class CronSpec:
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

#: A field: (name, low, high, names for values or None).
_FieldSpec = Tuple[str, int, int, Optional[Mapping[str, int]]]
#: The values a field allows: numbers, and "L" (the last day) in day of month.
_Values = Set[Union[int, str]]

# Each field, in 5-field order.
_FIELDS: Tuple[_FieldSpec, ...] = (
    ("minute", 0, 59, None),
    ("hour", 0, 23, None),
    ("day of month", 1, 31, None),
    ("month", 1, 12, _MONTH_NAMES),
    ("day of week", 0, 7, _DOW_NAMES),
)
_SECOND_FIELD: _FieldSpec = ("second", 0, 59, None)
_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_FIELD_SEPARATOR = re.compile(r"[ \t]+")
_LAST_DAY = "L"


class _FieldError(ValueError):
    """A problem inside one field; turned into the full message by parse_cron."""


def parse_cron(expression: object) -> CronSpec:
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

    values: List[_Values] = []
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
            longest = max(_DAYS_IN_MONTH[m - 1] for m in _numbers(month))
            if min(_numbers(dom)) > longest:
                raise ValueError(
                    "invalid cron expression %r: day of month field %r never occurs in "
                    "the months allowed by the month field %r"
                    % (expression, dom_text, fields[offset + 3]))
    elif full_dom or full_dow:
        dom_out = dow_out = "*"
    else:
        dom_out, dow_out = _join(dom), _join(dow)

    out: List[str] = []
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
    return CronSpec(canonical, seconds_first, wildcard)


def _join(values: _Values) -> str:
    """A value set as a croniter list ('l' for the last day of the month)."""
    text = [str(v) for v in _numbers(values)]
    if _LAST_DAY in values:
        text.append("l")
    return ",".join(text)


def _numbers(values: _Values) -> List[int]:
    """The numbers in a value set, sorted (without "L")."""
    return sorted(v for v in values if isinstance(v, int))


def _parse_field(field: str, spec: _FieldSpec) -> _Values:
    """The set of values a field allows; _FieldError says what is wrong."""
    name, low, high, names = spec
    result: _Values = set()
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


def _field_value(text: str, spec: _FieldSpec) -> int:
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
