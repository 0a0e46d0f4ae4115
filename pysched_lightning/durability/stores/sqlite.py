"""A store in one SQLite file, for tasks that survive a restart.

One connection per store object, shared by the scheduler's threads under
``_db_lock``; statements are fixed strings, so sqlite3's statement cache
prepares each once. Outside ``batch()`` every call is its own (autocommit)
transaction; inside, the calls share one ``BEGIN IMMEDIATE`` transaction.
The file is in WAL mode with ``synchronous=NORMAL``: a committed call
survives the process being killed (even by SIGKILL), though not necessarily
a power cut; readers in other processes (``pysched list``) never block the
writer and wait up to ``busy_timeout`` for a writer's lock.

The one-active-scheduler lock is a :class:`~.filelock.FileHold` on
``<db path>.lock``. ``read_only=True`` opens an existing file for reading
only (SQLite's ``mode=ro``): a dashboard beside a running scheduler, which
must never write, upgrade or hold the store. ``control=True`` with it lets
that dashboard write control requests, and nothing else: the connection may
write, but an authorizer refuses any change to another table and any schema
change (so it never upgrades the file either: a file older than schema 4
is refused, to be opened once by a scheduler of this version). Closed, it leaves no ``-wal``
or ``-shm`` file that no other connection needs (see :mod:`.wal`).
"""
from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import urllib.parse
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple

from ...records.protocols import EVERY_SLOT, RUN_FIELDS, RUNNING, TaskRecord
from ..folders import check_folder, permission_problem
from .filelock import FileHold
from .queries import run_filter, select_sql
from .rules import (INTERRUPTED, PROCESS_FIELDS, check_key, check_limit, check_process,
                    check_slot, check_time, claim_row, run_row, task_changes, task_row)
from . import statements as stmt
from .sqlite_controls import SQLiteControlRequests, control_only
from .schema import SCHEMA_VERSION, check_readable, check_version, upgrade

__all__ = ["SQLiteStore"]

#: How long a statement waits for another process's write lock, in ms.
BUSY_TIMEOUT_MS = 5000



class SQLiteStore(SQLiteControlRequests):
    """Tasks and runs in the SQLite file *path*, made if missing in a folder
    that must exist (FileNotFoundError naming the folder otherwise).

    Thread-safe. Reading (``load_tasks``, ``runs``, ``holder``) needs no
    hold, so a second process can read while a scheduler runs. The hold is
    per store object and not reentrant: a second ``acquire`` on a held
    store, from any thread or process, is refused (or waits).

    A file written by an older version is upgraded when it is opened (see
    :mod:`.schema`); one written by a newer version is refused. Values
    follow the rules of :mod:`.rules`, as in the memory store.
    """

    def __init__(self, path: "str | os.PathLike[str]", *, read_only: bool = False,
                 control: bool = False) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"a SQLite store path must be a str or PathLike, not {path!r}")
        filename = os.fspath(path)
        if not isinstance(filename, str) or not filename or filename == ":memory:":
            raise ValueError(f"a SQLite store needs a file path, not {path!r} "
                             "(use MemoryStore() for a store in memory)")
        #: The database file, absolute.
        self.path = os.path.abspath(filename)
        #: The sidecar file that the active scheduler holds locked.
        self.lock_path = self.path + ".lock"
        #: True for a reader that never writes (a dashboard beside a scheduler).
        self.read_only = bool(read_only)
        #: True for a reader that writes control requests (only with read_only).
        self.control = bool(control) and self.read_only
        #: Guards the connection: one statement or one batch at a time.
        self._db_lock = threading.RLock()
        self._depth = 0  # batch nesting, guarded by _db_lock
        self._closed = threading.Event()
        self._file_hold = FileHold(self.lock_path, self._closed)
        if not self.read_only:
            check_folder(self.path, "the store")
        try:
            if self.read_only:
                self._conn = _connect_read_only(self.path, self.control)
            else:
                self._conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000,
                                             isolation_level=None, check_same_thread=False)
        except (sqlite3.Error, OSError) as exc:
            raise self._open_error(exc) from exc
        try:
            self._setup()
        except BaseException as exc:
            self._conn.close()
            if isinstance(exc, sqlite3.DatabaseError) and self.path not in str(exc):
                raise self._open_error(exc) from exc
            raise

    def _open_error(self, exc: Exception) -> Exception:
        """*exc* (of the same type) saying which store could not be opened,
        and that permissions are why when they are."""
        why = permission_problem(self.path, write=not self.read_only or self.control)
        return type(exc)(f"cannot open the store {self.path!r}: {why or exc}"
                         + (f" ({exc})" if why else ""))

    def _setup(self) -> None:
        execute = self._conn.execute
        execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if self.read_only:  # no journal mode to set, nothing to upgrade
            check_readable(execute("PRAGMA user_version").fetchone()[0], self.control)
            if self.control:
                self._conn.set_authorizer(control_only)
            return
        mode = execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"cannot switch to WAL mode (journal mode is {mode})")
        execute("PRAGMA synchronous = NORMAL")
        version = execute("PRAGMA user_version").fetchone()[0]
        check_version(version)
        if version < SCHEMA_VERSION:
            execute("BEGIN IMMEDIATE")
            try:
                upgrade(execute, self.path)
                execute("COMMIT")
            except BaseException:
                execute("ROLLBACK")
                raise

    def __repr__(self) -> str:
        state = " read-only" if self.read_only else ""
        state += " (control requests)" if self.control else ""
        state += " closed" if self._closed.is_set() else ""
        return f"<SQLiteStore {self.path!r}{state}>"

    def __enter__(self) -> "SQLiteStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- the one active scheduler -------------------------------------------

    def acquire(self, owner: str, wait: bool = False) -> bool:
        """Hold the store as *owner* (see :meth:`Store.acquire`); a waiting
        acquire returns False if the store is closed meanwhile. A read-only
        store cannot be held (PermissionError)."""
        if self.read_only:
            raise PermissionError(f"the store {self.path!r} is open read-only: it cannot "
                                  f"be held by {owner!r}")
        return self._file_hold.acquire(owner, wait)

    def holder(self) -> Optional[str]:
        """The owner holding the store, read from the lock file (no hold needed)."""
        return self._file_hold.holder()

    def release(self) -> None:
        """End the hold, if this store object holds it; otherwise do nothing."""
        self._file_hold.release()

    # -- transactions -------------------------------------------------------

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """One transaction: the calls inside commit together, or roll back on an
        exception (an interrupt anywhere included). A nested batch is a
        savepoint inside the outer transaction. Other threads' calls wait
        until the batch ends."""
        with self._db_lock:
            execute, depth = self._conn.execute, self._depth
            savepoint = f"batch{depth}"
            try:
                if depth == 0 and self._conn.in_transaction:
                    execute("ROLLBACK")  # one an interrupt left open
                execute("BEGIN IMMEDIATE" if depth == 0 else f"SAVEPOINT {savepoint}")
                self._depth = depth + 1
                yield
                self._depth = depth
                execute("COMMIT" if depth == 0 else f"RELEASE {savepoint}")
            except BaseException:
                self._depth = depth
                self._undo(depth, savepoint)
                raise

    def _undo(self, depth: int, savepoint: str) -> None:
        """Roll back what a batch at *depth* did (as far as it got)."""
        execute = self._conn.execute
        with contextlib.suppress(sqlite3.Error):
            if depth == 0:
                if self._conn.in_transaction:
                    execute("ROLLBACK")
            else:
                execute(f"ROLLBACK TO {savepoint}")
                execute(f"RELEASE {savepoint}")

    # -- tasks ----------------------------------------------------------------

    def load_tasks(self) -> List[TaskRecord]:
        """Every task, oldest ``created`` first (then by id)."""
        with self._db_lock:
            rows = self._conn.execute(stmt.LOAD_TASKS).fetchall()
        return [_task_record(row) for row in rows]

    def task(self, task_id: str) -> Optional[TaskRecord]:
        task_id = check_key(task_id)
        with self._db_lock:
            row = self._conn.execute(stmt.LOAD_TASK, (task_id,)).fetchone()
        return None if row is None else _task_record(row)

    def save_task(self, record: TaskRecord, replace: bool = True) -> bool:
        row = task_row(record)
        with self._db_lock:
            return self._conn.execute(stmt.SAVE_TASK if replace else stmt.ADD_TASK, row).rowcount == 1

    def update_task(self, task_id: str, **fields: Any) -> None:
        task_id = check_key(task_id)
        changes = task_changes(fields)
        if not changes:
            return
        sql = _update_sql(tuple(changes))
        with self._db_lock:
            self._conn.execute(sql, (*changes.values(), task_id))

    def remove_task(self, task_id: str) -> None:
        """Delete the task (its run history stays, until purged)."""
        task_id = check_key(task_id)
        with self._db_lock:
            self._conn.execute(stmt.REMOVE_TASK, (task_id,))

    # -- runs -------------------------------------------------------------------

    def claim_run(self, task_id: str, slot: str, attempt: int, *, run: int, name: str,
                  scheduled: float, started: float) -> bool:
        """Insert a RUNNING record unless ``(task_id, slot, attempt)`` exists,
        in this or another process (the UNIQUE constraint decides); return
        whether it inserted."""
        row = claim_row(task_id, slot, attempt, run, name, scheduled, started, RUNNING)
        values = [row[i] for i in stmt.CLAIM_INDEX]
        with self._db_lock:
            return self._conn.execute(stmt.CLAIM_RUN, values).rowcount == 1

    def finish_run(self, record: Mapping[str, Any]) -> None:
        """Write *record* over its claimed run, or insert it if unclaimed."""
        row = run_row(record)
        with self._db_lock:
            if self._depth:  # the batch's write lock keeps other processes out
                self._finish(row)
            else:
                with self.batch():
                    self._finish(row)

    def _finish(self, row: Tuple[Any, ...]) -> None:
        execute = self._conn.execute
        values = [row[i] for i in stmt.FINISH_FIELDS]
        values.extend(row[i] for i in stmt.RUN_KEY)
        if execute(stmt.FINISH_RUN, (*values, row[stmt.SCHEDULED])).rowcount:
            return
        values.insert(len(stmt.FINISH_FIELDS), row[stmt.SCHEDULED])
        if execute(stmt.MOVE_RUN, values).rowcount == 0:
            execute(stmt.INSERT_RUN, row)

    def set_aside_runs(self, task_id: str, slot: str = EVERY_SLOT) -> None:
        """Rename the slots of the task's over records (of *slot* only, if
        given) to ``slot~run.attempt``."""
        only = check_key(slot, "a run's slot")
        with self._db_lock:
            self._conn.execute(stmt.SET_ASIDE, (check_key(task_id), only, only))

    def release_run(self, task_id: str, slot: str, attempt: int) -> None:
        """Delete the run's record if it is still a RUNNING claim."""
        key = (check_key(task_id), check_slot(slot), attempt)
        with self._db_lock:
            self._conn.execute(stmt.RELEASE_RUN, key)

    def note_process(self, task_id: str, slot: str, attempt: int, pid: int,
                     pid_started: int) -> None:
        """Keep the process of a RUNNING claim (nothing if it is not one)."""
        key = (check_key(task_id), check_slot(slot), attempt)
        with self._db_lock:
            self._conn.execute(stmt.NOTE_PROCESS, (*check_process(pid, pid_started), *key))

    def claimed_processes(self) -> List[Dict[str, Any]]:
        """The RUNNING claims with a process (see ``rules``)."""
        with self._db_lock:
            rows = self._conn.execute(stmt.CLAIMED_PROCESSES).fetchall()
        return [dict(zip(PROCESS_FIELDS, row)) for row in rows]

    def mark_interrupted(self) -> int:
        with self._db_lock:
            return self._conn.execute(stmt.MARK_INTERRUPTED, (INTERRUPTED,)).rowcount

    def runs(self, task_id: Optional[str] = None, limit: Optional[int] = None, *,
             before: Optional[float] = None, since: Optional[float] = None,
             statuses: Optional[Iterable[int]] = None) -> List[Dict[str, Any]]:
        """Run records, newest first (see :meth:`Store.runs`)."""
        limit = check_limit(limit)
        query = run_filter(task_id, before, since, statuses)
        if query is None:
            return []
        where, params = query
        params.append(-1 if limit is None else limit)
        sql = select_sql(f"SELECT {stmt.RUN_COLUMNS} FROM runs", where,
                          " ORDER BY scheduled DESC, id DESC LIMIT ?")
        with self._db_lock:
            rows = self._conn.execute(sql, params).fetchall()
        return [dict(zip(RUN_FIELDS, row)) for row in rows]

    def count_runs(self, task_id: Optional[str] = None, *, since: Optional[float] = None,
                   statuses: Optional[Iterable[int]] = None) -> int:
        query = run_filter(task_id, None, since, statuses)
        if query is None:
            return 0
        where, params = query
        with self._db_lock:
            return self._conn.execute(select_sql("SELECT count(*) FROM runs", where, ""),
                                      params).fetchone()[0]

    def purge_runs(self, before: float) -> int:
        """Delete the runs over (not RUNNING) that ended before *before*, but
        the latest claimed slot of each stored task."""
        bound = check_time("before", before)
        if bound is None:
            raise TypeError("purge_runs() needs a time, not None")
        with self.batch():
            self._conn.execute(stmt.PURGE_REQUESTS, (bound,))  # answered requests too
            return self._conn.execute(stmt.PURGE_RUNS, (bound,)).rowcount

    def clear(self) -> None:
        """Delete every task, run and control request (the file stays)."""
        with self.batch():
            self._conn.execute("DELETE FROM tasks")
            self._conn.execute("DELETE FROM runs")
            self._conn.execute("DELETE FROM control_requests")

    def close(self) -> None:
        """Release the hold, end a waiting acquire and close the connection.
        Closing twice is fine. A read-only store leaves no ``-wal`` or
        ``-shm`` file behind unless another connection still has the file
        open (see :mod:`.wal`)."""
        from .wal import fold_wal
        closing = not self._closed.is_set()
        self._closed.set()
        self.release()
        with self._db_lock:
            self._conn.close()
            if self.read_only and closing:
                fold_wal(self.path)


def _connect_read_only(path: str, control: bool) -> sqlite3.Connection:
    """A connection that cannot write (``mode=ro``) to the existing file *path*;
    with *control*, one that may (``mode=rw``), limited by ``_control_only``."""
    if not os.path.isfile(path):
        raise FileNotFoundError("there is no such file to read (a scheduler makes it)")
    uri = "file:" + urllib.parse.quote(path) + ("?mode=rw" if control else "?mode=ro")
    return sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_MS / 1000,
                           isolation_level=None, check_same_thread=False)


def _task_record(row: Tuple[Any, ...]) -> TaskRecord:
    values = list(row)
    values[stmt.PAUSED] = bool(values[stmt.PAUSED])
    return TaskRecord(*values)


_UPDATE_SQL: Dict[tuple, str] = {}


def _update_sql(names: tuple) -> str:
    """The UPDATE statement for these task fields (the same string each time,
    so sqlite3's statement cache prepares it once)."""
    sql = _UPDATE_SQL.get(names)
    if sql is None:
        sets = ", ".join(f'"{name}" = ?' for name in names)
        sql = _UPDATE_SQL.setdefault(names, f"UPDATE tasks SET {sets} WHERE id = ?")
    return sql

