"""Task status and introspection: get_status, get_status_str, get_task, get_all."""
from __future__ import annotations

import datetime as dt
import threading
import time

import pytest

import pysched_lightning as psl
from conftest import virtual, wait_for

S = psl.TaskStatus

INFO_KEYS = {"id", "name", "trigger", "interval", "priority", "status",
             "next_run_time", "runs", "missed", "last_error", "perf"}


def ok(value="done"):
    return value


def boom():
    raise ValueError("boom in task")


def test_task_status_values_and_labels():
    assert issubclass(S, int)
    assert [(s.name, int(s)) for s in S] == [
        ("COMPLETED", 0), ("ERROR", 1), ("SUSPENDED", 2),
        ("RUNNING", 3), ("CANCELED", 4), ("TIMEOUT", 5), ("MISSED", 6), ("INTERRUPTED", 7)]
    assert [s.label for s in S] == ["Completed", "Error", "Suspended", "Running",
                                   "Canceled", "Timeout", "Missed", "Interrupted"]


def test_suspended_before_first_run_then_completed(clock):
    sched = virtual(clock)
    try:
        tid = sched.delay("once", 30, 1, ok)
        assert sched.get_status(tid) is S.SUSPENDED
        assert sched.get_status_str(tid) == "Suspended"
        sched.start()
        assert sched.get_result(tid, timeout=5) == "done"
        assert sched.get_status(tid) is S.COMPLETED
        assert sched.get_status_str(tid) == "Completed"
    finally:
        sched.shutdown()


def test_error_status_and_last_error(clock):
    with virtual(clock) as sched:
        tid = sched.delay("once", 1, 1, boom)
        with pytest.raises(ValueError, match="boom in task"):
            sched.get_result(tid, timeout=5)
        assert sched.get_status(tid) is S.ERROR
        assert sched.get_status_str(tid) == "Error"
        info = sched.get_task(tid)
        assert info["status"] is S.ERROR
        assert "boom in task" in info["last_error"]
        assert info["runs"] == 1


def test_running_status_while_the_task_executes(no_leaked_threads):
    gate = threading.Event()
    entered = threading.Event()

    def blocker():
        entered.set()
        gate.wait(10)
        return "released"

    with psl.Scheduler(executor=psl.ThreadPoolExecutor(2)) as sched:
        tid = sched.delay("once", 0, 1, blocker)
        try:
            assert entered.wait(5)
            wait_for(lambda: sched.get_status(tid) is S.RUNNING, timeout=5)
            assert sched.get_status_str(tid) == "Running"
            assert sched.get_task(tid)["status"] is S.RUNNING
        finally:
            gate.set()
        assert sched.get_result(tid, timeout=5) == "released"
        assert sched.get_status(tid) is S.COMPLETED


def test_canceled_even_if_it_never_ran(clock):
    called = []
    sched = virtual(clock)
    try:
        tid = sched.delay("once", 50, 1, called.append, args=(1,), name="never")
        sched.cancel(tid)
        sched.start()
        assert sched.get_status(tid) is S.CANCELED
        assert sched.get_status_str(tid) == "Canceled"
        assert sched.get_task(tid)["status"] is S.CANCELED
    finally:
        sched.shutdown()
    assert called == []


def test_get_task_of_a_canceled_task_keeps_its_description(clock):
    sched = virtual(clock)
    try:
        tid = sched.delay("recur", 50, 3, ok, name="described")
        sched.cancel(tid)
        sched.start()
        info = sched.get_task(tid)
    finally:
        sched.shutdown()
    assert info["status"] is S.CANCELED
    assert info["name"] == "described"
    assert info["trigger"] == "recur"
    assert info["interval"] == 50
    assert info["priority"] == 3
    assert info["next_run_time"] is None


def test_timeout_status_string(clock):
    release = threading.Event()

    def slow():
        release.wait(10)

    with virtual(clock, psl.ThreadPoolExecutor(2)) as sched:
        try:
            events = sched.subscribe([psl.EventKind.TIMEOUT])
            tid = sched.delay("once", 0, 1, slow, timeout=3)
            assert events.get(timeout=5).task_id == tid
            assert sched.get_status(tid) is S.TIMEOUT
            assert sched.get_status_str(tid) == "Timeout"
        finally:
            release.set()


def test_status_is_that_of_the_latest_run(clock):
    outcomes = iter([ValueError("first fails"), "second ok", ValueError("third fails")])
    seen = []

    def flaky():
        value = next(outcomes)
        seen.append(value)
        if isinstance(value, Exception):
            raise value
        return value

    statuses = []
    with virtual(clock) as sched:
        def after_each(event):
            statuses.append(sched.get_status(event.task_id))
            if len(statuses) == 3:
                sched.pause(event.task_id)

        sched.add_listener(after_each, kinds=[psl.EventKind.COMPLETED,
                                              psl.EventKind.FAILED])
        tid = sched.delay("recur", 10, 1, flaky)
        wait_for(lambda: len(statuses) >= 3, timeout=5)
    assert statuses[:3] == [S.ERROR, S.COMPLETED, S.ERROR]
    assert [r.status for r in sched.runs(tid)][:3] == [S.ERROR, S.COMPLETED, S.ERROR]


def test_get_task_fields(clock):
    def my_job():
        return 1

    sched = virtual(clock)  # not started: the virtual clock stands still
    try:
        before = time.time()
        tid = sched.delay("recur", 60, 4, my_job)
        after = time.time()
        info = sched.get_task(tid)
    finally:
        sched.shutdown()
    assert INFO_KEYS <= set(info)
    assert info["id"] == tid
    assert info["name"] == my_job.__qualname__
    assert info["name"].endswith("test_get_task_fields.<locals>.my_job")
    assert info["trigger"] == "recur"
    assert info["interval"] == 60
    assert info["priority"] == 4
    assert info["status"] is S.SUSPENDED
    assert info["runs"] == 0
    assert info["missed"] == 0
    assert info["last_error"] is None
    assert info["perf"] is None
    nrt = info["next_run_time"]
    assert isinstance(nrt, dt.datetime)
    assert nrt.tzinfo is not None and nrt.utcoffset() is not None
    # wall clock: 60 s from when the task was added (virtual clock did not move)
    assert before + 60 - 1 <= nrt.timestamp() <= after + 60 + 1


def test_name_parameter_overrides_the_default(clock):
    with virtual(clock) as sched:
        tid = sched.delay("once", 5, 1, ok, name="nightly report")
        assert sched.get_task(tid)["name"] == "nightly report"


def test_get_task_after_runs_counts_runs_and_perf(clock):
    def takes_two_seconds():
        clock.advance(2)
        return "x"

    statuses = []
    with virtual(clock) as sched:
        def stop_after_three(event):
            statuses.append(event.status)
            if len(statuses) == 3:
                sched.pause(event.task_id)

        sched.add_listener(stop_after_three, kinds=[psl.EventKind.COMPLETED])
        tid = sched.delay("recur", 10, 1, takes_two_seconds)
        wait_for(lambda: len(statuses) >= 3, timeout=5)
        info = sched.get_task(tid)
    assert info["runs"] == 3
    assert info["status"] is S.COMPLETED
    assert info["perf"] == pytest.approx(2.0)
    assert info["last_error"] is None


def test_get_all_lists_every_task(clock):
    sched = virtual(clock)
    try:
        a = sched.delay("once", 1, 1, ok, name="a")
        b = sched.delay("recur", 100, 2, ok, name="b")
        c = sched.delay("once", 200, 3, ok, name="c")
        sched.pause(b)
        sched.cancel(c)
        sched.start()
        assert sched.get_result(a, timeout=5) == "done"
        infos = {info["id"]: info for info in sched.get_all()}
    finally:
        sched.shutdown()
    assert {a, b, c} <= set(infos)
    assert infos[a]["status"] is S.COMPLETED
    assert infos[b]["status"] is S.SUSPENDED
    assert infos[c]["status"] is S.CANCELED
    assert all(INFO_KEYS <= set(info) for info in infos.values())


def test_unknown_task_id_is_a_key_error(clock):
    with virtual(clock) as sched:
        with pytest.raises(KeyError, match="nope"):
            sched.get_status("nope")
        with pytest.raises(KeyError, match="nope"):
            sched.get_status_str("nope")
        with pytest.raises(KeyError, match="nope"):
            sched.get_task("nope")
