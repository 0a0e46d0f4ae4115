"""The journal: writes noted under the state lock, committed together later."""
from __future__ import annotations

import threading

import pytest

from pysched_lightning.journal import Journal
from pysched_lightning.records import task_record
from pysched_lightning.stores import SQLiteStore
from pysched_lightning.task import Task
from pysched_lightning.options import DEFAULT_OPTIONS


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
    good = journal.save_task(task_record(a_task("good"), 1e9, 1e9))
    journal.save_task(task_record(a_task("poison"), 1e9, 1e9))
    with lock:
        journal.task_changed("poison", runs=1)  # this one fails
        journal.task_changed("good", runs=7)
    journal.flush()
    assert good.error is None
    assert store.task("good") is not None and store.task("good").runs == 7
    assert store.task("poison") is not None  # its save was fine; its update was not


def test_a_write_that_fails_alone_is_reported_to_its_writer(journal):
    journal, _, store = journal
    write = journal.save_task(task_record(a_task("refused"), 1e9, 1e9))
    other = journal.save_task(task_record(a_task("kept"), 1e9, 1e9))
    journal.flush()
    assert isinstance(write.error, OSError) and other.error is None
    assert store.task("refused") is None and store.task("kept") is not None


def test_delay_raises_when_its_task_cannot_be_stored_and_schedules_nothing(tmp_path):
    import pysched_lightning as psl
    with psl.Scheduler(store=PoisonedStore(tmp_path / "s.db")) as sched:
        with pytest.raises(psl.StoreWriteError, match="refused"):
            sched.delay('once', 0, 1, print, task_id="refused")
        assert "refused" not in sched.task
        assert sched.get_result(sched.delay('once', 0, 1, int), timeout=5) == 0
