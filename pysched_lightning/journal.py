"""The journal: what the scheduler owes its store and its run log.

Changes are noted under the scheduler's lock (a list append, cheap) and
written by ``flush()`` after the lock is released, in one store transaction,
so SQLite never runs under the scheduler's lock. ``flush()`` returns once
everything noted before it was called is committed — by this thread or by
another one that flushed meanwhile (group commit: threads finishing runs at
the same time share one transaction). A run is claimed in the store before it
starts, and a run whose claim was refused (another process ran that slot)
must not start.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable, List

from .persistence import claim_key, run_record
from .runs import Run, TaskStatus

__all__ = ["Journal"]

_log = logging.getLogger("pysched_lightning")


class Journal:
    """Pending writes for a store and/or a run log, flushed in order."""

    def __init__(self, store: Any, run_log: Any, offset: Callable[[], float],
                 scheduler_lock: Any) -> None:
        self.store = store
        self.run_log = run_log
        self._offset = offset
        self._scheduler_lock = scheduler_lock
        self._pending: List[Callable[[], None]] = []  # appended under the scheduler lock
        self._noted = 0  # writes noted so far (under the scheduler lock)
        self._written = 0  # writes committed so far (under the flush lock)
        self._flush_lock = threading.Lock()  # one transaction at a time, in order

    # -- noted under the scheduler's lock ---------------------------------

    def _note(self, write: Callable[[], None]) -> None:
        self._pending.append(write)
        self._noted += 1

    def claim(self, run: Run, name: str) -> None:
        if self.store is None:
            return
        run._claimed = None
        scheduled = claim_key(run.scheduled + self._offset())

        def write() -> None:
            run._claimed = self.store.claim_run(run.task_id, scheduled, run.attempt,
                                                run.run_number, name)
        self._note(write)

    def finished(self, run: Run, name: str) -> None:
        record = run_record(run, name, self._offset())
        if self.store is not None:
            self._note(lambda: self.store.finish_run(record))
        if self.run_log is not None:
            logged = dict(record, status=TaskStatus(record["status"]).label)
            self._note(lambda: self.run_log.write(logged))

    def update(self, task_id: str, **fields: Any) -> None:
        if self.store is not None:
            self._note(lambda: self.store.update_task(task_id, **fields))

    def removed(self, task_id: str) -> None:
        if self.store is not None:
            self._note(lambda: self.store.remove_task(task_id))

    def saved(self, record: Any) -> None:
        if self.store is not None:
            self._note(lambda: self.store.save_task(record))

    # -- outside the lock ---------------------------------------------------

    def has_pending(self) -> bool:
        """Under the scheduler lock: are there writes not yet flushed?"""
        return bool(self._pending)

    def flush(self) -> None:
        """Write what is pending; a failed write is logged, never raised."""
        with self._scheduler_lock:
            wanted = self._noted
        with self._flush_lock:
            self._flush_upto(wanted)

    def _flush_upto(self, wanted: int) -> None:
        """Under the flush lock: commit everything noted, unless another
        thread's commit already covered what the caller noted."""
        if self._written >= wanted:
            return
        with self._scheduler_lock:
            pending, self._pending = self._pending, []
            upto = self._noted
        try:
            if self.store is not None:
                with self.store.batch():
                    self._run_all(pending)
            else:
                self._run_all(pending)
        except Exception:
            _log.exception("writing %d change(s) to the store failed", len(pending))
        self._written = upto

    @staticmethod
    def _run_all(pending: List[Callable[[], None]]) -> None:
        for write in pending:
            write()

    def close(self, owns_store: bool, owns_log: bool) -> None:
        """Flush; then close what the scheduler made, and release a store it
        was given (so the caller may hand it to another scheduler)."""
        self.flush()
        steps = []
        if self.run_log is not None and owns_log:
            steps.append(self.run_log.close)
        if self.store is not None:
            steps.append(self.store.close if owns_store else self.store.release)
        for step in steps:
            try:
                step()
            except Exception:
                _log.exception("%r failed", step)

