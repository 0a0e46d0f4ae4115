"""A store in plain dicts: the store API without a file, and the reference
for every store (the value rules it follows are in :mod:`.rules`)."""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import heapq
import itertools
import threading
from typing import (Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Set,
                    Tuple)

from ...records.protocols import INTERRUPTED as INTERRUPTED_STATUS
from ...records.protocols import EVERY_SLOT, MISSED, RUN_FIELDS, RUNNING, TaskRecord
from .memory_controls import MemoryControlRequests
from .rules import (CLAIMED_FIELDS, INTERRUPTED, PROCESS_FIELDS, check_key, check_limit,
                    check_process, check_slot, check_statuses,
                    check_time, claim_row, run_row, task_changes, task_row)

__all__ = ["MemoryStore"]

_MISSING = object()
_RunKey = Tuple[str, str, int]
#: A stored run: (insertion sequence, record).
_Entry = Tuple[int, Dict[str, Any]]


class MemoryStore(MemoryControlRequests):
    """The store protocol in dicts, for tests and for programs that want the
    store API (run history, batches, the one-holder lock) without a file.

    Nothing survives the process. All methods are thread-safe. ``batch()``
    is atomic: it keeps an undo log and replays it backwards on an
    exception; a nested batch is a savepoint of the outer one.

    The hold (``acquire``/``release``) is a :class:`threading.Lock`: it is
    per store object and not reentrant, so a second ``acquire`` on a held
    store, from any thread, is refused (or waits, with ``wait=True``).
    """

    def __init__(self) -> None:
        #: Guards the task and run dicts, the undo log and the batch depth.
        self._data_lock = threading.RLock()
        self._tasks: Dict[str, TaskRecord] = {}
        self._runs: Dict[_RunKey, _Entry] = {}
        #: The process of a RUNNING claim: (pid, its start time).
        self._processes: Dict[_RunKey, Tuple[int, int]] = {}
        self._seq = itertools.count(1)
        #: Control requests by id (a dict of REQUEST_FIELDS plus taken, taken_by).
        self._requests: Dict[int, Dict[str, Any]] = {}
        self._request_ids = itertools.count(1)
        self._undo: List[Callable[[], None]] = []
        self._depth = 0
        #: Held by the store's one active scheduler.
        self._hold = threading.Lock()
        self._owner: Optional[str] = None
        self._closed = threading.Event()

    def __repr__(self) -> str:
        state = "closed" if self._closed.is_set() else f"{len(self._tasks)} tasks, {len(self._runs)} runs"
        return f"<MemoryStore: {state}>"

    def __enter__(self) -> "MemoryStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- the one active scheduler -------------------------------------------

    def acquire(self, owner: str, wait: bool = False) -> bool:
        """Hold the store as *owner*. See :meth:`Store.acquire`; a waiting
        acquire returns False if the store is closed meanwhile."""
        if not isinstance(owner, str):
            raise TypeError(f"owner must be a str, not {owner!r}")
        if not wait:
            got = self._hold.acquire(blocking=False)
        else:
            got = False
            while not got and not self._closed.is_set():
                got = self._hold.acquire(timeout=0.05)
        if got and self._closed.is_set():
            self._hold.release()
            return False
        if got:
            self._owner = owner
        return got

    def holder(self) -> Optional[str]:
        return self._owner

    def release(self) -> None:
        """End the hold, if this store is held; otherwise do nothing."""
        if self._owner is not None or self._hold.locked():
            self._owner = None
            try:
                self._hold.release()
            except RuntimeError:  # released meanwhile by another thread
                pass

    # -- transactions -------------------------------------------------------

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Everything inside commits together or not at all; reentrant."""
        with self._data_lock:
            mark = len(self._undo)
            self._depth += 1
            try:
                yield
            except BaseException:
                while len(self._undo) > mark:
                    self._undo.pop()()
                raise
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self._undo.clear()

    def _changed(self, undo: Callable[[], None]) -> None:
        if self._depth:
            self._undo.append(undo)

    def _put_task(self, task_id: str, record: Any) -> None:
        if record is _MISSING:
            self._tasks.pop(task_id, None)
        else:
            self._tasks[task_id] = record

    def _put_run(self, key: _RunKey, entry: Any) -> None:
        if entry is _MISSING:
            self._runs.pop(key, None)
        else:
            self._runs[key] = entry

    # -- tasks ----------------------------------------------------------------

    def load_tasks(self) -> List[TaskRecord]:
        """Every task, oldest ``created`` first (then by id)."""
        with self._data_lock:
            records = [dataclasses.replace(r) for r in self._tasks.values()]
        records.sort(key=lambda r: (r.created, r.id))
        return records

    def task(self, task_id: str) -> Optional[TaskRecord]:
        task_id = check_key(task_id)
        with self._data_lock:
            found = self._tasks.get(task_id)
            return None if found is None else dataclasses.replace(found)

    def save_task(self, record: TaskRecord, replace: bool = True) -> bool:
        stored = TaskRecord(*task_row(record))
        with self._data_lock:
            previous: Any = self._tasks.get(stored.id, _MISSING)
            if previous is not _MISSING and not replace:
                return False
            self._tasks[stored.id] = stored
            self._changed(lambda: self._put_task(stored.id, previous))
            return True

    def update_task(self, task_id: str, **fields: Any) -> None:
        task_id = check_key(task_id)
        changes = task_changes(fields)
        with self._data_lock:
            previous = self._tasks.get(task_id)
            if previous is None or not changes:
                return
            self._tasks[task_id] = dataclasses.replace(previous, **changes)
            self._changed(lambda: self._put_task(task_id, previous))

    def remove_task(self, task_id: str) -> None:
        task_id = check_key(task_id)
        with self._data_lock:
            previous: Any = self._tasks.pop(task_id, _MISSING)
            if previous is not _MISSING:
                self._changed(lambda: self._put_task(task_id, previous))

    # -- runs -------------------------------------------------------------------

    def claim_run(self, task_id: str, slot: str, attempt: int, *, run: int, name: str,
                  scheduled: float, started: float) -> bool:
        """Insert a RUNNING record unless ``(task_id, slot, attempt)`` exists;
        return whether it inserted."""
        row = dict(zip(RUN_FIELDS, claim_row(task_id, slot, attempt, run, name, scheduled,
                                             started, RUNNING)))
        key = (row["task_id"], row["slot"], row["attempt"])
        with self._data_lock:
            if key in self._runs:
                return False
            self._runs[key] = (next(self._seq), row)
            self._changed(lambda: self._put_run(key, _MISSING))
            return True

    def finish_run(self, record: Mapping[str, Any]) -> None:
        """Write *record* over its claimed run, or insert it if unclaimed."""
        row = dict(zip(RUN_FIELDS, run_row(record)))
        key = (row["task_id"], row["slot"], row["attempt"])
        with self._data_lock:
            previous = self._runs.get(key)
            if previous is None:
                seq = next(self._seq)
            else:
                seq, claimed = previous
                for name in CLAIMED_FIELDS:
                    if row[name] is None:
                        row[name] = claimed[name]
            self._runs[key] = (seq, row)
            self._changed(lambda: self._put_run(key, _MISSING if previous is None else previous))
            self._forget_process(key)

    def set_aside_runs(self, task_id: str, slot: str = EVERY_SLOT) -> None:
        """Rename the slots of the task's over records (of *slot* only, if
        given) to ``slot~run.attempt``."""
        task_id, only = check_key(task_id), check_key(slot, "a run's slot")
        with self._data_lock:
            for key, (seq, row) in list(self._runs.items()):
                slot = key[1]
                if key[0] == task_id and row["status"] != RUNNING and "~" not in slot \
                        and only in (EVERY_SLOT, slot):
                    aside = f"{slot}~{row['run'] or 0}.{row['attempt']}"
                    del self._runs[key]
                    self._runs[(task_id, aside, key[2])] = (seq, dict(row, slot=aside))
                    self._changed(functools.partial(self._undo_aside, key, (seq, row),
                                                    (task_id, aside, key[2])))

    def _undo_aside(self, key: Any, entry: Any, aside: Any) -> None:
        self._runs.pop(aside, None)
        self._runs[key] = entry

    def release_run(self, task_id: str, slot: str, attempt: int) -> None:
        """Delete the run's record if it is still a RUNNING claim."""
        key = (check_key(task_id), check_slot(slot), attempt)
        with self._data_lock:
            previous = self._runs.get(key)
            if previous is not None and previous[1]["status"] == RUNNING:
                del self._runs[key]
                self._changed(lambda: self._put_run(key, previous))
                self._forget_process(key)

    def note_process(self, task_id: str, slot: str, attempt: int, pid: int,
                     pid_started: int) -> None:
        """Keep the process of a RUNNING claim (nothing if it is not one)."""
        key = (check_key(task_id), check_slot(slot), attempt)
        process = check_process(pid, pid_started)
        with self._data_lock:
            entry = self._runs.get(key)
            if entry is None or entry[1]["status"] != RUNNING:
                return
            previous = self._processes.get(key)
            self._processes[key] = process

            def undo() -> None:
                if previous is None:
                    self._processes.pop(key, None)
                else:
                    self._processes[key] = previous
            self._changed(undo)

    def _forget_process(self, key: _RunKey) -> None:
        """The claim is over: its process is not kept (with the data lock)."""
        process = self._processes.pop(key, None)
        if process is not None:
            self._changed(functools.partial(self._processes.__setitem__, key, process))

    def claimed_processes(self) -> List[Dict[str, Any]]:
        """The RUNNING claims with a process (see ``rules``)."""
        with self._data_lock:
            # (a claim's process is forgotten when the claim ends)
            return [dict(zip(PROCESS_FIELDS, (*key, self._runs[key][1]["run"], *process)))
                    for key, process in self._processes.items() if key in self._runs]

    def mark_interrupted(self) -> int:
        with self._data_lock:
            count = 0
            for key, (seq, row) in list(self._runs.items()):
                if row["status"] == RUNNING:
                    self._runs[key] = (seq, dict(row, status=INTERRUPTED_STATUS,
                                                 error=INTERRUPTED))
                    self._changed(functools.partial(self._put_run, key, (seq, row)))
                    self._forget_process(key)
                    count += 1
            return count

    def runs(self, task_id: Optional[str] = None, limit: Optional[int] = None, *,
             before: Optional[float] = None, since: Optional[float] = None,
             statuses: Optional[Iterable[int]] = None) -> List[Dict[str, Any]]:
        """Run records, newest first (see :meth:`Store.runs`)."""
        limit = check_limit(limit)
        entries = self._select(task_id, before, since, statuses)
        order = _newest_first
        if limit is None:
            entries.sort(key=order, reverse=True)
        else:
            entries = heapq.nlargest(limit, entries, key=order)
        return [dict(row) for _, row in entries]

    def count_runs(self, task_id: Optional[str] = None, *, since: Optional[float] = None,
                   statuses: Optional[Iterable[int]] = None) -> int:
        return len(self._select(task_id, None, since, statuses))

    def _select(self, task_id: Optional[str], before: Optional[float],
                since: Optional[float], statuses: Optional[Iterable[int]]) -> List[_Entry]:
        """The entries that pass the filters (checked first)."""
        if task_id is not None:
            task_id = check_key(task_id)
        upper, lower = check_time("before", before), check_time("since", since)
        codes = check_statuses(statuses)
        with self._data_lock:
            entries = list(self._runs.values())
        return [(seq, row) for seq, row in entries
                if (task_id is None or row["task_id"] == task_id)
                and (upper is None or row["scheduled"] < upper)
                and (lower is None or row["scheduled"] >= lower)
                and (codes is None or row["status"] in codes)]

    def purge_runs(self, before: float) -> int:
        """Delete the runs over (not RUNNING) that ended before *before*, but
        the latest claimed slot of each stored task."""
        bound = check_time("before", before)
        if bound is None:
            raise TypeError("purge_runs() needs a time, not None")
        with self._data_lock:
            kept = self._latest_claims()
            doomed = [key for key, (seq, row) in self._runs.items()
                      if _ended_before(row, bound) and seq not in kept]
            for key in doomed:
                entry = self._runs.pop(key)
                self._changed(functools.partial(self._put_run, key, entry))
            self._purge_requests(bound)
            return len(doomed)

    def _latest_claims(self) -> Set[int]:
        """The insertion numbers of each stored task's latest claim (the last
        one made, whatever the wall clock said of the runs)."""
        latest: Dict[str, int] = {}
        for seq, row in self._runs.values():
            task_id = row["task_id"]
            if task_id in self._tasks and row["status"] != MISSED:
                latest[task_id] = max(latest.get(task_id, seq), seq)
        return set(latest.values())

    def clear(self) -> None:
        with self._data_lock:
            tasks, runs, processes = self._tasks, self._runs, self._processes
            requests = self._requests
            self._tasks, self._runs, self._processes, self._requests = {}, {}, {}, {}

            def undo() -> None:
                self._tasks, self._runs, self._processes = tasks, runs, processes
                self._requests = requests
            self._changed(undo)

    def close(self) -> None:
        """Release the hold and interrupt a waiting acquire. The data stays
        readable; closing twice is fine."""
        self._closed.set()
        self.release()


def _newest_first(entry: _Entry) -> Tuple[float, int]:
    return entry[1]["scheduled"], entry[0]


def _ended_before(row: Dict[str, Any], before: float) -> bool:
    if row["status"] == RUNNING:
        return False
    for name in ("finished", "started", "scheduled"):
        if row[name] is not None:
            return row[name] < before
    return False
