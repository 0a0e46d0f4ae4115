"""Adding, replacing and purging definitions where user code or the store
is involved: comparing two definitions (``==`` of functions and
arguments), pickling a task for the store and writing it all happen with
the state lock released, then the change is made with it held.

With a store, ``delay()`` writes the task first and schedules it only once
it is committed: a write that fails raises from ``delay()`` and changes
nothing. A new task that is to start at once gets its lane slot reserved
first, and its first run's claim goes into the same commit as the task.
"""
from __future__ import annotations

import math
from typing import Any, Optional

from .core import control
from .core.standby import same_record
from .core.state import Effects, State
from .durability.encoding import slot_at, slot_offset, task_record
from .durability.journal import Claim, Write, inserted
from .records.errors import StoreWriteError
from .records.protocols import EVERY_SLOT, TaskRecord
from .records.task import Task

__all__ = ["add_checked", "replace_checked", "purge"]


def add_checked(st: State, workers: Any, standby: Any, task: Task,
                replace_existing: bool, fresh_id: bool = False) -> str:
    """``delay()`` of a named task, or of any task with a store or run log.
    *fresh_id*: the id was made by ``delay()``, so no other call can add it."""
    if standby is not None:
        with standby.takeover_lock:
            with st.lock:
                on_standby = st.standby
                if st.closing:
                    raise RuntimeError("cannot schedule new tasks after shutdown")
            if on_standby:  # a standby only stores; the one taking over runs it
                standby.store_only(task, _record(st, task), replace_existing)
                with st.lock:  # known here from now on; it runs after the takeover
                    if task.id not in st.timetable:
                        st.timetable.add(task)
                return task.id
    journal = st.journal
    store = journal.store if journal is not None else None
    record = _record(st, task) if store is not None else None  # refused here if unstorable
    take_id = st.shared  # (until another node's definition under this id is found)
    while True:
        old: Optional[Task] = None
        early: Optional[Claim] = None
        write: Optional[Write] = None
        settled = False  # added, or put right
        # On a shared store a named task unknown here may be added by another
        # node at the same moment (the same start-up code): its id is taken
        # only if free, as a new id's would be (see _follow_stored).
        first = fresh_id
        try:
            with st.lock:
                old = control.check_add(st, task, replace_existing)
                first = fresh_id or (take_id and old is None and record is not None)
                if first and record is not None:
                    early = control.reserve_start(st, task, record.name, st.clock.now())
            same = old is not None and _same(old, task, store, record)
            if old is not None and not same:  # (a restart's catch-up is kept)
                with st.lock:
                    due = control.catch_up(st, old, task, st.clock.now())
                if due is not task:
                    task, record = due, _record(st, due) if record is not None else None
            # a named id may have runs of an earlier definition (a replaced, a
            # finished or a canceled one): the new one may run their slots, and
            # is owed none of their retries
            aside = None if first else EVERY_SLOT
            fx = Effects()
            try:
                alone = fresh_id or (first and journal is not None
                                     and not journal.concerns(task.id))
                write = _store(st, task, record, early, alone, aside,
                               replace=fresh_id or not first) if not same else None
            except BaseException as exc:
                if early is not None:
                    with st.lock:
                        control.unreserve(st, task, early)
                if not isinstance(exc, Exception) and record is not None and not same \
                        and not (first and not fresh_id):  # (maybe another node's: kept)
                    _store_cut_short(st, workers, task, record, old, early)
                raise
            if first and not fresh_id and write is not None and not inserted(write):
                # another node stored a task under this id first
                if early is not None:
                    with st.lock:
                        control.unreserve(st, task, early)
                if _follow_stored(st, standby, record):
                    return task.id
                if not replace_existing:
                    raise ValueError(f"a task with id {task.id!r} already exists "
                                     "(pass replace_existing=True to replace it)")
                take_id = False
                continue  # changed: this definition replaces it
            try:
                try:
                    with st.lock:
                        try:
                            if control.existing(st, task.id) is not old:
                                continue  # another delay() of this id came between: again
                            control.add_task(st, task, replace_existing, same, st.clock.now(),
                                             fx, early)
                            settled = True
                        except BaseException as exc:
                            settled = True
                            _put_right(st, task, old, write, early, fx, exc)
                            raise
                        finally:
                            if early is not None:
                                control.unreserve(st, task, early)
                finally:  # what adding noted besides the task (a claim, a next run
                    _settle(workers, fx, journal, write)  # time) goes with the next commit
            except BaseException as exc:
                if not settled:  # an interrupt before the lock: put right all the same
                    settled = True
                    with st.lock:
                        _put_right(st, task, old, write, early, fx, exc)
                        if early is not None:
                            control.unreserve(st, task, early)
                workers.settle(fx)
                raise
            return task.id
        except BaseException as exc:
            if not isinstance(exc, Exception):  # an interrupt between the steps:
                _interrupted_between(st, workers, task, old, write, settled, early,
                                     first and record is not None, exc)
            raise


def _settle(workers: Any, fx: Effects, journal: Any, write: Optional[Write]) -> None:
    """What adding noted is carried out (the task's first run starts), then
    the task's store write is waited for to reach the disk, if it was
    committed without (see Journal.confirm_flushed)."""
    try:
        workers.settle(fx)
    finally:
        if journal is not None:
            journal.confirm_flushed(write)


def _follow_stored(st: State, standby: Any, record: Any) -> bool:
    """Another node stored a task under this id first: the same definition
    is followed as stored (its due time is the first node's: each node's
    "in 10 s" differs); True then. False when it is gone, or differs (this
    definition is to replace it)."""
    store = st.journal.store if st.journal is not None else None
    stored = store.task(record.id) if store is not None else None
    if stored is None or not same_record(stored, record):
        return False
    with st.lock:
        if control.existing(st, record.id) is not None:
            return True  # loaded meanwhile (its change was heard)
    standby.load_one(stored)
    return True


def _interrupted_between(st: State, workers: Any, task: Task, old: Optional[Task],
                         write: Optional[Write], settled: bool, early: Optional[Claim],
                         reserved: bool, exc: BaseException) -> None:
    """An interrupt came between the steps of :func:`add_checked`: a task
    stored but not added yet is put right (see :func:`_put_right`), and no
    slot stays reserved for a new one."""
    fx = Effects()
    with st.lock:
        if write is not None and not settled:
            _put_right(st, task, old, write, early, fx, exc)
        if reserved:
            control.abandon_start(st, task)
    workers.settle(fx)


def _put_right(st: State, task: Task, old: Optional[Task], write: Optional[Write],
               early: Optional[Claim], fx: Effects, exc: BaseException) -> None:
    """Adding *task* failed halfway (with the lock held). A new task is
    taken back, in memory and in the store: as if delay() had not been
    called. A replacement that an interrupt cut short is completed (its
    definition is stored already)."""
    if old is not None:
        if not isinstance(exc, Exception):  # (a refusal leaves the old one as it is)
            control.redo_replace(st, task, fx)
        return
    st.take_back(task.id, fx)
    st.repair(fx)
    journal = st.journal
    if journal is not None and write is not None:
        journal.withdraw(task.id)
        journal.task_removed(task.id)  # stored, but not scheduled
        if early is not None:
            journal.release(early, "the scheduler shut down first")


def _store_cut_short(st: State, workers: Any, task: Task, record: TaskRecord,
                     old: Optional[Task], early: Optional[Claim]) -> None:
    """An interrupt came while *task* was being stored: it may be stored or
    not. A new task is taken out of the store (as if delay() had not been
    called); a replacement is completed, in memory and in the store."""
    journal = st.journal
    assert journal is not None
    fx = Effects()
    with st.lock:
        if old is None:
            journal.task_removed(task.id)
            if early is not None:
                journal.release(early, "delay() was interrupted")
        elif control.existing(st, task.id) is old:
            control.redo_replace(st, task, fx)
    if old is not None:
        journal.store_task(record)
    journal.flush()
    workers.settle(fx)


def replace_checked(st: State, workers: Any, new: Task, keep_time: bool) -> None:
    """``modify()`` (*keep_time*: the schedule is kept) or ``reschedule()``:
    store the new definition with the task's schedule state, then put it in
    place. The stored next run stays that of the current occurrence, fired
    or not: a one-shot whose run has not started yet runs after a restart,
    and one whose run was claimed never runs again (see ``recovery``). A new
    trigger's first occurrence may fall on a slot the old one ran (a
    one-shot due now, in the millisecond of the last run; a datetime that
    names a slot that ran): those records are set aside, so it is not
    refused as claimed already (retries owed keep their own slots)."""
    journal = st.journal
    if journal is not None and journal.store is not None:
        with st.lock:
            snap = control.snapshot(st, new.id)
        due = snap["task"].time if keep_time else new.time
        record = task_record(new, due + slot_offset(new, st.offset), st.clock.wall())
        record.runs, record.missed = snap["runs"], snap["missed"]
        record.status, record.paused = int(snap["status"]), snap["paused"]
        aside = None if keep_time else slot_at(new, new.time, st.offset)
        # (the replacement in the same try: an interrupt between the two,
        # once the definition is stored, still puts it in place)
        try:
            _raise_unstored(journal.store_task(record, set_aside=aside), new.id)
            _replace_in_memory(st, workers, new, keep_time)
        except Exception:
            raise
        except BaseException:  # stored, or to be: the change is made here too
            if journal.will_store(record):  # (doing it twice changes nothing more)
                _replace_in_memory(st, workers, new, keep_time)
            raise
        _note_changes_since(st, new.id, record)
        return
    _replace_in_memory(st, workers, new, keep_time)


def _note_changes_since(st: State, task_id: str, record: TaskRecord) -> None:
    """A firing may have come between the snapshot *record* was made from
    and its commit: what it changed (the next run, the counts, the status)
    is noted again, to be written after the record."""
    journal = st.journal
    assert journal is not None
    with st.lock:
        snap = control.snapshot(st, task_id)
        fields = {name: snap[name] for name in ("runs", "missed")
                  if snap[name] != getattr(record, name)}
        if int(snap["status"]) != record.status:
            fields["status"] = int(snap["status"])
        if snap["next_time"] is not None:  # (a fired one keeps its occurrence)
            next_run = snap["next_time"] + slot_offset(snap["task"], st.offset)
            if next_run != record.next_run:
                fields["next_run"] = next_run
        if fields:
            journal.task_changed(task_id, **fields)


def _replace_in_memory(st: State, workers: Any, new: Task, keep_time: bool) -> None:
    fx = Effects()
    try:
        try:
            with st.lock:
                new = control.replace_task(st, new, fx, keep_time)
        except BaseException as exc:
            if not isinstance(exc, Exception):
                with st.lock:  # complete it: doing it again changes nothing more
                    if new.id in st.timetable:
                        control.replace_task(st, new, fx, keep_time)
                    st.repair(fx)
            raise
        finally:
            workers.settle(fx)
    except BaseException:
        workers.settle(fx)  # (an interrupt on the line above)
        raise


def purge(st: State, days: Any, hours: Any, minutes: Any) -> int:
    """Drop finished tasks and run records older than the age given (every
    finished one with no age), in memory and in the store."""
    for label, value in (("days", days), ("hours", hours), ("minutes", minutes)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not 0 <= value < math.inf:
            raise ValueError(f"{label} must be a number >= 0, got {value!r}")
    age = days * 86400 + hours * 3600 + minutes * 60
    with st.lock:
        # with no age, every finished run goes, even one that ended just now
        # (or "later": a wall clock that stepped back dates it after now)
        cutoff = math.inf if age == 0 else st.clock.now() - age
        removed, tasks = control.purge(st, cutoff)
        before_wall = math.inf if age == 0 else cutoff + st.offset
        for task_id in tasks:
            if st.journal is not None:
                st.journal.task_removed(task_id)
    journal = st.journal
    if journal is not None and journal.store is not None:
        journal.flush()
        removed = max(removed, journal.store.purge_runs(before_wall))
    return removed


def _same(old: Task, new: Task, store: Any, record: Optional[TaskRecord]) -> bool:
    """Do two definitions schedule the same work? With a store, by their
    stored bytes (a lambda or a partial re-made at start-up equals its
    stored self only so); else by ``==`` (user code: raising means no)."""
    if record is not None:
        stored = store.task(record.id)
        if stored is not None:
            return same_record(stored, record)
    try:
        return bool(control.same_definition(old, new))
    except Exception:
        return False


def _record(st: State, task: Task) -> TaskRecord:
    return task_record(task, _wall(st, task), st.clock.wall())


def _wall(st: State, task: Task) -> float:
    return task.time + slot_offset(task, st.offset)


def _store(st: State, task: Task, record: Optional[TaskRecord], early: Optional[Claim],
           new_id: bool, set_aside: Optional[str], replace: bool = True) -> Optional[Write]:
    """Write *task* to the store (if any), with its *early* claim, and wait
    for the commit; *set_aside*: the slot (or ``EVERY_SLOT``) whose run
    records belong to an earlier definition."""
    journal = st.journal
    if journal is None or journal.store is None or record is None:
        return None
    write = journal.store_task(record, replace, claim=early, new_id=new_id,
                               set_aside=set_aside)
    _raise_unstored(write, task.id)
    return write


def _raise_unstored(write: Write, task_id: str) -> None:
    if write.error is not None:
        raise StoreWriteError(f"task {task_id!r} could not be stored, so it was not "
                              f"scheduled: {write.error}") from write.error
