"""A store in PostgreSQL, shared by several schedulers (processes, hosts),
all active.

The values, claims and runs follow the SQLite store's rules (:mod:`.rules`).
What several nodes need on top:

* a node registers with ``acquire()`` and gets a lease in the database's
  time and an epoch that is never reused; ``renew()`` extends the lease
  while it lives; ``reap()`` records INTERRUPTED the runs of nodes whose
  lease expired, each exactly once whoever reaps;
* a claim is inserted only while the claiming node's lease is live, and a
  write over a claim (its end, its process, its release) only while the
  claim is still this node's (fencing: else :class:`ClaimLostError`);
* a change to a task's definition, its pause, its removal, a run reaped is a
  ``changes`` row plus a ``NOTIFY``, which other nodes wait for
  (``wait_for_change``) and read (``changes_since``).

One connection carries the store's reads and writes under a lock (as the
SQLite store's): ``batch()`` is its transaction, and other threads wait
until it ends. (One connection under a lock measured as fast as a pool of
four, from one thread or four, on this library's call pattern.) The leases,
the clock and the changes are :class:`~.postgres_nodes.NodeLink`'s, on
connections of their own.
"""
from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

import psycopg

from ...records.protocols import EVERY_SLOT, RUN_FIELDS, TaskRecord
from . import postgres_sql as sql
from .postgres_claims import PostgresClaims
from .postgres_connect import connect
from .postgres_controls import PURGE_REQUESTS, PostgresControlRequests
from .postgres_rows import (attempt_of, lost_claim, priority_columns, task_params,
                            task_record_of)
from .postgres_nodes import NodeLink
from .postgres_schema import check_readable, prepare
from .queries import run_filter, select_sql
from .rules import (INTERRUPTED, PROCESS_FIELDS, check_key, check_limit, check_process,
                    check_slot, check_time, run_row, task_changes, task_row)

__all__ = ["PostgresStore"]

_log = logging.getLogger("pysched_lightning.stores")

#: The most finish_run records a batch keeps before it writes them.
_MAX_PENDING = 256


class PostgresStore(PostgresClaims, PostgresControlRequests, NodeLink):
    """Tasks and runs in the PostgreSQL database *url*, with leases of
    *lease* seconds for the nodes that share it. Thread-safe.

    The schema is created or upgraded when the store opens (see
    :mod:`.postgres_schema`); ``read_only=True`` changes nothing and runs
    read-only transactions; with ``control=True`` too, it still writes
    control requests (a dashboard's actions), on a connection of their own.
    ``repr()`` and messages show the URL without its password.

    A task's definition is durable when ``save_task`` returns. Claims and
    run records commit without waiting for the server to flush its WAL
    (``synchronous_commit = off`` for those transactions): they survive any
    crash of a node, as a SQLite store's commits do, and a crash of the
    database server itself may lose the last ~0.2 s of them. A task stored
    with its first run's claim may commit so too, the flush waited for
    after the run started (``save_and_claim(..., flush=False)``, then
    ``wait_flushed()``). ``synchronous=True`` makes claims wait for the
    flush too (a run is then never run twice even across a server crash),
    at one WAL flush per claim.
    """

    def __init__(self, url: str, *, lease: float = 10.0, read_only: bool = False,
                 control: bool = False, synchronous: bool = False) -> None:
        super().__init__(url, lease, read_only)
        if not isinstance(synchronous, bool):
            raise TypeError(f"synchronous must be True or False, not {synchronous!r}")
        #: True: a claim waits for the server's WAL flush (see postgres_sql.RELAXED).
        self.synchronous = synchronous
        self._control_setup()
        self._lock = threading.RLock()  # the data connection: one call or batch at a time
        self._depth = 0  # batch nesting, under _lock
        # True when the batch wrote what must survive a crash of the database
        # server itself (a claim, a definition), under _lock: see postgres_sql.RELAXED.
        self._strict = True
        # A batch's finish_run records not yet sent (under _lock), by key:
        # written together by the next other call, or at the batch's end.
        self._pending: Dict[Tuple[Any, ...], Tuple[Any, ...]] = {}
        self._conn = self._connect()
        try:
            execute = self._conn.execute
            if self.read_only:
                check_readable(execute, self.url)
            else:
                with self._conn.transaction():
                    prepare(execute, self.url)
        except BaseException:
            self._conn.close()
            raise
        self._cur = self._conn.cursor()

    def __repr__(self) -> str:
        state = " read-only" if self.read_only else ""
        state += " closed" if self._closed.is_set() else ""
        return f"<PostgresStore {self.url!r}{state}>"

    def __enter__(self) -> "PostgresStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- connections --------------------------------------------------------------

    def _run(self, statement: str, params: Any = None) -> "psycopg.Cursor[Any]":
        """Execute on the data connection (the caller holds ``_lock``); a
        connection lost outside a batch is made again."""
        if self._pending:
            self._flush()
        if self._conn.broken and self._depth == 0 and not self._closed.is_set():
            _log.warning("%s: the connection was lost; connecting again", self.url)
            self._conn = self._connect()
            self._cur = self._conn.cursor()
        return self._cur.execute(statement, params)

    def _row(self, statement: str, params: Any = None) -> Tuple[Any, ...]:
        """The one row *statement* returns (on the data connection)."""
        row = self._run(statement, params).fetchone()
        if row is None:
            raise RuntimeError(f"{self.url}: no row from {statement.split()[0]}")
        return tuple(row)

    def reap(self) -> List[Dict[str, Any]]:
        """Record INTERRUPTED (finished now) the RUNNING runs of nodes not
        live, forget expired nodes, and return those runs: each run is
        returned by one reaper only, whichever nodes reap at once."""
        with self._lock:
            rows = self._run(sql.REAP, {"error": INTERRUPTED}).fetchall()
        return [dict(zip(RUN_FIELDS, row)) for row in rows]

    def mark_interrupted(self) -> int:
        """:meth:`reap`, counted (a run's end time stays unknown, as in the
        SQLite store). Live nodes' runs are never touched."""
        with self._lock:
            return int(self._row(sql.MARK_INTERRUPTED, {"error": INTERRUPTED})[0])

    # -- transactions ---------------------------------------------------------------

    def _connect(self) -> "psycopg.Connection[Any]":
        """The data connection: its commits do not wait for the server's WAL
        flush but where a batch says so (see ``postgres_sql.RELAXED``)."""
        conn = connect(self._url, self.url, read_only=self.read_only, idle_limit=self.lease)
        if not self.read_only:
            conn.execute(sql.RELAXED)
        return conn

    @contextlib.contextmanager
    def _strictly(self) -> Iterator[None]:
        """What is written inside commits with the server's WAL flushed (a
        definition, a claim of a ``synchronous`` store): in the batch under
        way, or in a batch of its own."""
        with self._lock:
            if self._depth:
                self._strict = True
                yield
                return
            with self.batch():
                self._strict = True
                yield

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """One transaction: the calls inside commit together, or roll back on
        an exception. A nested batch is a savepoint. Other threads' calls
        wait until the batch ends."""
        with self._lock:
            if self._pending:
                self._flush()  # (the outer batch's: kept if this one fails)
            if self._depth == 0 and self._conn.broken:
                self._run("SELECT 1")  # connect again before the transaction
            with self._conn.transaction():
                self._depth += 1
                if self._depth == 1:
                    self._strict = False
                try:
                    yield
                    if self._pending:
                        self._flush()
                    if self._depth == 1 and self._strict:
                        self._run(sql.STRICT_COMMIT)
                except BaseException:
                    self._pending.clear()  # rolled back with the rest
                    raise
                finally:
                    self._depth -= 1

    # -- tasks ------------------------------------------------------------------------

    def load_tasks(self) -> List[TaskRecord]:
        """Every task, oldest ``created`` first (then by id)."""
        with self._lock:
            rows = self._run(sql.LOAD_TASKS).fetchall()
        return [task_record_of(row) for row in rows]

    def task(self, task_id: str) -> Optional[TaskRecord]:
        task_id = check_key(task_id)
        with self._lock:
            row = self._run(sql.LOAD_TASK, (task_id,)).fetchone()
        return None if row is None else task_record_of(row)

    def save_task(self, record: TaskRecord, replace: bool = True) -> bool:
        """As the SQLite store's; a new task or a changed definition (see
        ``postgres_sql.DEFINITION``) is a change for the other nodes."""
        params = task_params(task_row(record))
        with self._lock, self._strictly():  # (another thread's batch: wait here)
            return self._row(sql.SAVE_TASK if replace else sql.ADD_TASK,
                             params)[0] == 1

    def update_task(self, task_id: str, **fields: Any) -> None:
        """As the SQLite store's; ``paused`` changing value is a change."""
        task_id = check_key(task_id)
        changes = task_changes(fields)
        if not changes:
            return
        params: Dict[str, Any] = {"id": task_id}
        for name, value in changes.items():
            if name == "priority":
                params.update(priority_columns(value))
            else:
                params[name] = value
        columns = tuple(name for name in params if name != "id")
        with self._strictly() if "paused" in params else self._lock:
            self._run(sql.update_task_sql(columns), params)

    def remove_task(self, task_id: str) -> None:
        """Delete the task (its run history stays, until purged)."""
        task_id = check_key(task_id)
        with self._lock, self._strictly():
            self._run(sql.REMOVE_TASK, (task_id,))

    # -- runs -------------------------------------------------------------------------

    def finish_run(self, record: Mapping[str, Any]) -> None:
        """Write *record* over its claimed run, or insert it if unclaimed;
        ClaimLostError if the claim is no longer this node's.

        Inside a batch, the records are written together (one statement)
        by the next other call on the store or at the batch's end, which
        then raises the ClaimLostError (and the batch rolls back)."""
        row = run_row(record)
        with self._lock:
            if self._depth:
                key = (row[0], row[4], row[3])
                if key in self._pending:  # (each key once per statement)
                    self._flush()
                self._pending[key] = row
                if len(self._pending) >= _MAX_PENDING:
                    self._flush()
                return
            self._finish(row)

    def _flush(self) -> None:
        """Write the batch's pending finish_run records, in one statement."""
        rows, fence = list(self._pending.values()), self._fence()
        self._pending.clear()
        if len(rows) == 1:  # (the statement for one costs half as much)
            self._finish(rows[0])
            return
        params: Dict[str, Any] = dict(zip(RUN_FIELDS, map(list, zip(*rows))), **fence)
        written = {tuple(key) for key in self._cur.execute(sql.FINISH_RUNS, params)}
        for row in rows:
            if (row[0], row[4], row[3]) not in written:
                self._finish(row)  # raises ClaimLostError, or (never acquired) a race

    def _finish(self, row: Tuple[Any, ...]) -> None:
        params = dict(zip(RUN_FIELDS, row), **self._fence())
        for _ in range(2):
            updated, inserted = self._row(sql.FINISH_RUN, params)
            if updated or inserted:
                return
            if params["epoch"] is not None:
                raise lost_claim(params, "the outcome is not recorded")
            # (never acquired: another connection inserted the key meanwhile)

    def set_aside_runs(self, task_id: str, slot: str = EVERY_SLOT) -> None:
        """Rename the slots of the task's over records (of *slot* only, if
        given) to ``slot~run.attempt``."""
        only = check_key(slot, "a run's slot")
        with self._lock:
            self._run(sql.SET_ASIDE, (check_key(task_id), only, only))

    def release_run(self, task_id: str, slot: str, attempt: int) -> None:
        """Delete the run's record if it is still this node's RUNNING claim;
        ClaimLostError if another node took it over."""
        params = {"task_id": check_key(task_id), "slot": check_slot(slot),
                  "attempt": attempt_of(attempt), **self._fence()}
        with self._lock:
            gone, taken = self._row(sql.RELEASE_RUN, params)
        if not gone and taken:
            raise lost_claim(params, "its release is not recorded")

    def note_process(self, task_id: str, slot: str, attempt: int, pid: int,
                     pid_started: int) -> None:
        """Keep the process of this node's RUNNING claim (nothing if it is not
        one; ClaimLostError if another node took it over)."""
        pid, pid_started = check_process(pid, pid_started)
        params = {"task_id": check_key(task_id), "slot": check_slot(slot),
                  "attempt": attempt_of(attempt),
                  "pid": pid, "pid_started": pid_started, **self._fence()}
        with self._lock:
            noted, taken = self._row(sql.NOTE_PROCESS, params)
        if not noted and taken:
            raise lost_claim(params, "its process is not recorded")

    def claimed_processes(self) -> List[Dict[str, Any]]:
        """The RUNNING claims with a process that no live node answers for
        here: unowned ones, and this owner's from an earlier epoch. (Other
        nodes' processes may be on other hosts: their leases tell.)"""
        owner, epoch = self._node
        with self._lock:
            rows = self._run(sql.CLAIMED_PROCESSES, {"owner": owner, "epoch": epoch}).fetchall()
        return [dict(zip(PROCESS_FIELDS, row)) for row in rows]

    def runs(self, task_id: Optional[str] = None, limit: Optional[int] = None, *,
             before: Optional[float] = None, since: Optional[float] = None,
             statuses: Optional[Iterable[int]] = None) -> List[Dict[str, Any]]:
        """Run records, newest first (see :meth:`Store.runs`)."""
        limit = check_limit(limit)
        query = run_filter(task_id, before, since, statuses, "%s")
        if query is None:
            return []
        where, params = query
        params.append(limit)
        statement = select_sql(f"SELECT {sql.RUN_COLUMNS} FROM runs", where,
                               " ORDER BY scheduled DESC, id DESC LIMIT %s")
        with self._lock:
            rows = self._run(statement, params).fetchall()
        return [dict(zip(RUN_FIELDS, row)) for row in rows]

    def recent_runs(self, task_ids: Sequence[str], limit: int) -> Dict[str, List[Dict[str, Any]]]:
        """``runs(task_id, limit)`` of each of *task_ids*, in one statement:
        ``{task_id: records newest first}`` (a task without runs is absent)."""
        ids = [check_key(task_id) for task_id in task_ids]
        params = {"task_ids": ids, "limit": check_limit(limit)}
        if not ids:
            return {}
        with self._lock:
            rows = self._run(sql.RECENT_RUNS, params).fetchall()
        recent: Dict[str, List[Dict[str, Any]]] = {}
        for row in rows:
            record = dict(zip(RUN_FIELDS, row))
            recent.setdefault(record["task_id"], []).append(record)
        return recent

    def count_runs(self, task_id: Optional[str] = None, *, since: Optional[float] = None,
                   statuses: Optional[Iterable[int]] = None) -> int:
        query = run_filter(task_id, None, since, statuses, "%s")
        if query is None:
            return 0
        where, params = query
        with self._lock:
            return int(self._row(select_sql("SELECT count(*) FROM runs", where, ""),
                                 params)[0])

    def purge_runs(self, before: float) -> int:
        """Delete the runs over (not RUNNING) that ended before *before*, but
        the latest claimed slot of each stored task; and the changes older
        than *before* (but the newest)."""
        bound = check_time("before", before)
        if bound is None:
            raise TypeError("purge_runs() needs a time, not None")
        with self.batch():
            self._run(PURGE_REQUESTS, {"before": bound})
            return int(self._row(sql.PURGE_RUNS, {"before": bound})[0])

    def clear(self) -> None:
        """Delete every task (a change each) and run."""
        with self.batch():
            self._run(sql.CLEAR_TASKS)
            self._run(sql.CLEAR_RUNS)

    def close(self) -> None:
        """Unregister this node, end a waiting wait_for_change and close the
        connections. Closing twice is fine."""
        if self._closed.is_set():
            return
        try:
            self.release()
        except psycopg.Error as exc:  # the lease then expires on its own
            _log.warning("%s: could not unregister node %r: %s", self.url, self.owner, exc)
        self._close_links()
        self._close_controls()
        with self._lock:
            self._conn.close()

