"""Events and listeners; logging through the "pysched_lightning" logger."""
from __future__ import annotations

import logging
import os
import queue
import threading
import time

import pytest

import pysched_lightning as psl
from conftest import pending_events, virtual, wait_for
from invariants import thread_stacks

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


# ------------------------------------------- user code that re-enters or exits


def _call_meanwhile(call, seconds=5.0):
    """Call ``call()`` in a daemon thread and wait for it at most *seconds*.

    A callback that calls back into the scheduler directly would deadlock if
    the scheduler ran it with one of its own locks held; called this way it
    cannot hang the test: the callback returns after *seconds* and the
    scheduler goes on. Returns ``{'value': ...}``, ``{'error': ...}``, or
    ``{'stacks': ...}`` (every thread's stack at the deadline, showing who
    held the scheduler) when the call had not returned by then."""
    box = {}

    def target():
        try:
            box["value"] = call()
        except BaseException as exc:  # reported, not raised in the thread
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True, name="calls-back")
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        box["stacks"] = thread_stacks()
    return box


def test_a_done_callback_of_a_finished_runs_future_may_call_delay():
    """Futures were resolved with the state lock held: a done-callback on
    ``sched.result[tid]['future']`` that called delay() deadlocked the
    worker that finished the run (it held the lock and waited for it), and
    with it the scheduler. A future's callbacks are user code: they must run
    with no scheduler lock held."""
    sched = psl.Scheduler(executor=psl.ThreadPoolExecutor(2))
    sched.start()
    gate = threading.Event()
    outcome = {}
    try:
        tid = sched.delay('once', 0, 1, gate.wait, args=(10,))
        wait_for(lambda: tid in sched.result, timeout=5)  # its run exists, blocked
        sched.result[tid]['future'].add_done_callback(lambda future: outcome.update(
            _call_meanwhile(lambda: sched.delay('once', 0, 1, lambda: "follow-up"))))
        gate.set()
        wait_for(lambda: outcome, timeout=15)
        assert "stacks" not in outcome, \
            "delay() from the future's done-callback could not proceed:\n" + outcome["stacks"]
        assert sched.get_result(outcome["value"], timeout=5) == "follow-up"
    finally:
        gate.set()
        sched.shutdown(wait=True, timeout=5)


def test_a_done_callback_of_a_canceled_runs_future_may_call_delay():
    """The same on cancel(): the future of a run waiting for a worker was
    cancelled with the state lock held, so its done-callback calling
    delay() deadlocked the thread that called cancel()."""
    sched = psl.Scheduler(executor=psl.ThreadPoolExecutor(1))
    sched.start()
    gate = threading.Event()
    outcome = {}
    try:
        busy = sched.delay('once', 0, 1, gate.wait, args=(10,))
        wait_for(lambda: sched.get_status(busy) is S.RUNNING, timeout=5)
        queued = sched.delay('once', 0, 1, lambda: "never")
        wait_for(lambda: queued in sched.result, timeout=5)  # waits for the worker
        sched.result[queued]['future'].add_done_callback(lambda future: outcome.update(
            _call_meanwhile(lambda: sched.delay('once', 3600, 1, lambda: "later"))))
        sched.cancel(queued)
        assert outcome, "the canceled run's future was not resolved by cancel()"
        assert "stacks" not in outcome, \
            "delay() from the future's done-callback could not proceed:\n" + outcome["stacks"]
        assert outcome["value"] in sched.task
    finally:
        gate.set()
        sched.shutdown(wait=True, timeout=5)


class ExitOnce:
    """A listener that raises SystemExit the first time it hears *kind* of
    *task_id* (None: of any task), as code calling ``sys.exit()`` does."""

    def __init__(self, kind, task_id=None):
        self.kind, self.task_id = kind, task_id
        self.fired = threading.Event()

    def __call__(self, event):
        if event.kind is self.kind and self.task_id in (None, event.task_id) \
                and not self.fired.is_set():
            self.fired.set()
            raise SystemExit(3)


def _shuts_down_within(sched, seconds):
    """shutdown(wait=True) in a daemon thread: True when it returned in time
    (a hung shutdown then cannot hang the test)."""
    thread = threading.Thread(target=sched.shutdown, kwargs=dict(wait=True, timeout=5),
                              daemon=True)
    thread.start()
    thread.join(seconds)
    return not thread.is_alive()


def test_a_listener_raising_system_exit_in_a_worker_loses_no_run():
    """A BaseException from a listener escaped the worker's loop between two
    runs: the run it had taken next stayed RUNNING without executing, its
    worker slot was gone, nothing ran after and shutdown() hung. The
    exception is contained like any listener error (SystemExit in a thread
    of the scheduler's exits nothing): the scheduler goes on."""
    sched = psl.Scheduler(executor=psl.ThreadPoolExecutor(1))
    gate = threading.Event()
    exits = ExitOnce(K.COMPLETED)
    sched.add_listener(exits)
    sched.start()
    try:
        first = sched.delay('once', 0, 1, gate.wait, args=(10,))
        wait_for(lambda: sched.get_status(first) is S.RUNNING, timeout=5)
        queued = sched.delay('once', 0, 1, lambda: "queued")  # taken next by that worker
        gate.set()
        assert exits.fired.wait(10)
        assert sched.get_result(queued, timeout=10) == "queued"
        assert sched.get_result(sched.delay('once', 0, 1, lambda: "later"), timeout=10) \
            == "later"
    finally:
        gate.set()
        assert _shuts_down_within(sched, 20), thread_stacks()


def test_a_listener_raising_system_exit_in_the_dispatcher_does_not_stop_scheduling():
    """The dispatcher caught Exception only: a listener's SystemExit (here on
    SUBMITTED, heard in the dispatcher's thread) ended the thread, and no
    task fired after it while ``stopped`` still read False."""
    sched = psl.Scheduler()
    exits = ExitOnce(K.SUBMITTED)
    sched.add_listener(exits)
    sched.start()
    try:
        first = sched.delay('once', 0.05, 1, lambda: "first")  # fired by the dispatcher
        assert sched.get_result(first, timeout=10) == "first"
        assert exits.fired.is_set()
        later = sched.delay('once', 0.05, 1, lambda: "later")
        assert sched.get_result(later, timeout=10) == "later"
    finally:
        assert _shuts_down_within(sched, 20), thread_stacks()


def test_a_listener_raising_system_exit_in_the_process_hand_off_loses_no_hard_run():
    """The process hand-off thread caught Exception only: a listener's
    SystemExit on a hard task's COMPLETED (heard in that thread) ended it,
    and the outcomes of later hard runs were never recorded: RUNNING
    forever, and shutdown() waited for them."""
    sched = psl.Scheduler(process_executor=psl.ProcessPoolExecutor(1))
    sched.start()
    try:
        first = sched.delay('once', 0, 1, os.getpid, hard=True)
        exits = ExitOnce(K.COMPLETED, first)
        sched.add_listener(exits)
        assert exits.fired.wait(60)  # (the first run waits for its worker process)
        later = sched.delay('once', 0, 1, os.getpid, hard=True)
        assert isinstance(sched.get_result(later, timeout=15), int)
        assert sched.get_status(first) is S.COMPLETED
    finally:
        assert _shuts_down_within(sched, 30), thread_stacks()
