"""Control: pause/resume (a task, the scheduler), reschedule, modify, run_now,
next_run_times."""
from __future__ import annotations

import datetime as dt
import gc
import os
import threading
import time
import weakref
from collections import Counter
from zoneinfo import ZoneInfo

import pytest

import pysched_lightning as psl
from conftest import HeldClock, InlineExecutor, pending_events, virtual, wait_for, secs
from invariants import held_runs

S = psl.TaskStatus
K = psl.EventKind


class Ticker:
    """Records the virtual time of each call; pauses its task after *limit* calls."""

    def __init__(self, clock, sched, limit=3):
        self.clock, self.sched, self.limit = clock, sched, limit
        self.times = []
        self.tid = None

    def __call__(self):
        self.times.append(self.clock.now())
        if len(self.times) >= self.limit:
            self.sched.pause(self.tid)


# ------------------------------------------------------------------ pause

def test_pause_and_resume_one_recurring_task(clock):
    sched = virtual(clock, wallfunc=clock.now)
    ticker = Ticker(clock, sched, limit=3)
    try:
        t0 = clock.now()
        ticker.tid = tid = sched.delay("recur", 10, 1, ticker)
        other = sched.delay("recur", 7, 1, lambda: None)
        sched.pause(tid)
        sched.start()
        # other tasks go on; the paused one keeps its place but does not run
        wait_for(lambda: clock.now() > t0 + 200, timeout=5)
        assert ticker.times == []
        assert sched.get_task(other)["runs"] > 0
        info = sched.get_task(tid)
        assert info["status"] is S.SUSPENDED
        assert info["next_run_time"] is not None
        assert tid in [i["id"] for i in sched.get_all()]
        before_resume = clock.now()
        sched.resume(tid)
        wait_for(lambda: len(ticker.times) >= 3, timeout=5)
        first = sched.runs(tid)[-1]
    finally:
        sched.shutdown()
    # its next run is the next future due time on its grid: no catch-up run
    assert secs(first.scheduled) >= before_resume
    assert ticker.times[0] >= before_resume
    phases = [(t - t0) % 10 for t in ticker.times]
    assert [min(p, 10 - p) for p in phases] == [pytest.approx(0, abs=1e-6)] * 3
    assert [b - a for a, b in zip(ticker.times, ticker.times[1:])] == [
        pytest.approx(10), pytest.approx(10)]


def test_pause_a_running_recurring_task_from_outside(clock):
    sched = virtual(clock)
    ticker = Ticker(clock, sched, limit=10**9)
    try:
        ticker.tid = tid = sched.delay("recur", 10, 1, ticker)
        sched.start()
        wait_for(lambda: len(ticker.times) >= 2, timeout=5)
        sched.pause(tid)
        # at most a run already handed over may still finish; then nothing
        paused_at = clock.now()
        wait_for(lambda: clock.now() > paused_at + 100, timeout=5)
        count = len(ticker.times)
        later = clock.now()
        wait_for(lambda: clock.now() > later + 100, timeout=5)
        assert len(ticker.times) == count
        assert sched.get_status(tid) is not S.CANCELED
        sched.resume(tid)
        wait_for(lambda: len(ticker.times) > count, timeout=5)
    finally:
        sched.shutdown()


def test_pause_and_resume_a_one_shot(clock):
    called = []
    sched = virtual(clock)
    try:
        t0 = clock.now()
        tid = sched.delay("once", 10, 1, lambda: called.append(clock.now()) or "ran")
        keep_clock_going = sched.delay("recur", 5, 1, lambda: None)
        sched.pause(tid)
        sched.start()
        wait_for(lambda: clock.now() > t0 + 100, timeout=5)
        assert called == []
        assert sched.get_status(tid) is S.SUSPENDED
        resumed_at = clock.now()
        sched.resume(tid)
        assert sched.get_result(tid, timeout=5) == "ran"
        sched.cancel(keep_clock_going)
    finally:
        sched.shutdown()
    assert called[0] >= resumed_at


def _scheduler_pause_run(clock, **options):
    """A 1 s ticker that pauses the whole scheduler from its 3rd run; the test
    then lets 600 s of virtual time pass and resumes."""
    sched = virtual(clock)
    times = []

    def tick():
        times.append(clock.now())
        if len(times) == 3:
            sched.pause()

    try:
        events = sched.subscribe()
        tid = sched.delay("recur", 1, 1, tick, **options)

        def stop_later(event):
            if event.task_id == tid and len(times) >= 6:
                sched.pause(tid)

        sched.add_listener(stop_later, kinds=[K.COMPLETED, K.MISSED])
        paused = threading.Event()
        sched.add_listener(lambda event: paused.set(), kinds=[K.SCHEDULER_PAUSED])
        sched.start()
        assert paused.wait(5)
        assert len(times) == 3
        paused_at = clock.now()
        clock.advance(600)  # ten minutes pass while the scheduler is paused
        assert len(times) == 3
        resumed_at = clock.now()
        sched.resume()
        wait_for(lambda: len(times) >= 6, timeout=5)
    finally:
        sched.shutdown()
    return tid, times, paused_at, resumed_at, pending_events(events)


def test_pause_and_resume_the_scheduler_coalesces(clock):
    tid, times, paused_at, resumed_at, got = _scheduler_pause_run(clock)
    # nothing ran while paused; the 600 slots due then became one run at resume
    assert [t for t in times if paused_at < t <= resumed_at] == [pytest.approx(resumed_at)]
    assert times[4] - times[3] <= 1
    missed = [e for e in got if e.kind is K.MISSED and e.task_id == tid]
    assert len(missed) == 1
    assert missed[0].reason == "scheduler paused"
    assert missed[0].count in (599, 600)
    kinds = [e.kind for e in got]
    assert K.SCHEDULER_PAUSED in kinds and K.SCHEDULER_RESUMED in kinds


def test_pause_and_resume_the_scheduler_with_grace_time_skips(clock):
    tid, times, paused_at, resumed_at, got = _scheduler_pause_run(
        clock, misfire_grace_time=5)
    assert [t for t in times if paused_at < t <= resumed_at] == []
    assert all(t > resumed_at for t in times[3:])
    missed = [e for e in got if e.kind is K.MISSED and e.task_id == tid]
    assert missed
    assert all(e.reason == "scheduler paused" for e in missed)
    assert any(e.lateness is not None and e.lateness > 5 for e in missed)


def test_pause_unknown_task_is_a_key_error(clock):
    with virtual(clock) as sched:
        with pytest.raises(KeyError, match="ghost"):
            sched.pause("ghost")
        with pytest.raises(KeyError, match="ghost"):
            sched.resume("ghost")


# ------------------------------------------------------------- reschedule

def test_reschedule_changes_the_trigger(clock):
    sched = virtual(clock)
    ticker = Ticker(clock, sched, limit=3)
    try:
        t0 = clock.now()
        ticker.tid = tid = sched.delay("recur", 100, 1, ticker)
        sched.reschedule(tid, "recur", 5)
        info = sched.get_task(tid)
        assert (info["trigger"], info["interval"]) == ("recur", 5)
        times = sched.next_run_times(tid, 3)
        assert [(b - a).total_seconds() for a, b in zip(times, times[1:])] == [
            pytest.approx(5), pytest.approx(5)]
        sched.start()
        wait_for(lambda: len(ticker.times) >= 3, timeout=5)
    finally:
        sched.shutdown()
    assert [t - t0 for t in ticker.times] == [pytest.approx(5), pytest.approx(10),
                                              pytest.approx(15)]


def test_reschedule_to_cron_in_a_time_zone(clock):
    sched = virtual(clock)  # not started: the virtual clock stands still
    try:
        tid = sched.delay("recur", 100, 1, lambda: None)
        sched.reschedule(tid, "cron", "30 9 * * *", tz="America/New_York")
        times = sched.next_run_times(tid, 3)
    finally:
        sched.shutdown()
    zone = ZoneInfo("America/New_York")
    assert len(times) == 3
    for when in times:
        assert when.tzinfo is not None
        local = when.astimezone(zone)
        assert (local.hour, local.minute) == (9, 30)
        assert when.utcoffset() == local.utcoffset()
    assert times[0].timestamp() > time.time()


def test_reschedule_with_a_bad_trigger_leaves_the_task_alone(clock):
    sched = virtual(clock)  # not started: the virtual clock stands still
    try:
        tid = sched.delay("recur", 100, 1, lambda: None)
        before = sched.next_run_times(tid, 2)
        with pytest.raises(ValueError):
            sched.reschedule(tid, "sometimes", 5)
        with pytest.raises(KeyError, match="ghost"):
            sched.reschedule("ghost", "recur", 5)
        assert sched.next_run_times(tid, 2) == before
        assert sched.get_task(tid)["interval"] == 100
    finally:
        sched.shutdown()


# ----------------------------------------------------------------- modify

def test_modify_priority_changes_the_order(clock):
    order = []
    sched = virtual(clock)
    try:
        a = sched.delay("once", 10, 5, order.append, args=("a",))
        b = sched.delay("once", 10, 1, order.append, args=("b",))
        before = sched.next_run_times(b, 1)
        sched.modify(b, priority=9, args=("b modified",))
        assert sched.get_task(b)["priority"] == 9
        assert sched.next_run_times(b, 1) == before  # the schedule is kept
        sched.start()
        sched.get_result(a, timeout=5)
        sched.get_result(b, timeout=5)
    finally:
        sched.shutdown()
    assert order == ["a", "b modified"]


def test_modify_options(clock):
    def fails():
        raise OSError("flaky")

    sched = virtual(clock)
    try:
        tid = sched.delay("once", 10, 1, fails)
        sched.modify(tid, retries=2, name="renamed")
        assert sched.get_task(tid)["name"] == "renamed"
        sched.start()
        with pytest.raises(OSError):
            sched.get_result(tid, timeout=5)
        assert [r.attempt for r in sched.runs(tid)] == [3, 2, 1]
    finally:
        sched.shutdown()


def test_modify_rejects_unknown_options(clock):
    sched = virtual(clock)  # not started
    try:
        tid = sched.delay("once", 10, 1, lambda: None)
        with pytest.raises(TypeError, match="colour"):
            sched.modify(tid, colour="blue")
        with pytest.raises(KeyError, match="ghost"):
            sched.modify("ghost", priority=1)
        assert sched.get_task(tid)["priority"] == 1
    finally:
        sched.shutdown()


# ---------------------------------------------------------------- run_now

def test_run_now_adds_one_run_and_keeps_the_schedule(clock):
    sched = virtual(clock)
    ticker = Ticker(clock, sched, limit=3)
    try:
        t0 = clock.now()
        ticker.tid = tid = sched.delay("recur", 100, 1, ticker)
        before = sched.next_run_times(tid, 3)
        sched.run_now(tid)
        assert sched.next_run_times(tid, 3) == before
        sched.start()
        wait_for(lambda: len(ticker.times) >= 3, timeout=5)
    finally:
        sched.shutdown()
    assert [t - t0 for t in ticker.times] == [pytest.approx(0), pytest.approx(100),
                                              pytest.approx(200)]


def test_run_now_on_a_one_shot_runs_it_now_and_later(clock):
    times = []
    sched = virtual(clock)
    try:
        t0 = clock.now()
        tid = sched.delay("once", 50, 1, lambda: times.append(clock.now()))
        sched.run_now(tid)
        sched.start()
        wait_for(lambda: len(times) >= 2, timeout=5)
    finally:
        sched.shutdown()
    assert times[0] - t0 < 50
    assert times[1] - t0 == pytest.approx(50)


# --------------------------------------------------------- next_run_times

def test_next_run_times_of_a_recurring_task(clock):
    sched = virtual(clock)  # not started: the virtual clock stands still
    try:
        before = time.time()
        tid = sched.delay("recur", 60, 1, lambda: None)
        after = time.time()
        times = sched.next_run_times(tid, 4)
        assert sched.next_run_times(tid, 0) == []
    finally:
        sched.shutdown()
    assert len(times) == 4
    assert all(isinstance(t, dt.datetime) and t.tzinfo is not None
               and t.utcoffset() is not None for t in times)
    assert before + 60 - 1 <= times[0].timestamp() <= after + 60 + 1
    assert [(b - a).total_seconds() for a, b in zip(times, times[1:])] == [
        pytest.approx(60)] * 3


def test_next_run_times_of_a_cron_task_are_in_its_zone(clock):
    sched = virtual(clock)  # not started: the virtual clock stands still
    try:
        tid = sched.delay("cron", "0 9 * * *", 1, lambda: None, tz="Asia/Tokyo")
        times = sched.next_run_times(tid, 3)
    finally:
        sched.shutdown()
    zone = ZoneInfo("Asia/Tokyo")
    assert [t.utcoffset() for t in times] == [dt.timedelta(hours=9)] * 3
    assert [(t.hour, t.minute) for t in times] == [(9, 0)] * 3
    assert [t.astimezone(zone).hour for t in times] == [9] * 3
    assert [(b - a) for a, b in zip(times, times[1:])] == [dt.timedelta(days=1)] * 2


# ------------------------------------------------------------------ regressions

def test_pause_holds_a_task_added_due_now():
    ran = threading.Event()
    with psl.Scheduler() as sched:
        sched.pause()
        tid = sched.delay('once', 0, 1, ran.set)
        assert tid not in sched.result  # not fired: no run was made
        assert sched.get_status(tid) is S.SUSPENDED
        sched.resume()
        assert ran.wait(5)


def test_pause_holds_runs_queued_for_a_worker():
    gate, ran = threading.Event(), []
    with psl.Scheduler(executor=psl.ThreadPoolExecutor(1)) as sched:
        blocker = sched.delay('once', 0, 1, gate.wait, args=(10,))
        wait_for(lambda: sched.get_status(blocker) is S.RUNNING)
        queued = sched.delay('once', 0, 1, ran.append, args=('queued',))
        sched.pause(queued)
        gate.set()
        wait_for(lambda: sched.get_status(blocker) is S.COMPLETED)
        other = sched.delay('once', 0, 1, ran.append, args=('other',))
        sched.get_result(other, timeout=5)  # the worker was free: queued was held
        assert ran == ['other'] and sched.get_status(queued) is S.SUSPENDED
        sched.resume(queued)
        sched.get_result(queued, timeout=5)
        assert ran == ['other', 'queued']


def test_pause_holds_dependents_released_by_a_completing_task():
    ran = []
    with psl.Scheduler() as sched:
        first = sched.delay('once', 3600, 1, ran.append, args=('first',))
        then = sched.delay('once', 0, 1, ran.append, args=('then',), depend_on=first)
        sched.pause(then)
        sched.run_now(first)
        wait_for(lambda: sched.get_status(first) is S.COMPLETED)
        assert ran == ['first'] and sched.get_status(then) is S.SUSPENDED
        sched.resume(then)
        sched.get_result(then, timeout=5)
        assert ran == ['first', 'then']


def test_modify_of_a_recurring_task_waiting_on_a_dependency_keeps_it_recurring():
    runs = []
    with psl.Scheduler() as sched:
        dep = sched.delay('once', 3600, 1, lambda: None)
        tid = sched.delay('recur', 0.02, 5, runs.append, args=('old',), depend_on=dep)
        first = sched.get_task(tid)['next_run_time']
        # an occurrence came due and waits for the dependency; the next is scheduled
        wait_for(lambda: sched.get_task(tid)['next_run_time'] > first)
        sched.modify(tid, priority=1, args=('new',))
        sched.reschedule(tid, 'recur', 0.03)
        assert len(sched.next_run_times(tid, 3)) == 3
        sched.run_now(dep)
        wait_for(lambda: len(runs) >= 3)
        assert set(runs) == {'new'} and tid in sched.task


# ----------------------------------------- one-shots changed while their run is under way


def note(marker, text):
    """A task that leaves a line in *marker* each time it runs."""
    with open(marker, "a") as out:
        out.write(text + "\n")
    return text


def started_then_note(started, gate, marker, text):
    """A task that says it started (a file), waits for the gate file, then notes."""
    open(started, "w").close()
    wait_for(lambda: os.path.exists(gate), timeout=60)
    return note(marker, text)


def lines(path):
    if not os.path.exists(path):
        return []
    with open(path) as kept:
        return kept.read().split()


def stored_scheduler(clock, path, executor):
    """A scheduler on the held clock (its wall clock too) with the store *path*."""
    return psl.Scheduler(executor=executor, timefunc=clock.now, delayfunc=clock.sleep,
                         wallfunc=clock.now, store=path)


def lines_after_a_restart(clock, path, marker):
    """Restart on the store, let a virtual minute pass (whatever the store
    holds as due has run by then), and read *marker*."""
    sched = stored_scheduler(clock, path, InlineExecutor())
    sched.start()
    try:
        later = sched.delay('once', 60, 1, note, args=(f"{marker}.later", 'later'))
        clock.run_until(clock.now() + 60)
        sched.get_result(later, timeout=10)
    finally:
        sched.shutdown()
    return lines(marker)


def test_a_one_shot_modified_while_it_runs_leaves_the_schedule_and_never_runs_again(
        tmp_path):
    """modify() of a one-shot whose only run is going changes nothing of
    that run's end: the task leaves ``sched.task`` when the run completes,
    ``purge()`` drops it, and a restart on the same store does not run it
    again."""
    path, marker = str(tmp_path / "jobs.db"), str(tmp_path / "ran")
    started, gate = str(tmp_path / "started"), str(tmp_path / "gate")
    clock = HeldClock()
    sched = stored_scheduler(clock, path, psl.ThreadPoolExecutor(2))
    sched.start()
    try:
        tid = sched.delay('once', 0, 1, started_then_note, args=(started, gate, marker, 'ran'),
                          task_id='one-shot')
        wait_for(lambda: os.path.exists(started))
        sched.modify(tid, priority=2)
        open(gate, "w").close()
        wait_for(lambda: sched.get_status(tid) is S.COMPLETED)
        assert tid not in sched.task
        sched.purge()
        with pytest.raises(KeyError):
            sched.get_status(tid)
    finally:
        open(gate, "w").close()
        sched.shutdown()
    assert lines_after_a_restart(clock, path, marker) == ['ran']


@pytest.mark.parametrize("change", ["modify", "reschedule"])
def test_a_one_shot_changed_while_it_waits_for_a_dependency_runs_once_and_leaves(
        tmp_path, change):
    """A one-shot whose occurrence came due and waits for its dependency is
    modified (new args) or rescheduled (to now). It runs once, with the new
    definition, when the dependency completes; then it leaves ``sched.task``,
    ``purge()`` drops it, and a restart does not run it again. (The held
    clock stands still: the dependency runs only when run_now() says so.)"""
    path, marker = str(tmp_path / "jobs.db"), str(tmp_path / "ran")
    clock = HeldClock()
    sched = stored_scheduler(clock, path, InlineExecutor())
    sched.start()
    try:
        dep = sched.delay('once', 3600, 1, note, args=(f"{marker}.dep", 'dep'), task_id='dep')
        tid = sched.delay('once', 0, 1, note, args=(marker, 'old'), task_id='dependent',
                          depend_on=dep)
        wait_for(lambda: sched.get_task(tid)['next_run_time'] is None)  # due, waiting
        if change == "modify":
            sched.modify(tid, args=(marker, 'new'))
        else:
            sched.reschedule(tid, 'once', 0)
        sched.run_now(dep)
        wait_for(lambda: sched.get_status(tid) is S.COMPLETED)
        assert tid not in sched.task
        sched.purge()
        with pytest.raises(KeyError):
            sched.get_status(tid)
    finally:
        sched.shutdown()
    ran = ['new'] if change == "modify" else ['old']
    assert lines_after_a_restart(clock, path, marker) == ran


# ----------------------------------------- modify() racing the task's firing


class ArgsReadSlowly(list):
    """New args for modify() whose reading (user code, in the caller's
    thread) lasts until *until()* is true: the window every modify() has
    between reading the task's definition and putting the new one in place,
    widened so that the task's next occurrences fire inside it."""

    def __init__(self, items, until):
        super().__init__(items)
        self._until = until

    def __iter__(self):
        wait_for(self._until, timeout=10)
        return super().__iter__()


def test_modify_racing_a_firing_runs_no_slot_twice_and_skips_none():
    """A recurring task is modified while its next occurrences fire. The
    change applies to the task as it is now: every slot of its grid runs
    exactly once, none again (the definition read before the firing must
    not put the fired slot back) and none skipped."""
    clock = HeldClock()
    labels = []
    sched = psl.Scheduler(executor=InlineExecutor(), timefunc=clock.now,
                          delayfunc=clock.sleep, wallfunc=clock.now)
    tid = sched.delay('recur', 1, 1, labels.append, args=('old',))
    sched.start()

    def two_more_fired():
        clock.run_until(1005.5)
        return len(labels) >= 5

    try:
        clock.run_until(1003.5)
        wait_for(lambda: len(labels) >= 3)
        sched.modify(tid, args=ArgsReadSlowly(['new'], two_more_fired))
        clock.run_until(1020.5)
        wait_for(lambda: secs(sched.get_task(tid)['next_run_time']) == 1021)
    finally:
        sched.shutdown()
    slots = [round(secs(run.scheduled)) for run in sched.runs(tid)
             if run.status is S.COMPLETED]
    assert sorted(t for t, n in Counter(slots).items() if n > 1) == []  # run twice
    assert sorted(set(range(1001, 1021)) - set(slots)) == []  # never run
    assert labels.count('new') >= 10


# ----------------------------------------- runs held for a paused task


def test_runs_held_for_a_paused_task_are_let_go_when_it_is_canceled():
    """A paused task's run that waited for a worker is held back; cancel()
    drops it (CANCELED). Nothing may keep it after that: the scheduler holds
    no run of a task that is gone, and once the task is purged its run is
    garbage. (Each pause-then-cancel kept one more run forever.)"""
    kept = []
    with psl.Scheduler(executor=psl.ThreadPoolExecutor(1)) as sched:
        for _ in range(3):
            gate = threading.Event()
            blocker = sched.delay('once', 0, 1, gate.wait, args=(10,))
            wait_for(lambda: sched.get_status(blocker) is S.RUNNING)
            queued = sched.delay('once', 0, 1, lambda: None)
            sched.pause(queued)
            gate.set()  # the worker takes the queued run next, and holds it: paused
            wait_for(lambda: sched.get_status(blocker) is S.COMPLETED)
            kept.append(weakref.ref(sched.result[queued]))
            sched.cancel(queued)
            assert sched.get_status(queued) is S.CANCELED
        assert held_runs(sched) == 0
        sched.purge()
        gc.collect()
        assert [ref() for ref in kept] == [None] * 3
