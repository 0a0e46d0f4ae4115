"""Retries: retries=N, retry_delay, retry_backoff; each attempt is a run record."""
from __future__ import annotations

import logging
import threading
import time

import pytest

import pysched_lightning as psl
from conftest import messages_of_a_failing_run, pending_events, virtual, wait_for, secs

S = psl.TaskStatus
K = psl.EventKind


def test_retries_with_backoff_make_attempts_1_to_n_plus_1(clock):
    calls = []

    def always_fails():
        calls.append(clock.now())
        clock.advance(1)  # each attempt takes 1 s of scheduler time
        raise ConnectionError(f"attempt {len(calls)} failed")

    status_at_retry = []
    with virtual(clock, wallfunc=clock.now) as sched:
        events = sched.subscribe([K.RETRY, K.FAILED])
        sched.add_listener(lambda e: status_at_retry.append(sched.get_status(e.task_id)),
                           kinds=[K.RETRY])
        tid = sched.delay("once", 0, 1, always_fails, retries=3, retry_delay=2,
                          retry_backoff=3)
        with pytest.raises(ConnectionError, match="attempt 4 failed"):
            sched.get_result(tid, timeout=5)
        assert sched.get_status(tid) is S.ERROR
        runs = sched.runs(tid)
        got = pending_events(events)
    assert len(calls) == 4
    assert [r.attempt for r in runs] == [4, 3, 2, 1]  # newest first
    assert [r.status for r in runs] == [S.ERROR] * 4
    oldest_first = runs[::-1]
    for run in oldest_first:
        assert run.duration == pytest.approx(1)
    # retry k waits retry_delay * backoff**(k-1), counted from the failed attempt's end
    gaps = [secs(b.started) - secs(a.finished) for a, b in zip(oldest_first, oldest_first[1:])]
    assert gaps == [pytest.approx(2), pytest.approx(6), pytest.approx(18)]
    assert [e.kind for e in got] == [K.RETRY, K.RETRY, K.RETRY, K.FAILED]
    assert [e.run.attempt for e in got] == [1, 2, 3, 4]
    # a failed attempt that will be retried does not set ERROR
    assert len(status_at_retry) == 3
    assert S.ERROR not in status_at_retry


def test_retry_that_succeeds_completes(clock):
    outcomes = [OSError("1st"), OSError("2nd"), "third time lucky"]

    def flaky():
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    with virtual(clock, wallfunc=clock.now) as sched:
        retries = sched.subscribe([K.RETRY])
        tid = sched.delay("once", 0, 1, flaky, retries=5, retry_delay=10)
        assert sched.get_result(tid, timeout=5) == "third time lucky"
        assert sched.get_status(tid) is S.COMPLETED
        runs = sched.runs(tid)
        assert len(pending_events(retries)) == 2
    assert [(r.attempt, r.status) for r in runs] == [
        (3, S.COMPLETED), (2, S.ERROR), (1, S.ERROR)]
    assert outcomes == []
    # default backoff is 1: every retry waits retry_delay
    assert secs(runs[0].started) - secs(runs[1].finished) == pytest.approx(10)
    assert secs(runs[1].started) - secs(runs[2].finished) == pytest.approx(10)


def test_no_retries_by_default(clock):
    calls = []

    def fails():
        calls.append(1)
        raise ValueError("once only")

    with virtual(clock) as sched:
        tid = sched.delay("once", 0, 1, fails)
        with pytest.raises(ValueError):
            sched.get_result(tid, timeout=5)
        assert [r.attempt for r in sched.runs(tid)] == [1]
    assert calls == [1]


def test_timed_out_attempt_is_retried(clock):
    attempts = []

    def hangs_first_time():
        run = psl.current_run()
        attempts.append(run.attempt)
        if run.attempt == 1:
            deadline = time.monotonic() + 10
            while not run.timed_out and time.monotonic() < deadline:
                time.sleep(0.002)
            return "too late"
        return "second attempt in time"

    with virtual(clock, psl.ThreadPoolExecutor(2), wallfunc=clock.now) as sched:
        tid = sched.delay("once", 0, 1, hangs_first_time, timeout=30, retries=1,
                          retry_delay=4)
        wait_for(lambda: sched.get_status(tid) is S.COMPLETED, timeout=5)
        assert sched.get_result(tid, timeout=5) == "second attempt in time"
        second, first = sched.runs(tid)
    assert attempts == [1, 2]
    assert (first.attempt, first.status) == (1, S.TIMEOUT)
    assert (second.attempt, second.status) == (2, S.COMPLETED)
    # counted from the end of the timed-out attempt, i.e. its deadline
    assert first.duration == pytest.approx(30)
    assert secs(second.started) - secs(first.finished) == pytest.approx(4)


def test_retries_exhausted_after_timeouts_end_in_timeout(clock):
    def hang():  # until told it timed out, as a cooperative thread task does
        wait_for(lambda: psl.current_run().timed_out, timeout=10)

    with virtual(clock, psl.ThreadPoolExecutor(4)) as sched:
        events = sched.subscribe([K.RETRY, K.TIMEOUT])
        tid = sched.delay("once", 0, 1, hang, timeout=5, retries=2, retry_delay=1)
        got = [events.get(timeout=5) for _ in range(3)]
        assert [e.kind for e in got] == [K.RETRY, K.RETRY, K.TIMEOUT]
        assert sched.get_status(tid) is S.TIMEOUT
        assert [r.attempt for r in sched.runs(tid)] == [3, 2, 1]


def test_timed_out_thread_run_still_counts_as_running_so_retries_do_not_stack_threads(clock):
    """A thread cannot be killed: a run past its timeout keeps its thread
    until it returns, and the retry waits for it instead of taking another
    thread (retries of a hung task used to fill the pool)."""
    release = threading.Event()
    threads = []

    def hang():
        threads.append(threading.current_thread().name)
        release.wait(10)

    with virtual(clock, psl.ThreadPoolExecutor(4)) as sched:
        events = sched.subscribe([K.RETRY])
        tid = sched.delay("once", 0, 1, hang, timeout=5, retries=2, retry_delay=1)
        assert events.get(timeout=5).kind is K.RETRY

        def retry():
            return next((r for r in sched.runs(tid) if r.attempt == 2), None)
        wait_for(retry, timeout=5)  # it is due (the virtual clock moved on)...
        assert retry().status is S.SUSPENDED  # ...but waits: it was not started
        assert threads == ["pysched-worker_0"]
        release.set()  # the hung attempt returns: the retry runs now
        wait_for(lambda: len(threads) == 2, timeout=5)
        assert sched.get_task(tid)["runs"] == 1  # a retry is the same run, again


def test_retry_is_logged_as_a_warning(clock, caplog):
    def fails():
        raise ValueError("nope")

    caplog.set_level(logging.DEBUG, logger="pysched_lightning")
    with virtual(clock) as sched:
        tid = sched.delay("once", 0, 1, fails, retries=1)
        with pytest.raises(ValueError):
            sched.get_result(tid, timeout=5)
    records = [r for r in caplog.records if r.name == "pysched_lightning"]
    assert any(r.levelno == logging.WARNING and tid in r.getMessage() for r in records)
    assert any(r.levelno >= logging.ERROR and tid in r.getMessage() for r in records)


def test_recurring_task_retries_do_not_shift_its_schedule(clock):
    calls = []

    def task():
        calls.append(clock.now())
        clock.advance(0.5)
        if len(calls) % 2 == 1:  # the first attempt of every run fails
            raise RuntimeError("first attempt of each run fails")
        return "ok"

    done = []
    with virtual(clock, history=50, wallfunc=clock.now) as sched:
        def stop_after(event):
            done.append(event.run)
            if len(done) == 4:
                sched.pause(event.task_id)

        sched.add_listener(stop_after, kinds=[K.COMPLETED])
        start = clock.now()
        tid = sched.delay("recur", 10, 1, task, retries=2, retry_delay=3)
        wait_for(lambda: len(done) >= 4, timeout=5)
        runs = sched.runs(tid)[::-1]
    first_attempts = [r for r in runs if r.attempt == 1][:4]
    assert [secs(r.scheduled) - start for r in first_attempts] == [
        pytest.approx(10), pytest.approx(20), pytest.approx(30), pytest.approx(40)]
    assert all(secs(r.started) == pytest.approx(secs(r.scheduled)) for r in first_attempts)
    retried = [r for r in runs if r.attempt == 2][:4]
    assert [r.status for r in retried] == [S.COMPLETED] * 4
    assert all(secs(r.started) - secs(f.finished) == pytest.approx(3)
               for f, r in zip(first_attempts, retried))


def test_bad_retry_options_are_rejected(clock):
    with virtual(clock) as sched:
        with pytest.raises(ValueError, match="-1"):
            sched.delay("once", 0, 1, print, retries=-1)
        with pytest.raises(ValueError, match="0.5"):
            sched.delay("once", 0, 1, print, retries=1, retry_backoff=0.5)
        assert sched.get_all() == []


# ------------------------------------------------------------------ regressions

def test_a_retry_keeps_the_number_of_the_run_it_retries(clock):
    calls = []

    def first_call_fails():
        calls.append(clock.now())
        if len(calls) == 1:
            raise RuntimeError("first")

    with virtual(clock) as sched:
        tid = sched.delay('recur', 10, 1, first_call_fails, retries=1, retry_delay=15)
        wait_for(lambda: len(calls) >= 4)  # run 1 fails, run 2, retry of run 1, run 3
        runs = sched.runs(tid)
    retry = next(r for r in runs if r.attempt == 2)
    assert retry.run_number == 1
    assert sorted(r.run_number for r in runs if r.attempt == 1)[:3] == [1, 2, 3]


@pytest.mark.parametrize("options", [dict(retries=5000, retry_delay=1, retry_backoff=2.0),
                                     dict(retries=100, retry_delay=60, retry_backoff=10)])
def test_a_retry_backoff_that_overflows_is_refused_at_delay(clock, options):
    with virtual(clock) as sched:
        with pytest.raises(ValueError, match="ten years"):
            sched.delay('once', 0, 1, print, **options)
        assert dict(sched.task) == {}


def test_retry_warning_includes_the_error(caplog):
    """The retry warning said only "attempt 1 error"; it names the
    error too, and the task by its name and id."""
    def refused():
        raise ConnectionError("connection refused by db.example")

    tid, messages = messages_of_a_failing_run(caplog, "WARNING", refused, ConnectionError,
                                              "retrying", name="sync db", retries=1,
                                              retry_delay=0.05)
    assert (f"task 'sync db' ({tid}) attempt 1 error: ConnectionError: connection refused "
            "by db.example; retrying in 0.05 s") in messages
