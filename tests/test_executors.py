"""Executors: thread and loky pools, hard tasks in processes, any Executor."""
from __future__ import annotations

import concurrent.futures
import os
import threading

import pytest

import pysched_lightning as psl


def fail_in_worker(value):
    marker = "raised in the worker"
    raise ValueError(f"{marker}: {value!r}")


def square(x):
    return x * x


def test_thread_pool_keeps_the_upstream_surface():
    pool = psl.ThreadPoolExecutor(max_workers=2)
    try:
        future = pool.run(pow, args=(2, 10))
        assert pool.future is future
        assert future.result(timeout=5) == 1024
        assert pool.run(dict, kwargs={'a': 1}).result(timeout=5) == {'a': 1}
    finally:
        pool.shutdown(wait=True)


def test_process_pool_runs_lambdas_and_closures():
    offset = 7
    pool = psl.ProcessPoolExecutor(max_workers=1)
    try:
        assert pool.run(lambda x: x + offset, args=(1,)).result(timeout=60) == 8
        assert pool.run(os.getpid).result(timeout=60) != os.getpid()
    finally:
        pool.shutdown(wait=True)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "4"])
def test_pool_size_must_be_a_positive_int(bad):
    with pytest.raises(ValueError, match=repr(bad).replace("(", r"\(")):
        psl.ThreadPoolExecutor(bad)


def test_hard_task_runs_in_another_process_and_returns_its_value():
    with psl.Scheduler() as sched:
        tid = sched.delay('once', 0, 1, os.getpid, hard=True)
        assert sched.get_result(tid, timeout=60) != os.getpid()
        assert sched.get_result(sched.delay('once', 0, 1, square, args=(12,), hard=True),
                                timeout=60) == 144


def test_process_exception_keeps_its_remote_traceback():
    with psl.Scheduler() as sched:
        tid = sched.delay('once', 0, 1, fail_in_worker, args=(3,), hard=True)
        with pytest.raises(ValueError, match="raised in the worker: 3"):
            sched.get_result(tid, timeout=60)
    text = sched.result[tid].traceback
    assert 'fail_in_worker' in text
    assert 'raise ValueError(f"{marker}: {value!r}")' in text
    assert __file__ in text


def test_unpicklable_hard_task_is_rejected_at_delay_naming_the_argument():
    sched = psl.Scheduler()
    try:
        lock = threading.Lock()
        with pytest.raises(TypeError, match=r"args\[1\]"):
            sched.delay('once', 0, 1, square, args=(1, lock), hard=True)
        with pytest.raises(TypeError, match=r"kwargs\['guard'\]"):
            sched.delay('once', 0, 1, square, kwargs={'guard': lock}, hard=True)
        assert dict(sched.task) == {}
    finally:
        sched.shutdown()


def test_any_concurrent_futures_executor_can_run_tasks():
    pool = concurrent.futures.ThreadPoolExecutor(2)
    with psl.Scheduler(executor=pool) as sched:
        tid = sched.delay('once', 0, 1, square, args=(5,))
        assert sched.get_result(tid, timeout=5) == 25
    assert pool._shutdown  # the scheduler shut down the executor it was given


def test_process_pool_as_main_executor_runs_every_task_in_processes():
    with psl.Scheduler(executor=psl.ProcessPoolExecutor(1)) as sched:
        tid = sched.delay('once', 0, 1, os.getpid)
        assert sched.get_result(tid, timeout=60) != os.getpid()


def test_given_process_executor_is_used_for_hard_tasks():
    pool = psl.ProcessPoolExecutor(1)
    with psl.Scheduler(process_executor=pool) as sched:
        pid = sched.get_result(sched.delay('once', 0, 1, os.getpid, hard=True), timeout=60)
    assert pid != os.getpid()


def test_run_future_reflects_the_outcome():
    with psl.Scheduler() as sched:
        ok = sched.delay('once', 0, 1, square, args=(3,))
        bad = sched.delay('once', 0, 1, fail_in_worker, args=(1,))
        assert sched.result[ok]['future'].result(timeout=5) == 9 if ok in sched.result \
            else sched.get_result(ok, timeout=5) == 9
        sched.get_result(ok, timeout=5)
        assert sched.result[ok]['future'].result(timeout=5) == 9
        with pytest.raises(ValueError):
            sched.get_result(bad, timeout=5)
        with pytest.raises(ValueError):
            sched.result[bad]['future'].result(timeout=5)
        entry = sched.result[ok]
        assert entry['task'].id == ok
        assert entry['timestamp'].tzinfo is not None  # an aware datetime
