"""One scheduler's part in a store that several active schedulers (nodes)
share: its lease, the runs of nodes that died, and the others' changes.

* The lease: renewed every third of its length; a node that finds it lost
  (cut off from the database, or paused, longer than the lease) joins
  again under a new epoch, and the store refuses its old claims' writes.
* Dead nodes: their runs still RUNNING are recorded INTERRUPTED by whichever
  node reaps them first (``store.reap()``); every node hears of it as a
  change of the task and owes the retry the task's options allow, so one of
  them runs it (their claims decide which).
* Shares: which tasks this node goes first for, among the live nodes
  (looked at again at each heartbeat, and when a node joins or leaves).
* Changes: a task added, replaced, paused, resumed or removed on one node is
  a change row and a notification; the others apply it here within
  milliseconds, or within :data:`POLL_SECONDS` if a notification was lost.
  Nothing applied here is written back (the store already holds it).

Nothing here runs under the state lock but the changes themselves;
unpickling a stored task (user code) and the store's I/O happen outside it.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Dict, Optional, Set, Tuple

from ..durability.encoding import slot_named, task_record
from ..records.protocols import TaskRecord
from ..records.runs import error_line
from ..records.task import task_label
from . import control
from .effects import Effects
from .recovery import RECOVERY_ROWS, recover
from .shares import share_of
from .standby import Standby, log_interrupted, owe_retries, same_record, task_from_record
from .state import State

__all__ = ["Cluster", "POLL_SECONDS"]

_log = logging.getLogger("pysched_lightning")

#: How often the changes are read without a notification (one lost, say).
POLL_SECONDS = 2.0
#: The longest wait for a notification between two looks at the scheduler.
_WAIT_SLICE = 0.25


class Cluster:
    """This node's lease, reaps and the other nodes' changes, on a thread."""

    def __init__(self, st: State, store: Any, owner: str, standby: Standby,
                 hands: Any) -> None:
        self._st = st
        self._store = store
        self._owner = owner
        self._standby = standby
        #: Settles what an applied change left to do (the workers).
        self._hands = hands
        #: The newest change applied (those before are in the loaded tasks).
        self._seq = store.last_change()
        #: Retries pushed here for (task, slot, attempt): pushed once.
        self._owed: Set[Tuple[str, str, int]] = set()
        self._failing: Optional[str] = None
        self._thread: Optional[threading.Thread] = None

    def start(self) -> None:
        """Look at the live nodes (this node's share), then go on in a thread."""
        try:
            self._look_at_nodes()
        except Exception as exc:  # the thread tries again at its first beat
            self._failed(exc)
        thread = threading.Thread(target=self._run, name="pysched-cluster", daemon=True)
        thread.start()
        self._thread = thread  # (only once started: a shutdown racing start() may join it)

    def join(self, timeout: Optional[float] = None) -> None:
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # -- the thread -----------------------------------------------------------

    def _run(self) -> None:
        beat_every = self._store.lease / 3
        next_beat = next_poll = 0.0
        while not self._over():
            now = time.monotonic()
            try:
                if now >= next_beat:
                    next_beat = now + beat_every
                    self._beat()
                if now >= next_poll:
                    changed = True
                else:
                    wait = min(next_beat, next_poll, now + _WAIT_SLICE) - now
                    changed = self._store.wait_for_change(max(0.0, wait))
                if changed:
                    next_poll = time.monotonic() + POLL_SECONDS
                    self._sync()
                self._recovered()
            except Exception as exc:  # the database is away: try again, log once
                self._failed(exc)
                time.sleep(min(_WAIT_SLICE, beat_every))

    def _over(self) -> bool:
        """Done once the scheduler's journal is closed (until then runs may
        go on under the lease, and their records need it)."""
        st = self._st
        with st.lock:
            return st.closing and (st.journal is None or st.journal.closed)

    def _beat(self) -> None:
        """Renew the lease (join again when it was lost), then reap."""
        store = self._store
        if not store.renew():
            with self._st.lock:
                if self._st.closing:
                    return
            _log.warning("store %r: this scheduler's lease expired (it was cut off from "
                         "the database or stalled for longer than %s s): the others "
                         "recorded its runs interrupted; it joins again", store, store.lease)
            store.acquire(self._owner)
        self._look_at_nodes()
        rows = store.reap()
        if rows:
            log_interrupted(self._st, rows, "its scheduler stopped renewing its lease")

    def _look_at_nodes(self) -> None:
        """This node's share of the tasks among the live nodes (see ``shares.py``)."""
        owners = [node["owner"] for node in self._store.nodes()]
        share = share_of(owners, self._store.owner)
        with self._st.lock:
            self._st.reshare(share)

    def _sync(self) -> None:
        """Apply the changes made since the last one applied (and look at
        the live nodes again when one joined or left)."""
        if self._store.nodes_changed():
            self._look_at_nodes()
        seq, changes = self._store.changes_since(self._seq)
        kinds: Dict[str, Set[str]] = {}
        for _, task_id, kind in changes:
            kinds.setdefault(task_id, set()).add(kind)
        for task_id, its_kinds in kinds.items():
            self.apply(task_id, its_kinds)
        self._seq = seq

    def _failed(self, exc: Exception) -> None:
        line = error_line(exc)
        if line != self._failing:
            self._failing = line
            _log.error("store %r: cannot reach the shared store (%s); trying again",
                       self._store, line)

    def _recovered(self) -> None:
        if self._failing is not None:
            self._failing = None
            _log.warning("store %r: reachable again", self._store)

    # -- applying one task's changes ---------------------------------------------

    def apply(self, task_id: str, kinds: Set[str]) -> None:
        """Make this node's copy of *task_id* what the store holds."""
        st, store = self._st, self._store
        if "released" in kinds:  # (a run dropped here may be owed again)
            st.claim_given_back(task_id)
        record = store.task(task_id)
        with st.lock:
            local = st.timetable.get(task_id)
        if record is None:
            if local is not None:
                self._change(_remove, task_id)
            return
        if local is None:  # over here, or new here: the store's record is the task
            self._standby.load_one(record, anew=True)
            return
        if not same_record(record, task_record(local, record.next_run, record.updated)):
            self._replace(record)
        self._change(_pause if record.paused else _resume, task_id)
        if "interrupted" in kinds:
            self._owe_retries(record)

    def _change(self, change: Any, task_id: str) -> None:
        st = self._st
        fx = Effects()
        try:
            with st.lock:
                change(st, task_id, fx)
        finally:
            self._hands.settle(fx)

    def _replace(self, record: TaskRecord) -> None:
        """Another node replaced the definition: this one follows, due when
        the store says (nothing is written back)."""
        st = self._st
        try:
            new = task_from_record(record, st, next(st.seq))
        except Exception as exc:
            _log.error("%s changed on another node and cannot be loaded here "
                       "(%s): this node leaves it to the others",
                       task_label(record.id, record.name), error_line(exc))
            self._change(_remove, record.id)
            return
        self._change(lambda st, task_id, fx: control.replace_task(st, new, fx, False)
                     if task_id in st.timetable else None, record.id)
        _log.info("%s: its definition changed on another node", new.label)

    def _owe_retries(self, record: TaskRecord) -> None:
        """A run of the task was interrupted on a node that died: this node
        owes the retry too (whichever node claims it first runs it)."""
        st = self._st
        rows = self._store.runs(record.id, limit=RECOVERY_ROWS)
        with st.lock:
            task = st.timetable.get(record.id)
        if task is None:
            return
        when = task.when
        owed = recover(record, rows, task.options, None, st.clock.wall(),
                       lambda wall: slot_named(wall, when))
        retries = [retry for retry in owed.retries
                   if (record.id, retry.slot, retry.attempt) not in self._owed]
        self._owed.update((record.id, retry.slot, retry.attempt) for retry in retries)
        if retries:
            with st.lock:
                if st.timetable.get(record.id) is task:
                    owe_retries(st, task, retries)


def _remove(st: State, task_id: str, fx: Effects) -> None:
    if task_id in st.timetable:
        st.cancel_task(task_id, "removed on another node", fx, keep_stored=True)


def _pause(st: State, task_id: str, fx: Effects) -> None:
    state = st.runbook.get(task_id)
    if task_id in st.timetable and not (state is not None and state.paused):
        control.pause(st, task_id, fx)


def _resume(st: State, task_id: str, fx: Effects) -> None:
    state = st.runbook.get(task_id)
    if task_id in st.timetable and state is not None and state.paused:
        control.resume(st, task_id, st.clock.now(), fx)

