"""Taking a store's tasks: loading them at start, or waiting as a standby
while another scheduler holds the store, then taking over.

A standby runs nothing. A ``delay()`` made meanwhile stores a new task id
(never overwriting the active scheduler's row); a changed definition of an
existing id is kept aside and applied when this scheduler takes over. The
takeover and a standby's ``delay()`` exclude each other (``takeover_lock``),
so a task stored during the takeover is loaded, never lost.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import threading
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from ..durability.encoding import (load_args, load_function, load_options, load_schedule,
                                   scheduler_time, slot_named, slot_pass, stored_options)
from ..records.options import TaskOptions
from ..durability.leftovers import end_group
from ..durability.stores.rules import INTERRUPTED as INTERRUPTED_ERROR
from ..records.protocols import INTERRUPTED, RUNNING, TaskRecord
from ..records.runs import FINAL, Run, TaskStatus, error_line
from ..records.task import Task, task_label
from ..records.validation import check_kwargs
from ..timing.triggers import CronTrigger, OnceTrigger, RecurTrigger
from .recovery import RECOVERY_ROWS, Recovery, RetryOwed, recover, skipped_retry
from .state import State
from .timetable import Extra

__all__ = ["Standby", "same_record", "shared_store", "log_interrupted", "owe_retries",
           "task_from_record"]

_log = logging.getLogger("pysched_lightning")

#: How often a standby scheduler tries to take over the store.
STANDBY_RETRY_SECONDS = 1.0


class Standby:
    """The store's tasks, taken now or when its holder stops."""

    def __init__(self, st: State, store: Any, owner: str,
                 replace: Callable[[List[Tuple[Task, TaskRecord]]], None]) -> None:
        self._st = st
        self._store = store
        self._owner = owner
        #: Applies the definitions a standby's delay() changed (at takeover).
        self._replace = replace
        #: Held by the takeover and by a standby's delay().
        self.takeover_lock = threading.Lock()
        self._changed: Dict[str, Tuple[Task, TaskRecord]] = {}
        #: Tasks of a shared store this node cannot load (said once each).
        self._unloadable: Set[str] = set()

    def take(self) -> bool:
        """Hold the store and load its tasks; False when another holds it."""
        if not self._store.acquire(self._owner, wait=False):
            _log.warning("store %r is held by another scheduler (%s): this one waits as "
                         "a STANDBY and runs nothing until that one stops", self._store,
                         self._store.holder())
            return False
        self._load()
        return True

    def wait_to_take_over(self) -> bool:
        """Until the store's holder stops: try to take the store once a second
        (a blocking lock could not be interrupted by shutdown). False when
        this scheduler shuts down first."""
        st = self._st
        while True:
            with st.lock:
                if st.closing:
                    return False
            if self._store.acquire(self._owner, wait=False):
                break
            with st.lock:
                st.wakeup.wait(STANDBY_RETRY_SECONDS)
        _log.warning("store %r: the previous scheduler stopped; this one takes over",
                     self._store)
        with self.takeover_lock:
            self._load()
            changed, self._changed = list(self._changed.values()), {}
            self._replace(changed)
            with st.lock:
                st.standby = False
                st.running_since = st.clock.now()
        return True

    def store_only(self, task: Task, record: TaskRecord, replace_existing: bool) -> None:
        """A standby's delay() (with ``takeover_lock`` held): a new id is
        stored; an identical definition is kept; a changed one waits for the
        takeover."""
        if self._store.save_task(record, replace=False):
            return
        stored = self._store.task(record.id)
        if stored is not None and same_record(stored, record):
            return
        if not replace_existing:
            raise ValueError(f"a task with id {record.id!r} already exists "
                             "(pass replace_existing=True to replace it)")
        self._changed[task.id] = (task, record)

    def _load(self) -> None:
        """Schedule the stored tasks (a slot missed while down is due now),
        with what each is owed (see ``recovery``)."""
        store, st = self._store, self._st
        if shared_store(store):  # the other nodes' runs go on: only dead nodes' stopped
            interrupted = store.reap()
        else:
            _end_leftovers(store)
            interrupted = [dict(row, status=INTERRUPTED, error=INTERRUPTED_ERROR)
                           for row in store.runs(statuses=(RUNNING,))]
            store.mark_interrupted()
        log_interrupted(st, interrupted, "the scheduler running it stopped")
        records = store.load_tasks()
        recent_runs = getattr(store, "recent_runs", None)
        for start in range(0, len(records), _LOAD_TOGETHER):
            some = records[start:start + _LOAD_TOGETHER]
            recent = None if recent_runs is None else \
                recent_runs([record.id for record in some], RECOVERY_ROWS)
            for record in some:
                self.load_one(record, rows=None if recent is None else recent.get(record.id, []))

    def load_one(self, record: TaskRecord, anew: bool = False,
                 rows: Optional[List[Any]] = None) -> bool:
        """Schedule the stored task *record*, with what it is owed; False
        when it is not scheduled (over already, known here, or it cannot be
        loaded: logged, and the record stays in the store untouched). With
        *anew*, what is known here of a task over here gives way to it.
        *rows*: its newest run records, when read already."""
        store, st = self._store, self._st
        try:
            if rows is None:
                rows = store.runs(record.id, limit=RECOVERY_ROWS)
            task = _passing_again(task_from_record(record, st, next(st.seq)), rows,
                                  st.clock.wall(), None if st.shared else record.next_run)
            recurring = not isinstance(task.schedule, (OnceTrigger, type(None)))
            following = _following(st, task) if recurring else None
            when = task.when
            owed = recover(record, rows, task.options, following, st.clock.wall(),
                           lambda wall: slot_named(wall, when))
            for retry in owed.dropped:  # (a later restart owes them no more)
                store.finish_run(skipped_retry(record, retry))
            if owed.status is not None and owed.status != record.status:
                store.update_task(record.id, status=owed.status)  # (runs get purged)
            latest = _latest_run(rows, record, owed, task)
        except Exception as exc:
            self._cannot_load(record, exc)
            return False
        st.claimed_in(rows)
        with st.lock:
            if anew:  # (in the same hold of the lock: it is never unknown meanwhile)
                _forget_if_over(st, record.id)
            scheduled = _schedule_loaded(st, task, record, owed, latest)
        if scheduled:
            _log.info("loaded %s, next run at %s", task.label,
                      _dt.datetime.fromtimestamp(owed.next_run or 0.0, _dt.timezone.utc)
                      .isoformat(timespec="seconds"))
        return scheduled


    def _cannot_load(self, record: TaskRecord, exc: Exception) -> None:
        """Say why *record* cannot be loaded, once per task: on a shared
        store the other nodes run it."""
        if not shared_store(self._store):
            _log.error("stored %s cannot be loaded; it stays in the store untouched",
                       task_label(record.id, record.name), exc_info=exc)
        elif record.id not in self._unloadable:
            self._unloadable.add(record.id)
            _log.error("stored %s cannot be loaded on this node (%s): it is left to "
                       "the other nodes", task_label(record.id, record.name), error_line(exc))


#: How many tasks' run records a store that can (``recent_runs``) reads in
#: one statement while a scheduler loads its tasks.
_LOAD_TOGETHER = 500


def shared_store(store: Any) -> bool:
    """True for a store that several active schedulers share (it tells
    them of each other's changes and leases)."""
    return callable(getattr(store, "changes_since", None))


def log_interrupted(st: State, rows: List[Dict[str, Any]], why: str) -> None:
    """Runs found interrupted: a warning each, and their records for the run log."""
    for row in rows:
        _log.warning("%s run %s attempt %s was interrupted: %s during the run; "
                     "it counts as a failed attempt",
                     task_label(row["task_id"], row.get("name")), row.get("run"),
                     row.get("attempt"), why)
    if rows and st.journal is not None:
        st.journal.log_only(rows)


def _end_leftovers(store: Any) -> None:
    """A run's process that outlived its scheduler (nothing killed it) is
    killed, with its process group, before anything is scheduled: the run
    is recorded interrupted and never runs twice at once."""
    claimed = getattr(store, "claimed_processes", None)
    for claim in claimed() if claimed is not None else ():
        try:
            if end_group(claim["pid"], claim["pid_started"]):
                _log.warning("%s run %s: its process %d was still running after its "
                             "scheduler stopped; its process group was killed",
                             task_label(claim["task_id"]), claim["run"], claim["pid"])
        except OSError as exc:
            _log.error("%s run %s: its process %d is still running after its "
                       "scheduler stopped and could not be killed: %s",
                       task_label(claim["task_id"]),
                       claim["run"], claim["pid"], exc)


def _forget_if_over(st: State, task_id: str) -> None:
    """With the lock held: forget *task_id* if it is over here (no run
    live, not scheduled), so that its stored record is loaded in its place."""
    state = st.runbook.get(task_id)
    if state is not None and state.live == 0 and task_id not in st.timetable:
        st.runbook.forget(task_id)


def _schedule_loaded(st: State, task: Task, record: TaskRecord, owed: Recovery,
                     latest: Optional[Run]) -> bool:
    """With the lock held: put a loaded task in place (a task added by a
    delay() meanwhile wins), due at ``owed.next_run``, with the retries it
    is owed. True when it is scheduled; a finished one is only kept, to be
    queried (and not run again) until purged."""
    if task.id in st.timetable or task.id in st.runbook:
        return False
    status = TaskStatus(record.status if owed.status is None else owed.status)
    if status is TaskStatus.CANCELED and (owed.next_run is not None or owed.retries):
        status = TaskStatus.SUSPENDED  # (a run a shutdown canceled: the task runs again)
    st.runbook.load(task.id, owed.runs, record.missed, status, bool(record.paused), latest)
    if owed.next_run is None and not owed.retries:
        st.runbook.retire(task, record.updated - st.offset)
        if record.next_run is not None and st.journal is not None:
            st.journal.task_finished(task.id, int(status))  # it was over already
        return False
    if owed.next_run is None:
        st.timetable.add_fired(task)
    elif owed.next_run != record.next_run:  # its stored occurrence had run
        st.timetable.add(task.at(owed.next_run - st.offset, task.seq))
    else:
        st.timetable.add(task)
    owe_retries(st, task, owed.retries)
    return True


def owe_retries(st: State, task: Task, retries: List[RetryOwed]) -> None:
    """With the lock held: the scheduled *task* is owed these retries."""
    state = st.runbook.state(task.id)
    for retry in retries:
        state.owed += 1
        st.timetable.push_extra(Extra(retry.wall_time - st.offset, task.priority, next(st.seq),
                                      task.id, retry.attempt, retry.number, "retry",
                                      retry.slot, st.timetable.generation(task.id)))
    st.wakeup.notify()


def _passing_again(task: Task, rows: List[Dict[str, Any]], wall_now: float,
                   next_run: Optional[float]) -> Task:
    """A wildcard cron job's pass, from its claims (see
    ``CronTrigger.repeating``): claims reaching past the wall time now, or
    past the stored *next_run* (the wall clock stepped back, then the
    scheduler stopped before it claimed any instant again), start a new
    pass, up to the latest of them; a pass after the first goes on, so that
    its instants keep their names. (*next_run* is None on a shared store:
    there a node whose clock is behind writes times behind the others'.)"""
    when = task.when
    if not (isinstance(when, CronTrigger) and when.wildcard):
        return task
    claims = [(row["scheduled"], slot_pass(row["slot"])) for row in rows
              if row.get("slot") and row.get("scheduled") is not None
              and not row["slot"].startswith("now:") and "~" not in row["slot"]]
    if not claims:
        return task
    until, latest = max(wall for wall, _ in claims), max(passes for _, passes in claims)
    reached = max(wall for wall, passes in claims if passes == latest)
    if reached > wall_now or (next_run is not None and next_run < reached):
        return task._replace(when=when.repeating(until, latest))
    if latest > 1:
        return task._replace(when=when.repeating(until, latest - 1))
    return task


def _following(st: State, task: Task) -> Callable[[float], Optional[float]]:
    """A recurring *task*'s next occurrence after a wall time (POSIX seconds)."""
    trig = task.when
    shift = 0.0 if trig.wall_clock else st.offset  # type: ignore[union-attr]

    def following(wall: float) -> Optional[float]:
        due = trig.next_due(wall - shift)  # type: ignore[union-attr]
        return None if due is None else due + shift
    return following


def task_from_record(record: TaskRecord, st: State, seq: int) -> Task:
    fn = load_function(record)
    args, kwargs = load_args(record)
    schedule = load_schedule(record)
    options: TaskOptions = load_options(record)
    offset = st.offset
    wall_due = record.next_run if record.next_run is not None else record.updated
    due = scheduler_time(wall_due, offset)
    if isinstance(schedule, RecurTrigger):  # its grid was on the old process's clock
        schedule = schedule.relaid(due, offset)
    interval = schedule.interval if schedule is not None else json.loads(record.interval)
    return Task(due, record.priority, seq, record.id,
                schedule if schedule is not None else record.trigger,
                interval, fn, args, check_kwargs(kwargs), options)


def _latest_run(rows: List[Dict[str, Any]], record: TaskRecord, owed: Recovery,
                task: Task) -> Optional[Run]:
    """The task's last stored run, so get_result() answers after a restart."""
    status = record.status if owed.status is None else owed.status
    if TaskStatus(status) not in FINAL and not owed.slot_taken:
        return None
    ran = [row for row in rows if row.get("status") != TaskStatus.MISSED]
    if not ran:
        return None
    latest = ran[0]  # (the rows come newest first, by their wall times)
    number = latest.get("run")
    # A retry comes after the attempt it retries, whatever the wall clock
    # says: one that stepped back between them put the retry an hour earlier.
    if number is not None:
        latest = max((row for row in ran if row.get("run") == number),
                     key=lambda row: row.get("attempt") or 0)
    return Run.from_record(latest, task)


def same_record(a: TaskRecord, b: TaskRecord) -> bool:
    """True when two stored records define the same task (their bytes, and
    the zone of a cron or datetime trigger)."""
    fields = ("trigger", "interval", "priority", "fn_ref", "fn_pickle", "args", "kwargs")
    return all(getattr(a, f) == getattr(b, f) for f in fields) and \
        stored_options(a) == stored_options(b) and \
        type(a.priority) is type(b.priority) and _zone(a) == _zone(b)


def _zone(record: TaskRecord) -> Any:
    try:
        return json.loads(record.info or "{}").get("tz")
    except ValueError:
        return None
