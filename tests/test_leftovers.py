"""durability/leftovers.py: a claimed run's process is that very process,
in this boot of this machine, or none."""
import os
import subprocess
import sys

import pytest

from pysched_lightning.durability import leftovers
from pysched_lightning.durability.leftovers import end_group, start_time, still_running

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs /proc")

TICKS = (1 << 40) - 1


def test_a_process_started_at_the_same_tick_of_another_boot_is_not_that_process(
        monkeypatch):
    """After a reboot a pid may start at the same tick after boot as the
    claimed one did: the boot tells them apart, so a restart kills nothing
    of this boot for a claim made in the last one. (The claim is read as in
    another boot: the kernel's boot id is all that differs.)"""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                             start_new_session=True)
    try:
        this_boot = leftovers._boot()
        monkeypatch.setattr(leftovers, "_boot", lambda: this_boot ^ 1)
        claimed_in_another_boot = start_time(child.pid)
        monkeypatch.undo()
        started = start_time(child.pid)
        assert started is not None and still_running(child.pid, started)
        assert claimed_in_another_boot & TICKS == started & TICKS
        assert not still_running(child.pid, claimed_in_another_boot)
        assert end_group(child.pid, claimed_in_another_boot) is False
        assert child.poll() is None
        assert end_group(child.pid, started) is True
        assert child.wait(10) == -9
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_the_start_time_keeps_the_ticks_after_boot():
    with open(f"/proc/{os.getpid()}/stat", "rb") as stat:
        ticks = int(stat.read().rsplit(b")", 1)[1].split()[19])
    assert start_time(os.getpid()) & TICKS == ticks


def test_a_process_that_is_gone_has_no_start_time():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert start_time(child.pid) is None
