"""Tests for pysched_lightning.cron: expressions, the DST rule, cronsim as a reference."""
from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from dateutil import tz as dateutil_tz

from pysched_lightning.timing import zones
from pysched_lightning.timing.triggers import CronTrigger
from walltime import BERLIN, NEW_YORK, SYDNEY, UTC, cron, epoch, fires, local, offset_hours


# ---------------------------------------------------------------- cron basics

class TestCronBasics:
    def test_every_five_minutes(self):
        start = epoch(2024, 5, 1, 12, 2, 30)
        t = cron("*/5 * * * *", start)
        assert isinstance(t, CronTrigger)
        assert (t.name, t.interval, t.wall_clock) == ("cron", "*/5 * * * *", True)
        assert t.first_due == epoch(2024, 5, 1, 12, 5)
        assert t.next_due(t.first_due) == epoch(2024, 5, 1, 12, 10)
        assert t.describe() == "cron '*/5 * * * *' (UTC)"

    def test_strictly_after_a_matching_instant(self):
        start = epoch(2024, 5, 1, 12, 5)
        assert cron("*/5 * * * *", start).first_due == epoch(2024, 5, 1, 12, 10)

    def test_far_jump_is_direct(self):
        t = cron("0 4 * * *", epoch(2024, 1, 1))
        assert t.next_due(epoch(2034, 6, 1, 5)) == epoch(2034, 6, 2, 4)

    def test_six_fields_seconds_first(self):
        t = cron("30 * * * * *", epoch(2024, 5, 1, 12, 0, 10))
        assert t.first_due == epoch(2024, 5, 1, 12, 0, 30)
        assert t.next_due(t.first_due) == epoch(2024, 5, 1, 12, 1, 30)
        t = cron("*/20 15 10 * * *", epoch(2024, 5, 1, 9))
        assert fires(t, epoch(2024, 5, 1, 9), epoch(2024, 5, 1, 11)) == [
            epoch(2024, 5, 1, 10, 15, s) for s in (0, 20, 40)]

    @pytest.mark.parametrize("alias, expected", [
        ("@hourly", [(2024, 5, 1, 13), (2024, 5, 1, 14)]),
        ("@daily", [(2024, 5, 2), (2024, 5, 3)]),
        ("@midnight", [(2024, 5, 2), (2024, 5, 3)]),
        ("@weekly", [(2024, 5, 5), (2024, 5, 12)]),
        ("@monthly", [(2024, 6, 1), (2024, 7, 1)]),
        ("@yearly", [(2025, 1, 1), (2026, 1, 1)]),
        ("@annually", [(2025, 1, 1), (2026, 1, 1)]),
        ("@DAILY", [(2024, 5, 2), (2024, 5, 3)]),
    ])
    def test_aliases(self, alias, expected):
        t = cron(alias, epoch(2024, 5, 1, 12, 30))
        assert [t.first_due, t.next_due(t.first_due)] == [epoch(*e) for e in expected]
        assert t.interval == alias

    def test_day_of_month_or_day_of_week(self):
        # Both restricted: the 13th OR any Friday.
        t = cron("0 0 13 * 5", epoch(2024, 9, 1))
        days = [local(d, UTC).day for d in fires(t, epoch(2024, 9, 1), epoch(2024, 9, 30))]
        assert days == [6, 13, 20, 27]  # 13th is a Friday in Sep 2024; Fridays 6, 20, 27
        t = cron("0 0 1 * mon", epoch(2024, 9, 1))
        days = [local(d, UTC).day for d in fires(t, epoch(2024, 9, 1), epoch(2024, 10, 1, 1))]
        assert days == [2, 9, 16, 23, 30, 1]

    def test_day_rules_with_star(self):
        mondays = cron("0 0 * * 1", epoch(2024, 9, 1))
        assert all(local(d, UTC).weekday() == 0
                   for d in fires(mondays, epoch(2024, 9, 1), epoch(2024, 12, 1)))
        firsts = cron("0 0 1 * *", epoch(2024, 9, 1))
        assert all(local(d, UTC).day == 1
                   for d in fires(firsts, epoch(2024, 9, 1), epoch(2025, 9, 1)))

    def test_restricted_full_range_still_ors(self):
        # '1-31' is not '*': with a restricted day of week either may match -> every day.
        t = cron("0 0 1-31 * 1", epoch(2024, 9, 1))
        assert len(fires(t, epoch(2024, 9, 1), epoch(2024, 9, 8))) == 7
        t = cron("0 0 15 * 0-6", epoch(2024, 9, 1))
        assert len(fires(t, epoch(2024, 9, 1), epoch(2024, 9, 8))) == 7

    def test_step_on_day_of_month_is_restricted(self):
        # DESIGN: '*/2' counts as restricted (croniter's reading), so this ORs:
        # odd days or Mondays.  Debian cron and cronsim would AND it.
        start = epoch(2024, 8, 31, 23)
        t = cron("0 0 */2 * 1", start)
        days = [local(d, UTC).day for d in fires(t, start, epoch(2024, 9, 10))]
        assert days == [1, 2, 3, 5, 7, 9]  # Sep 2 and 9 are Mondays

    def test_field_syntax(self):
        start = epoch(2024, 1, 1)
        # '5-5' is minute 5 only (croniter alone reads an equal range as the whole field).
        assert fires(cron("5-5 * * * *", start), start, epoch(2024, 1, 1, 2)) == [
            epoch(2024, 1, 1, 0, 5), epoch(2024, 1, 1, 1, 5)]
        # 'N/STEP' runs from N to the field maximum.
        assert [local(d, UTC).minute for d in fires(cron("50/5 0 * * *", start), start,
                                                     epoch(2024, 1, 1, 1))] == [50, 55]
        # Last day of the month.
        last = cron("0 0 L * *", start)
        assert [local(d, UTC).day for d in fires(last, start, epoch(2024, 4, 1))] == [31, 29, 31]
        # Names, case-insensitive; 7 and 'sun' are Sunday; 'fri-sun' wraps to Sunday.
        for expr in ("0 0 * * 7", "0 0 * * SUN", "0 0 * * 0"):
            assert local(cron(expr, start).first_due, UTC).weekday() == 6
        weekend = fires(cron("0 0 * * fri-sun", start), start, epoch(2024, 1, 8))
        assert [local(d, UTC).day for d in weekend] == [5, 6, 7]
        jan_jul = fires(cron("0 0 1 jan,Jul *", start), start, epoch(2025, 1, 2))
        assert [local(d, UTC).month for d in jan_jul] == [7, 1]

    def test_impossible_day_is_rejected(self):
        with pytest.raises(ValueError, match="day of month"):
            cron("0 0 31 2,4 *", epoch(2024, 1, 1))
        # Feb 29 exists in leap years.
        assert local(cron("0 0 29 2 *", epoch(2024, 3, 1)).first_due, UTC).year == 2028


# ---------------------------------------------------------------- DST

# zone, (spring-forward date, hour that is skipped), (fall-back date, hour that repeats)
DST_CASES = [
    pytest.param(BERLIN, (2024, 3, 31), 2, (2024, 10, 27), 2, id="Europe/Berlin"),
    pytest.param(SYDNEY, (2024, 10, 6), 2, (2024, 4, 7), 2, id="Australia/Sydney"),
    pytest.param(NEW_YORK, (2024, 3, 10), 2, (2024, 11, 3), 1, id="America/New_York"),
]


def _day_window(day, zone):
    """(start, end) epoch seconds of the local calendar day *day* in *zone*."""
    start = datetime(*day, tzinfo=zone).timestamp()
    end = (datetime(*day, tzinfo=zone) + timedelta(days=1)).timestamp()
    return start, end


@pytest.mark.parametrize("zone, spring, gap_hour, autumn, fold_hour", DST_CASES)
class TestDST:
    def test_zone_facts(self, zone, spring, gap_hour, autumn, fold_hour):
        """The chosen dates really are the transitions (guards the other tests)."""
        gap = datetime(*spring, gap_hour, 30)
        assert zones.instants(gap, zone) == []
        assert len(zones.instants(datetime(*autumn, fold_hour, 30), zone)) == 2

    def test_fixed_time_in_gap_runs_once_after_the_gap(self, zone, spring, gap_hour, autumn,
                                                       fold_hour):
        t = cron("30 %d * * *" % gap_hour, datetime(*spring, tzinfo=zone).timestamp() - 43200,
                 tz=zone)
        day_start, day_end = _day_window(spring, zone)
        on_day = fires(t, day_start, day_end)
        assert len(on_day) == 1
        fired = local(on_day[0], zone)
        # the first valid instant after the gap: the gap hour + 1, on the hour
        assert (fired.hour, fired.minute) == (gap_hour + 1, 0)
        assert local(on_day[0] - 1, zone).hour == gap_hour - 1  # a second earlier was before it
        following = local(t.next_due(on_day[0]), zone)
        assert (following.day, following.hour, following.minute) != (fired.day, gap_hour, 30)
        assert (following.hour, following.minute) == (gap_hour, 30)

    def test_several_gap_times_collapse_to_one_run(self, zone, spring, gap_hour, autumn,
                                                   fold_hour):
        t = cron("0,15,30,45 %d,%d * * *" % (gap_hour, gap_hour + 1),
                 datetime(*spring, tzinfo=zone).timestamp(), tz=zone)
        on_day = [local(d, zone) for d in fires(t, *_day_window(spring, zone))]
        assert [(d.hour, d.minute) for d in on_day] == [
            (gap_hour + 1, 0), (gap_hour + 1, 15), (gap_hour + 1, 30), (gap_hour + 1, 45)]

    def test_fixed_time_in_repeated_hour_runs_once_first_occurrence(
            self, zone, spring, gap_hour, autumn, fold_hour):
        for minute in (0, 30):
            t = cron("%d %d * * *" % (minute, fold_hour),
                     datetime(*autumn, tzinfo=zone).timestamp() - 43200, tz=zone)
            on_day = fires(t, *_day_window(autumn, zone))
            assert len(on_day) == 1
            fired = local(on_day[0], zone)
            assert (fired.hour, fired.minute, fired.fold) == (fold_hour, minute, 0)
            # the first occurrence has the larger (summer) offset
            assert offset_hours(on_day[0], zone) > offset_hours(on_day[0] + 7200, zone)

    def test_fixed_time_after_second_pass_is_tomorrow(self, zone, spring, gap_hour, autumn,
                                                      fold_hour):
        t = cron("30 %d * * *" % fold_hour, 0.0, tz=zone)
        second_pass = datetime(*autumn, fold_hour, 15, tzinfo=zone, fold=1).timestamp()
        nxt = local(t.next_due(second_pass), zone)
        assert (nxt.date() - datetime(*autumn).date()).days == 1
        # while a later fixed time the same day is still ahead
        later = cron("0 %d * * *" % (fold_hour + 1), 0.0, tz=zone)
        assert local(later.next_due(second_pass), zone).day == autumn[2]

    def test_fixed_hour_range_over_the_fold(self, zone, spring, gap_hour, autumn, fold_hour):
        hours = "%d-%d" % (fold_hour - 1, fold_hour + 1)
        start, end = _day_window(autumn, zone)
        t = cron("0 %s * * *" % hours, start - 1, tz=zone)
        on_day = [local(d, zone) for d in fires(t, start - 1, end - 1)]
        assert [d.hour for d in on_day] == [fold_hour - 1, fold_hour, fold_hour + 1]

    @pytest.mark.parametrize("expr, per_hour", [("*/15 * * * *", 4), ("0 * * * *", 1),
                                                ("@hourly", 1), ("7,37 * * * *", 2)])
    def test_wildcard_hour_every_real_instant(self, zone, spring, gap_hour, autumn, fold_hour,
                                              expr, per_hour):
        # Autumn: the repeated hour runs on both passes; the day has 25 real hours.
        start, end = _day_window(autumn, zone)
        t = cron(expr, start - 1, tz=zone)
        on_day = fires(t, start - 1, end - 1)
        assert len(on_day) == 25 * per_hour
        in_fold = [d for d in on_day if local(d, zone).hour == fold_hour]
        assert len(in_fold) == 2 * per_hour
        assert {local(d, zone).fold for d in in_fold} == {0, 1}
        assert on_day == sorted(set(on_day))
        # Spring: 23 real hours, nothing at the local times that do not exist.
        start, end = _day_window(spring, zone)
        on_day = fires(cron(expr, start - 1, tz=zone), start - 1, end - 1)
        assert len(on_day) == 23 * per_hour
        assert all(local(d, zone).hour != gap_hour for d in on_day)

    def test_wildcard_minute_fixed_hour(self, zone, spring, gap_hour, autumn, fold_hour):
        t = cron("*/20 %d * * *" % fold_hour, 0.0, tz=zone)
        assert len(fires(t, *_day_window(autumn, zone))) == 6
        t = cron("*/20 %d * * *" % gap_hour, 0.0, tz=zone)
        assert fires(t, *_day_window(spring, zone)) == []

    def test_wildcard_from_inside_first_pass(self, zone, spring, gap_hour, autumn, fold_hour):
        t = cron("10 * * * *", 0.0, tz=zone)
        first_pass = datetime(*autumn, fold_hour, 20, tzinfo=zone, fold=0).timestamp()
        nxt = local(t.next_due(first_pass), zone)
        assert (nxt.hour, nxt.minute, nxt.fold) == (fold_hour, 10, 1)
        assert t.next_due(first_pass) == first_pass + 3600 - 600

    def test_six_field_fixed_time_follows_the_rule(self, zone, spring, gap_hour, autumn,
                                                   fold_hour):
        t = cron("0 30 %d * * *" % fold_hour, 0.0, tz=zone)
        assert len(fires(t, *_day_window(autumn, zone))) == 1
        t = cron("0 30 %d * * *" % gap_hour, 0.0, tz=zone)
        on_day = fires(t, *_day_window(spring, zone))
        assert [(local(d, zone).hour, local(d, zone).minute) for d in on_day] == [
            (gap_hour + 1, 0)]

    @pytest.mark.parametrize("expr", ["30 2 * * *", "0 2 * * *", "*/15 * * * *", "0 * * * *",
                                      "0,30 1-3 * * *", "*/30 * 1-3 * * *", "59 1 * * *"])
    def test_chain_strictly_increasing_through_transitions(self, zone, spring, gap_hour,
                                                           autumn, fold_hour, expr):
        for day in (spring, autumn):
            start, end = _day_window(day, zone)
            t = cron(expr, start, tz=zone)
            seq = fires(t, start, end)
            assert seq and all(b > a for a, b in zip(seq, seq[1:]))
            # next_due from any instant in between lands on the following element
            for a, b in zip(seq, seq[1:]):
                assert t.next_due((a + b) / 2) == b


def test_dateutil_zone_agrees_with_zoneinfo():
    for expr in ("30 2 * * *", "0 2 * * *", "*/30 * * * *"):
        for day in ((2024, 3, 31), (2024, 10, 27)):
            start, end = _day_window(day, BERLIN)
            ours = fires(cron(expr, start, tz=BERLIN), start, end)
            theirs = fires(cron(expr, start, tz=dateutil_tz.gettz("Europe/Berlin")), start, end)
            assert ours == theirs


# ---------------------------------------------------------------- reference: cronsim

# Expressions checked against cronsim.  Left out on purpose, because cronsim
# (following Debian cron) reads them differently from the DESIGN rule:
#  * a day-of-month or day-of-week field starting with '*' but not exactly '*'
#    ('*/2') -- cronsim ANDs the day fields, we OR them (test above);
#  * 6-field fixed-time expressions in a zone with DST -- cronsim applies its
#    fixed-time DST handling to 5-field expressions only, so it fires twice
#    in a repeated hour and skips a gap; the rule is about the minute and
#    hour fields whatever the length (TestDST.test_six_field_fixed_time...);
#  * 'N/STEP' in the day of week -- cronsim steps up to 7 (Sunday again),
#    croniter and we stop at 6.
# At most daily: compared over a whole year (which crosses both transitions).
REFERENCE_EXPRESSIONS = [
    "30 2 * * *",
    "0 2 * * *",
    "0 1 * * *",
    "45 23 * * 1-5",
    "0 9-17/2 * * mon-fri",
    "0 0 1 * *",
    "0 12 13 * 5",
    "0 0 1,15 * 1",
    "5 4 * * sun",
    "0 0 L * *",
    "0 3 29 2 *",
    "0 0 1-31 * 1",
]
# Frequent ones: compared from the start of each transition day (and in UTC).
FREQUENT_REFERENCE_EXPRESSIONS = [
    "* * * * *",
    "*/7 * * * *",
    "0 * * * *",
    "15,45 */3 * * *",
    "0,30 1-3 * * *",
    "*/30 2 * * *",
    "10 1-3 * * *",
]
# zone -> the 2024 transition days (spring forward, fall back)
TRANSITION_DAYS = {
    "Europe/Berlin": [(2024, 3, 31), (2024, 10, 27)],
    "Australia/Sydney": [(2024, 10, 6), (2024, 4, 7)],
    "America/New_York": [(2024, 3, 10), (2024, 11, 3)],
}
YEAR = 366 * 86400


def _compare_with_cronsim(expr, zone_name, start, limit, span=YEAR):
    """Our next_due chain equals cronsim's iteration from local *start* on."""
    zone = ZoneInfo(zone_name)
    start_dt = datetime(*start, tzinfo=zone)
    begin = start_dt.timestamp()
    t = cron(expr, begin, tz=zone_name)
    ours = []
    due = t.first_due
    while due is not None and len(ours) < limit and due - begin <= span:
        ours.append(due)
        due = t.next_due(due)
    theirs = []
    # cronsim needs Python 3.10+; the reference comparison runs where it installs
    CronSim = pytest.importorskip("cronsim", reason="cronsim needs Python >= 3.10").CronSim
    for moment in CronSim(expr, start_dt):
        ts = moment.timestamp()
        if len(theirs) >= limit or ts - begin > span:
            break
        theirs.append(ts)
    assert ours == theirs, (expr, zone_name, start,
                            next(((local(a, zone), local(b, zone))
                                  for a, b in zip(ours, theirs) if a != b), None))
    return ours


@pytest.mark.parametrize("zone_name", ["UTC", "Europe/Berlin", "Australia/Sydney"])
@pytest.mark.parametrize("expr", REFERENCE_EXPRESSIONS)
def test_year_matches_cronsim(expr, zone_name):
    ours = _compare_with_cronsim(expr, zone_name, (2024, 1, 1, 0, 0, 1), limit=400)
    assert ours


@pytest.mark.parametrize("zone_name", sorted(TRANSITION_DAYS))
@pytest.mark.parametrize("expr", FREQUENT_REFERENCE_EXPRESSIONS + [
    "30 2 * * *", "0 2 * * *", "0 1 * * *", "5 4 * * sun"])
def test_transition_days_match_cronsim(expr, zone_name):
    for day in TRANSITION_DAYS[zone_name]:
        # from 00:30 local, 200 runs reach past 03:30 even for '* * * * *'
        ours = _compare_with_cronsim(expr, zone_name, day + (0, 30), limit=200, span=3 * 86400)
        assert ours


@pytest.mark.parametrize("expr", FREQUENT_REFERENCE_EXPRESSIONS)
def test_frequent_match_cronsim_in_utc(expr):
    assert _compare_with_cronsim(expr, "UTC", (2024, 2, 28, 22), limit=200)


@pytest.mark.parametrize("expr", ["*/10 * * * * *", "0 30 2 * * *", "15 0 */6 1 * mon"])
def test_six_fields_match_cronsim_in_utc(expr):
    assert _compare_with_cronsim(expr, "UTC", (2024, 1, 1), limit=200)


@pytest.mark.parametrize("zone_name", ["Europe/Berlin", "Australia/Sydney"])
@pytest.mark.parametrize("expr", ["*/20 * * * * *", "0 */20 * * * *", "30 0 * * * *"])
def test_six_field_wildcards_match_cronsim_through_dst(expr, zone_name):
    for day in TRANSITION_DAYS[zone_name]:
        hour = 1 if expr.startswith("*/20") else 0
        _compare_with_cronsim(expr, zone_name, day + (hour, 50), limit=400, span=86400)


@pytest.mark.parametrize("expr, fragments", [
    ("61 * * * *", ["'61 * * * *'", "minute field '61'", "0-59"]),
    ("* 24 * * *", ["hour field '24'", "0-23"]),
    ("* * 0 * *", ["day of month field '0'", "1-31"]),
    ("* * 32 * *", ["day of month field '32'"]),
    ("* * * 13 *", ["month field '13'", "1-12"]),
    ("* * * foo *", ["month field 'foo'", "'foo'"]),
    ("* * * * 8", ["day of week field '8'", "0-7"]),
    ("* * * * funday", ["day of week field 'funday'"]),
    ("60 * * * * *", ["second field '60'"]),
    ("* 60 * * * *", ["minute field '60'"]),
    ("*/0 * * * *", ["minute field '*/0'", "step"]),
    ("*/x * * * *", ["minute field '*/x'", "'x'"]),
    ("5-1 * * * *", ["minute field '5-1'", "backwards"]),
    ("1,,2 * * * *", ["minute field '1,,2'", "empty"]),
    ("-5 * * * *", ["minute field '-5'"]),
    ("L * * * *", ["minute field 'L'"]),
    ("* * * * L", ["day of week field 'L'"]),
    ("H * * * *", ["minute field 'H'"]),
    ("* * ? * *", ["day of month field '?'"]),
    ("* * * *", ["4 fields", "5", "6"]),
    ("* * * * * * *", ["7 fields", "5", "6"]),
    ("", ["0 fields"]),
    ("@reboot", ["@reboot"]),
    ("@fortnightly", ["'@fortnightly'", "@daily"]),
])
def test_bad_cron_expression_names_the_field(expr, fragments):
    with pytest.raises(ValueError) as info:
        cron(expr, epoch(2024, 1, 1))
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_the_instants_a_step_back_repeats_are_named_by_a_pass_of_their_own():
    """After the wall clock stepped back, a wildcard job's instants up to
    the wall time it had come again: their slots carry the pass, so the
    store tells them from the first ones; the twin is stored as the trigger
    it was made from (its definition did not change)."""
    import pickle
    from pysched_lightning.durability.encoding import slot_named, slot_pass
    trigger = CronTrigger("*/10 * * * * *", wall_now=1_800_000_000.0, tz="UTC")
    again = trigger.repeating(1_800_000_050.0)
    assert slot_named(1_800_000_050.0, trigger) == "1800000050.000"
    assert slot_named(1_800_000_050.0, again) == "1800000050.000/2"
    assert slot_named(1_800_000_060.0, again) == "1800000060.000"
    assert again.next_due(1_800_000_000.0) == trigger.next_due(1_800_000_000.0)
    third = again.repeating(1_800_000_020.0, after_pass=4)
    assert (third.repeat_until, third.repeat_pass) == (1_800_000_050.0, 5)
    assert slot_pass("1800000050.000/5") == 5 and slot_pass("now:ab12") == 1
    assert pickle.dumps(again) == pickle.dumps(trigger)
    assert pickle.loads(pickle.dumps(again)).repeat_pass == 1
