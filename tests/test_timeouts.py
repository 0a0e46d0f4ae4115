"""Timeouts: hard tasks are killed, thread tasks are marked and their late result dropped."""
from __future__ import annotations

import gc
import os
import threading
import time
import weakref

import pytest

import pysched_lightning as psl
from conftest import VirtualClock, pending_events, process_gone, virtual, wait_for
from invariants import runs_going

S = psl.TaskStatus
K = psl.EventKind


# ------------------------------------------------------------ hard tasks
# (module level, so the worker process can unpickle them)

def write_pid_then_sleep(pidfile):
    with open(pidfile, "w") as stream:
        stream.write(str(os.getpid()))
    time.sleep(30)
    return "should never get here"


def wait_for_file_then_return(path, value):
    deadline = time.monotonic() + 20
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} never appeared")
        time.sleep(0.01)
    return value, os.getpid()


def pid_of_worker(value):
    return value, os.getpid()


def test_hard_task_timeout_kills_its_process_only(tmp_path, no_leaked_threads):
    pidfile = tmp_path / "sleeper.pid"
    go = tmp_path / "go"
    with psl.Scheduler() as sched:
        # warm up: a first hard task with a timeout starts a killable worker
        # process, which the sleeper then reuses (a cold spawn can be slow)
        warm = sched.delay("once", 0, 1, pid_of_worker, args=("warm",), hard=True,
                           timeout=30)
        assert sched.get_result(warm, timeout=30)[0] == "warm"
        sleeper = sched.delay("once", 0, 1, write_pid_then_sleep, args=(str(pidfile),),
                              hard=True, timeout=0.5)
        # other hard tasks, running while the sleeper is killed
        other_killable = sched.delay("once", 0, 1, wait_for_file_then_return,
                                     args=(str(go), "killable"), hard=True, timeout=30)
        other_pooled = sched.delay("once", 0, 1, wait_for_file_then_return,
                                   args=(str(go), "pooled"), hard=True)
        try:
            wait_for(lambda: pidfile.exists() and pidfile.read_text(), timeout=20)
            # the run started before it wrote its pid, so its deadline is at
            # most 0.5 s from now; its process must be gone 1.5 s after that
            seen = time.monotonic()
            pid = int(pidfile.read_text())
            assert pid != os.getpid()
            wait_for(lambda: process_gone(pid), timeout=max(0.0, seen + 2.0 - time.monotonic()))
            with pytest.raises(TimeoutError):
                sched.get_result(sleeper, timeout=20)
            assert sched.get_status(sleeper) is S.TIMEOUT
        finally:
            go.write_text("go")
        value, pid_k = sched.get_result(other_killable, timeout=20)
        assert value == "killable" and pid_k != pid
        value, pid_p = sched.get_result(other_pooled, timeout=20)
        assert value == "pooled" and pid_p != pid
        assert sched.get_status(other_killable) is S.COMPLETED
        assert sched.get_status(other_pooled) is S.COMPLETED
        # a hard task added after the kill still runs, with or without a timeout
        later = sched.delay("once", 0, 1, pid_of_worker, args=("later",), hard=True,
                            timeout=30)
        later_pooled = sched.delay("once", 0, 1, pid_of_worker, args=("later pooled",),
                                   hard=True)
        assert sched.get_result(later, timeout=20)[0] == "later"
        assert sched.get_result(later_pooled, timeout=20)[0] == "later pooled"


# ------------------------------------------------------------ thread tasks

def test_thread_task_timeout_discards_its_late_result(clock, no_leaked_threads):
    release = threading.Event()
    returned = threading.Event()
    seen = {}

    def late():
        run = psl.current_run()
        release.wait(10)
        seen["timed_out"] = run.timed_out
        returned.set()
        return "late result"

    with virtual(clock, psl.ThreadPoolExecutor(1)) as sched:
        events = sched.subscribe()
        timeouts = sched.subscribe([K.TIMEOUT])
        tid = sched.delay("once", 0, 1, late, timeout=5)
        try:
            assert timeouts.get(timeout=5).task_id == tid
            assert not returned.is_set()
            assert sched.get_status(tid) is S.TIMEOUT
            with pytest.raises(TimeoutError):
                sched.get_result(tid, timeout=5)
        finally:
            release.set()
        assert returned.wait(5)
        # one worker only: once a later task has run, the late outcome of the
        # timed-out run has been handed back (and must have been dropped)
        probe = sched.delay("once", 0, 1, lambda: "probe")
        assert sched.get_result(probe, timeout=5) == "probe"
        run = sched.runs(tid)[0]
        assert seen["timed_out"] is True
        assert sched.get_status(tid) is S.TIMEOUT
        assert run.status is S.TIMEOUT
        assert run.result is None
        with pytest.raises(TimeoutError):
            sched.get_result(tid, timeout=5)
        got = pending_events(events)
    mine = [e.kind for e in got if e.task_id == tid]
    assert mine.count(K.TIMEOUT) == 1
    assert K.COMPLETED not in mine
    timeout_event = next(e for e in got if e.kind is K.TIMEOUT)
    assert timeout_event.status is S.TIMEOUT
    assert timeout_event.result is None


def test_get_result_raises_at_the_deadline_while_the_thread_still_runs(no_leaked_threads):
    """Real clock: get_result() is waiting before the 0.5 s deadline passes,
    and must wake with TimeoutError then, not when the thread returns."""
    release = threading.Event()
    outcome = {}

    def hang():
        release.wait(20)
        return "late"

    with psl.Scheduler(executor=psl.ThreadPoolExecutor(1)) as sched:
        tid = sched.delay("once", 0, 1, hang, timeout=0.5)

        def waiter():
            try:
                outcome["value"] = sched.get_result(tid)
            except BaseException as exc:  # noqa: BLE001 - we record what it raised
                outcome["exc"] = exc

        waiting = threading.Thread(target=waiter, daemon=True)
        waiting.start()
        try:
            wait_for(lambda: outcome, timeout=3)
            assert isinstance(outcome.get("exc"), TimeoutError)
            assert not release.is_set()
            assert sched.get_status(tid) is S.TIMEOUT
        finally:
            release.set()
            waiting.join(10)


def test_thread_task_can_stop_cooperatively(clock):
    seen = {}

    def cooperative():
        run = psl.current_run()
        seen["before"] = run.timed_out
        deadline = time.monotonic() + 10
        while not run.timed_out and time.monotonic() < deadline:
            time.sleep(0.002)
        seen["after"] = run.timed_out
        return "stopped"

    with virtual(clock, psl.ThreadPoolExecutor(2)) as sched:
        tid = sched.delay("once", 0, 1, cooperative, timeout=60)
        wait_for(lambda: "after" in seen, timeout=5)
        assert seen == {"before": False, "after": True}
        assert sched.get_status(tid) is S.TIMEOUT


def test_current_run_is_none_outside_a_run():
    assert psl.current_run() is None


def test_deadlines_run_on_the_scheduler_clock(clock):
    release = threading.Event()

    def hang():
        release.wait(10)

    with virtual(clock, psl.ThreadPoolExecutor(2)) as sched:
        events = sched.subscribe([K.TIMEOUT])
        try:
            tid = sched.delay("once", 0, 1, hang, timeout=3600)
            event = events.get(timeout=5)  # an hour of virtual time, no real hour
        finally:
            release.set()
    assert event.task_id == tid
    run = event.run
    assert run.duration == pytest.approx(3600)


def test_default_timeout_applies_and_an_explicit_one_wins(clock):
    release = threading.Event()

    def hang():
        release.wait(10)

    with virtual(clock, psl.ThreadPoolExecutor(2), default_timeout=2) as sched:
        events = sched.subscribe([K.TIMEOUT])
        try:
            a = sched.delay("once", 0, 1, hang)
            b = sched.delay("once", 0, 1, hang, timeout=100)
            got = {e.task_id: e.run for e in (events.get(timeout=5), events.get(timeout=5))}
        finally:
            release.set()
    assert set(got) == {a, b}
    assert got[a].duration == pytest.approx(2)
    assert got[b].duration == pytest.approx(100)


def test_task_within_its_timeout_completes(clock):
    def quick():
        clock.advance(1)
        return "in time"

    with virtual(clock) as sched:
        tid = sched.delay("once", 0, 1, quick, timeout=5)
        assert sched.get_result(tid, timeout=5) == "in time"
        assert sched.get_status(tid) is S.COMPLETED


def test_run_that_overran_its_deadline_on_the_scheduler_clock_is_timeout(clock):
    """An inline run that takes 10 s of scheduler time with timeout=5 exceeded it."""
    def overrun():
        clock.advance(10)
        return "too late"

    with virtual(clock) as sched:
        tid = sched.delay("once", 0, 1, overrun, timeout=5)
        with pytest.raises(TimeoutError):
            sched.get_result(tid, timeout=5)
        assert sched.get_status(tid) is S.TIMEOUT


# ------------------------------------------------------------ memory


class LargeResult:
    """A run's result of about 100 kB, which the test can watch die."""

    def __init__(self):
        self.data = bytearray(100_000)


class StillClock(VirtualClock):
    """A virtual clock that only the test moves: the dispatcher's sleeps do
    not (else, with nothing else to do, it would sleep to the deadlines)."""

    def sleep(self, seconds):
        time.sleep(0.001)


def _inline_on_a_still_clock():
    """Runs in the dispatcher, one per virtual second, as the test moves time."""
    clock = StillClock()
    return virtual(clock, history=3), 1, lambda: clock.advance(1)


def _threads_on_the_real_clock():
    """A run every 10 ms on a worker thread: 30 runs take 0.3 s of the hour."""
    return psl.Scheduler(executor=psl.ThreadPoolExecutor(1), history=3), 0.01, \
        lambda: time.sleep(0.001)


@pytest.mark.parametrize("make", [_inline_on_a_still_clock, _threads_on_the_real_clock])
def test_finished_runs_with_a_timeout_are_not_kept_until_their_deadline(make):
    """Every run with a timeout stayed referenced (result included) until its
    deadline passed, long after it ended: a task every 10 ms with 100 kB
    results and timeout=3600 grew by 10 MiB/s. Once a run has ended, only
    the bounded history (``history=3``) keeps it."""
    alive = weakref.WeakSet()
    made = []

    def produce():
        result = LargeResult()
        alive.add(result)
        made.append(1)
        if len(made) == 30:
            sched.cancel(tid)  # exactly 30 runs, all ended long before their deadline
        return result

    sched, every, let_time_pass = make()
    tid = sched.delay('recur', every, 1, produce, timeout=3600)
    sched.start()
    try:
        wait_for(lambda: let_time_pass() or sched.get_status(tid) is S.CANCELED)
        wait_for(lambda: runs_going(sched) == 0)
        assert len(made) == 30
        gc.collect()
        assert len(alive) <= 3, f"{len(alive)} results of ended runs still referenced"
    finally:
        sched.shutdown()
