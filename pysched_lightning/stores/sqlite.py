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
``<db path>.lock``.
"""
from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from typing import Any, Dict, Iterator, List, Optional

from .base import RUN_FIELDS, TaskRecord
from .filelock import FileHold
from .memory import (CLAIMED_FIELDS, ERROR, INTERRUPTED, RUNNING, TASK_FIELDS, check_limit, run_row,
                     task_changes, task_row, _key_text, _opt_text)

__all__ = ["SQLiteStore"]

#: The schema's version, kept in ``PRAGMA user_version``.
SCHEMA_VERSION = 1
#: How long a statement waits for another process's write lock, in ms.
BUSY_TIMEOUT_MS = 5000

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY NOT NULL,  -- WITHOUT ROWID: one b-tree, one page per write
    name TEXT,
    "trigger" TEXT,
    "interval" TEXT,
    priority REAL,
    fn_ref TEXT,
    fn_pickle BLOB,
    args BLOB,
    kwargs BLOB,
    options BLOB,
    schedule BLOB,
    next_run REAL,
    paused INTEGER NOT NULL DEFAULT 0,
    runs INTEGER NOT NULL DEFAULT 0,
    missed INTEGER NOT NULL DEFAULT 0,
    status INTEGER NOT NULL DEFAULT 2,
    created REAL NOT NULL DEFAULT 0,
    updated REAL NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    task_id TEXT NOT NULL,
    name TEXT,
    run INTEGER,
    attempt INTEGER NOT NULL,
    status INTEGER,
    scheduled REAL NOT NULL,
    started REAL,
    finished REAL,
    duration REAL,
    exit_code INTEGER,
    result TEXT,
    error TEXT,
    traceback TEXT,
    output TEXT,
    stderr TEXT,
    UNIQUE (task_id, scheduled, attempt)
);
-- Lookups by task use the UNIQUE index, which leads with task_id. Every
-- index is one more page to write per commit, so there are few: purge()
-- scans (it is rare), and the history of all tasks walks runs_scheduled.
CREATE INDEX IF NOT EXISTS runs_scheduled ON runs (scheduled);
PRAGMA user_version = {SCHEMA_VERSION};
"""

_TASK_COLUMNS = ", ".join(f'"{name}"' for name in TASK_FIELDS)  # 'trigger' is a keyword
_RUN_COLUMNS = ", ".join(RUN_FIELDS)
_SAVE_TASK = (f"INSERT OR REPLACE INTO tasks ({_TASK_COLUMNS}) "
              f"VALUES ({', '.join('?' * len(TASK_FIELDS))})")
_LOAD_TASKS = f"SELECT {_TASK_COLUMNS} FROM tasks ORDER BY created, id"
_REMOVE_TASK = "DELETE FROM tasks WHERE id = ?"
_CLAIM_RUN = (f"INSERT OR IGNORE INTO runs (task_id, name, run, attempt, status, scheduled, "
              f"started) VALUES (?, ?, ?, ?, {RUNNING}, ?, ?)")
#: The fields claim_run sets, which a record without them leaves as claimed.
_CLAIMED = CLAIMED_FIELDS
_KEY_FIELDS = ("task_id", "scheduled", "attempt")
_RUN_KEY = tuple(RUN_FIELDS.index(name) for name in _KEY_FIELDS)
_RUN_VALUES = tuple(i for i, name in enumerate(RUN_FIELDS) if name not in _KEY_FIELDS)
_FINISH_RUN = ("UPDATE runs SET " + ", ".join(
    f"{RUN_FIELDS[i]} = COALESCE(?, {RUN_FIELDS[i]})" if RUN_FIELDS[i] in _CLAIMED
    else f"{RUN_FIELDS[i]} = ?" for i in _RUN_VALUES)
    + " WHERE task_id = ? AND scheduled = ? AND attempt = ?")
_INSERT_RUN = (f"INSERT OR REPLACE INTO runs ({_RUN_COLUMNS}) "
               f"VALUES ({', '.join('?' * len(RUN_FIELDS))})")
_MARK_INTERRUPTED = f"UPDATE runs SET status = {ERROR}, error = ? WHERE status = {RUNNING}"
_RUNS = f"SELECT {_RUN_COLUMNS} FROM runs"
_RUNS_ORDER = " ORDER BY scheduled DESC, id DESC LIMIT ?"
_RUNS_ALL = _RUNS + _RUNS_ORDER
_RUNS_OF_TASK = _RUNS + " WHERE task_id = ?" + _RUNS_ORDER
_PURGE_RUNS = (f"DELETE FROM runs WHERE status IS NOT {RUNNING} "
               f"AND COALESCE(finished, started, scheduled) < ?")
_TASK_INDEX = {name: i for i, name in enumerate(TASK_FIELDS)}
_PAUSED = _TASK_INDEX["paused"]


class SQLiteStore:
    """Tasks and runs in the SQLite file *path* (its parent is created).

    Thread-safe. Reading (``load_tasks``, ``runs``, ``holder``) needs no
    hold, so a second process can read while a scheduler runs. The hold is
    per store object and not reentrant: a second ``acquire`` on a held
    store, from any thread or process, is refused (or waits).

    ``runs()`` lists the newest first: by ``scheduled`` descending, then by
    insertion (row id) descending. Values come back as stored: floats for
    times, ints for counts and status codes (see :mod:`.memory` for the
    rules both stores follow).
    """

    def __init__(self, path: "str | os.PathLike[str]") -> None:
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
        #: Guards the connection: one statement or one batch at a time.
        self._db_lock = threading.RLock()
        self._depth = 0  # batch nesting, guarded by _db_lock
        self._closed = threading.Event()
        self._file_hold = FileHold(self.lock_path, self._closed)
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self._conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000,
                                     isolation_level=None, check_same_thread=False)
        try:
            self._setup()
        except BaseException as exc:
            self._conn.close()
            if isinstance(exc, sqlite3.DatabaseError) and self.path not in str(exc):
                raise type(exc)(f"{self.path}: {exc}") from exc
            raise

    def _setup(self) -> None:
        execute = self._conn.execute
        execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        mode = execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"cannot switch to WAL mode (journal mode is {mode})")
        execute("PRAGMA synchronous = NORMAL")
        version = execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(
                f"schema version {version} is newer than this pysched_lightning's "
                f"({SCHEMA_VERSION}); upgrade pysched_lightning to open it")
        if version < SCHEMA_VERSION:
            execute("BEGIN IMMEDIATE")
            try:
                # executescript() would commit first; run the statements one by one.
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        execute(statement)
                execute("COMMIT")
            except BaseException:
                execute("ROLLBACK")
                raise

    def __repr__(self) -> str:
        state = " closed" if self._closed.is_set() else ""
        return f"<SQLiteStore {self.path!r}{state}>"

    def __enter__(self) -> "SQLiteStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- the one active scheduler -------------------------------------------

    def acquire(self, owner: str, wait: bool = False) -> bool:
        """Hold the store as *owner* (see :meth:`Store.acquire`); a waiting
        acquire returns False if the store is closed meanwhile."""
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
        exception. A nested batch is a savepoint inside the outer transaction.
        Other threads' calls wait until the batch ends."""
        with self._db_lock:
            execute = self._conn.execute
            outer = self._depth == 0
            savepoint = f"batch{self._depth}"
            execute("BEGIN IMMEDIATE" if outer else f"SAVEPOINT {savepoint}")
            self._depth += 1
            try:
                yield
            except BaseException:
                self._depth -= 1
                if outer:
                    execute("ROLLBACK")
                else:
                    execute(f"ROLLBACK TO {savepoint}")
                    execute(f"RELEASE {savepoint}")
                raise
            self._depth -= 1
            if not outer:
                execute(f"RELEASE {savepoint}")
                return
            try:
                execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    execute("ROLLBACK")
                raise

    # -- tasks ----------------------------------------------------------------

    def load_tasks(self) -> List[TaskRecord]:
        """Every task, oldest ``created`` first (then by id)."""
        with self._db_lock:
            rows = self._conn.execute(_LOAD_TASKS).fetchall()
        records = []
        for row in rows:
            row = list(row)
            row[_PAUSED] = bool(row[_PAUSED])
            records.append(TaskRecord(*row))
        return records

    def save_task(self, record: TaskRecord) -> None:
        row = task_row(record)
        with self._db_lock:
            self._conn.execute(_SAVE_TASK, row)

    def update_task(self, task_id: str, **fields: Any) -> None:
        changes = task_changes(fields)
        if not changes:
            return
        sql = _update_sql(tuple(changes))
        with self._db_lock:
            self._conn.execute(sql, (*changes.values(), task_id))

    def remove_task(self, task_id: str) -> None:
        """Delete the task (its run history stays, until purged)."""
        with self._db_lock:
            self._conn.execute(_REMOVE_TASK, (task_id,))

    # -- runs -------------------------------------------------------------------

    def claim_run(self, task_id: str, scheduled: float, attempt: int, run: int,
                  name: str) -> bool:
        """Insert a RUNNING record (``started``: now, ``time.time()``) unless
        ``(task_id, scheduled, attempt)`` exists, in this or another process
        (the UNIQUE constraint decides); return whether it inserted."""
        values = (_key_text(task_id), _opt_text(name), int(run), int(attempt),
                  float(scheduled), time.time())
        with self._db_lock:
            return self._conn.execute(_CLAIM_RUN, values).rowcount == 1

    def finish_run(self, record: Dict[str, Any]) -> None:
        """Replace the claimed run's fields with *record*'s (but a None ``name``,
        ``run`` or ``started`` keeps the claimed value); insert it if unclaimed."""
        row = run_row(record)
        values = [row[i] for i in _RUN_VALUES]
        values.extend(row[i] for i in _RUN_KEY)
        with self._db_lock:
            if self._conn.execute(_FINISH_RUN, values).rowcount == 0:
                self._conn.execute(_INSERT_RUN, row)

    def mark_interrupted(self) -> int:
        with self._db_lock:
            return self._conn.execute(_MARK_INTERRUPTED, (INTERRUPTED,)).rowcount

    def runs(self, task_id: Optional[str] = None,
             limit: Optional[int] = None) -> List[Dict[str, Any]]:
        """Run records, newest first (see the class docstring)."""
        limit = check_limit(limit)
        sql_limit = -1 if limit is None else limit
        with self._db_lock:
            if task_id is None:
                rows = self._conn.execute(_RUNS_ALL, (sql_limit,)).fetchall()
            else:
                rows = self._conn.execute(_RUNS_OF_TASK, (task_id, sql_limit)).fetchall()
        return [dict(zip(RUN_FIELDS, row)) for row in rows]

    def purge_runs(self, before: float) -> int:
        """Delete the runs over (not RUNNING) that ended before *before*."""
        with self._db_lock:
            return self._conn.execute(_PURGE_RUNS, (float(before),)).rowcount

    def clear(self) -> None:
        """Delete every task and run (the file stays)."""
        with self.batch():
            self._conn.execute("DELETE FROM tasks")
            self._conn.execute("DELETE FROM runs")

    def close(self) -> None:
        """Release the hold, end a waiting acquire and close the connection.
        Closing twice is fine."""
        self._closed.set()
        self.release()
        with self._db_lock:
            self._conn.close()


_UPDATE_SQL: Dict[tuple, str] = {}


def _update_sql(names: tuple) -> str:
    """The UPDATE statement for these task fields (the same string each time,
    so sqlite3's statement cache prepares it once)."""
    sql = _UPDATE_SQL.get(names)
    if sql is None:
        sets = ", ".join(f'"{name}" = ?' for name in names)
        sql = _UPDATE_SQL.setdefault(names, f"UPDATE tasks SET {sets} WHERE id = ?")
    return sql

