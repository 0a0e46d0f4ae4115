"""One run record, with or without a store: ``runs()``, ``get_task()``, events
and the run log show the same ``psl.Run`` with aware datetimes; a stored task
keeps its types across a restart; a one-shot with a ``task_id`` whose stored
run completed is not run again."""
from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import pickle

import pytest

import pysched_lightning as psl
from conftest import VirtualClock, virtual, wait_for

Status = psl.TaskStatus
Kind = psl.EventKind
UTC = dt.timezone.utc
STORES = ["no store", "memory", "sqlite"]

# The fields a run shows; the times among them are aware datetimes.
FIELDS = ("task_id", "name", "run_number", "attempt", "status", "scheduled", "started",
          "finished", "duration", "result", "exception", "traceback", "error", "reason",
          "count", "exit_code", "output", "stderr")
TIMES = ("scheduled", "started", "finished")


def migrate(path):
    with open(path, "a") as out:
        out.write("migrated\n")
    return "migrated"


def migrate_v2(path):
    with open(path, "a") as out:
        out.write("migrated v2\n")
    return "migrated v2"


def answer():
    return 42


def broken(why):
    raise ValueError(why)


def spec_of(kind, tmp_path):
    return {"no store": None, "memory": "memory://",
            "sqlite": f"sqlite:///{tmp_path}/jobs.db"}[kind]


@pytest.fixture(params=STORES)
def store_kind(request):
    return request.param


def assert_aware_utc(moment):
    assert isinstance(moment, dt.datetime), moment
    assert moment.tzinfo is not None and moment.utcoffset() == dt.timedelta(0), moment


def assert_run(run, status):
    assert isinstance(run, psl.Run)
    assert run.status is status
    for name in TIMES:
        assert_aware_utc(getattr(run, name))
    assert run.scheduled <= run.started <= run.finished
    assert isinstance(run.duration, float) and run.duration >= 0


def finished_runs(sched):
    """A completed, a failed and a command run; returns their task ids."""
    ok = sched.delay('once', 0, 1, answer, task_id='ok')
    bad = sched.delay('once', 0, 1, broken, args=("on purpose",), task_id='bad')
    cmd = sched.delay('once', 0, 1, psl.command(["sh", "-c", "echo out; echo err >&2; exit 3"]),
                      task_id='cmd')
    for tid in (ok, bad, cmd):
        wait_for(lambda: sched.get_status(tid) in (Status.COMPLETED, Status.ERROR))
    return ok, bad, cmd


# ------------------------------------------------------------------- runs()

def test_runs_are_run_objects_with_aware_times(store_kind, tmp_path):
    sched = psl.Scheduler(store=spec_of(store_kind, tmp_path))
    sched.start()
    try:
        ok, bad, cmd = finished_runs(sched)
        runs = sched.runs(ok)
        assert isinstance(runs, list) and len(runs) == 1
        assert_run(runs[0], Status.COMPLETED)
        assert runs[0].result == 42 and runs[0].exception is None
        failed = sched.runs(bad)[0]
        assert_run(failed, Status.ERROR)
        assert isinstance(failed.exception, ValueError)
        assert failed.error == "ValueError: on purpose"
        assert "in broken" in failed.traceback
        command = sched.runs(cmd)[0]
        assert_run(command, Status.ERROR)
        assert (command.exit_code, command.output, command.stderr) == (3, "out\n", "err\n")
    finally:
        sched.shutdown()


def test_runs_show_the_same_fields_with_and_without_a_store(tmp_path):
    seen = {}
    for kind in STORES:
        sched = psl.Scheduler(store=spec_of(kind, tmp_path))
        sched.start()
        try:
            ids = finished_runs(sched)
            seen[kind] = {tid: sched.runs(tid)[0] for tid in ids}
        finally:
            sched.shutdown()
    plain = seen["no store"]
    for kind in ("memory", "sqlite"):
        for tid, run in seen[kind].items():
            for name in FIELDS:
                mine, theirs = getattr(run, name), getattr(plain[tid], name)
                assert type(mine) is type(theirs), (kind, tid, name, mine, theirs)
                if name == "exception":
                    assert repr(mine) == repr(theirs)
                elif name not in TIMES + ("duration",):
                    assert mine == theirs, (kind, tid, name)


def test_a_run_reads_as_upstreams_mapping_with_or_without_a_store(store_kind, tmp_path):
    sched = psl.Scheduler(store=spec_of(store_kind, tmp_path))
    sched.start()
    try:
        tid = sched.delay('once', 0, 1, answer, task_id='ok')
        assert sched.get_result(tid, timeout=10) == 42
        for run in (sched.result[tid], sched.runs(tid)[0], sched.get_task(tid)['last_run']):
            assert isinstance(run, psl.Run)
            assert list(run) == list(run.keys()) == ['timestamp', 'task', 'future']
            assert len(run) == 3 and 'timestamp' in run and 'nope' not in run
            assert run.get('nope') is None
            assert_aware_utc(run['timestamp'])
            assert run['task'].id == tid
            assert run['future'].result(timeout=5) == 42
    finally:
        sched.shutdown()


def test_runs_after_shutdown_answer_as_before(store_kind, tmp_path):
    sched = psl.Scheduler(store=spec_of(store_kind, tmp_path))
    sched.start()
    tid = sched.delay('once', 0, 1, answer, task_id='ok')
    sched.get_result(tid, timeout=10)
    before = [(r.run_number, r.status, r.result) for r in sched.runs(tid)]
    sched.shutdown()
    assert [(r.run_number, r.status, r.result) for r in sched.runs(tid)] == before


# ------------------------------------------------------------------ events

def test_events_carry_the_same_run_type(store_kind, tmp_path):
    sched = psl.Scheduler(store=spec_of(store_kind, tmp_path))
    events = sched.subscribe([Kind.STARTED, Kind.COMPLETED, Kind.FAILED])
    sched.start()
    try:
        ok, bad, cmd = finished_runs(sched)
        got = {}
        while len(got) < 6:
            event = events.get(timeout=10)
            got[(event.kind, event.task_id)] = event
        for (kind, tid), event in got.items():
            assert isinstance(event.run, psl.Run)
            assert_aware_utc(event.timestamp)
            assert_aware_utc(event.run.started)
            if kind is not Kind.STARTED:
                assert_run(event.run, Status.COMPLETED if tid == ok else Status.ERROR)
                assert event.run.run_number == sched.runs(tid)[0].run_number
        assert got[(Kind.COMPLETED, ok)].result == 42
        assert isinstance(got[(Kind.FAILED, bad)].exception, ValueError)
    finally:
        sched.shutdown()


def test_missed_runs_are_runs_too(store_kind, tmp_path):
    clock = VirtualClock()
    sched = virtual(clock, store=spec_of(store_kind, tmp_path))
    missed = sched.subscribe([Kind.MISSED])
    sched.start()
    try:
        sched.pause()
        tid = sched.delay('once', 0, 1, answer, misfire_grace_time=1, task_id='late')
        clock.advance(5)
        sched.resume()
        wait_for(lambda: sched.get_status(tid) is Status.MISSED)
        event = missed.get(timeout=10)
        assert isinstance(event.run, psl.Run) and event.run.status is Status.MISSED
        assert_aware_utc(event.run.scheduled)
        [run] = sched.runs(tid)
        assert isinstance(run, psl.Run) and run.status is Status.MISSED
        assert run.count == 1 and run.reason == event.reason
        assert_aware_utc(run.scheduled)
    finally:
        sched.shutdown()


# --------------------------------------------------------------- get_task()

def test_get_task_last_run_is_the_latest_run(store_kind, tmp_path):
    attempts = []

    def fails_once():
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("first attempt fails")
        return 42

    sched = psl.Scheduler(store=spec_of(store_kind, tmp_path))
    sched.start()
    try:
        tid = sched.delay('once', 0, 1, fails_once, retries=1)
        wait_for(lambda: sched.get_status(tid) is Status.COMPLETED)
        last = sched.get_task(tid)['last_run']
        assert_run(last, Status.COMPLETED)
        assert (last.attempt, last.result) == (2, 42)
        newest, first = sched.runs(tid)
        assert (last.run_number, last.attempt, last.status, last.result) == \
            (newest.run_number, newest.attempt, newest.status, newest.result)
        assert last.started == newest.started
        assert (first.attempt, first.status) == (1, Status.ERROR)
    finally:
        sched.shutdown()


def test_get_task_last_run_after_a_restart(tmp_path):
    url = f"sqlite:///{tmp_path}/jobs.db"
    first = psl.Scheduler(store=url)
    first.start()
    first.delay('once', 0, 1, migrate, args=(str(tmp_path / "out"),), task_id='migrate')
    first.get_result('migrate', timeout=10)
    started = first.runs('migrate')[0].started
    first.shutdown()

    second = psl.Scheduler(store=url)
    try:
        last = second.get_task('migrate')['last_run']
        assert_run(last, Status.COMPLETED)
        assert last.result == "migrated" and last.started == started
    finally:
        second.shutdown()


# ----------------------------------------------------------------- run log

def test_run_log_lines_carry_iso_times(store_kind, tmp_path):
    path = tmp_path / "runs.log"
    sched = psl.Scheduler(store=spec_of(store_kind, tmp_path), run_log=str(path))
    sched.start()
    try:
        ok, bad, cmd = finished_runs(sched)
        runs = {tid: sched.runs(tid)[0] for tid in (ok, bad, cmd)}
    finally:
        sched.shutdown()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted(line['task_id'] for line in lines) == sorted(runs)
    for line in lines:
        run = runs[line['task_id']]
        assert line['status'] == run.status.label
        assert line['run'] == run.run_number and line['attempt'] == run.attempt
        for name in TIMES:
            moment = dt.datetime.fromisoformat(line[name])
            assert_aware_utc(moment)
            assert abs(moment - getattr(run, name)) < dt.timedelta(milliseconds=1)
    by_id = {line['task_id']: line for line in lines}
    assert by_id['bad']['error'] == "ValueError: on purpose"
    assert by_id['cmd']['exit_code'] == 3


# ------------------------------------------------------ types across restarts

def test_stored_task_keeps_its_priority_type(tmp_path):
    url = f"sqlite:///{tmp_path}/jobs.db"
    given = {'int': 3, 'float': 2.5, 'negative': -7, 'whole float': 4.0}
    first = psl.Scheduler(store=url)
    for tid, priority in given.items():
        first.delay('recur', 3600, priority, answer, task_id=tid)
    first.shutdown()

    second = psl.Scheduler(store=url)
    try:
        for tid, priority in given.items():
            for seen in (second.task[tid].priority, second.get_task(tid)['priority']):
                assert seen == priority and type(seen) is type(priority), (tid, seen)
    finally:
        second.shutdown()


def test_stored_task_keeps_its_interval_type(tmp_path):
    url = f"sqlite:///{tmp_path}/jobs.db"
    later = dt.datetime(2099, 1, 1, 6, 30, tzinfo=UTC)
    given = {
        'seconds': ('recur', 3600),
        'float seconds': ('recur', 1800.5),
        'timedelta': ('recur', dt.timedelta(hours=2)),
        'once in seconds': ('once', 86400),
        'once at a datetime': ('once', later),
        'cron': ('cron', '0 6 * * *'),
    }
    first = psl.Scheduler(store=url)
    for tid, (trigger, interval) in given.items():
        first.delay(trigger, interval, 1, answer, args=(), task_id=tid)
    first.shutdown()

    second = psl.Scheduler(store=url)
    try:
        for tid, (trigger, interval) in given.items():
            task = second.task[tid]
            assert task.trigger == trigger
            for seen in (task.interval, second.get_task(tid)['interval']):
                assert seen == interval and type(seen) is type(interval), (tid, seen)
    finally:
        second.shutdown()


def test_stored_task_keeps_its_arguments_and_name(tmp_path):
    url = f"sqlite:///{tmp_path}/jobs.db"
    args = (1, 2.5, "three", None, [4, 5], {"six": 6})
    kwargs = {"flag": True, "ratio": 0.5}
    first = psl.Scheduler(store=url)
    first.delay('recur', 3600, 1, answer, args=args, kwargs=kwargs, task_id='t',
                name='nightly report')
    first.shutdown()

    second = psl.Scheduler(store=url)
    try:
        task = second.task['t']
        assert task.args == args and type(task.args) is tuple
        assert dict(task.kwargs) == kwargs
        assert second.get_task('t')['name'] == 'nightly report'
    finally:
        second.shutdown()


# ------------------------------------------------ idempotent one-shots by id

SOON = dt.datetime.now(UTC) - dt.timedelta(seconds=1)  # "now", fixed for both starts


def migration(form, out):
    """What start-up code passes to delay() for the migration, in several
    spellings; a fresh function object at every call, as after a restart."""
    if form == "seconds":
        return 0, migrate, (out,)
    if form == "timedelta":
        return dt.timedelta(0), migrate, (out,)
    if form == "datetime":
        return SOON, migrate, (out,)
    if form == "partial":
        return 0, functools.partial(migrate, out), ()
    if form == "lambda":
        return 0, lambda: migrate(out), ()
    raise AssertionError(form)


def start_up(url, form, out, fn=None):
    """A program's start: a one-worker scheduler on *url* that delays the
    migration (one worker: a task delayed after it runs after it would have)."""
    sched = psl.Scheduler(psl.ThreadPoolExecutor(1), store=url)
    interval, migration_fn, args = migration(form, out)
    sched.delay('once', interval, 1, fn or migration_fn, args=args, task_id='migrate')
    return sched


def migrate_once(url, out, then=None):
    """A first start that runs the migration; *then(store)* before it stops."""
    first = start_up(url, "seconds", out)
    first.start()
    try:
        assert first.get_result('migrate', timeout=10) == "migrated"
        if then is not None:
            then(first.store)
    finally:
        first.shutdown()


@pytest.mark.parametrize("form", ["seconds", "timedelta", "datetime", "partial", "lambda"])
def test_completed_one_shot_is_not_run_again_after_a_restart(form, tmp_path):
    url = f"sqlite:///{tmp_path}/jobs.db"
    out = str(tmp_path / "migrations")

    first = start_up(url, form, out)
    first.start()
    try:
        assert first.get_result('migrate', timeout=10) == "migrated"
    finally:
        first.shutdown()

    second = start_up(url, form, out)
    try:
        # answers from the store, before anything runs
        assert second.get_status('migrate') is Status.COMPLETED
        assert second.get_result('migrate', timeout=5) == "migrated"
        marker = second.delay('once', 0, 9, answer)
        second.start()
        assert second.get_result(marker, timeout=10) == 42
        assert second.get_status('migrate') is Status.COMPLETED
        assert second.get_result('migrate', timeout=5) == "migrated"
        assert [r.status for r in second.runs('migrate')] == [Status.COMPLETED]
    finally:
        second.shutdown()
    with open(out) as f:
        assert f.read() == "migrated\n"


def test_a_one_shot_stored_with_its_default_options_pickled_is_still_the_same(tmp_path):
    """A store written before the defaults were stored as NULL holds them
    pickled: the same one-shot is still the same, and not run again."""
    url = f"sqlite:///{tmp_path}/jobs.db"
    out = str(tmp_path / "migrations")

    def as_written_before(store):
        stored = store.task('migrate')
        assert stored.options is None  # the defaults: no bytes to write
        store.save_task(dataclasses.replace(stored, options=pickle.dumps(psl.TaskOptions())))

    migrate_once(url, out, then=as_written_before)
    second = start_up(url, "seconds", out)
    second.start()
    try:
        assert second.get_status('migrate') is Status.COMPLETED
        assert [r.status for r in second.runs('migrate')] == [Status.COMPLETED]
    finally:
        second.shutdown()
    with open(out) as f:
        assert f.read() == "migrated\n"


@pytest.mark.parametrize("change", ["function", "arguments"])
def test_changed_one_shot_under_the_same_id_runs_again(change, tmp_path):
    url = f"sqlite:///{tmp_path}/jobs.db"
    out = str(tmp_path / "migrations")
    migrate_once(url, out)

    if change == "function":
        second = start_up(url, "seconds", out, fn=migrate_v2)
        expected, written = "migrated v2", "migrated\nmigrated v2\n"
    else:
        second = start_up(url, "seconds", out + ".other")
        expected, written = "migrated", "migrated\n"
    second.start()
    try:
        assert second.get_result('migrate', timeout=10) == expected
        wait_for(lambda: len(second.runs('migrate')) == 2)
    finally:
        second.shutdown()
    with open(out) as f:
        assert f.read() == written
    if change == "arguments":
        with open(out + ".other") as f:
            assert f.read() == "migrated\n"


@pytest.mark.parametrize("interval", [3600, dt.timedelta(hours=1)], ids=["seconds", "timedelta"])
def test_same_recurring_definition_keeps_its_schedule_after_a_restart(interval, tmp_path):
    url = f"sqlite:///{tmp_path}/jobs.db"
    first = psl.Scheduler(store=url)
    first.delay('recur', interval, 1, answer, task_id='hourly')
    planned = first.next_run_times('hourly', 3)
    first.shutdown()

    second = psl.Scheduler(store=url)
    try:
        second.delay('recur', interval, 1, answer, task_id='hourly')
        assert second.next_run_times('hourly', 3) == planned
    finally:
        second.shutdown()
