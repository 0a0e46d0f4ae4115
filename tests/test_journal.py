"""The journal: writes noted under the state lock, committed together later."""
from __future__ import annotations

import threading

import pytest

from pysched_lightning.durability.journal import Journal
from pysched_lightning.durability.encoding import task_record
from pysched_lightning.durability.stores import SQLiteStore
from pysched_lightning.records.task import Task
from pysched_lightning.records.options import DEFAULT_OPTIONS


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
