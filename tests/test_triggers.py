"""Tests for pysched_lightning.triggers: once and recur, make_trigger's checks,
pickling; and a trigger that raises, in a scheduler."""
from __future__ import annotations

import pickle
import random
from datetime import datetime, timedelta, timezone, tzinfo

import pytest
from dateutil import tz as dateutil_tz
from hypothesis import given, settings
from hypothesis import strategies as st

import pysched_lightning as psl
from conftest import InlineExecutor, VirtualClock, wait_for
from pysched_lightning.durability.encoding import scheduler_time, slot_named
from pysched_lightning.timing.triggers import (CronTrigger, OnceTrigger, RecurTrigger,
                                               make_trigger)
from walltime import BERLIN, UTC, cron, epoch


# ---------------------------------------------------------------- once

class TestOnce:
    def test_delay_number(self):
        t = make_trigger("once", 10, now=100.0, wall_now=5e8)
        assert isinstance(t, OnceTrigger)
        assert (t.name, t.interval, t.wall_clock, t.first_due) == ("once", 10, False, 110.0)
        assert t.next_due(110.0) is None
        assert t.next_due(109.0) == 110.0  # still ahead: that is the next due time
        assert t.describe() == "once in 10s"

    def test_delay_float_zero_and_timedelta(self):
        assert make_trigger("once", 0.25, now=1.0, wall_now=0.0).first_due == 1.25
        assert make_trigger("once", 0, now=7.0, wall_now=0.0).first_due == 7.0
        t = make_trigger("once", timedelta(minutes=2), now=1.0, wall_now=0.0)
        assert (t.first_due, t.wall_clock, t.interval) == (121.0, False, timedelta(minutes=2))
        assert t.describe() == "once in 2m"

    def test_aware_datetime_is_wall_clock(self):
        when = datetime(2030, 1, 2, 3, 4, 5, tzinfo=BERLIN)
        t = make_trigger("once", when, now=0.0, wall_now=epoch(2029, 1, 1))
        assert t.wall_clock is True
        assert t.first_due == when.timestamp()
        assert t.interval is when
        assert t.next_due(t.first_due) is None
        assert "2030-01-02T03:04:05+01:00" in t.describe()

    def test_past_datetime_is_allowed(self):
        when = datetime(2001, 1, 1, tzinfo=UTC)
        t = make_trigger("once", when, now=0.0, wall_now=epoch(2024, 1, 1))
        assert t.first_due == when.timestamp() < epoch(2024, 1, 1)

    def test_naive_datetime_is_local_time(self, monkeypatch):
        monkeypatch.setenv("TZ", "Europe/Berlin")
        t = make_trigger("once", datetime(2024, 7, 1, 12), now=0.0, wall_now=0.0)
        assert t.first_due == epoch(2024, 7, 1, 10)  # CEST is UTC+2

    def test_naive_datetime_with_tz(self):
        t = make_trigger("once", datetime(2024, 1, 15, 9), now=0.0, wall_now=0.0,
                         tz="America/New_York")
        assert t.first_due == epoch(2024, 1, 15, 14)

    def test_naive_datetime_in_gap_and_fold(self):
        # 02:30 does not exist on 2024-03-31 in Berlin: first valid instant after the gap.
        gap = make_trigger("once", datetime(2024, 3, 31, 2, 30), now=0.0, wall_now=0.0, tz=BERLIN)
        assert gap.first_due == epoch(2024, 3, 31, 1)  # 03:00 CEST
        # 02:30 happens twice on 2024-10-27: fold picks the occurrence (0 = first).
        first = make_trigger("once", datetime(2024, 10, 27, 2, 30), now=0.0, wall_now=0.0, tz=BERLIN)
        second = make_trigger("once", datetime(2024, 10, 27, 2, 30, fold=1), now=0.0,
                              wall_now=0.0, tz=BERLIN)
        assert (first.first_due, second.first_due) == (epoch(2024, 10, 27, 0, 30),
                                                       epoch(2024, 10, 27, 1, 30))

    def test_cron_number_means_once_after_delay(self):
        t = make_trigger("cron", 30, now=50.0, wall_now=1e9)
        assert isinstance(t, OnceTrigger)
        assert (t.name, t.interval, t.wall_clock, t.first_due) == ("cron", 30, False, 80.0)
        assert t.next_due(80.0) is None
        assert make_trigger("cron", 1.5, now=0.0, wall_now=0.0).first_due == 1.5


# ---------------------------------------------------------------- recur

class TestRecur:
    def test_first_and_following(self):
        t = make_trigger("recur", 3, now=100.0, wall_now=0.0)
        assert isinstance(t, RecurTrigger)
        assert (t.name, t.interval, t.wall_clock, t.first_due) == ("recur", 3, False, 103.0)
        assert t.next_due(103.0) == 106.0
        assert t.next_due(104.9) == 106.0
        assert t.next_due(50.0) == 103.0  # before the anchor: the first run
        assert t.describe() == "every 3s"

    def test_no_drift_after_a_huge_jump(self):
        t = make_trigger("recur", 7, now=1000.0, wall_now=0.0)
        year = 365 * 86400
        due = t.next_due(1000.0 + year + 0.5)
        k = (due - 1000.0) / 7
        assert k == int(k)  # still on the anchor grid
        assert 1000.0 + year + 0.5 < due <= 1000.0 + year + 0.5 + 7

    def test_never_returns_a_time_at_or_before_after(self):
        rng = random.Random(1234)
        for interval in (0.1, 1 / 3, 0.7, 1e-3, 86400.1, 5):
            t = make_trigger("recur", interval, now=12345.678, wall_now=0.0)
            for _ in range(300):
                after = 12345.678 + rng.uniform(-10, 1e7)
                due = t.next_due(after)
                assert due > after
                # and it is the *first* grid point after `after`
                k = round((due - t.anchor) / interval)
                assert t.anchor + k * interval == due
                assert k == 1 or t.anchor + (k - 1) * interval <= after
            # exactly on a grid point: the next one
            on_grid = t.anchor + 1000 * interval
            assert t.next_due(on_grid) > on_grid

    def test_timedelta_interval(self):
        t = make_trigger("recur", timedelta(hours=1, minutes=30), now=0.0, wall_now=0.0)
        assert t.first_due == 5400.0
        assert t.interval == timedelta(hours=1, minutes=30)
        assert t.describe() == "every 1h30m"


# ---------------------------------------------------------------- validation

@pytest.mark.parametrize("trigger, interval, kwargs, exc, fragments", [
    ("daily", 3, {}, ValueError, ["'daily'", "'once'", "'recur'", "'cron'"]),
    (None, 3, {}, TypeError, ["None"]),
    ("recur", "3", {}, TypeError, ["'3'"]),
    ("recur", True, {}, TypeError, ["True"]),
    ("recur", [3], {}, TypeError, ["[3]"]),
    ("recur", 0, {}, ValueError, ["0"]),
    ("recur", -1.5, {}, ValueError, ["-1.5"]),
    ("recur", timedelta(0), {}, ValueError, ["timedelta(0)"]),
    ("recur", float("nan"), {}, ValueError, ["nan"]),
    ("recur", float("inf"), {}, ValueError, ["inf"]),
    ("once", -1, {}, ValueError, ["-1"]),
    ("once", timedelta(seconds=-5), {}, ValueError, ["timedelta(days=-1"]),
    ("once", float("-inf"), {}, ValueError, ["-inf"]),
    ("once", False, {}, TypeError, ["False"]),
    ("once", "10", {}, TypeError, ["'10'"]),
    ("once", None, {}, TypeError, ["None"]),
    ("cron", -3, {}, ValueError, ["-3"]),
    ("cron", float("nan"), {}, ValueError, ["nan"]),
    ("cron", True, {}, TypeError, ["True"]),
    ("cron", timedelta(seconds=3), {}, TypeError, ["timedelta"]),
    ("cron", None, {}, TypeError, ["None"]),
    ("recur", 3, {"tz": "UTC"}, ValueError, ["'UTC'", "tz"]),
    ("once", 3, {"tz": "UTC"}, ValueError, ["'UTC'", "tz"]),
    ("cron", 3, {"tz": "UTC"}, ValueError, ["'UTC'", "tz"]),
    ("cron", "* * * * *", {"tz": "Mars/Olympus_Mons"}, ValueError, ["'Mars/Olympus_Mons'"]),
    ("cron", "* * * * *", {"tz": ""}, ValueError, ["''"]),
    ("cron", "* * * * *", {"tz": 5}, TypeError, ["5"]),
    ("once", datetime(2030, 1, 1), {"tz": "Nowhere/Special"}, ValueError, ["'Nowhere/Special'"]),
])
def test_make_trigger_rejects(trigger, interval, kwargs, exc, fragments):
    with pytest.raises(exc) as info:
        make_trigger(trigger, interval, now=0.0, wall_now=epoch(2024, 1, 1), **kwargs)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, (fragment, message)


# ---------------------------------------------------------------- pickling

def _round_trip(trigger):
    clone = pickle.loads(pickle.dumps(trigger))
    assert type(clone) is type(trigger)
    assert (clone.name, clone.interval, clone.wall_clock, clone.first_due) == (
        trigger.name, trigger.interval, trigger.wall_clock, trigger.first_due)
    assert clone.describe() == trigger.describe()
    return clone


@pytest.mark.parametrize("trigger, interval, tz", [
    ("once", 5, None),
    ("once", timedelta(seconds=5), None),
    ("once", datetime(2030, 1, 1, tzinfo=BERLIN), None),
    ("once", datetime(2030, 1, 1), "Asia/Tokyo"),
    ("cron", 5, None),
    ("recur", 2.5, None),
    ("recur", timedelta(minutes=1), None),
    ("cron", "*/5 * * * *", "Europe/Berlin"),
    ("cron", "30 2 * * *", BERLIN),
    ("cron", "0 30 2 * * *", timezone.utc),
    ("cron", "@daily", None),
    ("cron", "0 9 * * 1-5", dateutil_tz.gettz("America/New_York")),
])
def test_pickle_round_trip(trigger, interval, tz):
    start = epoch(2024, 3, 30)
    t = make_trigger(trigger, interval, now=100.0, wall_now=start, tz=tz)
    if isinstance(t, CronTrigger):
        t.next_due(start)  # make sure the lazy croniter exists before pickling
    clone = _round_trip(t)
    probes = [start + k * 3600.5 for k in range(0, 80, 7)] + [100.0, 102.5, 1e6]
    for after in probes:
        assert clone.next_due(after) == t.next_due(after)


def test_pickled_cron_state_holds_no_croniter():
    t = cron("*/5 * * * *", epoch(2024, 1, 1), tz=BERLIN)
    t.next_due(epoch(2024, 1, 2))
    state = t.__getstate__()
    assert state["_cron"] is None and state["_lock"] is None and state["_zone_cache"] is None
    assert state["_tz_key"] == "Europe/Berlin"
    assert b"croniter" not in pickle.dumps(t)


@pytest.mark.parametrize("trigger, interval, tz", [
    ("once", datetime(2030, 1, 1), "Asia/Tokyo"),
    ("recur", 2.5, None),
    ("cron", "30 2 * * *", "Europe/Berlin"),
    ("cron", "0 9 * * 1-5", dateutil_tz.gettz("America/New_York")),
])
def test_pickles_name_the_trigger_classes_only(trigger, interval, tz):
    # Stored schedules are these pickles: the modules the triggers use
    # (cron, zones) must not appear in them, so they may move freely.
    t = make_trigger(trigger, interval, now=100.0, wall_now=epoch(2024, 3, 30), tz=tz)
    data = pickle.dumps(t)
    assert b"pysched_lightning.timing.triggers" in data
    assert b"pysched_lightning.timing.cron" not in data
    assert b"pysched_lightning.timing.zones" not in data


# ------------------------------------------------- a trigger that raises, in a scheduler


class FailingZone(tzinfo):
    """UTC, read from a zone database that fails to answer ``failures`` times
    once told to (a tz= object is the user's code, and may raise)."""

    def __init__(self):
        self.failures = 0

    def utcoffset(self, moment):
        if self.failures:
            self.failures -= 1
            raise OSError("the zone database could not be read")
        return timedelta(0)

    def dst(self, moment):
        return timedelta(0)

    def tzname(self, moment):
        return "Failing/UTC"


def test_a_trigger_that_fails_once_does_not_stop_its_task_for_good():
    """The dispatcher took a task's timer entry off the heap before asking
    its trigger for the next occurrence: when the trigger raised, the task
    stayed in ``sched.task``, Suspended, with a next run time, and never
    fired again, with nothing but a 'dispatcher error' logged. A trigger
    that fails once (a zone database that could not be read for a moment)
    must not lose its task: the schedule goes on."""
    clock = VirtualClock(1_900_000_000.0)
    zone = FailingZone()
    runs = []

    def tick():
        runs.append(clock.now())
        if len(runs) == 3:
            zone.failures = 1  # the next occurrence is asked of a failing zone

    sched = psl.Scheduler(executor=InlineExecutor(), timefunc=clock.now,
                          delayfunc=clock.sleep, wallfunc=clock.now)
    tid = sched.delay('cron', '* * * * * *', 1, tick, tz=zone)
    sched.start()
    try:
        try:
            wait_for(lambda: len(runs) >= 6, timeout=5)
        except AssertionError:
            stopped = (f"the task stopped after {len(runs)} runs, its trigger having failed "
                       f"once; it reads {sched.get_status_str(tid)!r}, "
                       f"scheduled: {tid in sched.task}")
        else:
            stopped = None
        assert stopped is None, stopped
    finally:
        sched.shutdown()
    assert zone.failures == 0  # the trigger did fail, once


# -- slot names: one per occurrence, on every node ---------------------------

@settings(max_examples=300, deadline=None)
@given(mono=st.floats(1.0, 1e7), wall_ms=st.integers(1_000_000_000_000, 2_000_000_000_000),
       hair=st.floats(-3e-6, 3e-6), step=st.sampled_from([0.001, 0.1, 0.25, 1.0, 1 / 3, 7.3]),
       other_offset=st.floats(-1e7, 1e7), stored_after=st.integers(0, 10_000))
def test_every_node_names_each_slot_of_a_recurring_grid_alike(
        mono, wall_ms, hair, step, other_offset, stored_after):
    """A node that loads a recurring task lays its grid on its own clock, from
    the wall time the first node stored; however the two clocks differ and
    however near a millisecond's edge the grid falls (a slot is named by its
    wall time to the millisecond), both name every occurrence alike."""
    first = make_trigger("recur", step, now=mono, wall_now=wall_ms / 1000 + 0.0005 + hair)
    stored = pickle.loads(pickle.dumps(first))
    due = first.next_due(first.anchor + stored_after * step)
    next_run = due + first.wall_offset  # the wall time the first node stores
    offset = first.wall_offset + other_offset
    other = stored.relaid(scheduler_time(next_run, offset), offset)
    here, there = due, other.first_due
    for _ in range(5):
        assert slot_named(there + other.wall_offset, other) == \
            slot_named(here + first.wall_offset, first)
        here, there = first.next_due(here), other.next_due(there)


@settings(max_examples=300, deadline=None)
@given(wall=st.floats(1e9, 4e9), mono=st.floats(0.0, 1e8))
def test_a_stored_wall_time_comes_back_exactly_on_another_clock(wall, mono):
    """A one-shot loaded from the store is due at its stored wall time on
    this node's clock: back on the wall clock it is that very float, so its
    slot is named as on the node that stored it (its claim is found)."""
    offset = wall - mono
    assert scheduler_time(wall, offset) + offset == wall
