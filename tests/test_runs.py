"""Run records, the result map, bounded history and get_result()."""
from __future__ import annotations

import threading

import pytest

import pysched_lightning as psl
from conftest import InlineExecutor, wait_for, secs


def test_every_execution_makes_a_run_record(clock):
    sched = psl.Scheduler(executor=InlineExecutor(), timefunc=clock.now, delayfunc=clock.sleep,
                          wallfunc=clock.now)
    counter = iter(range(100))

    def count():
        value = next(counter)
        if value == 2:
            sched.pause()  # stop the virtual clock's race after three runs
        return value

    tid = sched.delay('recur', 10, 1, count)
    sched.start()
    try:
        wait_for(lambda: len(sched.runs(tid)) >= 3 and sched.runs(tid)[0].done)
    finally:
        sched.shutdown()
    runs = list(reversed(sched.runs(tid)))
    assert len(runs) == 3
    assert [r.run_number for r in runs] == [1, 2, 3]
    assert [r.result for r in runs] == [0, 1, 2]
    assert [secs(r.scheduled) for r in runs] == [1010.0, 1020.0, 1030.0]
    assert all(r.status is psl.TaskStatus.COMPLETED for r in runs)
    assert all(r.started is not None and r.finished >= r.started for r in runs)
    assert sched.result[tid] is sched.runs(tid)[0]


def test_history_of_a_recurring_task_is_bounded(clock):
    sched = psl.Scheduler(executor=InlineExecutor(), timefunc=clock.now, delayfunc=clock.sleep,
                          history=5)
    tid = sched.delay('recur', 1, 1, lambda: None)
    sched.start()
    try:
        wait_for(lambda: sched.get_task(tid)['runs'] >= 50)
    finally:
        sched.shutdown()
    kept = sched.runs(tid)
    assert len(kept) == 5
    assert kept[0].run_number == sched.get_task(tid)['runs'] or kept[0].run_number >= 50
    assert sched.runs(tid, limit=2) == kept[:2]


def test_get_result_waits_for_the_run():
    gate = threading.Event()
    with psl.Scheduler() as sched:
        tid = sched.delay('once', 0, 1, lambda: gate.wait(5) and 'value')
        with pytest.raises(TimeoutError):
            sched.get_result(tid, timeout=0.05)
        gate.set()
        assert sched.get_result(tid, timeout=5) == 'value'


def test_get_result_of_unknown_task_raises_key_error():
    sched = psl.Scheduler()
    with pytest.raises(KeyError, match="missing"):
        sched.get_result('missing')


def test_get_result_after_shutdown_of_a_task_that_never_ran_raises():
    from concurrent.futures import CancelledError
    sched = psl.Scheduler()
    tid = sched.delay('once', 3600, 1, print)
    sched.start()
    sched.shutdown()
    with pytest.raises(CancelledError):
        sched.get_result(tid, timeout=5)


def test_result_map_reads_like_upstream():
    with psl.Scheduler() as sched:
        tid = sched.delay('once', 0, 1, lambda: 5)
        sched.get_result(tid, timeout=5)
        entry = sched.result[tid]
        assert set(entry.keys()) == {'timestamp', 'task', 'future'}
        assert entry['future'].result() == 5
        with pytest.raises(KeyError):
            entry['nope']


def test_history_bound_also_bounds_memory(clock):
    """Regression: each run kept a link to the one before it, so runs dropped
    from the bounded history stayed alive through their successors."""
    import gc
    from pysched_lightning.records.runs import Run
    sched = psl.Scheduler(executor=InlineExecutor(), timefunc=clock.now, delayfunc=clock.sleep,
                          history=5)
    tid = sched.delay('recur', 1, 1, lambda: None)
    sched.start()
    try:
        wait_for(lambda: sched.get_task(tid)['runs'] >= 200)
        sched.pause()
        gc.collect()
        alive = [o for o in gc.get_objects() if isinstance(o, Run) and o.task_id == tid]
        assert len(alive) <= 10
    finally:
        sched.shutdown()
