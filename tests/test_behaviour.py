"""One behaviour suite, run on every executor and every store."""
from __future__ import annotations

import concurrent.futures

import pytest

import pysched_lightning as psl
from conftest import wait_for


def double(x):
    return 2 * x


def explode(message):
    raise ValueError(message)


EXECUTORS = {
    "threads": lambda: psl.ThreadPoolExecutor(2),
    "processes": lambda: psl.ProcessPoolExecutor(1),
    "stdlib-threads": lambda: concurrent.futures.ThreadPoolExecutor(2),
}
STORES = ["none", "memory", "sqlite"]


@pytest.fixture(params=[(e, s) for e in EXECUTORS for s in STORES],
                ids=lambda p: f"{p[0]}-{p[1]}")
def sched(request, tmp_path):
    executor_kind, store_kind = request.param
    store = {"none": None, "memory": "memory://",
             "sqlite": f"sqlite:///{tmp_path}/jobs.db"}[store_kind]
    scheduler = psl.Scheduler(executor=EXECUTORS[executor_kind](), store=store)
    scheduler.start()
    yield scheduler
    scheduler.shutdown(wait=True)


def test_a_run_returns_its_value(sched):
    tid = sched.delay('once', 0, 1, double, args=(21,))
    assert sched.get_result(tid, timeout=60) == 42
    assert sched.get_status(tid) is psl.TaskStatus.COMPLETED
    assert sched.get_task(tid)['runs'] == 1


def test_a_failure_is_recorded_with_its_traceback(sched):
    tid = sched.delay('once', 0, 1, explode, args=('kaboom',))
    with pytest.raises(ValueError, match='kaboom'):
        sched.get_result(tid, timeout=60)
    assert sched.get_status(tid) is psl.TaskStatus.ERROR
    [run] = sched.runs(tid)
    assert 'explode' in run.traceback and 'kaboom' in sched.get_task(tid)['last_error']


def test_recurring_task_runs_until_canceled(sched):
    tid = sched.delay('recur', 0.05, 1, double, args=(1,))
    wait_for(lambda: sched.get_task(tid)['runs'] >= 3, timeout=60)
    sched.cancel(tid)
    assert sched.get_status(tid) is psl.TaskStatus.CANCELED
    assert tid not in sched.task


def test_a_chain_runs_in_order(sched):
    first = sched.delay('once', 0, 1, double, args=(1,))
    second = sched.delay('once', 0, 1, double, args=(2,), depend_on=first)
    assert sched.get_result(second, timeout=60) == 4
    assert sched.runs(first)[0].finished <= sched.runs(second)[0].started
