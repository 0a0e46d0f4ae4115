"""Helpers the trigger, cron and zone tests share: wall times in a zone, due times."""
from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from pysched_lightning.timing.triggers import make_trigger

UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")
SYDNEY = ZoneInfo("Australia/Sydney")
NEW_YORK = ZoneInfo("America/New_York")


def epoch(year, month, day, hour=0, minute=0, second=0, zone=UTC, fold=0):
    """Epoch seconds of a wall time in *zone*."""
    return datetime(year, month, day, hour, minute, second, tzinfo=zone, fold=fold).timestamp()


def cron(expr, wall_now, tz="UTC"):
    return make_trigger("cron", expr, now=0.0, wall_now=wall_now, tz=tz)


def fires(trigger, start, end):
    """All due times of *trigger* in (start, end], following next_due."""
    out = []
    due = trigger.next_due(start)
    while due is not None and due <= end:
        out.append(due)
        due = trigger.next_due(due)
    return out


def local(ts, zone):
    return datetime.fromtimestamp(ts, zone)


def offset_hours(ts, zone):
    return local(ts, zone).utcoffset().total_seconds() / 3600
