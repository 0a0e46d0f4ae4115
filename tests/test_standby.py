"""Two schedulers on one store: the standby stores only, then takes over."""
from __future__ import annotations

import json
import threading

import pysched_lightning as psl
from pysched_lightning.durability.stores import SQLiteStore
from conftest import wait_for


def tick(label):
    return label


def test_a_standbys_delay_never_overwrites_the_active_schedulers_task(tmp_path):
    """A standby saving a task replaced the active scheduler's row (which the
    active one could then delete)."""
    path = tmp_path / "shared.db"
    active = psl.Scheduler(store=str(path))
    standby = psl.Scheduler(store=str(path))
    try:
        active.start()
        standby.start()
        active.delay('recur', 3600, 1, tick, args=('old',), task_id='report')
        standby.delay('recur', 60, 1, tick, args=('new',), task_id='report')  # changed
        standby.delay('once', 3600, 1, tick, args=('y',), task_id='fresh')
        stored = {r.id: r for r in active.store.load_tasks()}
        assert json.loads(stored['report'].interval) == 3600  # the active one's, still
        assert 'fresh' in stored and 'fresh' not in active.task
        active.shutdown()
        # took over: the stored tasks are loaded, then the standby's change
        # is applied (a moment later), in the dispatcher's thread
        wait_for(lambda: 'report' in standby.task and standby.task['report'].interval == 60,
                 timeout=10)
        assert 'fresh' in standby.task
    finally:
        active.shutdown()
        standby.shutdown()


class SlowToLoad(SQLiteStore):
    """During a takeover, another thread calls delay() right after the
    stored tasks were read."""

    def __init__(self, path, late):
        super().__init__(path)
        self.late = late

    def load_tasks(self):
        rows = super().load_tasks()
        if self.late is not None:
            late, self.late = self.late, None
            thread = threading.Thread(target=late)
            thread.start()
            thread.join(0.5)  # it may finish (the defect) or wait for the takeover
        return rows


def test_a_delay_made_during_a_takeover_is_loaded(tmp_path):
    """A delay() made while the standby was loading the store was stored but
    never loaded: the task never ran."""
    path = tmp_path / "shared.db"
    active = psl.Scheduler(store=str(path))
    holder = {}
    standby = psl.Scheduler(store=SlowToLoad(path, lambda: holder['sched'].delay(
        'once', 0, 1, tick, args=('late',), task_id='late')))
    holder['sched'] = standby
    standby.start()
    try:
        active.shutdown()
        assert standby.get_result(_when_known(standby, 'late'), timeout=10) == 'late'
    finally:
        standby.shutdown()


def _when_known(sched, task_id):
    wait_for(lambda: _known(sched, task_id), timeout=10)
    return task_id


def _known(sched, task_id):
    try:
        sched.get_status(task_id)
        return True
    except KeyError:
        return False


def test_a_standbys_delay_returns_an_id_that_standby_knows_and_can_cancel(tmp_path):
    """On a standby, delay() stored the task and returned its id, but that
    scheduler did not know it: get_status() and cancel() raised KeyError.
    The id is known at once (SUSPENDED: it waits for the takeover), cancel()
    cancels it, and a canceled task does not run after the takeover."""
    path = tmp_path / "shared.db"
    ran = tmp_path / "ran"
    active = psl.Scheduler(store=str(path))
    standby = psl.Scheduler(executor=psl.ThreadPoolExecutor(1), store=str(path))
    try:
        active.start()
        standby.start()
        # due first and more urgent: on one worker, it would run before 'kept'
        dropped = standby.delay('once', 0, 0, write_marker, args=(str(ran),))
        kept = standby.delay('once', 0, 1, tick, args=('kept',))
        assert standby.get_status(kept) is psl.TaskStatus.SUSPENDED
        assert standby.get_status(dropped) is psl.TaskStatus.SUSPENDED
        standby.cancel(dropped)
        assert standby.get_status(dropped) is psl.TaskStatus.CANCELED
        active.shutdown()
        assert standby.get_result(kept, timeout=15) == 'kept'  # it took over and ran it
        assert standby.get_status(dropped) is psl.TaskStatus.CANCELED
        assert not ran.exists()
    finally:
        active.shutdown()
        standby.shutdown()


def write_marker(path):
    with open(path, "a") as marker:
        marker.write("ran\n")
