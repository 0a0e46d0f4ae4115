"""Tests for pysched_lightning.zones: tz= as a key or a tzinfo, the local zone."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from pysched_lightning.timing import zones
from pysched_lightning.timing.triggers import make_trigger
from walltime import BERLIN, UTC, cron, epoch


# ---------------------------------------------------------------- time zones

class TestTimeZones:
    def test_tz_as_tzinfo_and_fixed_offset(self):
        start = epoch(2024, 1, 1)
        assert cron("0 9 * * *", start, tz=BERLIN).first_due == epoch(2024, 1, 1, 8)
        t = cron("0 9 * * *", start, tz=timezone(timedelta(hours=-3)))
        assert t.first_due == epoch(2024, 1, 1, 12)
        assert t.describe() == "cron '0 9 * * *' (UTC-03:00)"

    def test_default_zone_from_tz_variable(self, monkeypatch):
        monkeypatch.setenv("TZ", "Australia/Sydney")
        t = make_trigger("cron", "0 9 * * *", now=0.0, wall_now=epoch(2024, 1, 1))
        assert t.describe() == "cron '0 9 * * *' (Australia/Sydney)"
        assert t.first_due == epoch(2024, 1, 1, 22)  # 09:00 AEDT (+11) on Jan 2
        monkeypatch.setenv("TZ", ":Europe/Berlin")
        t = make_trigger("cron", "0 9 * * *", now=0.0, wall_now=epoch(2024, 1, 1))
        assert t.describe() == "cron '0 9 * * *' (Europe/Berlin)"

    def test_default_zone_from_posix_rule(self, monkeypatch):
        monkeypatch.setenv("TZ", "XXX-5")  # not a zone key: the C library's reading
        zone, key = zones.local_zone()
        assert key is None
        assert zone.utcoffset(datetime(2024, 1, 1)) is not None

    def test_default_zone_without_tz_variable(self, monkeypatch):
        monkeypatch.delenv("TZ", raising=False)
        zone, _key = zones.local_zone()
        now = datetime.now(UTC)
        assert now.astimezone(zone).utcoffset() is not None

    def test_zone_key_from_path(self):
        assert zones.key_from_path("/usr/share/zoneinfo/Europe/Berlin") == "Europe/Berlin"
        assert zones.key_from_path("/usr/share/zoneinfo/posix/Asia/Tokyo") == "Asia/Tokyo"
        assert zones.key_from_path("/etc/localtime") is None
