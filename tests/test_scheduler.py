"""The Scheduler core: API, ordering, wake-ups, cancel, shutdown, resilience."""
from __future__ import annotations

import datetime as dt
import logging
import threading
import time

import pytest

import pysched_lightning as psl
from conftest import InlineExecutor, VirtualClock, wait_for


def virtual_scheduler(clock, **kwargs):
    return psl.Scheduler(executor=kwargs.pop("executor", InlineExecutor()),
                         timefunc=clock.now, delayfunc=clock.sleep, **kwargs)


# ------------------------------------------------------------------ basics

def test_delay_returns_string_ids_and_tasks_carry_upstream_fields():
    sched = psl.Scheduler()
    try:
        fn = lambda x: x  # noqa: E731
        tid = sched.delay('recur', 3, 2, fn, args=(1,), kwargs={'y': 2})
        assert isinstance(tid, str)
        task = sched.task[tid]
        assert (task.trigger, task.interval, task.priority, task.fn, task.args,
                task.kwargs, task.id) == ('recur', 3, 2, fn, (1,), {'y': 2}, tid)
        assert isinstance(task.time, float)
        assert sched.stopped
    finally:
        sched.shutdown()


def test_tasks_added_before_and_after_start_both_run():
    with psl.Scheduler() as sched:
        assert not sched.stopped
        early = sched.delay('once', 0, 1, lambda: 'early')
        late = sched.delay('once', 0, 1, lambda: 'late')
        assert sched.get_result(early, timeout=5) == 'early'
        assert sched.get_result(late, timeout=5) == 'late'
    assert sched.stopped


def test_context_manager_starts_and_waits_for_running_work():
    finished = threading.Event()

    def slow():
        time.sleep(0.2)
        finished.set()

    with psl.Scheduler() as sched:
        tid = sched.delay('once', 0, 1, slow)
        wait_for(lambda: sched.get_status(tid) is psl.TaskStatus.RUNNING)
    assert finished.is_set()


def test_start_twice_is_harmless_and_restart_after_shutdown_raises():
    sched = psl.Scheduler()
    sched.start()
    sched.start()
    sched.shutdown()
    with pytest.raises(RuntimeError):
        sched.start()


def test_delay_after_shutdown_raises_runtime_error():
    sched = psl.Scheduler()
    sched.start()
    sched.shutdown()
    with pytest.raises(RuntimeError, match="shutdown"):
        sched.delay('once', 0, 1, print)


def test_task_id_names_a_task_and_duplicates_follow_replace_existing():
    sched = psl.Scheduler()
    try:
        fn = lambda: None  # noqa: E731
        assert sched.delay('recur', 5, 1, fn, task_id='nightly') == 'nightly'
        time_before = sched.task['nightly'].time
        # the same definition again keeps the task and its schedule
        assert sched.delay('recur', 5, 1, fn, task_id='nightly') == 'nightly'
        assert sched.task['nightly'].time == time_before
        # a changed definition replaces it
        sched.delay('recur', 7, 1, fn, task_id='nightly')
        assert sched.task['nightly'].interval == 7
        assert len(sched.task) == 1
        with pytest.raises(ValueError, match="'nightly'"):
            sched.delay('recur', 9, 1, fn, task_id='nightly', replace_existing=False)
        assert sched.task['nightly'].interval == 7
    finally:
        sched.shutdown()


# ------------------------------------------------------------------ bad input

@pytest.mark.parametrize("args, exc, text", [
    (('sometimes', 3, 1, print), ValueError, "'sometimes'"),
    (('cron', '61 * * * *', 1, print), ValueError, "minute"),
    (('cron', '* * *', 1, print), ValueError, "3"),
    (('once', -1, 1, print), ValueError, "-1"),
    (('cron', -5, 1, print), ValueError, "-5"),
    (('recur', 0, 1, print), ValueError, "0"),
    (('recur', -2.5, 1, print), ValueError, "-2.5"),
    (('recur', 'often', 1, print), TypeError, "'often'"),
    (('once', 1, 1, 'not callable'), TypeError, "'not callable'"),
    (('once', 1, 'high', print), TypeError, "'high'"),
])
def test_bad_input_raises_at_delay_and_leaves_scheduler_unchanged(args, exc, text):
    sched = psl.Scheduler()
    try:
        keep = sched.delay('recur', 60, 1, print)
        with pytest.raises(exc) as info:
            sched.delay(*args)
        assert text in str(info.value)
        assert list(sched.task) == [keep]
    finally:
        sched.shutdown()


def test_bad_options_raise_at_delay():
    sched = psl.Scheduler()
    try:
        with pytest.raises(TypeError, match="'x'"):
            sched.delay('once', 1, 1, print, args='x')
        with pytest.raises(TypeError, match="kwargs"):
            sched.delay('once', 1, 1, print, kwargs=[1])
        with pytest.raises(ValueError, match="-1"):
            sched.delay('once', 1, 1, print, retries=-1)
        with pytest.raises(ValueError, match="timeout"):
            sched.delay('once', 1, 1, print, timeout=0)
        with pytest.raises(ValueError, match="tz"):
            sched.delay('recur', 1, 1, print, tz='Europe/Berlin')
        assert dict(sched.task) == {}
    finally:
        sched.shutdown()


# ------------------------------------------------------------------ ordering

def test_due_together_run_by_priority_then_fifo(clock):
    order = []
    sched = virtual_scheduler(clock)
    for label, priority in [('c5', 5), ('a1', 1), ('b3', 3), ('a1-second', 1)]:
        sched.delay('once', 10, priority, order.append, args=(label,))
    sched.start()
    try:
        wait_for(lambda: len(order) == 4)
        assert order == ['a1', 'a1-second', 'b3', 'c5']
    finally:
        sched.shutdown()


def test_due_time_comes_before_priority(clock):
    order = []
    sched = virtual_scheduler(clock)
    sched.delay('once', 20, 1, order.append, args=('later-urgent',))
    sched.delay('once', 10, 9, order.append, args=('sooner-lax',))
    sched.start()
    try:
        wait_for(lambda: len(order) == 2)
        assert order == ['sooner-lax', 'later-urgent']
    finally:
        sched.shutdown()


def test_urgent_task_overtakes_backlog_when_executor_is_saturated():
    gate = threading.Event()
    order = []
    sched = psl.Scheduler(executor=psl.ThreadPoolExecutor(1))
    try:
        sched.start()
        blocker = sched.delay('once', 0, 5, gate.wait)
        wait_for(lambda: sched.get_status(blocker) is psl.TaskStatus.RUNNING)
        for i in range(1000):
            sched.delay('once', 0, 5, order.append, args=(i,))
        urgent = sched.delay('once', 0, 1, order.append, args=('urgent',))
        wait_for(lambda: len(sched.result) >= 1002)  # all fired, queued for the worker
        gate.set()
        wait_for(lambda: len(order) == 1001)
        assert order[0] == 'urgent'
        assert order[1:] == list(range(1000))
        assert sched.get_status(urgent) is psl.TaskStatus.COMPLETED
    finally:
        gate.set()
        sched.shutdown()


def test_recur_has_no_drift(clock):
    starts = []

    def slow():
        starts.append(clock.now())
        clock.advance(0.7)  # each run takes 0.7 s of the 2 s period

    sched = virtual_scheduler(clock)
    sched.delay('recur', 2, 1, slow)
    t0 = clock.now()
    sched.start()
    try:
        wait_for(lambda: len(starts) >= 20)
    finally:
        sched.shutdown()
    assert [round(s - t0, 6) for s in starts[:20]] == [2.0 * k for k in range(1, 21)]


# ------------------------------------------------------------------ wake-ups

def test_task_added_ahead_of_a_sleeping_head_runs_now():
    with psl.Scheduler() as sched:
        sched.delay('once', 3600, 1, print)
        wait_for(lambda: not sched.stopped)
        time.sleep(0.05)  # let the dispatcher go to sleep on the hour-away head
        tid = sched.delay('once', 0, 1, lambda: 'now')
        assert sched.get_result(tid, timeout=5) == 'now'


def test_injected_delayfunc_is_called_with_the_wait_and_drives_time(clock):
    sched = virtual_scheduler(clock)
    tid = sched.delay('once', 42.5, 1, clock.now)
    sched.start()
    try:
        assert sched.get_result(tid, timeout=5) == pytest.approx(1042.5)
        assert 42.5 in clock.slept
    finally:
        sched.shutdown()


def test_a_day_of_cron_on_the_virtual_clock():
    runs = []
    clock = VirtualClock(1_800_000_007.0)  # a wall-clock time, not on a quarter hour
    sched = virtual_scheduler(clock, wallfunc=clock.now)
    start_wall = clock.now()
    sched.delay('cron', '*/15 * * * *', 1, lambda: runs.append(clock.now()), tz='UTC')
    sched.start()
    try:
        wait_for(lambda: len(runs) >= 96)
    finally:
        sched.shutdown()
    day = runs[:96]
    assert all(int(w) % 900 == 0 for w in day)
    assert [b - a for a, b in zip(day, day[1:])] == [900.0] * 95
    assert 0 < day[0] - start_wall <= 900


@pytest.mark.parametrize("zone, day, expression, expected_local", [
    # spring gap: 02:30 does not exist; the run happens at 03:00
    ('Europe/Berlin', dt.datetime(2026, 3, 29), '30 2 * * *', ['2026-03-29 03:00']),
    ('Australia/Sydney', dt.datetime(2026, 10, 4), '30 2 * * *', ['2026-10-04 03:00']),
    # autumn fold: 02:30 happens twice; a fixed-time job runs once
    ('Europe/Berlin', dt.datetime(2026, 10, 25), '30 2 * * *', ['2026-10-25 02:30']),
    ('Australia/Sydney', dt.datetime(2026, 4, 5), '30 2 * * *', ['2026-04-05 02:30']),
])
def test_cron_dst_through_the_scheduler(zone, day, expression, expected_local):
    from zoneinfo import ZoneInfo
    tz = ZoneInfo(zone)
    start = day.replace(tzinfo=tz).timestamp()
    clock = VirtualClock(start)
    runs = []
    sched = psl.Scheduler(executor=InlineExecutor(), timefunc=clock.now,
                          delayfunc=clock.sleep, wallfunc=clock.now)
    sched.delay('cron', expression, 1, lambda: runs.append(clock.now()), tz=zone)
    sched.start()
    try:
        wait_for(lambda: runs and runs[-1] >= start + 86400 or len(runs) >= 2)
    finally:
        sched.shutdown()
    local = [dt.datetime.fromtimestamp(r, tz).strftime('%Y-%m-%d %H:%M') for r in runs]
    assert local[:len(expected_local)] == expected_local
    assert [r for r in runs if r < start + 86400 - 3600 * 2] == runs[:len(expected_local)]


def test_wildcard_hour_cron_runs_every_real_hour_in_the_autumn_fold():
    from zoneinfo import ZoneInfo
    tz = ZoneInfo('Europe/Berlin')
    start = dt.datetime(2026, 10, 25, tzinfo=tz).timestamp()
    clock = VirtualClock(start)
    runs = []
    sched = psl.Scheduler(executor=InlineExecutor(), timefunc=clock.now,
                          delayfunc=clock.sleep, wallfunc=clock.now)
    sched.delay('cron', '0 * * * *', 1, lambda: runs.append(clock.now()), tz='Europe/Berlin')
    sched.start()
    try:
        wait_for(lambda: runs and runs[-1] >= start + 25 * 3600)
    finally:
        sched.shutdown()
    same_day = [r for r in runs if r < start + 25 * 3600]
    assert len(same_day) == 25 - 1  # 25 real hours on that day; 00:00 itself is not after start
    assert [b - a for a, b in zip(same_day, same_day[1:])] == [3600.0] * 23


def test_wall_clock_step_back_rederives_cron_instead_of_firing_early():
    mono = VirtualClock(0.0)
    wall = {'offset': dt.datetime(2030, 1, 1, 11, 0, tzinfo=dt.timezone.utc).timestamp()}
    runs = []
    sched = psl.Scheduler(executor=InlineExecutor(), timefunc=mono.now, delayfunc=mono.sleep,
                          wallfunc=lambda: wall['offset'] + mono.now())
    sched.delay('cron', '0 12 * * *', 1, lambda: runs.append(wall['offset'] + mono.now()),
                tz='UTC')
    noon = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.timezone.utc).timestamp()

    def step_back():
        wall['offset'] -= 1800  # the wall clock is set back 30 minutes

    sched.delay('once', 600, 1, step_back)
    sched.start()
    try:
        wait_for(lambda: runs)
    finally:
        sched.shutdown()
    assert runs[0] == pytest.approx(noon)  # at 12:00 on the new wall clock, not 30 min early


def test_catching_up_after_a_long_stall_is_one_step(clock):
    """A recurring task after a year-long stall: one run, not a walk over slots."""
    runs = []
    sched = virtual_scheduler(clock)
    sched.delay('recur', 1, 1, lambda: runs.append(clock.now()))
    sched.delay('once', 0.5, 1, lambda: clock.advance(365 * 86400))
    sched.start()
    try:
        wait_for(lambda: len(runs) >= 3)
    finally:
        sched.shutdown()
    # the late run happens once, then the grid resumes at the next slot
    assert 0 < runs[1] - runs[0] <= 1.0
    assert runs[2] - runs[1] == pytest.approx(1.0)
    recur = [info for info in sched.get_all() if info['trigger'] == 'recur'][0]
    assert recur['runs'] == len(runs)
    assert recur['missed'] >= 365 * 86400 - 2


# ------------------------------------------------------------------ cancel

def test_cancel_pending_one_shot_never_runs(clock):
    ran = []
    sched = virtual_scheduler(clock)
    tid = sched.delay('once', 10, 1, ran.append, args=(1,))
    marker = sched.delay('once', 20, 1, ran.append, args=(2,))
    sched.cancel(tid)
    sched.start()
    try:
        sched.get_result(marker, timeout=5)
    finally:
        sched.shutdown()
    assert ran == [2]
    assert sched.get_status(tid) is psl.TaskStatus.CANCELED
    assert tid not in sched.task


def test_cancel_recurring_between_runs_stops_further_runs(clock):
    runs = []
    sched = virtual_scheduler(clock)
    tid = sched.delay('recur', 5, 1, runs.append, args=('x',))

    def cancel_after_three():
        if len(runs) == 3:
            sched.cancel(tid)

    sched.delay('recur', 5, 2, cancel_after_three)
    done = sched.delay('once', 100, 3, lambda: None)
    sched.start()
    try:
        sched.get_result(done, timeout=5)
    finally:
        sched.shutdown()
    assert runs == ['x', 'x', 'x']


def test_cancel_unknown_id_raises_key_error_naming_it():
    sched = psl.Scheduler()
    with pytest.raises(KeyError, match="nope"):
        sched.cancel('nope')


def test_cancel_during_a_run_lets_the_run_finish():
    gate = threading.Event()
    with psl.Scheduler() as sched:
        tid = sched.delay('recur', 0.05, 1, lambda: gate.wait(5) and 'finished')
        wait_for(lambda: sched.get_status(tid) is psl.TaskStatus.RUNNING)
        sched.cancel(tid)
        run = sched.result[tid]
        gate.set()
        wait_for(lambda: run.done)
        assert run.status is psl.TaskStatus.COMPLETED
        assert run.result == 'finished'
        assert sched.get_status(tid) is psl.TaskStatus.CANCELED
        assert len(sched.runs(tid)) == 1


def test_cancel_of_many_pending_tasks_keeps_the_others():
    sched = psl.Scheduler()
    try:
        ids = [sched.delay('once', 3600, 1, print) for _ in range(5000)]
        for tid in ids[:4000]:
            sched.cancel(tid)
        assert len(sched.task) == 1000
        assert all(sched.get_status(tid) is psl.TaskStatus.SUSPENDED for tid in ids[4000:])
    finally:
        sched.shutdown()


# ------------------------------------------------------------------ shutdown

def test_shutdown_wait_false_returns_while_work_runs():
    gate = threading.Event()
    sched = psl.Scheduler()
    sched.start()
    tid = sched.delay('once', 0, 1, gate.wait)
    wait_for(lambda: sched.get_status(tid) is psl.TaskStatus.RUNNING)
    sched.shutdown(wait=False)
    assert not gate.is_set() and sched.stopped
    gate.set()
    sched.shutdown(wait=True)


def test_shutdown_timeout_bounds_the_wait_and_interrupts_the_run():
    gate = threading.Event()
    seen = []

    def cooperative():
        gate.wait(10)
        seen.append(psl.current_run().timed_out)

    sched = psl.Scheduler()
    sched.start()
    try:
        tid = sched.delay('once', 0, 1, cooperative)
        wait_for(lambda: sched.get_status(tid) is psl.TaskStatus.RUNNING)
        sched.shutdown(wait=True, timeout=0.1)
        assert not gate.is_set()  # returned while the run was still going...
        assert sched.get_status(tid) is psl.TaskStatus.INTERRUPTED  # ...marked as cut short
        with pytest.raises(RuntimeError, match="interrupted: the scheduler shut down"):
            sched.get_result(tid, timeout=1)
    finally:
        gate.set()
    wait_for(lambda: seen == [True])  # the task could see it was interrupted


def test_shutdown_from_inside_a_task_does_not_deadlock():
    done = threading.Event()
    sched = psl.Scheduler()

    def stop_everything():
        sched.shutdown(wait=True)
        done.set()

    sched.delay('once', 0, 1, stop_everything)
    sched.start()
    assert done.wait(10)
    assert sched.stopped


def test_shutdown_from_a_listener_does_not_deadlock():
    sched = psl.Scheduler()
    stopped = threading.Event()

    def listener(event):
        if event.kind is psl.EventKind.COMPLETED:
            sched.shutdown(wait=True)
            stopped.set()

    sched.add_listener(listener)
    sched.delay('once', 0, 1, lambda: None)
    sched.start()
    assert stopped.wait(10)


def test_no_threads_or_processes_left_after_shutdown(no_leaked_threads):
    psutil = pytest.importorskip("psutil")
    me = psutil.Process()
    sched = psl.Scheduler()
    sched.delay('once', 0, 1, lambda: 1)
    hard = sched.delay('once', 0, 1, abs, args=(-3,), hard=True)
    sched.start()
    assert sched.get_result(hard, timeout=60) == 3
    sched.shutdown(wait=True)

    def workers():
        return [p for p in me.children(recursive=True)
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE
                and 'resource_tracker' not in ' '.join(p.cmdline())]

    wait_for(lambda: workers() == [], timeout=10)


# ------------------------------------------------------------------ resilience

def test_exception_in_a_task_is_stored_and_the_scheduler_goes_on(caplog):
    with psl.Scheduler() as sched:
        bad = sched.delay('once', 0, 1, lambda: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            sched.get_result(bad, timeout=5)
        good = sched.delay('once', 0, 1, lambda: 'fine')
        assert sched.get_result(good, timeout=5) == 'fine'
    run = sched.result[bad]
    assert run.status is psl.TaskStatus.ERROR
    assert 'ZeroDivisionError' in run.traceback
    assert any('ZeroDivisionError' in r.getMessage() or r.exc_info for r in caplog.records)


def test_dispatcher_survives_an_internal_error_and_logs_it(clock, caplog):
    """Regression: upstream 0.1.1's dispatcher died on a bad sleep, silently."""
    calls = {'n': 0}

    def flaky_sleep(seconds):
        calls['n'] += 1
        if calls['n'] == 1:
            raise ValueError("sleep length must be non-negative")
        clock.sleep(seconds)

    sched = psl.Scheduler(executor=InlineExecutor(), timefunc=clock.now, delayfunc=flaky_sleep)
    tid = sched.delay('once', 5, 1, lambda: 'ran')
    with caplog.at_level(logging.ERROR, logger="pysched_lightning"):
        sched.start()
        try:
            assert sched.get_result(tid, timeout=5) == 'ran'
        finally:
            sched.shutdown()
    assert any('dispatcher error' in r.getMessage() for r in caplog.records)


def test_failed_run_does_not_keep_its_frames_alive():
    import gc
    import weakref

    class Big:
        pass

    refs = []

    def fail():
        big = Big()
        refs.append(weakref.ref(big))
        raise RuntimeError("boom")

    with psl.Scheduler() as sched:
        tid = sched.delay('once', 0, 1, fail)
        with pytest.raises(RuntimeError):
            sched.get_result(tid, timeout=5)
    gc.collect()
    assert refs[0]() is None
    assert 'big = Big()' in sched.result[tid].traceback or 'boom' in sched.result[tid].traceback


# ------------------------------------------------------------------ regressions

def test_a_clock_that_fails_now_and_then_loses_no_run_and_no_worker_slot(caplog):
    """A failure part-way through a dispatch pass used to keep the slots of
    the runs it had already started: the pool shrank for good. The user's
    clock is the one part of a pass that is not the scheduler's own code."""
    calls = {'n': 0}

    def flaky_clock():  # fails now and then, in the dispatcher's passes only
        if threading.current_thread().name == "pysched-dispatcher":
            calls['n'] += 1
            if calls['n'] % 7 == 0:
                raise OSError("the clock hiccupped")
        return time.monotonic()

    done = []
    sched = psl.Scheduler(executor=psl.ThreadPoolExecutor(2), timefunc=flaky_clock)
    sched.start()
    try:
        for i in range(200):
            sched.delay('once', 0.001 * (i % 5), 1, done.append, args=(i,))
        wait_for(lambda: len(done) == 200, timeout=10)
        assert any('reading the clock failed' in r.getMessage() for r in caplog.records)
        last = sched.delay('once', 0, 1, lambda: 'still two workers')
        assert sched.get_result(last, timeout=5) == 'still two workers'
    finally:
        sched.shutdown()


def test_a_log_handler_may_call_back_into_the_scheduler():
    """Log records were emitted with the scheduler's lock held: a handler
    that asked the scheduler anything deadlocked it."""
    seen = []

    class Asking(logging.Handler):
        def emit(self, record):
            seen.append(len(sched.get_all()))

    handler = Asking()
    logger = logging.getLogger("pysched_lightning")
    logger.addHandler(handler)
    try:
        with psl.Scheduler() as sched:
            tid = sched.delay('once', 0, 1, lambda: 1 / 0)
            with pytest.raises(ZeroDivisionError):
                sched.get_result(tid, timeout=5)
            wait_for(lambda: seen)
    finally:
        logger.removeHandler(handler)


@pytest.mark.parametrize("options, says", [
    (dict(retry_delay=-1), "retry_delay"),
    (dict(retry_backoff=-2), "retry_backoff"),
    (dict(retry_backoff=0.5, retries=0), "retry_backoff"),
    (dict(max_instances=0), "max_instances"),
    (dict(coalesce="yes"), "coalesce"),
    (dict(timeout=0), "timeout"),
    (dict(misfire_grace_time=-1), "misfire_grace_time"),
    (dict(name=3), "name"),
])
@pytest.mark.parametrize("named", [False, True])
def test_bad_options_are_refused_on_every_path(options, says, named, tmp_path):
    """Options were checked only off the fast path: retry_delay=-1 with no
    retries was accepted."""
    kwargs = dict(task_id="named") if named else {}
    with psl.Scheduler(store=str(tmp_path / "s.db") if named else None) as sched:
        with pytest.raises((TypeError, ValueError), match=says):
            sched.delay('once', 0, 1, print, **options, **kwargs)
        assert dict(sched.task) == {} and sched.get_all() == []


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the storm hits GC too
def test_an_interrupt_during_delay_never_leaves_the_scheduler_locked():
    """The adaptive lock of the old core could be left held by a
    KeyboardInterrupt landing right after its non-blocking acquire (delay()
    runs in the main thread, where SIGINT lands): the scheduler deadlocked.
    Interrupted anywhere in delay(), it stays usable and shuts down. (The
    tasks are due later: an interrupt inside the standard library's own
    thread pool can break that pool, whoever uses it.)"""
    import signal
    armed = [False]

    def interrupt(signum, frame):
        if armed[0]:  # once per arming: the test's own lines are never hit
            armed[0] = False
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    interrupted = 0
    sched = psl.Scheduler(executor=psl.ThreadPoolExecutor(2))
    sched.start()
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.0003, 0.0003)
        deadline = time.monotonic() + 5
        while interrupted < 300 and time.monotonic() < deadline:
            armed[0] = True
            try:
                for _ in range(50):
                    sched.delay('once', 3600, 1, int)
                    sched.get_status(sched.delay('recur', 60, 1, int))
            except KeyboardInterrupt:
                interrupted += 1
            armed[0] = False
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert interrupted > 0
    assert sched.get_result(sched.delay('once', 0, 1, lambda: 'alive'), timeout=5) == 'alive'
    sched.shutdown(wait=True, timeout=30)  # returns: nothing is left waiting forever
    assert sched.stopped


# ------------------------------------------------------------------ workers

def test_workers_counts_busy_waiting_and_held_runs_per_lane():
    """Two workers, both busy with a blocked task: a third run waits; once
    its task is paused, a free worker holds it instead of running it."""
    release = threading.Event()
    sched = psl.Scheduler(executor=psl.ThreadPoolExecutor(max_workers=2))
    try:
        (threads,) = sched.workers()  # one lane before any run
        assert (threads.kind, threads.size, threads.busy, threads.waiting, threads.held) == \
            ("threads", 2, 0, 0, 0)
        sched.start()
        for n in range(3):
            sched.delay("once", 0, 1, release.wait, args=(10,), task_id=f"block-{n}")
        wait_for(lambda: sched.workers()[0][2:4] == (2, 1))
        (threads,) = sched.workers()
        assert (threads.size, threads.busy, threads.waiting) == (2, 2, 1)
        waiting = next(f"block-{n}" for n in range(3)
                       if sched.get_status(f"block-{n}") is not psl.TaskStatus.RUNNING)
        sched.pause(waiting)
        release.set()  # a worker comes for the paused task's run, and holds it
        wait_for(lambda: sched.workers()[0][2:] == (0, 0, 1))
        sched.resume(waiting)
        wait_for(lambda: sched.workers()[0][2:] == (0, 0, 0))
    finally:
        release.set()
        sched.shutdown()


def test_workers_shows_the_process_lane_once_made():
    sched = psl.Scheduler()
    try:
        sched.start()
        tid = sched.delay("once", 0, 1, abs, args=(-3,), hard=True)
        assert sched.get_result(tid, timeout=60) == 3
        kinds = {load.kind: load for load in sched.workers()}
        assert set(kinds) == {"threads", "processes"}
        assert kinds["processes"].size is not None and kinds["processes"].size >= 1
        wait_for(lambda: {load.kind: load.busy for load in sched.workers()}["processes"] == 0)
    finally:
        sched.shutdown()


def test_get_result_on_a_scheduler_never_started_says_so(tmp_path):
    """``get_result()`` before ``start()`` waited for ever (or until its
    timeout) for a run that could never come; it says why at once. A
    result the store already holds is still given."""
    store = str(tmp_path / "jobs.db")
    with psl.Scheduler(store=store) as sched:
        done = sched.delay('once', 0, 1, len, args=("abc",), task_id="done")
        assert sched.get_result(done, timeout=10) == 3
    sched = psl.Scheduler(store=store)
    try:
        assert sched.get_result("done") == 3
        waiting = sched.delay('once', 0, 1, len, args=("abcd",))
        with pytest.raises(RuntimeError, match="the scheduler was never started: call "
                                               r"start\(\) first"):
            sched.get_result(waiting, timeout=5)  # (not for ever, had it waited)
    finally:
        sched.shutdown()
