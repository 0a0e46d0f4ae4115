"""A scheduler with a store: durable tasks, restarts, catch-up, crashes, run log."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter

import pytest

import pysched_lightning as psl
from pysched_lightning.durability.runlog import read_run_log
from pysched_lightning.durability.stores import open_store
from conftest import InlineExecutor, HeldClock, secs, wait_for

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tick(label):
    return label


def fail_always():
    raise RuntimeError("broken on purpose")


@pytest.fixture(params=["memory", "sqlite"])
def store(request, tmp_path):
    if request.param == "memory":
        return psl_store_memory()
    return open_store(f"sqlite:///{tmp_path}/jobs.db")  # tmp_path is absolute: four slashes


def psl_store_memory():
    return open_store("memory://")


def virtual(clock, store, **kwargs):
    options = dict(executor=InlineExecutor(), timefunc=clock.now, delayfunc=clock.sleep,
                   wallfunc=clock.now, store=store)
    options.update(kwargs)
    return psl.Scheduler(**options)


def stops_after_first_call(clock, marker):
    """A ``delayfunc`` whose virtual time stands still once the task of
    *marker* was called: its retry stays pending until the shutdown."""
    def delay(seconds):
        if os.path.exists(marker):
            time.sleep(0.005)
        else:
            clock.sleep(seconds)
    return delay


# ------------------------------------------------------------- one suite, both stores

def test_delay_is_durable_when_it_returns(store, clock):
    sched = virtual(clock, store)
    try:
        tid = sched.delay('recur', 60, 3, tick, args=('a',), task_id='every-minute')
        records = {r.id: r for r in store.load_tasks()}
        record = records[tid]
        assert record.trigger == 'recur' and record.priority == 3
        assert record.fn_ref == f"{__name__}:tick" and record.stored_as == 'import'
        assert record.next_run == pytest.approx(clock.now() + 60)
    finally:
        sched.shutdown()


def test_function_without_import_name_is_pickled(store, clock):
    sched = virtual(clock, store)
    try:
        tid = sched.delay('once', 5, 1, lambda: 'from a lambda')
        assert sched.get_task(tid)['stored_as'] == 'pickle'
    finally:
        sched.shutdown()


def test_task_that_cannot_be_stored_is_refused_at_delay(store, clock):
    lock = threading.Lock()
    sched = virtual(clock, store)
    try:
        with pytest.raises(TypeError, match="args"):
            sched.delay('once', 5, 1, tick, args=(lock,))
        assert store.load_tasks() == [] and dict(sched.task) == {}
    finally:
        sched.shutdown()


def test_restart_loads_tasks_and_catches_up_a_missed_slot_once(store, clock):
    first = virtual(clock, store)
    tid = first.delay('recur', 60, 1, tick, args=('x',), task_id='minutely')
    first.start()
    wait_for(lambda: first.get_task(tid)['runs'] >= 2)
    first.shutdown()
    runs_before = len(store.runs(tid))
    clock.advance(3600)  # down for an hour: 60 slots passed
    second = virtual(clock, store)
    try:
        assert second.get_task(tid)['runs'] == first.get_task(tid)['runs']
        restart = clock.now()
        second.start()
        ran = lambda: [r for r in store.runs(tid) if r['status'] != psl.TaskStatus.MISSED]
        wait_for(lambda: len(ran()) >= runs_before + 2)
        new = sorted(r['scheduled'] for r in ran())[runs_before:]
        assert new[0] < restart  # the missed slot ran once at start...
        assert new[1] > restart  # ...then the regular grid, not 60 catch-up runs
        assert second.get_task(tid)['missed'] >= 59
        [skipped] = [r for r in store.runs(tid) if r['status'] == psl.TaskStatus.MISSED]
        assert skipped['count'] >= 59  # one record for the slots coalesced away
    finally:
        second.shutdown()


def test_a_recurring_task_whose_stored_next_run_was_claimed_goes_on_with_the_next_one(
        store, clock):
    """``modify()`` racing a firing may store the occurrence that just fired
    as the task's next run (its record is made from the definition read
    before the firing). After a restart that occurrence is not tried again
    (its claim would be refused, a MISSED "already claimed"): the next one
    runs, and the task reads the status of the run that ran."""
    first = virtual(clock, store)
    tid = first.delay('recur', 60, 1, tick, args=('x',), task_id='minutely')
    first.start()
    wait_for(lambda: first.get_task(tid)['runs'] >= 2)
    first.shutdown()
    ran = store.runs(tid)
    claimed = max(row['scheduled'] for row in ran)
    store.update_task(tid, next_run=claimed, status=int(psl.TaskStatus.SUSPENDED))
    second = virtual(clock, store)
    try:
        assert second.get_status(tid) is psl.TaskStatus.COMPLETED
        second.start()
        wait_for(lambda: len(store.runs(tid)) >= len(ran) + 2)
    finally:
        second.shutdown()
    rows = store.runs(tid)
    assert [row for row in rows if row['status'] == psl.TaskStatus.MISSED] == []
    slots = [row['slot'] for row in rows]
    assert len(slots) == len(set(slots))
    assert min(row['scheduled'] for row in rows[:-len(ran)]) > claimed


def note_call(marker, label):
    """Notes a call in *marker* (stops the clock of ``stops_after_first_call``)."""
    write_marker(marker, label)
    return label


def test_a_rescheduled_task_may_run_a_slot_its_old_trigger_ran(store, clock, tmp_path):
    """``reschedule()`` to a one-shot at the instant of a slot the old
    trigger ran (a datetime, or a delay of 0 in the millisecond of the last
    run): the new occurrence runs, it is not refused as claimed already."""
    marker = str(tmp_path / "calls")
    sched = virtual(clock, store, delayfunc=stops_after_first_call(clock, marker))
    sched.start()
    try:
        tid = sched.delay('recur', 60, 1, note_call, args=(marker, 'x'), task_id='minutely')
        wait_for(lambda: sched.get_status(tid) is psl.TaskStatus.COMPLETED)
        [ran] = sched.runs(tid)
        sched.reschedule(tid, 'once', ran.scheduled)
        wait_for(lambda: len(sched.runs(tid)) == 2 and tid not in sched.task)
        runs = sched.runs(tid)
    finally:
        sched.shutdown()
    assert [run.status for run in runs] == [psl.TaskStatus.COMPLETED] * 2
    assert runs[0].scheduled == ran.scheduled
    assert sorted(row['status'] for row in store.runs(tid)) == [psl.TaskStatus.COMPLETED] * 2


def test_identical_task_re_added_after_restart_keeps_its_schedule(store, clock):
    first = virtual(clock, store)
    first.delay('recur', 60, 1, tick, args=('x',), task_id='keep')
    next_run = store.load_tasks()[0].next_run
    first.shutdown()
    clock.advance(30)
    second = virtual(clock, store)
    try:
        second.delay('recur', 60, 1, tick, args=('x',), task_id='keep')
        assert store.load_tasks()[0].next_run == pytest.approx(next_run)
        second.delay('recur', 120, 1, tick, args=('x',), task_id='keep')  # changed: replaced
        [record] = store.load_tasks()
        assert json.loads(record.interval) == 120
    finally:
        second.shutdown()


def test_cancel_removes_from_store_and_history_is_queryable(store, clock):
    sched = virtual(clock, store)
    try:
        ok = sched.delay('once', 1, 1, tick, args=('done',))
        bad = sched.delay('once', 2, 1, fail_always)
        pending = sched.delay('once', 3600, 1, tick, args=('never',))
        assert {r.id for r in store.load_tasks()} == {ok, bad, pending}
        sched.cancel(pending)
        assert {r.id for r in store.load_tasks()} == {ok, bad}
        sched.start()
        wait_for(lambda: sched.get_status(bad) is psl.TaskStatus.ERROR)
        finished = {r.id: r for r in store.load_tasks()}  # kept, finished, until purged
        assert set(finished) == {ok, bad} and finished[ok].next_run is None
        assert finished[ok].status == psl.TaskStatus.COMPLETED
        [ok_run] = sched.runs(ok)
        assert ok_run.status is psl.TaskStatus.COMPLETED and ok_run.result == 'done'
        [bad_run] = sched.runs(bad)
        assert bad_run.status is psl.TaskStatus.ERROR
        assert 'broken on purpose' in bad_run.traceback
        assert isinstance(bad_run.exception, RuntimeError)  # kept, pickled
        assert sched.purge() >= 2
        assert store.runs(ok) == [] and store.runs(bad) == []
        assert store.load_tasks() == []  # purge takes finished tasks too
    finally:
        sched.shutdown()


def test_store_clear_wipes_everything(store, clock):
    sched = virtual(clock, store)
    sched.delay('recur', 10, 1, tick, args=('x',))
    sched.shutdown()
    store.clear()
    assert store.load_tasks() == [] and store.runs() == []


def test_second_scheduler_on_the_same_store_waits_as_standby(tmp_path):
    path = tmp_path / "jobs.db"
    ran = []
    active = psl.Scheduler(store=path)
    tid = active.delay('recur', 0.05, 1, tick, args=('a',), task_id='fast')
    active.start()
    wait_for(lambda: active.get_task(tid)['runs'] >= 1)
    standby = psl.Scheduler(store=path)
    try:
        standby.start()
        assert dict(standby.task) == {}  # runs nothing while the first one holds the store
        active.shutdown()
        wait_for(lambda: 'fast' in standby.task, timeout=10)
        before = standby.get_task('fast')['runs']
        wait_for(lambda: standby.get_task('fast')['runs'] > before, timeout=10)
    finally:
        active.shutdown()
        standby.shutdown()
    assert not ran


def test_json_run_log_has_a_line_per_finished_run(tmp_path):
    log = tmp_path / "job_status.log"
    with psl.Scheduler(run_log=str(log)) as sched:
        ok = sched.delay('once', 0, 1, psl.command(["sh", "-c", "echo out; echo err >&2"]))
        bad = sched.delay('once', 0, 1, psl.command(["sh", "-c", "echo oops >&2; exit 3"]))
        sched.get_result(ok, timeout=10)
        with pytest.raises(psl.CommandError):
            sched.get_result(bad, timeout=10)
    lines = {entry['task_id']: entry for entry in read_run_log(log)}
    assert lines[ok]['status'] == 'Completed' and lines[ok]['output'] == 'out\n'
    assert lines[ok]['stderr'] == 'err\n' and lines[ok]['exit_code'] == 0
    assert lines[bad]['status'] == 'Error' and lines[bad]['exit_code'] == 3
    assert 'oops' in lines[bad]['stderr'] and 'CommandError' in lines[bad]['traceback']
    assert lines[ok]['started'].endswith('+00:00')


# ------------------------------------------------------------- a real crash

CHILD = textwrap.dedent("""
    import sys, time
    import pysched_lightning as psl
    sched = psl.Scheduler(store=sys.argv[1])
    sched.delay('recur', 0.2, 1, time.time, task_id='heartbeat')
    sched.start()
    print('started', flush=True)
    i = 0
    while True:
        tid = sched.delay('once', 3600 + i, 1, time.time, task_id=f'later-{i}')
        print(tid, flush=True)
        i += 1
""")


def test_store_of_a_killed_scheduler_loads_cleanly_and_loses_no_task(tmp_path):
    path = tmp_path / "jobs.db"
    env = dict(os.environ, PYTHONPATH=REPO)
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE,
                             text=True, env=env)
    accepted = []
    try:
        assert child.stdout.readline().strip() == 'started'
        while len(accepted) < 200:
            accepted.append(child.stdout.readline().strip())
        wait_for(lambda: len(open_store(path).runs('heartbeat')) >= 3)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    sched = psl.Scheduler(store=path)
    try:
        loaded = set(sched.task)
        assert set(accepted) <= loaded
        assert 'heartbeat' in loaded
        # a run cut short by the kill is an error now, not "running" forever
        assert all(r.status is not psl.TaskStatus.RUNNING for r in sched.runs('heartbeat'))
        before = len(sched.runs('heartbeat'))
        sched.start()
        wait_for(lambda: len(sched.runs('heartbeat')) > before)
    finally:
        sched.shutdown()


# ------------------------------------------------------------------ regressions

def write_marker(path, text):
    with open(path, "a") as out:
        out.write(text + "\n")


def wait_for_file(path):
    wait_for(lambda: os.path.exists(path), timeout=30)


def test_clean_shutdown_keeps_queued_one_shots_for_the_restart(store, tmp_path):
    """A one-shot that waited for a worker at shutdown used to be refused
    after the restart as 'already claimed by another scheduler'."""
    gate, marker = str(tmp_path / "open"), str(tmp_path / "ran")
    first = psl.Scheduler(executor=psl.ThreadPoolExecutor(1), store=store)
    first.start()
    blocker = first.delay('once', 0, 1, wait_for_file, args=(gate,))
    wait_for(lambda: first.get_status(blocker) is psl.TaskStatus.RUNNING)
    queued = first.delay('once', 0, 1, write_marker, args=(marker, 'once'),
                         task_id='queued-one-shot')
    assert first.get_status(queued) is psl.TaskStatus.SUSPENDED
    open(gate, "w").close()
    first.shutdown(wait=True)
    assert not os.path.exists(marker)  # it never started
    second = psl.Scheduler(store=store)
    second.start()
    try:
        assert second.get_result(queued, timeout=30) is None
        wait_for(lambda: second.get_status(blocker) is psl.TaskStatus.COMPLETED)
    finally:
        second.shutdown()
    with open(marker) as runs:
        assert runs.read() == "once\n"  # after the restart, once


def test_shutdown_without_wait_records_runs_that_finish_later_and_releases_the_store(
        store, tmp_path, no_leaked_threads):
    gate = str(tmp_path / "open")
    sched = psl.Scheduler(store=store, run_log=str(tmp_path / "runs.log"))
    sched.start()
    tid = sched.delay('once', 0, 1, wait_for_file, args=(gate,))
    wait_for(lambda: sched.get_status(tid) is psl.TaskStatus.RUNNING)
    sched.shutdown(wait=False)
    open(gate, "w").close()
    wait_for(lambda: [r for r in store.runs(tid) if r['status'] == psl.TaskStatus.COMPLETED])
    wait_for(lambda: store.holder() is None)
    wait_for(lambda: read_run_log(str(tmp_path / "runs.log")))
    assert read_run_log(str(tmp_path / "runs.log"))[0]["status"] == "Completed"


def test_get_result_of_a_task_loaded_from_the_store(store, clock):
    first = virtual(clock, store)
    first.start()
    done = first.delay('once', 0, 1, tick, args=('kept',), task_id='done')
    failed = first.delay('once', 0, 1, fail_always, task_id='failed')
    assert first.get_result(done, timeout=5) == 'kept'
    wait_for(lambda: first.get_status(failed) is psl.TaskStatus.ERROR)
    first.shutdown()
    second = virtual(clock, store)
    try:
        assert second.get_status(done) is psl.TaskStatus.COMPLETED
        assert second.get_result(done, timeout=5) == 'kept'
        with pytest.raises(RuntimeError, match="broken on purpose"):
            second.get_result(failed, timeout=5)
        assert second.runs(done)[0].status is psl.TaskStatus.COMPLETED
    finally:
        second.shutdown()


def test_two_manual_runs_in_the_same_millisecond_both_run(store, clock):
    sched = virtual(clock, store)
    try:
        tid = sched.delay('once', 3600, 1, tick, args=('now',))
        sched.run_now(tid)
        sched.run_now(tid)  # the virtual clock has not moved: the same instant
        sched.start()
        def manual():
            return {r['slot'] for r in store.runs(tid)
                    if r['slot'].startswith('now:') and r['status'] == psl.TaskStatus.COMPLETED}
        wait_for(lambda: len(manual()) == 2)
    finally:
        sched.shutdown()


def test_a_wall_clock_stepped_back_does_not_refuse_a_recurring_tasks_runs(store, clock):
    """Runs keyed by their wall time collided with the runs before the step:
    they were refused as 'already claimed' and counted missed."""
    wall = {'offset': 1_800_000_000.0}
    sched = psl.Scheduler(executor=InlineExecutor(), timefunc=clock.now,
                          delayfunc=clock.sleep, store=store,
                          wallfunc=lambda: clock.now() + wall['offset'])
    try:
        tid = sched.delay('recur', 60, 1, tick, args=('x',))
        sched.start()
        wait_for(lambda: sched.get_task(tid)['runs'] >= 3)
        wall['offset'] -= 180  # the wall clock steps back by three intervals
        before = sched.get_task(tid)['runs']
        wait_for(lambda: sched.get_task(tid)['runs'] >= before + 5)
        assert sched.get_task(tid)['missed'] == 0
        refused = [r for r in store.runs(tid) if r['status'] == psl.TaskStatus.MISSED]
        assert refused == []
    finally:
        sched.shutdown()


def test_a_wildcard_cron_job_runs_the_instants_a_step_back_repeats_with_a_store(store):
    """README: a step back of the wall clock does not silence a wildcard
    cron job; it runs at the instants that come again. With a store their
    slots were claimed already: each repeated instant is named by a pass of
    its own, so it is not refused (nor counted missed), also by a scheduler
    restarted while the instants repeat."""
    clock = HeldClock()
    wall = {'offset': 1_800_000_000.0 - clock.now()}

    def scheduler():
        return psl.Scheduler(executor=InlineExecutor(), timefunc=clock.now, delayfunc=clock.sleep,
                             store=store, wallfunc=lambda: clock.now() + wall['offset'])
    first = scheduler()
    tid = first.delay('cron', '*/10 * * * * *', 1, tick, args=('x',), task_id='ten-seconds')
    first.start()
    try:
        clock.run_until(clock.now() + 60)
        wait_for(lambda: first.get_task(tid)['runs'] == 6)
        wall['offset'] -= 55  # the last five instants come again
        clock.run_until(clock.now() + 25)
        wait_for(lambda: first.get_task(tid)['runs'] >= 8)
    finally:
        first.shutdown()
    second = scheduler()
    second.start()
    try:
        clock.run_until(clock.now() + 25)
        wait_for(lambda: second.get_task(tid)['runs'] >= 10)
        missed = second.get_task(tid)['missed']
    finally:
        second.shutdown()
    rows = store.runs(tid)
    assert missed == 0 and [r for r in rows if r['status'] != psl.TaskStatus.COMPLETED] == []
    assert len({r['slot'] for r in rows}) == len(rows) >= 10
    walls = [r['scheduled'] for r in rows]
    assert len(walls) - len(set(walls)) >= 4  # instants that ran twice, two after the restart


def test_a_wildcard_cron_job_stopped_just_after_a_step_back_runs_every_repeated_instant_later(
        store):
    """The wall clock stepped back a minute and the scheduler stopped before
    any instant came again; restarted ten minutes later (coalesce=False:
    every instant missed runs), it named the repeated instants as the first
    pass had, and those the first pass had claimed (+10, +20, +30) were
    refused as claimed already: lost (found by the model torture)."""
    clock = HeldClock()
    start = 1_800_000_000.0
    wall = {'offset': start - clock.now()}

    def scheduler():
        return psl.Scheduler(executor=InlineExecutor(), timefunc=clock.now, delayfunc=clock.sleep,
                             store=store, wallfunc=lambda: clock.now() + wall['offset'])
    first = scheduler()
    tid = first.delay('cron', '*/10 * * * * *', 1, tick, args=('x',), task_id='ten-seconds',
                      coalesce=False)
    first.start()
    try:
        clock.run_until(clock.now() + 30)
        wait_for(lambda: first.get_task(tid)['runs'] == 3)  # +10, +20, +30
        wall['offset'] -= 60  # the wall clock reads -30: -20 .. +30 come (again)
        wait_for(lambda: first.get_task(tid)["next_run_time"].timestamp() < start)  # (noticed)
    finally:
        first.shutdown()
    clock.advance(600)  # down ten minutes: the wall clock reads +570
    second = scheduler()
    second.start()
    try:
        wait_for(lambda: second.get_task(tid)['runs'] >= 3 + 6 + 54)
        info = second.get_task(tid)
    finally:
        second.shutdown()
    assert (info['runs'], info['missed']) == (63, 0)
    rows = store.runs(tid)
    assert [r for r in rows if r['status'] != psl.TaskStatus.COMPLETED] == []
    walls = sorted(round(r['scheduled'] - start) for r in rows)
    assert walls == sorted(list(range(-20, 571, 10)) + [10, 20, 30])


def test_a_finished_one_shot_with_a_task_id_is_not_run_again_after_a_restart(store, tmp_path):
    marker = str(tmp_path / "migrated")
    for _ in range(2):  # start-up code, run twice
        sched = psl.Scheduler(store=store)
        sched.start()
        tid = sched.delay('once', 0, 1, write_marker, args=(marker, 'migrate'),
                          task_id='migrate')
        assert sched.get_result(tid, timeout=30) is None
        sched.shutdown()
    with open(marker) as runs:
        assert runs.read() == "migrate\n"


def test_a_store_written_by_the_previous_version_loads_and_runs(tmp_path):
    """tests/data/store-schema1.db was written by pysched_lightning 0.2 (schema
    1, command tasks pickled under the old ``pysched_lightning.jobs`` module)."""
    import shutil
    path = tmp_path / "old.db"
    shutil.copy(os.path.join(REPO, "tests", "data", "store-schema1.db"), path)
    # The wall clock reads as just after the file was written, so its
    # one-shot 'later' is still an hour away whatever today's date is.
    written = 1796046050.94
    shift = time.time() - written
    with psl.Scheduler(store=str(path), wallfunc=lambda: time.time() - shift) as sched:
        assert {'echo-hourly', 'daily', 'later'} <= set(sched.task)
        [done] = sched.runs('done-once')  # the task itself left the store when it ended
        assert done.status is psl.TaskStatus.COMPLETED and done.run_number == 1
        assert sched.next_run_times('daily', 1)[0].hour == 6
        sched.run_now('echo-hourly')
        wait_for(lambda: sched.runs('echo-hourly'))
        wait_for(lambda: sched.runs('echo-hourly')[0].status is psl.TaskStatus.COMPLETED)
        assert sched.runs('echo-hourly')[0].output == "hello\n"


# ------------------------------------------- a new task due now: one commit


class RefusingNamedTasks:
    """A real store that cannot store tasks named 'refused'."""

    def __init__(self, store):
        self._store = store

    def __getattr__(self, name):
        return getattr(self._store, name)

    def save_task(self, record, replace=True):
        if record.name == "refused":
            raise OSError("disk says no")
        return self._store.save_task(record, replace)


def test_a_task_due_now_is_claimed_in_the_store_when_delay_returns(store, tmp_path):
    """Its first run's claim is written with the task itself."""
    go = tmp_path / "go"
    with psl.Scheduler(executor=psl.ThreadPoolExecutor(1), store=store) as sched:
        first = sched.delay('once', 0, 1, wait_for_file, args=(str(go),))
        assert [run["status"] for run in store.runs(first)] == [int(psl.TaskStatus.RUNNING)]
        go.write_text("go")
        assert sched.get_result(first, timeout=30) is None
    assert [run["status"] for run in store.runs(first)] == [int(psl.TaskStatus.COMPLETED)]


def test_a_new_task_that_cannot_be_stored_gives_back_the_worker_it_had_reserved(store):
    """A task due now reserves a worker slot before it is stored; when the
    write fails, delay() raises and the one worker is free again."""
    with psl.Scheduler(executor=psl.ThreadPoolExecutor(1),
                       store=RefusingNamedTasks(store)) as sched:
        for _ in range(3):
            with pytest.raises(psl.StoreWriteError, match="disk says no"):
                sched.delay('once', 0, 1, tick, args=('x',), name='refused')
        assert sched.get_result(sched.delay('once', 0, 1, tick, args=('y',)), timeout=30) == 'y'
        assert [record.name for record in store.load_tasks()] == ['tick']


# ------------------------------------------------------------- retries across a restart


def fail_first_attempt(marker):
    """A task that fails on its first call; later calls return their number."""
    write_marker(marker, 'call')
    with open(marker) as calls:
        number = len(calls.read().split())
    if number == 1:
        raise RuntimeError("the first attempt fails")
    return number


def test_a_retry_pending_at_a_clean_shutdown_runs_after_the_restart(tmp_path, clock):
    """A one-shot with ``retries=2`` fails its first attempt and the
    scheduler shuts down cleanly while the retry waits. After a restart on
    the same store, the retry runs as attempt 2, at the time it was due (the
    delay counts from the failure, restart or not); it is not taken for a
    slot that another scheduler ran.

    (The virtual clock stands still after the first call, so the retry is
    still pending at shutdown.)"""
    path, marker = str(tmp_path / "jobs.db"), str(tmp_path / "calls")
    first = virtual(clock, path, delayfunc=stops_after_first_call(clock, marker))
    first.start()
    try:
        tid = first.delay('once', 0, 1, fail_first_attempt, args=(marker,), retries=2,
                          retry_delay=60, task_id='flaky')
        wait_for(lambda: [run.status for run in first.runs(tid)] == [psl.TaskStatus.ERROR])
        failed_at = secs(first.runs(tid)[0].finished)
    finally:
        first.shutdown()
    second = virtual(clock, path)
    second.start()
    try:
        assert second.get_result(tid, timeout=10) == 2
        runs = second.runs(tid)
    finally:
        second.shutdown()
    assert [(run.attempt, run.status) for run in runs] == [
        (2, psl.TaskStatus.COMPLETED), (1, psl.TaskStatus.ERROR)]
    assert secs(runs[0].started) >= failed_at + 60


def hold_until(marker):
    """Hold a worker until *marker* exists (at most 30 s)."""
    deadline = time.monotonic() + 30
    while not os.path.exists(marker) and time.monotonic() < deadline:
        time.sleep(0.01)


def test_a_retry_waiting_for_a_worker_at_shutdown_leaves_its_task_suspended(tmp_path):
    """A one-shot fails; its retry comes due while the only worker is busy,
    and the scheduler shuts down before the retry gets it. The retry is owed
    to the restart, so the task reads SUSPENDED, not the failure's ERROR: a
    ``modify()`` during the shutdown stored that status, and the restart took
    the failure for one judged by an earlier definition and never retried it
    (found by the crash torture)."""
    import concurrent.futures
    path, release = str(tmp_path / "jobs.db"), str(tmp_path / "release")
    sched = psl.Scheduler(concurrent.futures.ThreadPoolExecutor(1), store=path)
    sched.start()
    try:
        tid = sched.delay('once', 0, 1, fail_always, retries=2, retry_delay=0.3)
        wait_for(lambda: [run.status for run in sched.runs(tid)] == [psl.TaskStatus.ERROR])
        busy = sched.delay('once', 0, 1, hold_until, args=(release,))
        wait_for(lambda: sched.get_status(busy) is psl.TaskStatus.RUNNING)
        due = time.monotonic() + 0.5  # the retry comes due and waits for the worker
        wait_for(lambda: time.monotonic() > due)
    finally:
        sched.shutdown(timeout=0.2)
        write_marker(release, "go")
    assert sched.get_status(tid) is psl.TaskStatus.SUSPENDED
    again = psl.Scheduler(store=path)
    again.start()
    try:
        wait_for(lambda: [run.attempt for run in again.runs(tid)
                          if run.status is psl.TaskStatus.ERROR] == [3, 2, 1])
    finally:
        again.shutdown()


def test_a_changed_definition_under_a_finished_id_is_owed_none_of_the_old_ones_retries(
        store, clock):
    """A named one-shot fails (no retries) and is re-added with a changed
    definition that allows a retry and completes. After a restart the new
    definition owes nothing: the old one's failure is not its retry. Run
    numbers go on under the id, in memory and in the store."""
    first = virtual(clock, store)
    first.start()
    try:
        tid = first.delay('once', 0, 1, fail_always, task_id='nightly')
        wait_for(lambda: first.get_status(tid) is psl.TaskStatus.ERROR)
        first.delay('once', 0, 1, tick, args=('new',), task_id='nightly', retries=1)
        wait_for(lambda: first.get_status(tid) is psl.TaskStatus.COMPLETED)
        numbers = sorted(run.run_number for run in first.runs(tid))
    finally:
        first.shutdown()
    assert numbers == [1, 2]
    second = virtual(clock, store)
    second.start()
    try:
        # a retry owed would be due now: it would run before this one
        later = second.delay('once', 1, 1, tick, args=('later',))
        assert second.get_result(later, timeout=10) == 'later'
        runs = second.runs(tid)
        status = second.get_status(tid)
    finally:
        second.shutdown()
    assert sorted((run.run_number, run.attempt, run.status) for run in runs) == [
        (1, 1, psl.TaskStatus.ERROR), (2, 1, psl.TaskStatus.COMPLETED)]
    assert status is psl.TaskStatus.COMPLETED


def status_on_loading(clock, store, task_id):
    """The status a scheduler that loads *store* reads for *task_id*."""
    sched = virtual(clock, store)
    try:
        return sched.get_status(task_id)
    finally:
        sched.shutdown()


def test_a_retry_the_catch_up_stood_for_is_not_owed_at_a_later_restart(store, clock, tmp_path):
    """A recurring task's first run fails with a retry to come, and the
    scheduler is down past its next slot: after the restart that slot runs
    instead of the retry (the catch-up stands for it). The retry is recorded
    as skipped, so a later restart does not owe it; while it is owed the
    task reads SUSPENDED, once it is not, its latest run's status."""
    marker = str(tmp_path / "calls")
    first = virtual(clock, store, delayfunc=stops_after_first_call(clock, marker))
    first.start()
    try:
        tid = first.delay('recur', 60, 1, fail_first_attempt, args=(marker,), retries=1,
                          retry_delay=30, task_id='flaky')
        wait_for(lambda: [run.status for run in first.runs(tid)] == [psl.TaskStatus.ERROR])
    finally:
        first.shutdown()
    assert status_on_loading(clock, store, tid) is psl.TaskStatus.SUSPENDED
    clock.advance(180)
    second = virtual(clock, store)
    assert second.get_status(tid) is psl.TaskStatus.ERROR
    second.add_listener(lambda event: second.pause(), kinds=[psl.EventKind.COMPLETED])
    second.start()
    try:
        wait_for(lambda: second.get_status(tid) is psl.TaskStatus.COMPLETED)
    finally:
        second.shutdown()
    skipped = [row for row in store.runs(tid)
               if row['status'] == psl.TaskStatus.MISSED and row['attempt'] > 1]
    assert [row['attempt'] for row in skipped] == [2]
    third = virtual(clock, store)
    third.add_listener(lambda event: third.pause(), kinds=[psl.EventKind.COMPLETED])
    third.start()
    try:
        wait_for(lambda: calls(tmp_path / "calls") >= 3)
        attempts = [run.attempt for run in third.runs(tid)
                    if run.status is not psl.TaskStatus.MISSED]
    finally:
        third.shutdown()
    assert attempts and set(attempts) == {1}


def test_a_skipped_catch_up_leaves_the_status_of_the_latest_run(store, clock, tmp_path):
    """The first run fails with a retry to come; the scheduler is down past
    the next slot, which its misfire grace time then skips. The task reads
    the status of its latest run (the error), not a "waiting" the retry had
    left, and that run answers get_task()."""
    marker = str(tmp_path / "calls")
    first = virtual(clock, store, delayfunc=stops_after_first_call(clock, marker))
    first.start()
    try:
        tid = first.delay('recur', 60, 1, fail_first_attempt, args=(marker,), retries=1,
                          retry_delay=30, misfire_grace_time=0, task_id='flaky')
        wait_for(lambda: [run.status for run in first.runs(tid)] == [psl.TaskStatus.ERROR])
    finally:
        first.shutdown()
    clock.advance(180)
    second = virtual(clock, store, delayfunc=stops_after_first_call(clock, marker))
    second.start()
    try:
        wait_for(lambda: second.get_task(tid)['missed'] >= 1)
        info = second.get_task(tid)
    finally:
        second.shutdown()
    assert info['status'] is psl.TaskStatus.ERROR
    assert (info['last_run'].attempt, info['last_run'].status) == (1, psl.TaskStatus.ERROR)


def test_a_retry_after_the_wall_clock_stepped_back_is_the_latest_run_after_a_restart(
        store, clock, tmp_path):
    """A one-shot fails its first attempt and the wall clock steps back an
    hour before its retry, which completes. After a restart the task read
    COMPLETED while its latest run was the failed first attempt: the runs
    were ordered by their wall times, and the retry's was an hour earlier.
    A retry is later than the attempt it retries, whatever the wall clock
    said (found by the model torture)."""
    marker = str(tmp_path / "calls")

    def wall():  # an hour back from the first call on
        return clock.now() + 1_800_000_000.0 - (3600.0 if os.path.exists(marker) else 0.0)
    first = virtual(clock, store, wallfunc=wall)
    first.start()
    try:
        tid = first.delay('once', 0, 1, fail_first_attempt, args=(marker,), retries=1,
                          retry_delay=1, task_id='flaky')
        wait_for(lambda: first.get_status(tid) is psl.TaskStatus.COMPLETED)
    finally:
        first.shutdown()
    second = virtual(clock, store, wallfunc=wall)
    try:
        info = second.get_task(tid)
    finally:
        second.shutdown()
    assert info['status'] is psl.TaskStatus.COMPLETED
    assert (info['last_run'].attempt, info['last_run'].status) == (2, psl.TaskStatus.COMPLETED)


def test_a_wall_clock_step_moves_the_stored_next_run_of_a_task_on_the_scheduler_clock(
        store, clock):
    """A one-shot due in 10 minutes on the scheduler's clock keeps its time
    when the wall clock steps back an hour; its stored wall time moves with
    the step, so a restart runs it on time, not an hour late."""
    wall = {'offset': 1_800_000_000.0}
    wallfunc = lambda: clock.now() + wall['offset']  # noqa: E731

    def scheduler():
        return psl.Scheduler(executor=InlineExecutor(), timefunc=clock.now,
                             delayfunc=clock.sleep, store=store, wallfunc=wallfunc)
    first = scheduler()
    first.pause()  # (the dispatcher follows the wall clock; nothing runs)
    first.start()
    try:
        tid = first.delay('once', 600, 1, tick, args=('on time',))
        due = clock.now() + 600
        wall['offset'] -= 3600
        stored = lambda: {r.id: r for r in store.load_tasks()}[tid].next_run  # noqa: E731
        wait_for(lambda: stored() == pytest.approx(due + wall['offset']))
    finally:
        first.shutdown()
    second = scheduler()
    second.start()
    try:
        assert second.get_result(tid, timeout=10) == 'on time'
        [run] = second.runs(tid)
    finally:
        second.shutdown()
    assert secs(run.scheduled) == pytest.approx(due + wall['offset'])


def test_a_retry_owed_across_a_restart_waits_its_delay_not_a_wall_clock_step_back_too(
        store, clock, tmp_path):
    """A one-shot fails (``retry_delay=60``) and the scheduler shuts down
    while its retry waits; the wall clock then steps back an hour, so the
    stored failure is dated after the restart's now. The retry waits its
    delay from the restart, not the hour of the step on top of it."""
    marker = str(tmp_path / "calls")
    wall = {'offset': 1_800_000_000.0}
    wallfunc = lambda: clock.now() + wall['offset']  # noqa: E731
    first = virtual(clock, store, wallfunc=wallfunc,
                    delayfunc=stops_after_first_call(clock, marker))
    first.start()
    try:
        tid = first.delay('once', 0, 1, fail_first_attempt, args=(marker,), retries=1,
                          retry_delay=60)
        wait_for(lambda: [run.status for run in first.runs(tid)] == [psl.TaskStatus.ERROR])
    finally:
        first.shutdown()
    wall['offset'] -= 3600
    restarted = wallfunc()
    second = virtual(clock, store, wallfunc=wallfunc)
    second.start()
    try:
        assert second.get_result(tid, timeout=10) == 2
        retry = max(second.runs(tid), key=lambda run: run.attempt)
    finally:
        second.shutdown()
    assert retry.attempt == 2
    assert secs(retry.started) == pytest.approx(restarted + 60, abs=1)


def test_a_failure_judged_without_retries_is_not_retried_after_a_modify_and_a_restart(
        store, clock, tmp_path):
    """A recurring task's attempt fails with no retries allowed; then
    ``modify(retries=2)``. The new retries apply to the failures after the
    change: a restart does not owe the earlier failure a retry (it was over,
    and reads as such)."""
    marker = str(tmp_path / "calls")
    first = virtual(clock, store, delayfunc=stops_after_first_call(clock, marker))
    first.start()
    try:
        tid = first.delay('recur', 60, 1, fail_first_attempt, args=(marker,), task_id='flaky')
        wait_for(lambda: [run.status for run in first.runs(tid)] == [psl.TaskStatus.ERROR])
        first.modify(tid, retries=2, retry_delay=1)
    finally:
        first.shutdown()
    second = virtual(clock, store, delayfunc=stops_after_first_call(clock, marker))
    second.start()
    try:
        assert second.get_status(tid) is psl.TaskStatus.ERROR
        # a retry owed would be due already: it would run before this one
        later = second.delay('once', 0, 1, tick, args=('later',))
        assert second.get_result(later, timeout=10) == 'later'
        attempts = [run.attempt for run in second.runs(tid)]
    finally:
        second.shutdown()
    assert attempts == [1]


CHILD_WITH_A_RETRY = textwrap.dedent("""
    import sys, time
    import pysched_lightning as psl

    def fail_first_attempt(marker):
        with open(marker, "a") as out:
            out.write("call\\n")
        with open(marker) as calls:
            number = len(calls.read().split())
        if number == 1:
            raise RuntimeError("the first attempt fails")
        return number

    sched = psl.Scheduler(store=sys.argv[1])
    sched.delay('once', 0, 1, fail_first_attempt, args=(sys.argv[2],), retries=2,
                retry_delay=3600, task_id='flaky')
    sched.start()
    time.sleep(3600)
""")


def run_child_until(script, args, ready):
    """Run *script* in a fresh interpreter (this worktree's package) and
    SIGKILL it once *ready()* is true."""
    env = dict(os.environ, PYTHONPATH=REPO)
    child = subprocess.Popen([sys.executable, "-c", script, *args], env=env)
    try:
        wait_for(ready, timeout=60)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()


def stored_runs(path, task_id):
    """The task's stored runs, read as another process reads them (none
    while the file is not made yet)."""
    try:
        reader = open_store(path, read_only=True)
    except (OSError, sqlite3.DatabaseError):  # not there, or its schema not written yet
        return []
    try:
        return reader.runs(task_id)
    finally:
        reader.close()


def test_a_retry_pending_when_the_process_is_killed_runs_after_the_restart(tmp_path):
    """As at a clean shutdown: a one-shot's first attempt failed and its
    retry (an hour later) waits when the process is SIGKILLed. The restart
    runs the retry once it is due (its wall clock reads an hour later here),
    as attempt 2."""
    path, marker = str(tmp_path / "jobs.db"), str(tmp_path / "calls")
    run_child_until(CHILD_WITH_A_RETRY, (path, marker), lambda: [
        (run['attempt'], run['status']) for run in stored_runs(path, 'flaky')] == [
        (1, int(psl.TaskStatus.ERROR))])
    later = 3600 + 60
    sched = psl.Scheduler(store=path, wallfunc=lambda: time.time() + later)
    sched.start()
    try:
        assert sched.get_result('flaky', timeout=30) == 2
        runs = sched.runs('flaky')
    finally:
        sched.shutdown()
    assert [(run.attempt, run.status) for run in runs] == [
        (2, psl.TaskStatus.COMPLETED), (1, psl.TaskStatus.ERROR)]


# ------------------------------------------------------------- runs cut short by a crash


CHILD_CUT_SHORT = textwrap.dedent("""
    import sys, time
    import pysched_lightning as psl
    folder = sys.argv[1]

    def calls(name):
        with open(f"{folder}/{name}", "a") as out:
            out.write("call\\n")
        with open(f"{folder}/{name}") as kept:
            return len(kept.read().split())

    def one_shot():
        calls("one-shot")
        time.sleep(3600)

    def recurring():
        if calls("recurring") == 4:
            time.sleep(3600)

    sched = psl.Scheduler(store=f"{folder}/jobs.db")
    sched.delay('recur', 0.1, 1, recurring, task_id='recurring')
    sched.delay('once', 0, 1, one_shot, task_id='one-shot')
    sched.start()
    time.sleep(3600)
""")


def calls(path):
    """How many calls a task of CHILD_CUT_SHORT noted in *path*."""
    return len(path.read_text().split()) if path.exists() else 0


def crash_during_runs(folder):
    """A scheduler process SIGKILLed while a one-shot runs and while run 4 of
    a recurring task runs (runs 1 to 3 completed). Returns its store's path."""
    path = str(folder / "jobs.db")

    def both_running():
        running = int(psl.TaskStatus.RUNNING)
        return (calls(folder / "one-shot") == 1 and calls(folder / "recurring") == 4
                and [run['run'] for run in stored_runs(path, 'one-shot')
                     if run['status'] == running] == [1]
                and 4 in [run['run'] for run in stored_runs(path, 'recurring')
                          if run['status'] == running])
    run_child_until(CHILD_CUT_SHORT, (str(folder),), both_running)
    return path


def test_a_one_shot_cut_short_by_a_crash_reads_interrupted_after_the_restart(tmp_path):
    """A one-shot whose only run was going when the process died: after the
    restart its run, and so the task, reads INTERRUPTED in every query (not
    MISSED, as if another scheduler had claimed the slot, nor ERROR), its
    result raises saying so, nothing counts as missed, and it does not run
    again."""
    path = crash_during_runs(tmp_path)
    sched = psl.Scheduler(store=path, executor=InlineExecutor())
    sched.start()
    try:
        # runs in order in the dispatcher: once this one ran, the one-shot
        # (due long before) has been dealt with
        sched.get_result(sched.delay('once', 0, 1, tick, args=('after',)), timeout=30)
        status, label = sched.get_status('one-shot'), sched.get_status_str('one-shot')
        task = sched.get_task('one-shot')
        runs = sched.runs('one-shot')
        with pytest.raises(RuntimeError, match=r"'one-shot' run 1 was interrupted: the "
                                               r"scheduler process stopped") as raised:
            sched.get_result('one-shot', timeout=5)
    finally:
        sched.shutdown()
    assert (status, label) == (psl.TaskStatus.INTERRUPTED, "Interrupted")
    assert task['status'] is psl.TaskStatus.INTERRUPTED and task['missed'] == 0
    assert [(run.run_number, run.status) for run in runs] == [(1, status)]
    assert runs[0].error == "interrupted: the scheduler process stopped during this run"
    assert not isinstance(raised.value, psl.WorkerCrashedError)
    assert calls(tmp_path / "one-shot") == 1  # the call the crash cut short


def test_run_numbers_go_on_after_a_crash_without_reusing_the_interrupted_ones(tmp_path):
    """Run 4 of a recurring task was going when the process died. After the
    restart the next run is run 5: two runs never share a number."""
    path = crash_during_runs(tmp_path)
    sched = psl.Scheduler(store=path)
    sched.start()
    try:
        wait_for(lambda: len([run for run in sched.runs('recurring')
                              if run.status is psl.TaskStatus.COMPLETED]) >= 5)
    finally:
        sched.shutdown()
    numbers = [run['run'] for run in stored_runs(path, 'recurring')
               if run['status'] != int(psl.TaskStatus.MISSED)]
    assert sorted(n for n, times in Counter(numbers).items() if times > 1) == []
    assert sorted(numbers)[:4] == [1, 2, 3, 4]


# ------------------------------- a run's process that outlived its scheduler


CHILD_LEAVES_ITS_COMMANDS = textwrap.dedent("""
    import sys, time
    import pysched_lightning as psl
    from pysched_lightning.execution import process_group
    # As if what kills a command with its scheduler had failed (the
    # guardian killed too, a platform without a parent-death signal): the
    # commands outlive this process.
    process_group.die_with_parent = lambda *args: None
    process_group.guard_group = lambda *args: None
    sched = psl.Scheduler(store=sys.argv[1])
    sched.delay('once', 0, 1, psl.command(["sleep", "61.25"]), task_id='once')
    sched.delay('recur', 0.5, 1, psl.command(["sleep", "61.5"]), task_id='every')
    sched.start()
    time.sleep(3600)
""")


def start_time(pid):
    from pysched_lightning.durability.leftovers import start_time
    return start_time(pid)


def still_running(pid, started):
    return start_time(pid) == started


def processes_running(*args):
    """The pids of the live processes whose command line is *args*."""
    wanted = "\0".join(args).encode() + b"\0"
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                if cmdline.read() == wanted and start_time(int(entry)) is not None:
                    found.append(int(entry))
        except (OSError, ValueError):
            continue
    return found


def claimed_processes(path):
    try:
        reader = open_store(path, read_only=True)
    except (OSError, sqlite3.DatabaseError):
        return {}
    try:
        return {claim['task_id']: claim for claim in reader.claimed_processes()}
    finally:
        reader.close()


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs /proc (Linux)")
def test_a_run_whose_process_outlived_its_scheduler_never_runs_twice_at_once(tmp_path, caplog):
    """A scheduler process SIGKILLed while two commands run, and nothing
    killed them with it. Their pids and start times were kept with the runs'
    claims: the restart kills their process groups before anything is
    scheduled, records the runs interrupted, and the recurring task's next
    run is the only copy of its command."""
    path = str(tmp_path / "jobs.db")
    try:
        run_child_until(CHILD_LEAVES_ITS_COMMANDS, (path,),
                        lambda: set(claimed_processes(path)) == {'once', 'every'})
        claims = claimed_processes(path)
        for claim in claims.values():  # the scenario: they outlived their scheduler
            assert still_running(claim['pid'], claim['pid_started'])
        with caplog.at_level("WARNING", logger="pysched_lightning"):
            sched = psl.Scheduler(store=path)
        try:
            for task_id, claim in claims.items():
                assert not still_running(claim['pid'], claim['pid_started']), task_id
                assert f"task {task_id!r} run 1: its process {claim['pid']} was still " \
                       "running after its scheduler stopped" in caplog.text
            assert sched.get_status('once') is psl.TaskStatus.INTERRUPTED
            sched.start()
            again = wait_for(lambda: claimed_processes(path).get('every'))
            assert again['pid'] != claims['every']['pid']
            assert processes_running("sleep", "61.5") == [again['pid']]  # one copy
            assert [run.status for run in sched.runs('once')] == [psl.TaskStatus.INTERRUPTED]
        finally:
            sched.shutdown(timeout=0)
    finally:
        for pid in processes_running("sleep", "61.25") + processes_running("sleep", "61.5"):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs /proc (Linux)")
def test_a_restart_leaves_alone_a_process_that_only_has_a_claimed_pid(tmp_path):
    """The pid a claim kept now names another process (the pid was reused:
    its start time differs): the restart does not touch it. The process
    that is the claimed one (same pid, same start time) is killed."""
    path = str(tmp_path / "jobs.db")
    other = subprocess.Popen(["sleep", "30"], start_new_session=True)
    claimed = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        with open_store(path) as store:
            for task_id, proc, shift in (("reused", other, 1), ("same", claimed, 0)):
                store.claim_run(task_id, "1.000", 1, run=1, name=task_id, scheduled=1.0,
                                started=1.0)
                store.note_process(task_id, "1.000", 1, proc.pid,
                                   start_time(proc.pid) + shift)
        psl.Scheduler(store=path).shutdown()
        assert claimed.wait(5) == -signal.SIGKILL
        assert other.poll() is None and start_time(other.pid) is not None
        with open_store(path) as store:
            assert {r["task_id"]: r["status"] for r in store.runs()} == {
                "reused": psl.TaskStatus.INTERRUPTED, "same": psl.TaskStatus.INTERRUPTED}
    finally:
        for proc in (other, claimed):
            proc.kill()
            proc.wait()
