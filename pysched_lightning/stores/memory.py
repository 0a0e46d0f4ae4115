"""A store in plain dicts: the store API without a file, and the reference
for how every store treats values.

Value rules, shared with :class:`~pysched_lightning.stores.sqlite.SQLiteStore`
(which imports them from here):

* Task records come back as new :class:`TaskRecord` objects with ``priority``,
  ``next_run``, ``created`` and ``updated`` as floats, ``runs``, ``missed``
  and ``status`` as ints and ``paused`` as a bool.
* Run records are dicts with exactly the keys of :data:`RUN_FIELDS`; times
  (``scheduled``, ``started``, ``finished``, ``duration``) are floats, counts
  and codes (``run``, ``attempt``, ``status``, ``exit_code``) ints, the rest
  text; a missing key is None. ``status`` is a :class:`TaskStatus` code.
  Keys outside RUN_FIELDS are ignored.
* A run is keyed by ``(task_id, scheduled, attempt)``. ``claim_run`` records
  it as RUNNING with ``started`` = ``time.time()``; ``finish_run`` replaces
  every field, except that a None ``name``, ``run`` or ``started`` keeps the
  claimed value. ``runs()`` lists the
  newest first: by ``scheduled`` descending, then by insertion descending.
* ``update_task`` and ``remove_task`` on an unknown id do nothing (the
  scheduler may race a cancel); ``remove_task`` keeps the task's run history.
* ``purge_runs(before)`` deletes the runs that are over (any status but
  RUNNING) and ended before *before*: their ``finished`` time, or for a run
  that never got one (an interrupted run) its ``started``, else ``scheduled``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import operator
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from .base import RUN_FIELDS, TaskRecord

__all__ = ["MemoryStore"]

#: TaskStatus codes (pysched_lightning.runs.TaskStatus), kept as ints here.
ERROR = 1
RUNNING = 3
#: The error text of a run left running by a process that stopped.
INTERRUPTED = "interrupted: the scheduler process stopped during this run"

TASK_FIELDS: Tuple[str, ...] = tuple(f.name for f in dataclasses.fields(TaskRecord))
_task_values = operator.attrgetter(*TASK_FIELDS)


def _opt_float(value: Any) -> Optional[float]:
    return None if value is None else float(value)


def _opt_int(value: Any) -> Optional[int]:
    return None if value is None else int(value)


def _opt_text(value: Any) -> Optional[str]:
    if value is None or type(value) is str:
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def _opt_bytes(value: Any) -> Optional[bytes]:
    return None if value is None else bytes(value)


def _key_text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"a task id must be a str, not {value!r}")
    return value


#: How each task field is normalized when stored.
TASK_CONVERT: Dict[str, Callable[[Any], Any]] = {
    "id": _key_text, "name": _opt_text, "trigger": _opt_text, "interval": _opt_text,
    "priority": _opt_float, "fn_ref": _opt_text, "fn_pickle": _opt_bytes,
    "args": _opt_bytes, "kwargs": _opt_bytes, "options": _opt_bytes,
    "schedule": _opt_bytes, "next_run": _opt_float, "paused": bool,
    "runs": int, "missed": int, "status": int, "created": float, "updated": float,
}
_TASK_CONVERTERS = tuple(TASK_CONVERT[name] for name in TASK_FIELDS)

_FLOAT_RUN_FIELDS = frozenset({"scheduled", "started", "finished", "duration"})
_INT_RUN_FIELDS = frozenset({"run", "attempt", "status", "exit_code"})
_RUN_CONVERTERS = tuple(
    _opt_float if name in _FLOAT_RUN_FIELDS else _opt_int if name in _INT_RUN_FIELDS
    else _opt_text for name in RUN_FIELDS)
_REQUIRED_RUN_FIELDS = ("task_id", "scheduled", "attempt")
#: The fields claim_run sets, which a finishing record without them leaves as claimed.
CLAIMED_FIELDS = ("name", "run", "started")


def task_row(record: TaskRecord) -> Tuple[Any, ...]:
    """The normalized values of *record*, in TaskRecord field order."""
    try:
        values = _task_values(record)
    except AttributeError as exc:
        raise TypeError(f"save_task() needs a TaskRecord, not {record!r}") from exc
    return tuple(convert(value) for convert, value in zip(_TASK_CONVERTERS, values))


def task_changes(fields: Dict[str, Any]) -> Dict[str, Any]:
    """*fields* for update_task, checked and normalized."""
    unknown = [name for name in fields if name not in TASK_CONVERT or name == "id"]
    if unknown:
        known = ", ".join(name for name in TASK_FIELDS if name != "id")
        raise TypeError(f"update_task() got unknown field(s) {', '.join(map(repr, unknown))}"
                        f" (a task's id cannot change); known fields: {known}")
    return {name: TASK_CONVERT[name](value) for name, value in fields.items()}


def run_row(record: Dict[str, Any]) -> Tuple[Any, ...]:
    """The normalized values of a run *record*, in RUN_FIELDS order."""
    missing = [name for name in _REQUIRED_RUN_FIELDS if record.get(name) is None]
    if missing:
        raise KeyError(f"a run record needs {', '.join(missing)}; got {sorted(record)}")
    get = record.get
    return tuple(convert(get(name)) for convert, name in zip(_RUN_CONVERTERS, RUN_FIELDS))


def check_limit(limit: Optional[int]) -> Optional[int]:
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError(f"limit must be None or an int >= 0, not {limit!r}")
    return limit


_MISSING = object()
_RunKey = Tuple[str, float, int]


class MemoryStore:
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
        self._runs: Dict[_RunKey, Tuple[int, Dict[str, Any]]] = {}
        self._seq = itertools.count(1)
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

    def save_task(self, record: TaskRecord) -> None:
        stored = TaskRecord(*task_row(record))
        with self._data_lock:
            previous = self._tasks.get(stored.id, _MISSING)
            self._tasks[stored.id] = stored
            self._changed(lambda: self._put_task(stored.id, previous))

    def update_task(self, task_id: str, **fields: Any) -> None:
        changes = task_changes(fields)
        with self._data_lock:
            previous = self._tasks.get(task_id)
            if previous is None or not changes:
                return
            self._tasks[task_id] = dataclasses.replace(previous, **changes)
            self._changed(lambda: self._put_task(task_id, previous))

    def remove_task(self, task_id: str) -> None:
        with self._data_lock:
            previous = self._tasks.pop(task_id, _MISSING)
            if previous is not _MISSING:
                self._changed(lambda: self._put_task(task_id, previous))

    # -- runs -------------------------------------------------------------------

    def claim_run(self, task_id: str, scheduled: float, attempt: int, run: int,
                  name: str) -> bool:
        """Insert a RUNNING record (``started``: now, ``time.time()``) unless
        ``(task_id, scheduled, attempt)`` exists; return whether it inserted."""
        key = (_key_text(task_id), float(scheduled), int(attempt))
        with self._data_lock:
            if key in self._runs:
                return False
            row = dict(zip(RUN_FIELDS, (None,) * len(RUN_FIELDS)))
            row.update(task_id=key[0], name=_opt_text(name), run=int(run), attempt=key[2],
                       status=RUNNING, scheduled=key[1], started=time.time())
            self._runs[key] = (next(self._seq), row)
            self._changed(lambda: self._put_run(key, _MISSING))
            return True

    def finish_run(self, record: Dict[str, Any]) -> None:
        """Replace the claimed run's fields with *record*'s (but a None ``name``,
        ``run`` or ``started`` keeps the claimed value); insert it if unclaimed."""
        row = dict(zip(RUN_FIELDS, run_row(record)))
        key = (row["task_id"], row["scheduled"], row["attempt"])
        with self._data_lock:
            previous = self._runs.get(key, _MISSING)
            if previous is _MISSING:
                seq = next(self._seq)
            else:
                seq, claimed = previous
                for name in CLAIMED_FIELDS:
                    if row[name] is None:
                        row[name] = claimed[name]
            self._runs[key] = (seq, row)
            self._changed(lambda: self._put_run(key, previous))

    def mark_interrupted(self) -> int:
        with self._data_lock:
            count = 0
            for key, (seq, row) in list(self._runs.items()):
                if row["status"] == RUNNING:
                    self._runs[key] = (seq, dict(row, status=ERROR, error=INTERRUPTED))
                    self._changed(lambda k=key, e=(seq, row): self._put_run(k, e))
                    count += 1
            return count

    def runs(self, task_id: Optional[str] = None,
             limit: Optional[int] = None) -> List[Dict[str, Any]]:
        """Run records, newest first: by ``scheduled``, then insertion, descending."""
        limit = check_limit(limit)
        with self._data_lock:
            entries = [entry for key, entry in self._runs.items()
                       if task_id is None or key[0] == task_id]
        entries.sort(key=lambda e: (e[1]["scheduled"], e[0]), reverse=True)
        if limit is not None:
            entries = entries[:limit]
        return [dict(row) for _, row in entries]

    def purge_runs(self, before: float) -> int:
        """Delete the runs over (not RUNNING) that ended before *before*."""
        before = float(before)
        with self._data_lock:
            doomed = [key for key, (_, row) in self._runs.items() if _ended_before(row, before)]
            for key in doomed:
                entry = self._runs.pop(key)
                self._changed(lambda k=key, e=entry: self._put_run(k, e))
            return len(doomed)

    def clear(self) -> None:
        with self._data_lock:
            tasks, runs = self._tasks, self._runs
            self._tasks, self._runs = {}, {}

            def undo() -> None:
                self._tasks, self._runs = tasks, runs
            self._changed(undo)

    def close(self) -> None:
        """Release the hold and interrupt a waiting acquire. The data stays
        readable; closing twice is fine."""
        self._closed.set()
        self.release()


def _ended_before(row: Dict[str, Any], before: float) -> bool:
    if row["status"] == RUNNING:
        return False
    for name in ("finished", "started", "scheduled"):
        if row[name] is not None:
            return row[name] < before
    return False
