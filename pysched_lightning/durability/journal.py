"""The journal: what the scheduler owes its store and its run log.

Changes are noted with the state lock held (a list append, cheap, no user
code) and written by ``flush()`` after the lock is released: the records
are built then (``repr`` and pickling are user code) and committed in one
store transaction, so the store never runs under the state lock.
``flush()`` returns once everything noted before it was called is
committed, by this thread or by another that flushed meanwhile (group
commit: threads finishing runs at the same moment share one transaction).

One failing write does not undo the others: when the shared transaction
fails, each write is tried again in a transaction of its own, and only the
one that fails alone is lost (logged, and reported to a ``delay()`` that
waits for it). A run is claimed in the store when it starts; a run whose
claim is refused (another scheduler ran that slot) does not execute. A new
task that starts the moment it is added has its first run claimed in the
transaction that stores the task (an ``EarlyClaim``): one commit, not two.
A task with a new id is committed by itself, ahead of what is pending (no
pending write can concern it): ``delay()`` waits for its own task only, and
the records of finished runs are left to the dispatcher's next flush, which
commits them a few at a time.
"""
from __future__ import annotations

import logging
import threading
import weakref
from typing import Any, Callable, List, Optional

from ..records.protocols import TaskRecord
from ..records.runs import Run, TaskStatus, error_line
from .encoding import run_record, slot_of

__all__ = ["Journal", "Write", "EarlyClaim"]

#: The most writes a flush commits in one transaction.
_WRITES_PER_COMMIT = 16

_log = logging.getLogger("pysched_lightning")


class Write:
    """One noted change; after a flush, ``error`` says whether it failed."""

    __slots__ = ("kind", "target", "fields", "error")

    def __init__(self, kind: str, target: Any, fields: Any = None) -> None:
        self.kind = kind
        self.target = target
        self.fields = fields
        self.error: Optional[BaseException] = None


class EarlyClaim:
    """The claim of a new task's first run, made with the task's own write,
    for a run that holds a lane slot reserved for it (``used`` once it took it).
    ``claimed`` is the store's answer (None until committed)."""

    __slots__ = ("task_id", "slot", "name", "wall_time", "claimed", "used")

    def __init__(self, task_id: str, slot: str, name: str, wall_time: float) -> None:
        self.task_id, self.slot, self.name, self.wall_time = task_id, slot, name, wall_time
        self.claimed: Optional[bool] = None
        self.used = False

    def decide(self, store: Any) -> None:
        self.claimed = store.claim_run(self.task_id, self.slot, 1, run=1, name=self.name,
                                       scheduled=self.wall_time, started=self.wall_time)


class Journal:
    """Pending writes for a store and/or a run log, flushed in order."""

    def __init__(self, store: Any, run_log: Any, state_lock: Any, owns_store: bool,
                 owns_log: bool) -> None:
        self.store = store
        self.run_log = run_log
        self._owns = (owns_store, owns_log)
        #: The scheduler's state lock: notes are appended with it held.
        self._state_lock = state_lock
        self._pending: List[Write] = []
        self._noted = 0  # writes noted so far (state lock)
        self._written = 0  # writes flushed so far (flush lock)
        #: One flush at a time, in order.
        self._flush_lock = threading.Lock()

    # -- noted with the state lock held ------------------------------------

    def _note(self, write: Write) -> Write:
        self._pending.append(write)
        self._noted += 1
        return write

    def claim(self, run: Run, offset: float) -> None:
        """*run* starts: claim its slot in the store."""
        if self.store is None:
            return
        if run._slot is None:
            run._slot = slot_of(run, offset)
        run._claimed = None
        self._note(Write("claim", run))

    def finished(self, run: Run, offset: float) -> None:
        """*run* is final (every attempt is recorded)."""
        if run._slot is None and self.store is not None:
            run._slot = slot_of(run, offset)
        self._note(Write("run", run))

    def missed(self, run: Run, offset: float) -> None:
        """A MISSED record, new or with a grown count."""
        self.finished(run, offset)

    def claim_unused(self, claim: EarlyClaim, reason: str) -> None:
        """An early claim whose run will not execute (the scheduler shut
        down meanwhile): its record says so, rather than RUNNING forever."""
        if self.store is not None and claim.claimed:
            self._note(Write("record", {
                "task_id": claim.task_id, "name": claim.name, "run": 1, "attempt": 1,
                "slot": claim.slot, "status": int(TaskStatus.CANCELED),
                "scheduled": claim.wall_time, "reason": reason}))

    def task_changed(self, task_id: str, **fields: Any) -> None:
        if self.store is None:
            return
        pending = self._pending
        last = pending[-1] if pending else None
        if last is not None and last.kind == "update" and last.target == task_id:
            last.fields.update(fields)  # one write for a run's end and its task's
            return
        self._note(Write("update", task_id, fields))

    def task_finished(self, task_id: str, status: int) -> None:
        """The task's last run is over: it stays stored, finished, until purged."""
        self.task_changed(task_id, next_run=None, status=status)

    def task_removed(self, task_id: str) -> None:
        if self.store is not None:
            self._note(Write("remove", task_id))

    def has_pending(self) -> bool:
        return bool(self._pending)

    # -- outside the lock -----------------------------------------------------

    def store_task(self, record: TaskRecord, replace: bool = True,
                   claim: Optional[EarlyClaim] = None, new_id: bool = False) -> Write:
        """Write a task record, with its first run's *claim* if given (both
        or neither are written), and wait for the commit; then look at the
        returned write's ``error``. A *new_id* is committed by itself, ahead
        of the pending writes, none of which can concern it."""
        write = Write("save", record, (replace, claim))
        if new_id:  # no flush to wait for: the store's own lock orders the commits
            self._commit([(write, self._step(write))])
            return write
        with self._state_lock:
            self._note(write)
        self.flush()
        return write

    def flush(self) -> None:
        """Write what is pending; failures are logged and kept on their
        writes, never raised."""
        with self._state_lock:
            wanted = self._noted
        with self._flush_lock:
            if self._written >= wanted:
                return  # another thread's flush took ours along
            with self._state_lock:
                pending, self._pending = self._pending, []
                upto = self._noted
            self._write(pending)
            self._written = upto

    def _write(self, pending: List[Write]) -> None:
        steps = [(write, self._step(write)) for write in pending]
        if self.store is not None:
            # In short transactions, so that a delay() storing a new task
            # never waits long for the store behind a backlog of records.
            for start in range(0, len(steps), _WRITES_PER_COMMIT):
                self._commit(steps[start:start + _WRITES_PER_COMMIT])
        if self.run_log is not None:
            for write in pending:
                if write.kind == "run" and write.error is None and write.fields is not None:
                    self._log_run(write.fields)

    def _step(self, write: Write) -> Callable[[], None]:
        """The store call for *write*; builds records (user code: contained)."""
        store = self.store
        if write.kind == "run":
            record = write.fields = _safe_record(write.target)
            return lambda: store.finish_run(record)
        if write.kind == "claim":
            return lambda: _claim(store, write.target)
        if write.kind == "record":
            return lambda: store.finish_run(write.target)
        if write.kind == "update":
            return lambda: store.update_task(write.target, **write.fields)
        if write.kind == "remove":
            return lambda: store.remove_task(write.target)
        replace, claim = write.fields
        if claim is None:
            return lambda: store.save_task(write.target, replace=replace)

        def save_and_claim() -> None:  # in one transaction: both or neither
            store.save_task(write.target, replace=replace)
            claim.decide(store)
        return save_and_claim

    def _commit(self, steps: List[Any]) -> None:
        if not steps:
            return
        try:
            with self.store.batch():
                for _, step in steps:
                    step()
            return
        except Exception as exc:
            _log.warning("writing %d change(s) to the store together failed (%s); "
                         "writing them one by one", len(steps), error_line(exc))
        for write, step in steps:  # one failing write must not undo the others
            try:
                with self.store.batch():
                    step()
            except Exception as exc:
                write.error = exc
                if write.kind == "claim":
                    write.target._claimed = False
                    write.target.reason = f"could not be claimed in the store: {error_line(exc)}"
                _log.error("writing %s %r to the store failed: %s", write.kind,
                           _describe(write), error_line(exc))

    def _log_run(self, record: dict) -> None:
        logged = {key: value for key, value in record.items() if key != "outcome"}
        logged["status"] = TaskStatus(record["status"]).label
        try:
            self.run_log.write(logged)
        except Exception as exc:
            _log.error("writing run %s #%s to the run log failed: %s", record["task_id"],
                       record["run"], error_line(exc))

    def close(self) -> None:
        """Flush; then close what the scheduler made, and release a store it
        was given (so the caller may hand it to another scheduler)."""
        self.flush()
        owns_store, owns_log = self._owns
        steps = []
        if self.run_log is not None and owns_log:
            steps.append(self.run_log.close)
        if self.store is not None:
            # The hold ends now; a store the scheduler made stays readable (its
            # runs() answer after shutdown) until the journal is collected.
            steps.append(self.store.release)
            if owns_store:
                weakref.finalize(self, self.store.close)
        for step in steps:
            try:
                step()
            except Exception as exc:
                _log.error("closing %r failed: %s", step, error_line(exc))


def _claim(store: Any, run: Run) -> None:
    started = run._t_started if run._t_started is not None else run._t_timestamp
    run._claimed = store.claim_run(
        run.task_id, run._slot, run.attempt, run=run.run_number, name=run.name,
        scheduled=run._t_scheduled + run._offset,
        started=(started if started is not None else run._t_scheduled) + run._offset)


def _safe_record(run: Run) -> dict:
    """The run's record; a result or exception that cannot be shown or
    pickled never loses the record itself."""
    try:
        return run_record(run)
    except Exception as exc:  # e.g. a name property that raises
        record = {"task_id": run.task_id, "name": run.task_id, "run": run.run_number,
                  "attempt": run.attempt, "slot": run._slot, "status": int(run.status),
                  "scheduled": run._t_scheduled + run._offset,
                  "error": run.error or f"<record failed: {error_line(exc)}>"}
        return record


def _describe(write: Write) -> str:
    target = write.target
    if isinstance(target, Run):
        return f"{target.task_id} #{target.run_number}"
    if isinstance(target, TaskRecord):
        return target.id
    return str(target)
