"""Records for the store tests: a task, a finished run and a claim, each with
every field set to something other than its default."""
from __future__ import annotations

from pysched_lightning.records.protocols import COMPLETED, ERROR, TaskRecord

INTERRUPTED = "interrupted: the scheduler process stopped during this run"


def record(task_id="t1", **changes):
    """A TaskRecord with every field set to something other than its default."""
    fields = dict(id=task_id, name=f"name of {task_id}", trigger="recur", interval="[3, 4]",
                  priority=2, fn_ref=None, fn_pickle=b"\x80\x05fn\x00", args=b"\x80args",
                  kwargs=b"\x80kwargs", options=b"\x80options", schedule=b"\x80trigger",
                  next_run=1_700_000_000.25, paused=True, runs=7, missed=2,
                  status=ERROR, created=1_600_000_000.5, updated=1_650_000_000.75,
                  info='{"call": "reports.daily(\'a\')", "schedule": "every 30 s", '
                       '"tz": "Europe/Berlin", "options": {"retries": 2}}')
    fields.update(changes)
    return TaskRecord(**fields)


def finished(task_id="t1", slot="100.000", attempt=1, **changes):
    """A complete run record, as the scheduler passes it to finish_run."""
    run = dict(task_id=task_id, name=f"name of {task_id}", run=1, attempt=attempt, slot=slot,
               status=COMPLETED, scheduled=100.0, started=101.0, finished=103.0,
               duration=2.0, exit_code=0, result="'done'", error=None, traceback=None,
               output="out tail", stderr="err tail", reason=None, count=1,
               outcome=b"\x80\x04pickled")
    run.update(changes)
    return run


def claim(store, task_id="t1", slot="100.000", attempt=1, **changes):
    fields = dict(run=1, name=f"name of {task_id}", scheduled=100.0, started=101.0)
    fields.update(changes)
    return store.claim_run(task_id, slot, attempt, **fields)
