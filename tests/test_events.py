"""Events and listeners; logging through the "pysched_lightning" logger."""
from __future__ import annotations

import logging
import queue
import threading
import time

import pytest

import pysched_lightning as psl
from conftest import pending_events, virtual, wait_for

S = psl.TaskStatus
K = psl.EventKind

EVENT_FIELDS = ("kind", "task_id", "run", "timestamp", "status", "result", "exception",
                "traceback", "reason", "lateness", "count")


def test_event_kinds_exist():
    names = {kind.name for kind in K}
    assert {"ADDED", "SUBMITTED", "STARTED", "COMPLETED", "FAILED", "TIMEOUT", "RETRY",
            "MISSED", "CANCELED", "REMOVED", "SCHEDULER_STARTED",
            "SCHEDULER_SHUTDOWN"} <= names


def test_lifecycle_of_a_one_shot_in_order(clock):
    sched = virtual(clock)
    events = sched.subscribe()
    assert isinstance(events, queue.Queue)
    removed = threading.Event()
    sched.add_listener(lambda event: removed.set(), kinds=[K.REMOVED])
    try:
        sched.start()
        tid = sched.delay("once", 5, 1, lambda: 42)
        assert sched.get_result(tid, timeout=5) == 42
        assert removed.wait(5)
    finally:
        sched.shutdown()
    got = pending_events(events)
    kinds = [e.kind for e in got]
    assert kinds == [K.SCHEDULER_STARTED, K.ADDED, K.SUBMITTED, K.STARTED, K.COMPLETED,
                     K.REMOVED, K.SCHEDULER_SHUTDOWN]
    assert all(e.task_id == tid for e in got[1:-1])
    completed = got[4]
    for field in EVENT_FIELDS:
        assert hasattr(completed, field)
    assert completed.status is S.COMPLETED
    assert completed.result == 42
    assert completed.exception is None and completed.traceback is None
    assert completed.run is not None and completed.run.task_id == tid
    # timestamps are wall-clock POSIX seconds
    assert abs(completed.timestamp.timestamp() - time.time()) < 60
    assert completed.timestamp.tzinfo is not None  # an aware datetime, as run times are


def test_failed_event_carries_exception_and_traceback(clock):
    def broken_task():
        raise KeyError("missing thing")

    with virtual(clock) as sched:
        failed = sched.subscribe([K.FAILED])
        tid = sched.delay("once", 0, 1, broken_task)
        event = failed.get(timeout=5)
    assert event.task_id == tid
    assert event.status is S.ERROR
    assert isinstance(event.exception, KeyError)
    assert "broken_task" in event.traceback
    assert "missing thing" in event.traceback
    assert event.result is None


def test_canceled_event_has_a_reason(clock):
    sched = virtual(clock)
    try:
        events = sched.subscribe([K.CANCELED])
        tid = sched.delay("once", 100, 1, lambda: None)
        sched.cancel(tid)  # before start(): the task cannot have run
        event = events.get(timeout=5)
        sched.start()
    finally:
        sched.shutdown()
    assert (event.kind, event.task_id) == (K.CANCELED, tid)
    assert event.status in (None, S.CANCELED)
    assert event.reason


def test_kinds_filter_and_remove_listener(clock):
    only_completed, everything = [], []
    with virtual(clock) as sched:
        sched.add_listener(only_completed.append, kinds=[K.COMPLETED])
        sched.add_listener(everything.append)
        a = sched.delay("once", 1, 1, lambda: "a")
        sched.get_result(a, timeout=5)
        wait_for(lambda: any(e.kind is K.COMPLETED for e in only_completed), timeout=5)
        sched.remove_listener(only_completed.append)
        b = sched.delay("once", 1, 1, lambda: "b")
        sched.get_result(b, timeout=5)
        wait_for(lambda: any(e.kind is K.COMPLETED and e.task_id == b for e in everything),
                 timeout=5)
    assert [(e.kind, e.task_id) for e in only_completed] == [(K.COMPLETED, a)]
    assert {e.kind for e in everything} > {K.COMPLETED}


def test_subscribe_with_kinds(clock):
    with virtual(clock) as sched:
        started = sched.subscribe([K.STARTED])
        tid = sched.delay("once", 0, 1, lambda: None)
        sched.get_result(tid, timeout=5)
        event = started.get(timeout=5)
        assert (event.kind, event.task_id) == (K.STARTED, tid)
        assert pending_events(started) == []


def test_a_listener_that_raises_is_logged_and_harmless(clock, caplog):
    caplog.set_level(logging.DEBUG, logger="pysched_lightning")
    after = []

    def bad_listener(event):
        raise RuntimeError("listener exploded")

    with virtual(clock) as sched:
        sched.add_listener(bad_listener)
        sched.add_listener(after.append)
        first = sched.delay("once", 1, 1, lambda: "first")
        assert sched.get_result(first, timeout=5) == "first"
        second = sched.delay("once", 5, 1, lambda: "second")
        assert sched.get_result(second, timeout=5) == "second"
        wait_for(lambda: any(e.kind is K.COMPLETED and e.task_id == second for e in after),
                 timeout=5)
    assert {K.ADDED, K.STARTED, K.COMPLETED} <= {e.kind for e in after}
    errors = [r for r in caplog.records if r.name == "pysched_lightning"
              and r.levelno >= logging.ERROR and r.exc_info is not None
              and "listener exploded" in str(r.exc_info[1])]
    assert errors


def test_a_listener_may_call_back_into_the_scheduler(clock):
    seen = []
    with virtual(clock) as sched:
        def listener(event):
            seen.append((sched.get_status(event.task_id), len(sched.get_all())))

        sched.add_listener(listener, kinds=[K.COMPLETED])
        tid = sched.delay("once", 1, 1, lambda: None)
        sched.get_result(tid, timeout=5)
        wait_for(lambda: seen, timeout=5)
    assert seen[0][0] is S.COMPLETED


def test_retry_and_timeout_events_reach_listeners(clock):
    def hang():  # until told it timed out, as a cooperative thread task does
        wait_for(lambda: psl.current_run().timed_out, timeout=10)

    with virtual(clock, psl.ThreadPoolExecutor(3)) as sched:
        events = sched.subscribe([K.RETRY, K.TIMEOUT])
        hung = sched.delay("once", 0, 1, hang, timeout=1, retries=1)
        got = [events.get(timeout=5) for _ in range(2)]
        assert [e.kind for e in got] == [K.RETRY, K.TIMEOUT]
        assert all(e.task_id == hung for e in got)
        assert next(e for e in got if e.kind is K.RETRY).reason


# ---------------------------------------------------------------- logging

def test_the_library_logs_but_never_prints(clock, caplog, capsys):
    caplog.set_level(logging.DEBUG, logger="pysched_lightning")
    logger = logging.getLogger("pysched_lightning")
    assert all(isinstance(h, logging.NullHandler) for h in logger.handlers)

    def fails():
        raise ValueError("logged, not printed")

    with virtual(clock) as sched:
        tid = sched.delay("once", 0, 1, fails, retries=1)
        with pytest.raises(ValueError):
            sched.get_result(tid, timeout=5)
        sched.add_listener(lambda e: 1 / 0)
        other = sched.delay("once", 0, 1, lambda: None)
        sched.get_result(other, timeout=5)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    assert any(r.name == "pysched_lightning" and "logged, not printed" in r.getMessage()
               + str(r.exc_info and r.exc_info[1]) for r in caplog.records)
    assert all(isinstance(h, logging.NullHandler) for h in logger.handlers)
