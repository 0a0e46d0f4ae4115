"""Dependencies between tasks: delay(..., depend_on=...)."""
from __future__ import annotations

import threading
from concurrent.futures import CancelledError

import pytest

import pysched_lightning as psl
from conftest import virtual, wait_for, secs

S = psl.TaskStatus
K = psl.EventKind


def drain(events, until, timeout=5):
    """Collect events from a subscribe() queue until *until(collected)* holds."""
    got = []
    while not until(got):
        got.append(events.get(timeout=timeout))
    return got


def test_chain_of_three_with_failing_middle(clock):
    called = []

    def first():
        called.append("first")
        return 1

    def middle():
        called.append("middle")
        raise RuntimeError("middle broke")

    def last():
        called.append("last")

    with virtual(clock) as sched:
        events = sched.subscribe()
        a = sched.delay("once", 0, 1, first)
        b = sched.delay("once", 0, 1, middle, depend_on=a)
        c = sched.delay("once", 0, 1, last, depend_on=[b])
        with pytest.raises(CancelledError):
            sched.get_result(c, timeout=5)
        got = drain(events, lambda got: any(e.kind is K.CANCELED and e.task_id == c
                                            for e in got))
    assert called == ["first", "middle"]
    assert sched.get_status(a) is S.COMPLETED
    assert sched.get_status(b) is S.ERROR
    assert sched.get_status(c) is S.CANCELED
    order = [(e.kind, e.task_id) for e in got if e.task_id in (a, b, c)
             and e.kind in (K.STARTED, K.COMPLETED, K.FAILED, K.CANCELED)]
    assert order == [(K.STARTED, a), (K.COMPLETED, a), (K.STARTED, b), (K.FAILED, b),
                     (K.CANCELED, c)]
    failed = next(e for e in got if e.kind is K.FAILED)
    assert isinstance(failed.exception, RuntimeError)


def test_failure_cascades_down_a_long_chain(clock):
    called = []

    def fail():
        raise ValueError("root failed")

    with virtual(clock) as sched:
        canceled = sched.subscribe([K.CANCELED])
        root = sched.delay("once", 0, 1, fail)
        ids = [root]
        for n in range(4):
            ids.append(sched.delay("once", 0, 1, called.append, args=(n,),
                                   depend_on=ids[-1]))
        got = drain(canceled, lambda got: len(got) >= 4)
        assert [e.task_id for e in got] == ids[1:]
        assert all(sched.get_status(t) is S.CANCELED for t in ids[1:])
    assert called == []


def test_dependent_waits_for_dependency_to_complete(clock):
    def slow_dep():
        clock.advance(7)
        return "dep"

    with virtual(clock, wallfunc=clock.now) as sched:
        start = clock.now()
        a = sched.delay("once", 20, 1, slow_dep)
        b = sched.delay("once", 1, 1, lambda: "dependent", depend_on=a)
        assert sched.get_result(b, timeout=5) == "dependent"
        run_a, run_b = sched.runs(a)[0], sched.runs(b)[0]
    assert secs(run_a.started) == pytest.approx(start + 20)
    assert secs(run_b.started) >= secs(run_a.finished) == pytest.approx(start + 27)


def test_dependent_also_waits_for_its_own_time(clock):
    with virtual(clock, wallfunc=clock.now) as sched:
        start = clock.now()
        a = sched.delay("once", 1, 1, lambda: "dep")
        b = sched.delay("once", 40, 1, lambda: "dependent", depend_on=a)
        assert sched.get_result(b, timeout=5) == "dependent"
        assert sched.get_status(a) is S.COMPLETED
        run_b = sched.runs(b)[0]
    assert secs(run_b.started) >= start + 40


def test_every_dependency_must_complete(clock):
    order = []
    with virtual(clock) as sched:
        a = sched.delay("once", 5, 1, order.append, args=("a",))
        b = sched.delay("once", 30, 1, order.append, args=("b",))
        c = sched.delay("once", 0, 1, order.append, args=("c",), depend_on=[a, b])
        sched.get_result(c, timeout=5)
        assert sched.runs(c)[0].started >= sched.runs(b)[0].finished
    assert order == ["a", "b", "c"]


def test_one_failed_dependency_of_several_cancels(clock):
    called = []

    def fail():
        raise ValueError("no")

    with virtual(clock) as sched:
        a = sched.delay("once", 5, 1, lambda: "fine")
        b = sched.delay("once", 10, 1, fail)
        c = sched.delay("once", 0, 1, called.append, args=(1,), depend_on=[a, b])
        with pytest.raises(CancelledError):
            sched.get_result(c, timeout=5)
        assert sched.get_status(c) is S.CANCELED
    assert called == []


def test_dependency_timeout_cancels_dependent(clock):
    release = threading.Event()
    called = []

    def hang():
        release.wait(10)

    with virtual(clock, psl.ThreadPoolExecutor(2)) as sched:
        try:
            a = sched.delay("once", 0, 1, hang, timeout=2)
            b = sched.delay("once", 0, 1, called.append, args=(1,), depend_on=a)
            wait_for(lambda: sched.get_status(b) is S.CANCELED, timeout=5)
            assert sched.get_status(a) is S.TIMEOUT
        finally:
            release.set()
    assert called == []


def test_canceling_a_dependency_cancels_dependent(clock):
    called = []
    sched = virtual(clock)
    try:
        events = sched.subscribe([K.CANCELED])
        a = sched.delay("once", 100, 1, lambda: "never")
        b = sched.delay("once", 0, 1, called.append, args=(1,), depend_on=a)
        sched.cancel(a)
        assert sched.get_status(b) is S.CANCELED
        sched.start()
        got = drain(events, lambda got: len(got) >= 2)
        assert [e.task_id for e in got] == [a, b]
        with pytest.raises(CancelledError):
            sched.get_result(b, timeout=5)
    finally:
        sched.shutdown()
    assert called == []


def test_dependent_runs_after_a_retried_dependency_succeeds(clock):
    attempts = []

    def flaky():
        attempts.append(1)
        if len(attempts) == 1:
            raise OSError("transient")
        return "ok"

    with virtual(clock) as sched:
        a = sched.delay("once", 0, 1, flaky, retries=2, retry_delay=5)
        b = sched.delay("once", 0, 1, lambda: "dependent ran", depend_on=a)
        assert sched.get_result(b, timeout=5) == "dependent ran"
        assert sched.get_status(a) is S.COMPLETED
    assert len(attempts) == 2


def test_unknown_dependency_is_a_key_error_naming_it(clock):
    with virtual(clock) as sched:
        known = sched.delay("once", 10, 1, lambda: None)
        with pytest.raises(KeyError, match="no-such-task"):
            sched.delay("once", 0, 1, lambda: None, depend_on="no-such-task")
        with pytest.raises(KeyError, match="missing-too"):
            sched.delay("once", 0, 1, lambda: None, depend_on=[known, "missing-too"])
        assert [info["id"] for info in sched.get_all()] == [known]


def test_dependency_finished_before_the_dependent_was_added(clock):
    def fail():
        raise ValueError("early failure")

    called = []
    with virtual(clock) as sched:
        good = sched.delay("once", 0, 1, lambda: "good")
        bad = sched.delay("once", 0, 1, fail)
        assert sched.get_result(good, timeout=5) == "good"
        with pytest.raises(ValueError):
            sched.get_result(bad, timeout=5)
        after_good = sched.delay("once", 0, 1, lambda: "after good", depend_on=good)
        after_bad = sched.delay("once", 0, 1, called.append, args=(1,), depend_on=bad)
        assert sched.get_result(after_good, timeout=5) == "after good"
        with pytest.raises(CancelledError):
            sched.get_result(after_bad, timeout=5)
        assert sched.get_status(after_bad) is S.CANCELED
    assert called == []


# ------------------------------------------------------------------ regressions

def test_replacing_a_task_keeps_the_tasks_that_depend_on_it():
    """Re-adding an id with a changed definition used to cancel its dependents."""
    with psl.Scheduler() as sched:
        sched.delay('once', 3600, 1, lambda: 'old', task_id='extract')
        load = sched.delay('once', 0, 1, lambda: 'loaded', depend_on='extract')
        sched.delay('once', 0, 1, lambda: 'new', task_id='extract')  # changed: replaced
        assert sched.get_result(load, timeout=5) == 'loaded'
        assert sched.get_result('extract', timeout=5) == 'new'


def test_purge_keeps_a_finished_task_that_another_still_waits_for(clock):
    with virtual(clock) as sched:
        first = sched.delay('once', 0, 1, lambda: 'first')
        assert sched.get_result(first, timeout=5) == 'first'
        later = sched.delay('once', 3600, 1, lambda: 'later', depend_on=first)
        sched.purge()
        assert sched.get_status(first) is S.COMPLETED
        assert sched.get_result(later, timeout=5) == 'later'  # not canceled
        sched.purge()
        with pytest.raises(KeyError):
            sched.get_status(first)  # nobody waits for it any more
