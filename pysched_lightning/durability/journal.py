"""The journal: what the scheduler owes its store and its run log.

Changes are noted with the state lock held (a list append, cheap, no user
code). Nothing that can run user code happens under a lock of the
scheduler's: the record of a finished run (``repr`` of its result, pickling
its outcome) is built by the thread that noted it, after the state lock;
a run's name for its claim by whoever flushes, before its turn. In its
turn (one thread at a time, see ``turns``), ``flush()`` commits every write
that is ready, in the order noted, a few to a transaction; a write leaves
the pending list only once committed, so an interrupt loses none. The run
log is written, and failures are logged, after the turn (a run log's
``write`` may call back into the scheduler).

One failing write does not undo the others: when the shared transaction
fails, each write is tried again in a transaction of its own, and only the
one that fails alone is lost (logged, and reported to a ``delay()`` that
waits for it). A run is claimed in the store when it starts; a run whose
claim is refused does not execute. A new task that starts the moment it is
added has its first run claimed in the transaction that stores the task (an
early ``Claim``): one commit, not two.
"""
from __future__ import annotations

import functools
import logging
import weakref
from typing import Any, Callable, List, Mapping, Optional, Tuple

from ..records.protocols import TaskRecord
from ..records.runs import Run, error_line
from .claims import Claim, ClaimedElsewhere, EarlyClaim, decide_all
from .single import between_runs, save_alone
from .writes import (Write, WriteKind, describe, inserted, run_name, safe_record,
                     task_of)
from .feed import RunLogFeed
from .leftovers import keep_process
from .turns import Turns, mark_done

__all__ = ["Journal", "Write", "WriteKind", "Claim", "EarlyClaim", "decide_all", "inserted"]

#: The most writes a flush commits in one transaction.
_WRITES_PER_COMMIT = 16

_log = logging.getLogger("pysched_lightning")

#: The fields of a stored task that say what it runs and when.
_DEFINITION = ("trigger", "interval", "priority", "fn_ref", "fn_pickle", "args", "kwargs",
               "options", "schedule")


class Journal:
    """Pending writes for a store and/or a run log, flushed in order."""

    def __init__(self, store: Any, run_log: Any, state_lock: Any, owns_store: bool,
                 owns_log: bool) -> None:
        self.store = store
        self.run_log = run_log
        claimed_keys = getattr(store, "claimed_keys", None)
        #: On a store several nodes share: the slots they claimed, learnt ahead.
        self.elsewhere = None if claimed_keys is None else ClaimedElsewhere(claimed_keys)
        self._owns = (owns_store, owns_log)
        #: The scheduler's state lock: notes are appended with it held.
        self._state_lock = state_lock
        self._pending: List[Write] = []
        #: One flush at a time, in the order noted.
        self._turns = Turns()
        #: Records waiting for the run log.
        self._feed = RunLogFeed(run_log)
        self._closed = False

    @property
    def closed(self) -> bool:
        """True once :meth:`close` is done with the store (read with the state lock)."""
        return self._closed

    # -- noted with the state lock held ------------------------------------

    def _note(self, write: Write) -> Write:
        if not self._closed:
            self._pending.append(write)
        return write

    def claim(self, run: Run) -> Claim:
        """*run* starts: claim its slot (``run._slot``) in the store."""
        started = run._t_timestamp if run._t_timestamp is not None else run._t_scheduled
        claim = Claim(run.task_id, run._slot, run.attempt, run.run_number,  # type: ignore
                      run._name, run._t_scheduled + run._offset, started + run._offset, run)
        self._note(Write(WriteKind.CLAIM, claim))
        self.follow(run, claim)
        return claim

    def follow(self, run: Run, claim: Claim) -> None:
        """A process *run* starts is kept with its *claim* (a restart ends it)."""
        if hasattr(self.store, "note_process"):
            run.on_process(functools.partial(keep_process, self.store, claim))

    def finished(self, run: Run) -> Write:
        """*run* is final (every attempt is recorded): its record is built by
        the noting thread after the lock (see :meth:`prepare`)."""
        return self._note(Write(WriteKind.RUN, run, ready=False))

    missed = finished  # a MISSED record, new or with a grown count

    def release(self, claim: Claim, reason: str) -> None:
        """A claim whose run will not execute (the scheduler shut down first):
        it is given back, so that a restart runs the run."""
        if self.store is not None:
            claim.refuse(reason)
            self._note(Write(WriteKind.RELEASE, claim))

    def task_changed(self, task_id: str, **fields: Any) -> None:
        if self.store is None:
            return
        pending = self._pending
        last = pending[-1] if pending else None
        if last is not None and last.kind is WriteKind.UPDATE and last.target == task_id:
            last.fields.update(fields)  # one write for a run's end and its task's
            return
        self._note(Write(WriteKind.UPDATE, task_id, fields))

    def task_finished(self, task_id: str, status: int) -> None:
        """The task's last run is over: it stays stored, finished, until purged."""
        self.task_changed(task_id, next_run=None, status=status)

    def task_removed(self, task_id: str) -> None:
        if self.store is not None:
            self._note(Write(WriteKind.REMOVE, task_id))

    def withdraw(self, task_id: str) -> None:
        """A task being added was taken back: its claims and updates noted
        meanwhile are not written (nothing of it was stored yet)."""
        mark_done([write for write in self._pending  # (a flush waiting for them goes on)
                   if task_of(write) == task_id and write.kind is not WriteKind.SAVE])
        self._pending = [write for write in self._pending if not write.done]

    def has_pending(self) -> bool:
        """True when a write is ready to be flushed."""
        return any(write.ready for write in self._pending)

    # -- outside the locks -----------------------------------------------------

    def prepare(self, writes: List[Write]) -> None:
        """Build the records of runs noted by this thread (user code: a
        result's repr, pickling). A record that cannot be built is replaced
        by a short one: the run's record itself is never lost."""
        for write in writes:
            if not write.ready:
                write.fields = safe_record(write.target)
                write.ready = True

    def store_task(self, record: TaskRecord, replace: bool = True,
                   claim: Optional[Claim] = None, new_id: bool = False,
                   set_aside: Optional[str] = None) -> Write:
        """Write a task record, with its first run's *claim* if given (both
        or neither are written), and wait for the commit; then look at the
        returned write's ``error``. A *new_id* is committed by itself, ahead
        of the pending writes, none of which can concern it. *set_aside*: a
        slot (or ``EVERY_SLOT``) whose run records belong to a definition or
        a trigger this one replaces (see ``Store.set_aside_runs``). Without
        *replace*, the task is stored only if its id is free, and the claim
        made only then: :func:`inserted` says whether it was."""
        write = Write(WriteKind.SAVE, record, [replace, claim, set_aside, None])
        if new_id:  # no flush to wait for: the store's own lock orders the commits
            failures = self._commit([write])
            self._report(failures)
            return write
        with self._state_lock:
            self._note(write)
        self.flush()
        return write

    def confirm_flushed(self, write: Optional[Write]) -> None:
        """Once the run a stored task's first claim let start is under way:
        wait until *write* (if it was committed without the store's disk
        flush) is on disk too, so that the task is durable when delay()
        returns. The commit happened already: should the wait fail, it is
        logged (only a crash of the database server could lose the task
        now, as it could the last claims), never raised."""
        if write is None or not write.unflushed:
            return
        write.unflushed = False
        try:
            self.store.wait_flushed()
        except Exception as exc:
            _log.warning("task %r is stored, but the store could not confirm that it is on "
                         "disk (%s): a crash of the database server in the next moments "
                         "could lose it", write.target.id, error_line(exc))

    def will_store(self, record: TaskRecord) -> bool:
        """After an interrupt in :meth:`store_task`: True when *record* is
        stored, or noted to be (a noted write is never lost)."""
        with self._state_lock:
            if any(write.kind is WriteKind.SAVE and write.target is record
                   for write in self._pending):
                return True
        stored = self.store.task(record.id) if self.store is not None else None
        return stored is not None and all(getattr(stored, name) == getattr(record, name)
                                          for name in _DEFINITION)

    def flush(self) -> None:
        """Return once every write ready at the call is committed, in the
        order noted, by this thread or by the one flushing meanwhile (see
        ``turns``); failures are logged and kept on their writes, never
        raised. Then write the run log.
        (What user code there raises, a log handler or a run log, is raised
        once all of it is done; writes an interrupt kept from their commit
        stay pending, for the next flush.)"""
        with self._state_lock:
            pending = list(self._pending)
        for write in pending:  # names of claims: user code, before any lock
            if write.kind is WriteKind.CLAIM and write.target.name is None:
                write.target.name = run_name(write.target)
        failures = self._turns.flush([write for write in pending if write.ready],
                                     self._flush_ready)
        try:
            self._report(failures)
        finally:
            self._feed.write()

    def flush_all(self) -> None:
        """Build the records noted so far (a run that ended in another
        thread may not have its record built yet), then flush: a query of
        the store then reads every run of this node's that ended before it."""
        with self._state_lock:
            pending = list(self._pending)
        self.prepare(pending)
        self.flush()

    def _flush_ready(self) -> List[Tuple[Write, BaseException]]:
        """Commit the ready writes (in this thread's turn)."""
        with self._state_lock:  # (a write done already was committed: an interrupt
            batch = [write for write in self._pending  # kept it on the list)
                     if write.ready and not write.done]
        failures = self._commit(batch) if self.store is not None else []
        mark_done(batch)  # (first: a write off the list is done, for its waiters)
        with self._state_lock:
            self._pending = [write for write in self._pending if not write.done]
        self._turns.settled(batch)
        if self.run_log is not None:
            self._feed.add(write.fields for write in batch
                           if write.kind is WriteKind.RUN and write.error is None)
        return failures

    def log_only(self, records: List[Mapping[str, Any]]) -> None:
        """Records the store has already (the runs a restart found
        interrupted): for the run log only."""
        if self.run_log is not None:
            self._feed.add(records)
            self._feed.write()

    def _commit(self, writes: List[Write]) -> List[Tuple[Write, BaseException]]:
        """Commit *writes* in short transactions (a delay() storing a new task
        never waits long behind a backlog of records); returns the failures."""
        failures: List[Tuple[Write, BaseException]] = []
        size = getattr(self.store, "writes_per_commit", _WRITES_PER_COMMIT)
        for start in range(0, len(writes), size):
            failures.extend(self._commit_together(writes[start:start + size]))
        return failures

    def _commit_together(self, writes: List[Write]) -> List[Tuple[Write, BaseException]]:
        if not writes:
            return []
        if len(writes) == 1 and writes[0].kind is WriteKind.SAVE:
            alone = save_alone(self.store, writes[0])
            if alone is not None:
                return alone
        between = between_runs(self.store, writes, self._commit_together,
                               self._turns.settled)
        if between is not None:
            return between
        steps = [(write, self._step(write)) for write in writes]
        try:
            with self.store.batch():
                for step in self._together(writes, steps):
                    step()
            return []
        except Exception as exc:
            first = exc
        failures: List[Tuple[Write, BaseException]] = []
        for write, step in steps:  # one failing write must not undo the others
            try:
                with self.store.batch():
                    step()
            except Exception as exc:
                write.error = exc
                if write.kind is WriteKind.CLAIM:
                    write.target.refuse(f"could not be claimed in the store: "
                                        f"{error_line(exc)}")
                failures.append((write, exc))
        if len(steps) > 1:
            failures.insert(0, (Write(WriteKind.UPDATE, None), first))
        return failures

    def _together(self, writes: List[Write],
                  steps: List[Tuple[Write, Callable[[], None]]]) -> List[Callable[[], None]]:
        """The steps of one transaction: a store that claims many runs in
        one statement (``claim_runs``) gets the claims together, where the
        first of them was."""
        claims = [write.target for write in writes if write.kind is WriteKind.CLAIM]
        claim_runs = getattr(self.store, "claim_runs", None) if len(claims) > 1 else None
        if claim_runs is None:
            return [step for _, step in steps]
        together: List[Callable[[], None]] = []
        for write, step in steps:
            if write.kind is not WriteKind.CLAIM:
                together.append(step)
            elif write.target is claims[0]:
                together.append(functools.partial(decide_all, claim_runs, claims))
        return together

    def concerns(self, task_id: str) -> bool:
        """True when a pending write is about *task_id*."""
        with self._state_lock:
            return any(task_of(write) == task_id for write in self._pending)

    def _step(self, write: Write) -> Callable[[], None]:
        """The store call for *write* (its arguments are built already)."""
        store, kind, target = self.store, write.kind, write.target
        if kind is WriteKind.RUN:
            return lambda: store.finish_run(write.fields)
        if kind is WriteKind.CLAIM:
            return lambda: target.decide(store)
        if kind is WriteKind.RELEASE:
            return lambda: store.release_run(target.task_id, target.slot, target.attempt)
        if kind is WriteKind.UPDATE:
            return lambda: store.update_task(target, **write.fields)
        if kind is WriteKind.REMOVE:
            return lambda: store.remove_task(target)
        replace, claim, set_aside, _ = fields = write.fields

        def save_and_claim() -> None:  # in one transaction: all or nothing
            fields[3] = saved = store.save_task(target, replace=replace)
            if set_aside is not None and saved:
                store.set_aside_runs(target.id, set_aside)
            if claim is not None:
                if saved:
                    claim.decide(store)
                else:
                    claim.refuse("its id is another task's, stored meanwhile")
        return save_and_claim

    def _report(self, failures: List[Tuple[Write, BaseException]]) -> None:
        """Log the writes that failed (outside the locks: handlers are user code)."""
        first: Optional[BaseException] = None
        for write, exc in failures:
            try:
                if write.target is None:
                    _log.warning("writing changes to the store together failed (%s); "
                                 "writing them one by one", error_line(exc))
                else:
                    _log.error("writing %s %r to the store failed: %s", write.kind.value,
                               describe(write), error_line(exc))
            except BaseException as raised:  # a log handler: the others still log
                first = first or raised
        if first is not None:
            raise first

    def close(self) -> None:
        """Build what is left, flush; then close what the scheduler made, and
        release a store it was given (so the caller may hand it to another
        scheduler). Writes noted afterwards are dropped."""
        self.flush_all()
        self._feed.release_held()  # (the stretches of skips end here)
        self._feed.write()
        with self._state_lock:
            self._closed = True
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
