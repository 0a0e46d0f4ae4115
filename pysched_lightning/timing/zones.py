"""Time zones: which zone a ``tz=`` argument means, and which instants a local time is.

Cron expressions and naive datetimes are read as local times in a zone.  This
module resolves the zone (an IANA key, a tzinfo, or the machine's local zone)
and maps local readings to real instants (POSIX epoch seconds): a local time
in a repeated autumn hour is two instants, one in a spring gap is none.
"""
from __future__ import annotations

import datetime as _dt
import logging
import math
import os
from typing import List, Optional, Tuple

try:  # Python 3.9+: the standard library time-zone database.
    import zoneinfo as _zoneinfo
except ImportError:  # pragma: no cover - only on interpreters without zoneinfo
    _zoneinfo = None  # type: ignore[assignment]  # the checks below fall back to dateutil

__all__ = [
    "zone_from_key", "key_from_path", "local_zone", "tz_spec", "resolve_tz",
    "datetime_to_epoch", "naive_at", "instants", "is_ambiguous", "first_reaching",
    "transition",
]

_log = logging.getLogger("pysched_lightning")

_UTC = _dt.timezone.utc
# How far around a spring gap the bisection for its end may look, on top of
# the two readings of the non-existent time (covers tzinfos without PEP 495).
_GAP_SEARCH_MARGIN = 7200


# --------------------------------------------------------------------------
# Which zone
# --------------------------------------------------------------------------

def zone_from_key(key: str) -> _dt.tzinfo:
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


def key_from_path(path: str) -> Optional[str]:
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


def local_zone() -> Tuple[_dt.tzinfo, Optional[str]]:
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
            return zone_from_key("UTC"), "UTC"
        if os.path.isabs(key):
            found = _zone_at_path(key)
            if found is not None:
                return found
        else:
            try:
                return zone_from_key(key), key
            except ValueError:
                pass
        # A POSIX rule string (e.g. 'CET-1CEST,M3.5.0,M10.5.0/3'): only the C
        # library knows what it means, so /etc/localtime would be wrong here.
        _log.debug("TZ=%r is not a zone key; using dateutil.tz.tzlocal()", env)
        return _dutz.tzlocal(), None

    localtime = "/etc/localtime"
    if os.path.exists(localtime):
        found = _zone_at_path(localtime)
        if found is not None:
            return found
        if _zoneinfo is not None:
            try:
                with open(localtime, "rb") as handle:
                    return _zoneinfo.ZoneInfo.from_file(handle), None
            except (OSError, ValueError):
                pass
    _log.debug("local time zone unknown; using dateutil.tz.tzlocal()")
    return _dutz.tzlocal(), None


def _zone_at_path(path: str) -> Optional[Tuple[_dt.tzinfo, str]]:
    """The zone a zoneinfo file (or a link to one) stands for, with its key, or None."""
    key = key_from_path(os.path.realpath(path))
    if key is not None:
        try:
            return zone_from_key(key), key
        except ValueError:
            pass
    return None


def tz_spec(tz: object) -> Tuple[Optional[str], Optional[_dt.tzinfo], str]:
    """Split a ``tz=`` argument into (key, tzinfo object, display name).

    A zone with a key is kept as the key (so it pickles and reloads by
    name); a local zone known only from a file is kept as neither, meaning
    "the machine's local zone", resolved again after unpickling.
    """
    if tz is None:
        zone, key = local_zone()
        if key is not None:
            return key, None, key
        if _zoneinfo is not None and isinstance(zone, _zoneinfo.ZoneInfo):
            return None, None, "local"
        return None, zone, "local"
    if isinstance(tz, str):
        zone_from_key(tz)
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
        zone_from_key(pytz_name)
        return pytz_name, None, pytz_name
    return None, tz, str(tz)


def resolve_tz(tz: object) -> _dt.tzinfo:
    """The tzinfo a ``tz=`` argument (or None: local) stands for."""
    key, obj, _name = tz_spec(tz)
    if key is not None:
        return zone_from_key(key)
    if obj is not None:
        return obj
    return local_zone()[0]


# --------------------------------------------------------------------------
# Local readings and instants
# --------------------------------------------------------------------------

def datetime_to_epoch(moment: _dt.datetime, tz: object) -> float:
    """Epoch seconds of an aware datetime, or of a naive one read in *tz*/local.

    A naive time in a repeated hour follows its ``fold``; one in a spring
    gap means the first valid instant after the gap (the cron rule).
    """
    if moment.tzinfo is not None and moment.utcoffset() is not None:
        if tz is not None:
            tz_spec(tz)  # still reject nonsense
        return moment.timestamp()
    zone = resolve_tz(tz)
    naive = moment.replace(tzinfo=None)
    found = instants(naive, zone)
    if not found:
        return first_reaching(naive, zone)
    return found[-1] if moment.fold == 1 else found[0]


def naive_at(instant: float, zone: _dt.tzinfo) -> _dt.datetime:
    """The local wall reading (naive) at epoch *instant*."""
    return _dt.datetime.fromtimestamp(instant, zone).replace(tzinfo=None)


def instants(naive: _dt.datetime, zone: _dt.tzinfo) -> List[float]:
    """Every real instant whose local reading is *naive*: 0, 1 or 2, sorted."""
    first = naive.replace(tzinfo=zone, fold=0)
    if first.astimezone(_UTC).astimezone(zone).replace(tzinfo=None) != naive:
        return []  # in a spring gap
    second = naive.replace(tzinfo=zone, fold=1)
    return sorted({first.timestamp(), second.timestamp()})


def is_ambiguous(naive: _dt.datetime, zone: _dt.tzinfo) -> bool:
    """True when *naive* occurs twice (a repeated autumn hour)."""
    return len(instants(naive, zone)) == 2


def first_reaching(naive: _dt.datetime, zone: _dt.tzinfo) -> float:
    """The first instant at which the wall clock shows *naive* or later.

    That is the instant itself when it exists (its first occurrence when it
    is repeated) and the end of the gap when it falls in one.
    """
    found = instants(naive, zone)
    if found:
        return found[0]
    readings = (naive.replace(tzinfo=zone, fold=0).timestamp(),
                naive.replace(tzinfo=zone, fold=1).timestamp())
    low = math.floor(min(readings)) - _GAP_SEARCH_MARGIN
    high = math.ceil(max(readings)) + _GAP_SEARCH_MARGIN
    if naive_at(low, zone) >= naive or naive_at(high, zone) < naive:
        raise RuntimeError("cannot place local time %s in zone %r" % (naive, zone))
    while high - low > 1:
        middle = (low + high) // 2
        if naive_at(middle, zone) >= naive:
            high = middle
        else:
            low = middle
    return float(high)


def transition(before: float, after: float, zone: _dt.tzinfo) -> float:
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
