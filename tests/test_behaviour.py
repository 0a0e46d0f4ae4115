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


# ---------------------------------------------------------------- regressions
# Each pins a defect found in the scheduler before its core was rebuilt.

class Unprintable(Exception):
    """An exception whose str() and repr() raise."""

    def __str__(self):
        raise RuntimeError("no str for you")

    def __repr__(self):
        raise RuntimeError("no repr either")


class UnprintableResult:
    def __repr__(self):
        raise RuntimeError("no repr")

    def __reduce__(self):
        return (UnprintableResult, ())


def raise_unprintable():
    raise Unprintable()


def unprintable_result():
    return UnprintableResult()


def wait_for_file(path, value=None):
    """Block until *path* exists (a gate that works across processes)."""
    import os
    import time
    deadline = time.monotonic() + 30
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.005)
    return value


def saturate(sched, gate):
    """Blockers until the executor has no free slot: the last one waits in
    the ready heap (a task due now fires inside delay())."""
    blockers = []
    while True:
        blockers.append(sched.delay('once', 0, 1, wait_for_file, args=(gate,)))
        if sched.get_status(blockers[-1]) is psl.TaskStatus.SUSPENDED:
            return blockers
        assert len(blockers) < 64, "the executor never filled up"


def test_an_exception_that_cannot_be_printed_ends_its_run_and_frees_its_worker(sched):
    bad = sched.delay('once', 0, 1, raise_unprintable)
    with pytest.raises(Unprintable):
        sched.get_result(bad, timeout=60)
    assert sched.get_status(bad) is psl.TaskStatus.ERROR
    [run] = sched.runs(bad)
    assert 'Unprintable' in run.error and 'raise_unprintable' in run.traceback
    assert sched.get_result(sched.delay('once', 0, 1, double, args=(2,)), timeout=60) == 4


def test_a_result_that_cannot_be_printed_is_still_recorded(sched):
    tid = sched.delay('once', 0, 1, unprintable_result)
    assert isinstance(sched.get_result(tid, timeout=60), UnprintableResult)
    [run] = sched.runs(tid)
    assert run.status is psl.TaskStatus.COMPLETED


def test_cancel_of_a_queued_run_resolves_its_future(sched, tmp_path):
    gate = str(tmp_path / "open")
    blockers = saturate(sched, gate)
    queued = sched.delay('once', 0, 1, double, args=(1,))
    future = sched.result[queued].future
    sched.cancel(queued)
    assert future.cancelled()
    assert sched.get_status(queued) is psl.TaskStatus.CANCELED
    open(gate, "w").close()
    for tid in blockers[:-1]:
        assert sched.get_result(tid, timeout=60) is None
    if sched.store is not None:  # it never started: no claim was left RUNNING
        assert all(r.status is not psl.TaskStatus.RUNNING for r in sched.runs(queued))


def test_a_run_ending_after_its_task_was_canceled_leaves_it_canceled(sched, tmp_path):
    gate = str(tmp_path / "open")
    tid = sched.delay('once', 0, 1, wait_for_file, args=(gate, 'late'))
    wait_for(lambda: sched.get_status(tid) is psl.TaskStatus.RUNNING, timeout=60)
    run = sched.result[tid]
    sched.cancel(tid)
    open(gate, "w").close()
    wait_for(lambda: run.done, timeout=60)
    assert run.status is psl.TaskStatus.COMPLETED and run.result == 'late'
    assert sched.get_status(tid) is psl.TaskStatus.CANCELED


def test_a_run_is_a_read_only_mapping_of_upstreams_keys(sched):
    tid = sched.delay('once', 0, 1, double, args=(3,))
    sched.get_result(tid, timeout=60)
    run = sched.result[tid]
    assert 'timestamp' in run and 'task' in run and 'future' in run and 'nope' not in run
    assert list(run) == list(run.keys()) == ['timestamp', 'task', 'future']
    assert len(run) == 3 and run.get('nope', 7) == 7
    assert run['future'].result() == 6 and run['task'].id == tid
    assert dict(run)['timestamp'].tzinfo is not None
    with pytest.raises(TypeError):
        run['task'] = None
