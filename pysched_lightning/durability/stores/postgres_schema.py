"""The PostgreSQL store's schema: its creation and in-place upgrade.

The version is the one row of ``pysched_schema``. :func:`prepare` creates or
upgrades the schema in one transaction under ``pg_advisory_xact_lock``, so
nodes that open a fresh database at the same moment create it once (the
others wait, then find it made). The tables are the SQLite store's, plus
what several nodes sharing the database need: which node claimed a run
(``owner``, ``epoch``), the live nodes and their leases (``nodes``), and the
changes other nodes must notice (``changes``, with a ``NOTIFY``).
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Tuple

from ...records.protocols import RUNNING, SUSPENDED
from .postgres_controls import CONTROL_TABLE

__all__ = ["SCHEMA_VERSION", "LOCK_KEY", "CHANNEL", "prepare", "check_readable"]

_log = logging.getLogger("pysched_lightning.stores")

#: The schema's version, kept in ``pysched_schema``.
SCHEMA_VERSION = 2
#: The advisory lock that serializes schema changes (any fixed 64-bit key).
LOCK_KEY = 0x70736C5F73636831  # 'psl_sch1'
#: The advisory lock that puts changes in commit order (see below).
CHANGES_KEY = 0x70736C5F63686731  # 'psl_chg1'
#: The channel a committed change is announced on.
CHANNEL = "pysched_changes"

_V0_TO_V1 = (
    f"""CREATE TABLE tasks (
    id TEXT PRIMARY KEY,
    name TEXT,
    "trigger" TEXT,
    "interval" TEXT,
    -- an int stays an int, a float a float: one of the two is set
    priority_int BIGINT,
    priority_real DOUBLE PRECISION,
    fn_ref TEXT,
    fn_pickle BYTEA,
    args BYTEA,
    kwargs BYTEA,
    options BYTEA,
    schedule BYTEA,
    next_run DOUBLE PRECISION,
    paused BOOLEAN NOT NULL DEFAULT false,
    runs BIGINT NOT NULL DEFAULT 0,
    missed BIGINT NOT NULL DEFAULT 0,
    status INTEGER NOT NULL DEFAULT {SUSPENDED},
    created DOUBLE PRECISION NOT NULL DEFAULT 0,
    updated DOUBLE PRECISION NOT NULL DEFAULT 0,
    info TEXT,
    CHECK ((priority_int IS NULL) <> (priority_real IS NULL))
)""",
    """CREATE TABLE runs (
    id BIGSERIAL PRIMARY KEY,  -- the insertion order, for runs scheduled alike
    task_id TEXT NOT NULL,
    name TEXT,
    run BIGINT,
    attempt BIGINT NOT NULL,
    slot TEXT NOT NULL,
    status INTEGER NOT NULL,
    scheduled DOUBLE PRECISION NOT NULL,
    started DOUBLE PRECISION,
    finished DOUBLE PRECISION,
    duration DOUBLE PRECISION,
    exit_code BIGINT,
    count BIGINT NOT NULL DEFAULT 1,
    reason TEXT,
    result TEXT,
    error TEXT,
    traceback TEXT,
    output TEXT,
    stderr TEXT,
    outcome BYTEA,
    pid BIGINT,
    pid_started BIGINT,
    owner TEXT,     -- the node that claimed the run, in its epoch (fencing)
    epoch BIGINT,
    UNIQUE (task_id, slot, attempt)
)""",
    "CREATE INDEX runs_task_scheduled ON runs (task_id, scheduled)",
    "CREATE INDEX runs_scheduled ON runs (scheduled)",
    # Every node reaps on each heartbeat: the running claims only, never a scan.
    f"CREATE INDEX runs_running ON runs (owner, epoch) WHERE status = {RUNNING}",
    "CREATE SEQUENCE node_epochs",  # never reused, so an old epoch never comes back
    """CREATE TABLE nodes (
    owner TEXT PRIMARY KEY,
    epoch BIGINT NOT NULL,
    lease_until TIMESTAMPTZ NOT NULL,
    joined TIMESTAMPTZ NOT NULL,
    host TEXT,
    pid INTEGER
)""",
    """CREATE TABLE changes (
    seq BIGSERIAL PRIMARY KEY,
    task_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    at TIMESTAMPTZ NOT NULL DEFAULT now()
)""",
    # A reader that saw change n must never later find a change numbered
    # below n committed meanwhile. So a change gets its final number at
    # commit, under an advisory lock held until the commit ends: numbers
    # follow commit order. (Taken at commit, the lock never waits on a row
    # lock another transaction holds: no deadlock.) The NOTIFY is delivered
    # at commit too; PostgreSQL sends one per transaction for equal payloads.
    f"""CREATE FUNCTION pysched_number_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock({CHANGES_KEY});
    UPDATE changes SET seq = nextval(pg_get_serial_sequence('changes', 'seq'))
        WHERE seq = NEW.seq;
    PERFORM pg_notify('{CHANNEL}', '');
    RETURN NULL;
END $$""",
    """CREATE CONSTRAINT TRIGGER changes_in_commit_order AFTER INSERT ON changes
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION pysched_number_change()""",
)

#: The statements that bring version k to k + 1.
#: Version 2: the control requests of dashboards (see :mod:`.postgres_controls`).
STEPS: Dict[int, Tuple[str, ...]] = {0: _V0_TO_V1, 1: CONTROL_TABLE}


def prepare(execute: Callable[..., Any], shown: str) -> None:
    """Create or upgrade the schema, in the caller's transaction (which the
    advisory lock taken here serializes with other nodes')."""
    execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
    execute("CREATE TABLE IF NOT EXISTS pysched_schema (version INTEGER NOT NULL)")
    row = execute("SELECT max(version) FROM pysched_schema").fetchone()
    version = 0 if row is None or row[0] is None else int(row[0])
    check_version(version, shown)
    if version == SCHEMA_VERSION:
        return  # made or upgraded by another node while this one waited
    start = version
    while version < SCHEMA_VERSION:
        for statement in STEPS[version]:
            execute(statement)
        version += 1
    execute("DELETE FROM pysched_schema")
    execute("INSERT INTO pysched_schema (version) VALUES (%s)", (SCHEMA_VERSION,))
    _log.info("%s: schema %s %d", shown, "created at version" if start == 0 else
              f"upgraded from {start} to", SCHEMA_VERSION)


def check_version(version: int, shown: str) -> None:
    """Refuse a database that a newer pysched_lightning wrote."""
    if version > SCHEMA_VERSION:
        raise SchemaError(
            f"{shown}: schema version {version} is newer than this pysched_lightning's "
            f"({SCHEMA_VERSION}); upgrade pysched_lightning to open it")


def check_readable(execute: Callable[..., Any], shown: str) -> None:
    """A read-only store neither creates nor upgrades: the schema must be there."""
    if execute("SELECT to_regclass('pysched_schema')").fetchone()[0] is None:
        tables = execute("SELECT count(*) FROM pg_catalog.pg_tables "
                         "WHERE schemaname = current_schema()").fetchone()[0]
        raise SchemaError(f"{shown} is not a pysched_lightning store: "
                          + ("the database is empty" if not tables else
                             f"it has {tables} table(s) but no pysched_schema"))
    row = execute("SELECT max(version) FROM pysched_schema").fetchone()
    version = 0 if row is None or row[0] is None else int(row[0])
    check_version(version, shown)
    if version < SCHEMA_VERSION:
        raise SchemaError(f"{shown}: schema version {version} must be upgraded to "
                          f"{SCHEMA_VERSION} before it can be read; open it once with a "
                          "scheduler of this version")


class SchemaError(RuntimeError):
    """The database is not a store this version can open."""
