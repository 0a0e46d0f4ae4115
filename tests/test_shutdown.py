"""Shutdown and the runs it meets: runs a worker took from the queue, a
one-shot added at the last moment, runs that end while shutdown waits, and
a thread task that outlives shutdown's timeout.

Runs are held in progress by gates (see :class:`Gate`): a task stored by
import reference (``test_shutdown:hold``) waits until the test opens its
gate, so each test chooses the moment a run ends, relative to shutdown,
without relying on timing. Shutdown itself runs in a thread where the test
must act while it waits; ``sched.stopped`` turning True says it has begun.
"""
from __future__ import annotations

import concurrent.futures
import logging
import os
import signal
import threading
import time
import uuid
from concurrent.futures import CancelledError
from typing import Dict, List

import pytest

import pysched_lightning as psl
from pysched_lightning.stores import open_store
from conftest import pending_events, process_gone, wait_for

S = psl.TaskStatus
K = psl.EventKind

#: How long a test waits for shutdown() to return once nothing holds it.
SHUTDOWN_DEADLINE = 30.0
#: How long shutdown(timeout=1) may take: its second, the grace it gives
#: interrupted runs to return (2 s), and a wide margin for a busy machine.
TIMEOUT_SHUTDOWN_DEADLINE = 15.0


class Gate:
    """Holds a run of :func:`hold` until the test opens it."""

    _by_name: Dict[str, "Gate"] = {}

    def __init__(self) -> None:
        self.name = uuid.uuid4().hex
        self.started = threading.Event()
        self.opened = threading.Event()
        Gate._by_name[self.name] = self

    def open(self) -> None:
        self.opened.set()


def hold(name, value=None):
    """A task: say it started, wait until its gate opens, return *value*."""
    gate = Gate._by_name[name]
    gate.started.set()
    gate.opened.wait(60)
    return value


def write_marker(path, text):
    """A task that leaves a line in *path* each time it runs."""
    with open(path, "a") as out:
        out.write(text + "\n")
    return text


def lines(path):
    """The lines *path* holds (none if it does not exist)."""
    if not os.path.exists(path):
        return []
    with open(path) as kept:
        return kept.read().split()


@pytest.fixture
def gates():
    """Makes gates; every one is opened at the end, so no worker stays blocked."""
    made: List[Gate] = []

    def make() -> Gate:
        made.append(Gate())
        return made[-1]
    yield make
    for gate in made:
        gate.open()
        Gate._by_name.pop(gate.name, None)


def shutdown_in_thread(sched, **kwargs) -> threading.Thread:
    """``sched.shutdown(**kwargs)`` in a thread of its own; returns it once
    the shutdown has begun (``stopped`` is True)."""
    thread = threading.Thread(target=sched.shutdown, kwargs=kwargs, name="test-shutdown")
    thread.start()
    wait_for(lambda: sched.stopped)
    return thread


def stored_statuses(path, task_id):
    """The task's run statuses as another process reads them from the file."""
    reader = open_store(path, read_only=True)
    try:
        return [psl.TaskStatus(row["status"]) for row in reader.runs(task_id)]
    finally:
        reader.close()


# ---------------------------------------------- runs a worker took from the queue


def test_a_run_picked_up_by_a_worker_keeps_its_outcome_through_shutdown(tmp_path, gates):
    """A worker that ends a run takes the next queued run itself. When
    ``shutdown(wait=True)`` comes while such a run executes, shutdown waits
    for it like any running run, and its outcome is kept everywhere: status,
    result, timestamp, COMPLETED event, store row; the restart reads it
    COMPLETED, not interrupted."""
    path = str(tmp_path / "jobs.db")
    first, second = gates(), gates()
    sched = psl.Scheduler(executor=psl.ThreadPoolExecutor(1), store=path)
    completed = sched.subscribe([K.COMPLETED])
    sched.start()
    try:
        sched.delay('once', 0, 1, hold, args=(first.name, 'first'))
        assert first.started.wait(10)
        picked = sched.delay('once', 0, 1, hold, args=(second.name, 'second'))
        first.open()  # the only worker ends its run and takes `picked` from the queue
        assert second.started.wait(10)
        closing = shutdown_in_thread(sched, wait=True)
        second.open()
        closing.join(SHUTDOWN_DEADLINE)
        assert not closing.is_alive()
    finally:
        first.open()
        second.open()
        sched.shutdown()
    assert sched.get_status(picked) is S.COMPLETED
    assert sched.get_result(picked, timeout=0) == 'second'
    assert sched.result[picked]['timestamp'] is not None
    assert [event.task_id for event in pending_events(completed)].count(picked) == 1
    assert stored_statuses(path, picked) == [S.COMPLETED]
    restarted = psl.Scheduler(store=path)
    try:
        assert restarted.get_status(picked) is S.COMPLETED
        assert restarted.get_result(picked, timeout=0) == 'second'
    finally:
        restarted.shutdown()


def test_under_load_every_run_a_worker_took_keeps_its_outcome_through_shutdown():
    """Many quick one-shots on two workers, shutdown while most still wait.
    Every task whose function was called ends COMPLETED with its result, a
    COMPLETED event, a resolved future and a timestamp (when it was handed to
    a worker); every other one reports that it will not run. Two runs in the
    middle of the queue hold the two workers until the shutdown has begun,
    so runs the workers took from the queue are in progress at that moment
    and the queue is still long."""
    count, holders = 300, (100, 101)
    called: List[int] = []
    holding = {i: threading.Event() for i in holders}
    sched = psl.Scheduler(executor=psl.ThreadPoolExecutor(2))

    def quick(i):
        called.append(i)
        return i

    def until_shutdown(i):
        called.append(i)
        holding[i].set()
        wait_for(lambda: sched.stopped, timeout=30)
        return i

    completed = sched.subscribe([K.COMPLETED])
    ids = [sched.delay('once', 0, 1, until_shutdown if i in holders else quick, args=(i,))
           for i in range(count)]
    sched.start()
    assert all(event.wait(30) for event in holding.values())
    sched.shutdown(wait=True)
    events = {event.task_id for event in pending_events(completed)}
    assert len(called) < count  # shut down with a queue left
    lost: Dict[str, List[int]] = {}  # what was lost: the runs that lost it
    for i, tid in enumerate(ids):
        missing = _missing(sched, tid, i, events) if i in called else []
        if missing:
            lost.setdefault(", ".join(missing), []).append(i)
    assert lost == {}, f"runs that executed lost part of their outcome: {lost}"
    for i, tid in enumerate(ids):
        if i not in called:
            with pytest.raises(CancelledError):
                sched.get_result(tid, timeout=0)


def _missing(sched, task_id, value, events) -> List[str]:
    """What the task's run lost of its COMPLETED outcome *value* (nothing: [])."""
    status = sched.get_status(task_id)
    run = sched.result.get(task_id)
    if run is None:
        return [f"status {status.label}", "no run"]
    missing = [] if status is S.COMPLETED else [f"status {status.label}"]
    if run.result != value:
        missing.append("result")
    if run['timestamp'] is None:
        missing.append("timestamp")
    if not run['future'].done() or run['future'].cancelled():
        missing.append("future")
    if task_id not in events:
        missing.append("COMPLETED event")
    return missing


# ---------------------------------------------- a one-shot added at the last moment


def assert_runs_once_after_a_restart(path, task_id, marker):
    """A scheduler started on the store at *path* runs the one-shot
    *task_id* (a :func:`write_marker` task), and it ran once in all."""
    restarted = psl.Scheduler(store=path)
    restarted.start()
    try:
        assert restarted.get_result(task_id, timeout=30) == 'ran'
    finally:
        restarted.shutdown()
    assert lines(marker) == ['ran']


def test_a_one_shot_added_just_before_shutdown_runs_exactly_once_across_the_restart(
        tmp_path):
    """``delay()`` of a one-shot due now, on an idle worker, while another
    thread shuts the scheduler down. ``delay()`` returned its id, so the
    task was accepted: it runs exactly once, before the shutdown or after
    the restart, and no claim of it is left RUNNING in the store.

    A listener of its ADDED event (called by ``delay()`` before the run is
    handed to a worker) waits until the shutdown has begun: that is the
    window any ``delay()`` racing a ``shutdown()`` has, made certain."""
    path, marker = str(tmp_path / "jobs.db"), str(tmp_path / "ran")
    sched = psl.Scheduler(executor=psl.ThreadPoolExecutor(2), store=path)
    closing: List[threading.Thread] = []

    def shut_down_meanwhile(event):
        if event.task_id == 'last-minute':
            closing.append(shutdown_in_thread(sched, wait=True))

    sched.add_listener(shut_down_meanwhile, kinds=[K.ADDED])
    sched.start()
    tid = sched.delay('once', 0, 1, write_marker, args=(marker, 'ran'), task_id='last-minute')
    closing[0].join(SHUTDOWN_DEADLINE)
    assert not closing[0].is_alive()
    assert S.RUNNING not in stored_statuses(path, tid)
    assert_runs_once_after_a_restart(path, tid, marker)


def test_a_one_shot_whose_added_listener_shuts_the_scheduler_down_runs_after_the_restart(
        tmp_path):
    """The listener of a one-shot's ADDED event calls ``shutdown(wait=True)``
    itself, inside ``delay()``, before the run (claimed with the task) is
    handed to a worker: the run cannot execute, and its claim is given back,
    so it runs once after the restart (a claim left RUNNING would read as a
    run a crash cut short, never to run)."""
    path, marker = str(tmp_path / "jobs.db"), str(tmp_path / "ran")
    sched = psl.Scheduler(executor=psl.ThreadPoolExecutor(2), store=path)
    sched.add_listener(lambda event: sched.shutdown(wait=True), kinds=[K.ADDED])
    sched.start()
    tid = sched.delay('once', 0, 1, write_marker, args=(marker, 'ran'), task_id='last-minute')
    assert sched.stopped and stored_statuses(path, tid) == []
    assert_runs_once_after_a_restart(path, tid, marker)


# ---------------------------------------------- runs that end while shutdown waits


def test_a_run_that_ends_while_shutdown_waits_is_stored_before_shutdown_returns(
        tmp_path, gates):
    """Shutdown waits for a long run; a short one ends meanwhile. Its record
    must reach the store while shutdown still waits, not at close: a
    service manager that SIGKILLs the process after its stop timeout must
    not lose it. Another connection reads the file to see it."""
    path = str(tmp_path / "jobs.db")
    short_gate, long_gate = gates(), gates()
    sched = psl.Scheduler(executor=psl.ThreadPoolExecutor(2), store=path)
    sched.start()
    try:
        quick = sched.delay('once', 0, 1, hold, args=(short_gate.name, 'short'))
        slow = sched.delay('once', 0, 1, hold, args=(long_gate.name, 'long'))
        assert short_gate.started.wait(10) and long_gate.started.wait(10)
        closing = shutdown_in_thread(sched, wait=True)
        short_gate.open()
        wait_for(lambda: sched.get_status(quick) is S.COMPLETED)

        def short_run_is_stored_completed():
            return stored_statuses(path, quick) == [S.COMPLETED]
        wait_for(short_run_is_stored_completed, timeout=10)
        assert closing.is_alive()  # still waiting for the long run
        assert stored_statuses(path, slow) == [S.RUNNING]
        long_gate.open()
        closing.join(SHUTDOWN_DEADLINE)
        assert not closing.is_alive()
    finally:
        short_gate.open()
        long_gate.open()
        sched.shutdown()
    assert stored_statuses(path, slow) == [S.COMPLETED]


# ---------------------------------------------- a thread task that outlives the timeout


def test_shutdown_with_a_timeout_returns_while_a_thread_task_still_runs(gates):
    """``shutdown(wait=True, timeout=1)`` waits about a second for running
    work, then tells it to stop and returns: a thread that cannot be killed
    must not hold it. The task here ignores the request and only ends when
    the test opens its gate, after shutdown has returned. Its run is then
    final and not COMPLETED (INTERRUPTED: its own timeout did not pass),
    and ``get_result`` raises."""
    never_on_time = gates()
    sched = psl.Scheduler()
    sched.start()
    tid = sched.delay('once', 0, 1, hold, args=(never_on_time.name, 'too late'))
    try:
        assert never_on_time.started.wait(10)
        closing = shutdown_in_thread(sched, wait=True, timeout=1)
        closing.join(TIMEOUT_SHUTDOWN_DEADLINE)
        returned = not closing.is_alive()
        status = sched.get_status(tid)
    finally:
        never_on_time.open()
    assert returned, "shutdown(wait=True, timeout=1) still waits for the thread task"
    assert status not in (S.COMPLETED, S.RUNNING, S.SUSPENDED)
    with pytest.raises(Exception):
        sched.get_result(tid, timeout=0)
    closing.join(SHUTDOWN_DEADLINE)


# ---------------------------------------------- hard tasks that outlive the timeout


def sleep_in_a_process(pid_file, seconds):
    """A hard task: leave this process's pid in *pid_file*, then sleep."""
    with open(pid_file + ".tmp", "w") as out:
        out.write(str(os.getpid()))
    os.rename(pid_file + ".tmp", pid_file)
    time.sleep(seconds)
    return "too late"


@pytest.mark.parametrize("pool, timeout", [
    ("loky", None),      # the scheduler's own pool: no process to kill alone
    ("stdlib", None),    # a concurrent.futures pool given as process_executor
    ("loky", 300),       # a timeout of its own: a process of its own, killed alone
], ids=["own-pool", "given-stdlib-pool", "with-a-timeout"])
def test_shutdown_kills_a_hard_task_still_running_at_the_end_of_its_timeout(
        tmp_path, pool, timeout):
    """``shutdown(wait=True, timeout=1)`` while a hard task sleeps for minutes:
    at the end of the second its worker process is killed (it was left to
    finish a run whose result nobody takes, and kept the process from
    exiting), shutdown returns without waiting for it, and the run is
    recorded as interrupted, as a thread run is."""
    pid_file = str(tmp_path / "worker.pid")
    given = concurrent.futures.ProcessPoolExecutor(1) if pool == "stdlib" else None
    sched = psl.Scheduler(process_executor=given)
    sched.start()
    tid = sched.delay('once', 0, 1, sleep_in_a_process, args=(pid_file, 120), hard=True,
                      timeout=timeout)
    worker = None
    try:
        wait_for(lambda: os.path.exists(pid_file), timeout=60)
        with open(pid_file) as kept:
            worker = int(kept.read())
        closing = shutdown_in_thread(sched, wait=True, timeout=1)
        closing.join(TIMEOUT_SHUTDOWN_DEADLINE)
        assert not closing.is_alive(), "shutdown waits for the hard task"
        wait_for(lambda: process_gone(worker), timeout=10)
        assert sched.get_status(tid) is S.INTERRUPTED
        assert "interrupted: the scheduler shut down" in sched.result[tid].error
    finally:
        if worker is not None and not process_gone(worker):
            os.kill(worker, signal.SIGKILL)
        sched.shutdown()


def test_a_run_shutdowns_timeout_cuts_is_interrupted_not_timeout_with_one_warning(
        gates, tmp_path, caplog):
    """A run still going at the end of ``shutdown(wait=True,
    timeout)`` was recorded TIMEOUT (its own timeout never passed) and
    logged as several warnings; it is INTERRUPTED, in the store too, and
    logged once, at WARNING."""
    caplog.set_level(logging.DEBUG, logger="pysched_lightning")
    store = str(tmp_path / "s.db")
    gate = gates()
    sched = psl.Scheduler(store=store)
    sched.start()
    tid = sched.delay('once', 0, 1, hold, args=(gate.name, 'too late'), name="report")
    try:
        assert gate.started.wait(10)
        sched.shutdown(wait=True, timeout=0.2)
        status = sched.get_status(tid)
    finally:
        gate.open()
    assert status is S.INTERRUPTED
    assert stored_statuses(store, tid) == [S.INTERRUPTED]
    loud = [r.getMessage() for r in caplog.records
            if r.levelno >= logging.WARNING and tid in r.getMessage()]
    assert loud == [f"shutdown: interrupted task 'report' ({tid}) run 1, still going "
                    "after shutdown's timeout"]


def test_a_task_whose_run_a_shutdown_canceled_waits_after_the_restart_not_canceled(tmp_path):
    """A one-shot whose run a shutdown canceled before it started is stored
    Canceled, and runs after the restart; the restarted scheduler took the
    stored status for the task's, so a get_result() made before that run
    started raised CancelledError (seen as a rare failure under load)."""
    path = str(tmp_path / "jobs.db")
    sched = psl.Scheduler(store=path)  # never started: the task is stored only
    queued = sched.delay('once', 0, 1, len, args=("abc",), task_id="queued")
    sched.shutdown()
    with open_store(path) as store:  # as a shutdown that canceled its run leaves it
        store.update_task(queued, status=int(S.CANCELED))
    restarted = psl.Scheduler(store=path)
    try:
        assert restarted.get_status(queued) is S.SUSPENDED  # it will run
        restarted.start()
        assert restarted.get_result(queued, timeout=30) == 3
    finally:
        restarted.shutdown()
