"""The journal: writes noted under the state lock, committed together later."""
from __future__ import annotations

import logging
import threading

import pytest

import pysched_lightning as psl
from conftest import wait_for
from invariants import thread_stacks
from pysched_lightning.durability.encoding import task_record
from pysched_lightning.durability.journal import Journal
from pysched_lightning.durability.stores import SQLiteStore, open_store
from pysched_lightning.records.options import DEFAULT_OPTIONS
from pysched_lightning.records.task import Task


class PoisonedStore(SQLiteStore):
    """A real SQLite store that cannot write one task: 'poison'."""

    def update_task(self, task_id, **fields):
        if task_id == "poison":
            raise OSError("disk says no to poison")
        super().update_task(task_id, **fields)

    def save_task(self, record, replace=True):
        if record.id == "refused":
            raise OSError("disk says no")
        return super().save_task(record, replace)


def a_task(task_id: str) -> Task:
    return Task(0.0, 1, 0, task_id, "once", 0, print, (), {}, DEFAULT_OPTIONS)


@pytest.fixture
def journal(tmp_path):
    store = PoisonedStore(tmp_path / "j.db")
    lock = threading.Lock()
    journal = Journal(store, None, lock, True, False)
    yield journal, lock, store
    journal.close()


def test_one_failing_write_does_not_undo_the_others_in_a_group_commit(journal):
    """A failing write rolled back the whole shared transaction, and with it
    a delay()'s task that had been reported as stored."""
    journal, lock, store = journal
    good = journal.store_task(task_record(a_task("good"), 1e9, 1e9))
    journal.store_task(task_record(a_task("poison"), 1e9, 1e9))
    with lock:
        journal.task_changed("poison", runs=1)  # this one fails
        journal.task_changed("good", runs=7)
    journal.flush()
    assert good.error is None
    assert store.task("good") is not None and store.task("good").runs == 7
    assert store.task("poison") is not None  # its save was fine; its update was not


def test_a_write_that_fails_alone_is_reported_to_its_writer(journal):
    journal, _, store = journal
    for new_id in (False, True):
        write = journal.store_task(task_record(a_task("refused"), 1e9, 1e9), new_id=new_id)
        other = journal.store_task(task_record(a_task("kept"), 1e9, 1e9), new_id=new_id)
        assert isinstance(write.error, OSError) and other.error is None
        assert store.task("refused") is None and store.task("kept") is not None


def test_a_new_task_is_committed_ahead_of_pending_writes_which_stay_pending(journal):
    journal, lock, store = journal
    journal.store_task(task_record(a_task("old"), 1e9, 1e9))
    with lock:
        journal.task_changed("old", runs=3)
    new = journal.store_task(task_record(a_task("new"), 1e9, 1e9), new_id=True)
    assert new.error is None and store.task("new") is not None
    assert store.task("old").runs == 0 and journal.has_pending()
    journal.flush()
    assert store.task("old").runs == 3 and not journal.has_pending()


def test_many_pending_writes_are_all_committed_and_a_failing_one_loses_only_itself(journal):
    journal, lock, store = journal
    names = [f"t{i}" for i in range(40)]
    for name in names:
        journal.store_task(task_record(a_task(name), 1e9, 1e9), new_id=True)
    with lock:
        for runs, name in enumerate(names):
            journal.task_changed(name, runs=runs)
            if runs == 20:
                journal.task_changed("poison", runs=1)
    journal.flush()
    assert [store.task(name).runs for name in names] == list(range(40))


def test_delay_raises_when_its_task_cannot_be_stored_and_schedules_nothing(tmp_path):
    import pysched_lightning as psl
    with psl.Scheduler(store=PoisonedStore(tmp_path / "s.db")) as sched:
        with pytest.raises(psl.StoreWriteError, match="refused"):
            sched.delay('once', 0, 1, print, task_id="refused")
        assert "refused" not in sched.task
        assert sched.get_result(sched.delay('once', 0, 1, int), timeout=5) == 0


# ------------------------------------------- user code while the journal writes


def _shut_down_in_the_background(sched, seconds=5.0):
    """shutdown() in a daemon thread, waited for at most *seconds*: after a
    deadlock it would hang, and the test process must still exit."""
    thread = threading.Thread(target=sched.shutdown, kwargs=dict(wait=True, timeout=2),
                              daemon=True)
    thread.start()
    thread.join(seconds)


class CancelsWhenWritten:
    """A run log object whose ``write()`` cancels a task: user code that
    calls back into the scheduler, as a run log that reacts to failures may."""

    def __init__(self):
        self.sched = None
        self.victim = None
        self.canceled = threading.Event()

    def write(self, record):
        if self.victim is not None and not self.canceled.is_set():
            self.sched.cancel(self.victim)
            self.canceled.set()


def test_a_run_log_whose_write_calls_back_into_the_scheduler_does_not_deadlock():
    """The run log was written under the journal's flush lock: a write()
    that called cancel() (which flushes the journal too) deadlocked the
    dispatcher, and with it the scheduler. Records reach the run log with
    no scheduler lock held."""
    run_log = CancelsWhenWritten()
    sched = psl.Scheduler(run_log=run_log)
    run_log.sched = sched
    run_log.victim = sched.delay('recur', 3600, 1, int)
    sched.start()
    try:
        sched.delay('once', 0, 1, int)  # its record goes to the run log
        assert run_log.canceled.wait(5), \
            "the run log's cancel() did not return:\n" + thread_stacks()
        assert sched.get_status(run_log.victim) is psl.TaskStatus.CANCELED
        assert sched.get_result(sched.delay('once', 0, 1, lambda: "later"), timeout=10) \
            == "later"
    finally:
        _shut_down_in_the_background(sched)


#: What SlowToShow waits for and says: set by the test that uses it.
SLOW = {"gate": threading.Event(), "showing": threading.Event()}


class SlowToShow:
    """A result whose ``repr`` (which the run's record keeps) takes as long as
    the test wants: until ``SLOW['gate']`` is set."""

    def __repr__(self):
        SLOW["showing"].set()
        SLOW["gate"].wait(30)
        return "<slow to show>"


def test_a_result_slow_to_repr_holds_up_no_other_run_nor_its_record(tmp_path):
    """A run's record (the repr of its result) was built under the journal's
    flush lock: one result whose __repr__ took a second stalled every worker
    waiting to commit its claim, and the dispatcher, for that second. While
    one repr blocks, another task's run fires, completes and is recorded."""
    path = tmp_path / "s.db"
    gate, showing = SLOW["gate"], SLOW["showing"] = threading.Event(), threading.Event()
    sched = psl.Scheduler(executor=psl.ThreadPoolExecutor(2), store=str(path))
    sched.start()
    reader = open_store(str(path), read_only=True)
    try:
        sched.delay('once', 0, 1, SlowToShow)
        assert showing.wait(10)  # its record is being made, and blocks
        other = sched.delay('once', 0.05, 1, int)  # claimed when it fires
        try:
            assert sched.get_result(other, timeout=10) == 0
        except TimeoutError:
            pytest.fail("another run did not complete while a repr blocked:\n"
                        + thread_stacks())
        wait_for(lambda: [run for run in reader.runs(other)
                          if run["status"] == psl.TaskStatus.COMPLETED], timeout=10)
        assert not gate.is_set()  # all of it while the slow repr still blocked
    finally:
        gate.set()
        sched.shutdown(wait=True, timeout=5)
        reader.close()


class RefusesToUpdate(SQLiteStore):
    """A real SQLite store that cannot update one task: 'poison'."""

    def update_task(self, task_id, **fields):
        if task_id == "poison":
            raise OSError("disk says no to poison")
        super().update_task(task_id, **fields)


def _calls_meanwhile(call, seconds=5.0):
    """Call ``call()`` in a daemon thread, waiting for it at most *seconds*;
    the stacks of every thread if it did not return in time, else None. (A
    handler calling back directly would deadlock where this one times out.)"""
    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(seconds)
    return thread_stacks() if thread.is_alive() else None


class CallsBackOnFailedWrite(logging.Handler):
    """A logging handler that, on the error about task 'poison', calls back
    into the scheduler (as an alerting handler might)."""

    def __init__(self, call_back):
        super().__init__(logging.ERROR)
        self.call_back = call_back
        self.outcome = {}

    def emit(self, record):
        if "poison" in record.getMessage() and not self.outcome:
            self.outcome["stacks"] = _calls_meanwhile(self.call_back)


def test_a_log_handler_may_call_back_into_the_scheduler_when_a_write_fails(tmp_path):
    """The journal logged a failed write under its flush lock: a logging
    handler that called back into the scheduler (cancel() flushes) waited
    for that lock, held by the thread that called the handler: a deadlock
    (here, the call back times out). The library's log records are emitted
    with no lock held, as the README says."""
    sched = psl.Scheduler(store=RefusesToUpdate(tmp_path / "s.db"))
    victim = sched.delay('recur', 3600, 1, int)
    handler = CallsBackOnFailedWrite(lambda: sched.cancel(victim))
    logger = logging.getLogger("pysched_lightning")
    logger.addHandler(handler)
    sched.start()
    try:
        sched.delay('once', 0, 1, int, task_id="poison")  # its status update fails
        wait_for(lambda: handler.outcome, timeout=15)
        assert handler.outcome["stacks"] is None, \
            "cancel() from the log handler did not return:\n" + handler.outcome["stacks"]
        assert sched.get_status(victim) is psl.TaskStatus.CANCELED
    finally:
        logger.removeHandler(handler)
        sched.shutdown(wait=True, timeout=5)
        sched.store.close()


class InterruptedOnce(SQLiteStore):
    """A real SQLite store where, once armed, a Ctrl-C lands while the main
    thread writes a task's update (SIGINT raises KeyboardInterrupt there)."""

    armed = False

    def update_task(self, task_id, **fields):
        if self.armed and threading.current_thread() is threading.main_thread():
            self.armed = False
            raise KeyboardInterrupt
        super().update_task(task_id, **fields)


def test_writes_a_ctrl_c_interrupted_are_written_later_not_lost(tmp_path):
    """Journal.flush() took the pending writes off its list before writing
    them: when a KeyboardInterrupt cut the write short they were lost, and
    the store kept what the scheduler no longer believed (here: a paused
    task ran after a restart). They stay pending, and a later flush (here,
    shutdown's) writes them."""
    store = InterruptedOnce(tmp_path / "s.db")
    sched = psl.Scheduler(store=store)
    tid = sched.delay('once', 3600, 1, int, task_id="nightly")
    store.armed = True
    with pytest.raises(KeyboardInterrupt):
        sched.pause(tid)  # noted, then flushed by pause() itself: interrupted
    assert sched.get_task(tid)["paused"]  # paused, as far as this scheduler knows
    sched.shutdown(wait=True)
    restarted = psl.Scheduler(store=store)  # the store was released: it takes it
    try:
        assert restarted.get_task(tid)["paused"] is True
    finally:
        restarted.shutdown(wait=True)
        store.close()


class HeldUpdates(SQLiteStore):
    """A real SQLite store whose update of a task named in ``held`` waits
    until that name's event is set (``entered`` says it began)."""

    def __init__(self, path, *held):
        super().__init__(path)
        self.held = {name: threading.Event() for name in held}
        self.entered = {name: threading.Event() for name in held}

    def update_task(self, task_id, **fields):
        if task_id in self.held:
            self.entered[task_id].set()
            assert self.held[task_id].wait(30), f"update of {task_id!r} never let go"
        super().update_task(task_id, **fields)


class TellsWhenReleasedBy:
    """The scheduler's state lock, as a test sees it: an event is set once
    the thread named *name* released it (its flush read the pending writes)."""

    def __init__(self, name):
        self._lock, self.name, self.released = threading.Lock(), name, threading.Event()

    def __enter__(self):
        self._lock.acquire()

    def __exit__(self, *exc):
        self._lock.release()
        if threading.current_thread().name == self.name:
            self.released.set()

    def acquire(self, *args):
        return self._lock.acquire(*args)

    def release(self):
        self._lock.release()


def test_a_flush_waiting_for_another_does_not_commit_the_writes_noted_after_it_was_called(tmp_path):
    """A thread waiting for the flush under way (a worker waiting for its
    next run's claim) went on to commit every write noted meanwhile, the
    other workers', before it returned: each run waited for the commit of
    the next one's, and a node on a PostgreSQL store ran one run per round
    trip whatever its workers. It returns once the writes pending at its
    call are committed; the later ones are left to their own flush."""
    store = HeldUpdates(tmp_path / "s.db", "first", "later")
    lock = TellsWhenReleasedBy("waiter")
    journal = Journal(store, None, lock, True, False)
    for name in ("first", "later"):
        journal.store_task(task_record(a_task(name), 1e9, 1e9), new_id=True)
    with lock:
        journal.task_changed("first", runs=1)
    flushing = threading.Thread(target=journal.flush, name="flusher")
    flushing.start()
    assert store.entered["first"].wait(10)  # the flush under way writes "first"
    waiter = threading.Thread(target=journal.flush, name="waiter")
    waiter.start()
    assert lock.released.wait(10)  # the waiter read what was pending: "first"
    with lock:
        journal.task_changed("later", runs=2)  # noted after the waiter's call
    store.held["first"].set()
    waiter.join(10)
    try:
        assert not waiter.is_alive(), "the waiting flush did not return:\n" + thread_stacks()
        assert store.task("first").runs == 1 and store.task("later").runs == 0
    finally:
        store.held["later"].set()
        flushing.join(10)
        waiter.join(10)
        journal.flush()
        assert store.task("later").runs == 2
        journal.close()
