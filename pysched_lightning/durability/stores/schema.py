"""The SQLite store's schema, and the upgrade of a file an older version wrote.

The version is kept in ``PRAGMA user_version``: 0 is a new file, 1 the
first schema (runs keyed by their scheduled time), 2 runs keyed by a slot, 3
a claim keeps the process running it and runs interrupted by a crash have a
status of their own, 4 this one (control requests, see :mod:`.controls`). :func:`upgrade` brings a file to :data:`SCHEMA_VERSION` inside the
caller's transaction, so an upgrade happens entirely or not at all.
"""
from __future__ import annotations

import logging
import sqlite3
from typing import Any, Callable

from ...records.protocols import ERROR, INTERRUPTED, SUSPENDED

__all__ = ["SCHEMA_VERSION", "TABLES", "INDEXES", "CONTROL", "upgrade", "check_version",
           "check_readable"]

_log = logging.getLogger("pysched_lightning.stores")

#: The schema's version, kept in ``PRAGMA user_version``.
SCHEMA_VERSION = 4

#: The error text schema 2 gave a run it found interrupted (status ERROR).
_V2_INTERRUPTED = "interrupted: the scheduler process stopped during this run"

# Columns appear in the tables as they do in TaskRecord and RUN_FIELDS, except
# that a run's long texts and its outcome come last: SQLite reads a row's
# columns in order, so the short ones stay on the row's first page.
TABLES = (f"""
CREATE TABLE tasks (
    id TEXT PRIMARY KEY NOT NULL,  -- WITHOUT ROWID: one b-tree, one page per write
    name TEXT,
    "trigger" TEXT,
    "interval" TEXT,
    priority,  -- no declared type, so no conversion: an int stays an int
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
    status INTEGER NOT NULL DEFAULT {SUSPENDED},
    created REAL NOT NULL DEFAULT 0,
    updated REAL NOT NULL DEFAULT 0,
    info TEXT
) WITHOUT ROWID""", """
CREATE TABLE runs (
    id INTEGER PRIMARY KEY,  -- the insertion order, for runs scheduled alike
    task_id TEXT NOT NULL,
    name TEXT,
    run INTEGER,
    attempt INTEGER NOT NULL,
    slot TEXT NOT NULL,
    status INTEGER NOT NULL,
    scheduled REAL NOT NULL,
    started REAL,
    finished REAL,
    duration REAL,
    exit_code INTEGER,
    count INTEGER NOT NULL DEFAULT 1,
    reason TEXT,
    result TEXT,
    error TEXT,
    traceback TEXT,
    output TEXT,
    stderr TEXT,
    outcome BLOB,
    pid INTEGER,  -- a RUNNING claim's process, and its start time (clock ticks)
    pid_started INTEGER,
    UNIQUE (task_id, slot, attempt)
)""")

# Every index costs every claim a page write, so there are two besides the
# claim key, each needed by a query that would otherwise read the whole table
# (benchmarks/store_queries.py measures them on 1,000,000 runs): one task's
# history, newest first, and paging back through it; and the recent runs of
# every task, and counting them. Status is in neither: it changes when a run
# finishes, and indexing it would add an index write to that commit too.
INDEXES = (
    "CREATE INDEX runs_task_scheduled ON runs (task_id, scheduled)",
    "CREATE INDEX runs_scheduled ON runs (scheduled)",
)

# Control requests (schema 4): few rows, purged once answered. AUTOINCREMENT
# so that an id is never given twice: a dashboard may still ask about a purged one.
# The index serves the active scheduler's poll, once a second: any pending?
CONTROL = ("""
CREATE TABLE control_requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    action TEXT NOT NULL,
    task_id TEXT NOT NULL,
    state TEXT NOT NULL,
    ok INTEGER,
    message TEXT,
    requested REAL NOT NULL,
    requested_by TEXT NOT NULL,
    taken REAL,
    taken_by TEXT,
    answered REAL
)""", "CREATE INDEX control_requests_state ON control_requests (state, id)")

_V1_TO_V2 = (
    "ALTER TABLE tasks RENAME TO tasks_v1",
    TABLES[0],
    # Schema 1 declared priority REAL, which turned every int into a float:
    # a whole number goes back to an int (the API's priorities are ints).
    """INSERT INTO tasks SELECT id, name, "trigger", "interval",
           CASE WHEN typeof(priority) = 'real' AND abs(priority) < 9.0e18
                     AND priority = CAST(priority AS INTEGER)
                THEN CAST(priority AS INTEGER) ELSE priority END,
           fn_ref, fn_pickle, args, kwargs, options, schedule, next_run, paused, runs,
           missed, status, created, updated, NULL
       FROM tasks_v1""",
    "DROP TABLE tasks_v1",
    "ALTER TABLE runs RENAME TO runs_v1",
    "DROP INDEX IF EXISTS runs_scheduled",
    TABLES[1],
    # A run's slot is its scheduled time as the scheduler printed it...
    f"""INSERT OR IGNORE INTO runs (id, task_id, name, run, attempt, slot, status, scheduled,
           started, finished, duration, exit_code, result, error, traceback, output, stderr)
       SELECT id, task_id, name, run, attempt, printf('%.3f', scheduled),
           COALESCE(status, {ERROR}), scheduled, started, finished, duration, exit_code,
           result, error, traceback, output, stderr
       FROM runs_v1 ORDER BY id""",
    # ...and where two times print alike (written by hand, not the scheduler,
    # which rounded them to the millisecond), the later row's id tells them apart.
    f"""INSERT INTO runs (id, task_id, name, run, attempt, slot, status, scheduled,
           started, finished, duration, exit_code, result, error, traceback, output, stderr)
       SELECT id, task_id, name, run, attempt, printf('%.3f#%d', scheduled, id),
           COALESCE(status, {ERROR}), scheduled, started, finished, duration, exit_code,
           result, error, traceback, output, stderr
       FROM runs_v1 WHERE id NOT IN (SELECT id FROM runs)""",
    "DROP TABLE runs_v1",
    *INDEXES,
)


# Schema 1 and 2 recorded a run cut short by a crash as an error with this text.
_INTERRUPTED_STATUS = (f"UPDATE runs SET status = {INTERRUPTED} WHERE status = {ERROR} "
                       f"AND error = '{_V2_INTERRUPTED}'")
# (_V1_TO_V2 makes the runs table of this schema, with the process columns.)
_V2_TO_V3 = (
    "ALTER TABLE runs ADD COLUMN pid INTEGER",
    "ALTER TABLE runs ADD COLUMN pid_started INTEGER",
)


def upgrade(execute: Callable[..., Any], path: str) -> None:
    """Bring the file to SCHEMA_VERSION, inside the caller's write transaction
    (``BEGIN IMMEDIATE``, so the version read here cannot change meanwhile)."""
    version = execute("PRAGMA user_version").fetchone()[0]
    check_version(version)
    if version == SCHEMA_VERSION:
        return  # another process upgraded it while this one waited
    if version == 0:
        for statement in (*TABLES, *INDEXES, *CONTROL):
            execute(statement)
    elif version in (1, 2, 3):
        counts = [execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                  for table in ("tasks", "runs")]
        steps = {1: (*_V1_TO_V2, _INTERRUPTED_STATUS), 2: (*_V2_TO_V3, _INTERRUPTED_STATUS),
                 3: ()}[version]
        for statement in (*steps, *CONTROL):
            execute(statement)
        _log.info("%s: schema %d upgraded to %d (%d tasks, %d runs)", path, version,
                  SCHEMA_VERSION, *counts)
    else:
        raise sqlite3.DatabaseError(f"schema version {version} is unknown")
    execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def check_version(version: int) -> None:
    """Refuse a file that a newer pysched_lightning wrote."""
    if version > SCHEMA_VERSION:
        raise sqlite3.DatabaseError(
            f"schema version {version} is newer than this pysched_lightning's "
            f"({SCHEMA_VERSION}); upgrade pysched_lightning to open it")


#: The oldest schema a read-only store reads (it cannot upgrade): schema 2
#: lacks only what a scheduler reads at its start (a claim's process).
READABLE_SINCE = 2
#: The oldest schema with control requests.
CONTROL_SINCE = 4


def check_readable(version: int, control: bool) -> None:
    """A read-only store reads schemas READABLE_SINCE to SCHEMA_VERSION; one
    that writes control requests needs CONTROL_SINCE."""
    check_version(version)
    if version == 0:
        raise sqlite3.DatabaseError("not a pysched_lightning store (it has no schema)")
    if version < READABLE_SINCE:
        raise sqlite3.DatabaseError(
            f"schema version {version} must be upgraded to {SCHEMA_VERSION} before it can "
            "be read; open it once with a scheduler of this version (pysched run)")
    if control and version < CONTROL_SINCE:
        raise sqlite3.DatabaseError(
            f"schema version {version} has no control requests (they need {CONTROL_SINCE}); "
            "a reader does not upgrade a store: open it once with a scheduler of this "
            "version (pysched run), which upgrades it")
