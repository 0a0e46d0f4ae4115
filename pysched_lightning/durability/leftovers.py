"""A claimed run's process that may outlive its scheduler: who it is, and
ending it at the next start.

A command task's process is kept with its run's claim as its pid *and* its
start time (``/proc/<pid>/stat`` field 22, clock ticks after boot, in the
low 40 bits; a digest of the boot's id above them, since after a reboot
the same pid may well start at the same tick): a pid is reused once its
process is gone, the pair never is. A restart that finds a
claim still RUNNING looks for that very process; if it still runs (its
scheduler died and nothing killed it), its process group is killed before
anything is scheduled, so that the run, recorded interrupted, never runs
twice at once. Linux only (``/proc``); elsewhere no process is ever found.
"""
from __future__ import annotations

import hashlib
import os
import signal
import time
from typing import Any, Optional

__all__ = ["start_time", "still_running", "end_group", "keep_process"]

#: How long a restart waits for a killed process group's leader to go.
END_WAIT_SECONDS = 5.0
_POLL_SECONDS = 0.01


def _stat_fields(pid: int) -> Optional[list]:
    """The fields of ``/proc/<pid>/stat`` after the command name (field 3
    onwards), or None when there is no such process (or no /proc)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            text = stat.read()
    except OSError:
        return None
    # The name (field 2) is in parentheses and may hold spaces and ')'.
    return text[text.rfind(b")") + 2:].split()


_TICK_BITS = 40  # clock ticks after boot: 348 years at 100 Hz


def start_time(pid: int) -> Optional[int]:
    """When process *pid* started in this boot (clock ticks after boot,
    and the boot; see the module's text); None when it is gone, a zombie,
    or cannot be read."""
    fields = _stat_fields(pid)
    if not fields or len(fields) < 20 or fields[0] == b"Z":
        return None
    try:
        ticks = int(fields[19])  # field 22
    except ValueError:
        return None
    return (_boot() << _TICK_BITS) | (ticks & ((1 << _TICK_BITS) - 1))


def _boot() -> int:
    """23 bits that tell this boot of this machine from others (0 where the
    kernel does not say)."""
    try:
        with open("/proc/sys/kernel/random/boot_id", "rb") as boot:
            boot_id = boot.read().strip()
    except OSError:
        return 0
    return int.from_bytes(hashlib.blake2b(boot_id, digest_size=3).digest(), "big") >> 1


def still_running(pid: int, started: int) -> bool:
    """True while the process *pid* that started at *started* runs (a later
    process given the same pid does not count)."""
    return start_time(pid) == started


def end_group(pid: int, started: int, wait: float = END_WAIT_SECONDS) -> bool:
    """If the process (*pid*, *started*) still runs, SIGKILL its process
    group (it leads one: commands start in a session of their own) and wait
    up to *wait* seconds for it to go. True when it was running; a process
    that cannot be killed raises OSError."""
    if not still_running(pid, started):
        return False
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:  # no group of that id: it left it, or it is gone
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return True
    deadline = time.monotonic() + wait
    while still_running(pid, started):
        if time.monotonic() > deadline:
            raise OSError(f"process {pid} still runs {wait:g} s after SIGKILL")
        time.sleep(_POLL_SECONDS)
    return True


def keep_process(store: Any, claim: Any, pid: int) -> None:
    """Keep process *pid*, which runs *claim*'s run, with the claim in
    *store* (committed when this returns); nothing if it is gone already."""
    started = start_time(pid)
    if started is not None:
        store.note_process(claim.task_id, claim.slot, claim.attempt, pid, started)
