"""purge(days, hours, minutes): drop finished one-shots and old run records."""
from __future__ import annotations

import threading

import pytest

import pysched_lightning as psl
from conftest import virtual, wait_for

S = psl.TaskStatus
K = psl.EventKind


def fails():
    raise ValueError("failed one-shot")


def test_purge_without_arguments_drops_every_finished_one_shot(clock):
    sched = virtual(clock)
    try:
        done = [sched.delay("once", n, 1, lambda: "ok") for n in (1, 2)]
        failed = sched.delay("once", 3, 1, fails)
        pending = sched.delay("once", 10_000, 1, lambda: "later")
        sched.pause(pending)  # else the virtual clock reaches it at once
        sched.start()
        for tid in done:
            sched.get_result(tid, timeout=5)
        with pytest.raises(ValueError):
            sched.get_result(failed, timeout=5)
        assert sched.purge() == 3
        for tid in done + [failed]:
            with pytest.raises(KeyError):
                sched.get_task(tid)
        assert [info["id"] for info in sched.get_all()] == [pending]
        assert sched.get_status(pending) is S.SUSPENDED
        assert sched.purge() == 0
    finally:
        sched.shutdown()


def test_purge_counts_every_attempt_of_a_retried_one_shot(clock):
    with virtual(clock) as sched:
        tid = sched.delay("once", 0, 1, fails, retries=2)
        with pytest.raises(ValueError):
            sched.get_result(tid, timeout=5)
        assert len(sched.runs(tid)) == 3
        assert sched.purge() == 3
        with pytest.raises(KeyError):
            sched.runs(tid)


def test_purge_by_age_on_the_scheduler_clock(clock):
    with virtual(clock) as sched:
        old = sched.delay("once", 1, 1, lambda: "old")
        new = sched.delay("once", 1000, 1, lambda: "new")
        sched.get_result(old, timeout=5)
        sched.get_result(new, timeout=5)
        # now ~1000 s after the first finished, ~0 s after the second
        assert sched.purge(hours=1) == 0
        assert sched.purge(days=1) == 0
        assert sched.purge(minutes=10) == 1
        with pytest.raises(KeyError):
            sched.get_task(old)
        assert sched.get_task(new)["status"] is S.COMPLETED
        assert sched.purge(minutes=10) == 0
        clock.advance(601)
        assert sched.purge(minutes=10) == 1
        with pytest.raises(KeyError):
            sched.get_task(new)


def test_purge_old_runs_of_a_recurring_task(clock):
    with virtual(clock) as sched:
        calls = []

        def tick():
            calls.append(clock.now())
            if len(calls) == 5:
                sched.pause()  # the whole scheduler: the virtual clock stops too

        tid = sched.delay("recur", 100, 1, tick)
        wait_for(lambda: len(calls) >= 5 and sched.runs(tid)[0].done, timeout=5)
        runs = sched.runs(tid)
        assert [r.run_number for r in runs] == [5, 4, 3, 2, 1]
        # runs 1-4 finished 100 s or more ago, run 5 just now
        assert sched.purge(minutes=1) == 4
        assert sched.runs(tid) == [runs[0]]
        info = sched.get_task(tid)
        assert info["status"] is S.COMPLETED
        assert info["runs"] == 5
        assert info["next_run_time"] is not None
        sched.resume()
        wait_for(lambda: len(calls) >= 6, timeout=5)


def test_purge_keeps_a_running_one_shot(no_leaked_threads):
    gate = threading.Event()
    entered = threading.Event()

    def blocker():
        entered.set()
        gate.wait(10)
        return "finished"

    with psl.Scheduler(executor=psl.ThreadPoolExecutor(2)) as sched:
        tid = sched.delay("once", 0, 1, blocker)
        try:
            assert entered.wait(5)
            wait_for(lambda: sched.get_status(tid) is S.RUNNING, timeout=5)
            assert sched.purge() == 0
            assert sched.get_status(tid) is S.RUNNING
        finally:
            gate.set()
        assert sched.get_result(tid, timeout=5) == "finished"
        assert sched.purge() == 1


def test_purge_rejects_negative_ages(clock):
    with virtual(clock) as sched:
        with pytest.raises(ValueError):
            sched.purge(days=-1)
        with pytest.raises(ValueError):
            sched.purge(minutes=-5)


def test_purge_without_arguments_drops_a_one_shot_dated_after_now_by_a_wall_clock_step(
        clock, tmp_path):
    """A one-shot that finished, then a restart after the wall clock stepped
    back an hour: loaded from the store, it is dated an hour ahead. purge()
    with no age still drops it (every finished one), in memory and in the
    store."""
    path = str(tmp_path / "jobs.db")
    wall = {"offset": 1_800_000_000.0}

    def scheduler():
        return psl.Scheduler(executor=psl.ThreadPoolExecutor(1), timefunc=clock.now,
                             delayfunc=clock.sleep, store=path,
                             wallfunc=lambda: clock.now() + wall["offset"])
    first = scheduler()
    first.start()
    try:
        tid = first.delay("once", 0, 1, lambda: "ok", task_id="once-only")
        assert first.get_result(tid, timeout=5) == "ok"
    finally:
        first.shutdown()
    wall["offset"] -= 3600
    second = scheduler()
    try:
        assert second.get_status(tid) is S.COMPLETED
        assert second.purge() == 1
        with pytest.raises(KeyError):
            second.get_task(tid)
        assert [record.id for record in second.store.load_tasks()] == []
    finally:
        second.shutdown()
