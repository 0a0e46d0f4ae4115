"""The PostgreSQL store's control requests (their rules: :mod:`.controls`).

They go on a connection of their own, so that a dashboard whose store is
otherwise read-only may write them (and nothing else), and a request never
waits behind a scheduler's batch. Times are the database's clock, shared by
every node. A new request is announced on its own channel: the nodes'
listeners wake their schedulers, which take it at once (``listen_control``).
"""
from __future__ import annotations

import contextlib
import threading
from typing import Any, Callable, Dict, Iterator, List, Optional

import psycopg

from .controls import (ABANDONED, DONE, FAILED, REQUEST_FIELDS, STALE_AFTER, check_answer,
                       check_request, check_request_id, check_take, request_dict)
from .postgres_connect import connect

__all__ = ["PostgresControlRequests", "CONTROL_CHANNEL", "CONTROL_TABLE"]

#: The channel a new request is announced on.
CONTROL_CHANNEL = "pysched_controls"

#: The table (schema 2). BIGSERIAL: an id is never given twice.
CONTROL_TABLE = ("""CREATE TABLE control_requests (
    id BIGSERIAL PRIMARY KEY,
    action TEXT NOT NULL,
    task_id TEXT NOT NULL,
    state TEXT NOT NULL,
    ok BOOLEAN,
    message TEXT,
    requested DOUBLE PRECISION NOT NULL,
    requested_by TEXT NOT NULL,
    taken DOUBLE PRECISION,
    taken_by TEXT,
    answered DOUBLE PRECISION
)""", "CREATE INDEX control_requests_open ON control_requests (id) "
      "WHERE state IN ('pending', 'taken')")

_NOW = "extract(epoch from clock_timestamp())"
_COLUMNS = ", ".join(REQUEST_FIELDS)
_REQUEST = (f"INSERT INTO control_requests (action, task_id, state, requested, requested_by) "
            f"VALUES (%s, %s, 'pending', {_NOW}, %s) RETURNING id")
_NOTIFY = f"SELECT pg_notify('{CONTROL_CHANNEL}', '')"
_ANY = (f"SELECT 1 FROM control_requests WHERE state = 'pending' OR (state = 'taken' "
        f"AND taken < {_NOW} - %s) LIMIT 1")
_ABANDON = (f"UPDATE control_requests SET state = 'failed', ok = false, message = %s, "
            f"answered = {_NOW} WHERE state = 'taken' AND taken < {_NOW} - %s "
            f"AND action = 'run_now'")
_RETAKE = (f"UPDATE control_requests SET state = 'pending', taken = NULL, taken_by = NULL "
           f"WHERE state = 'taken' AND taken < {_NOW} - %s")
# Two takers never take one request: the rows one locks, the other skips.
_TAKE = (f"UPDATE control_requests SET state = 'taken', taken = {_NOW}, taken_by = %s "
         f"WHERE id IN (SELECT id FROM control_requests WHERE state = 'pending' "
         f"ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING {_COLUMNS}")
_ANSWER = (f"UPDATE control_requests SET state = %s, ok = %s, message = %s, "
           f"answered = {_NOW} WHERE id = %s AND state IN ('pending', 'taken')")
_LOAD = f"SELECT {_COLUMNS} FROM control_requests WHERE id = %s"
#: Deleted by purge_runs(): answered ones, older than its bound.
PURGE_REQUESTS = ("DELETE FROM control_requests WHERE state IN ('done', 'failed') "
                  "AND answered < %(before)s::float8")


class PostgresControlRequests:
    """The control request methods of :class:`~.postgres.PostgresStore`."""

    _url: str
    url: str
    lease: float
    _closed: threading.Event
    _lock: Any
    _depth: int
    _cur: Any

    def _control_setup(self) -> None:
        self._control_lock = threading.Lock()  # the requests' connection
        self._control_conn: Optional["psycopg.Connection[Any]"] = None
        self._on_control: Optional[Callable[[], None]] = None

    def _controls(self) -> "psycopg.Connection[Any]":
        """The requests' connection (with ``_control_lock`` held), made on first use."""
        conn = self._control_conn
        if conn is None or conn.broken:
            conn = self._control_conn = connect(self._url, self.url, read_only=False,
                                                idle_limit=self.lease)
        return conn

    def request_control(self, action: str, task_id: str, requested_by: str) -> int:
        """Store a new pending request to apply *action* to *task_id* (see
        :mod:`.controls`); return its id, never given again."""
        values = check_request(action, task_id, requested_by)
        with self._in_batch() as batch:  # (then it commits, or not, with the batch)
            if batch is not None:
                row = batch.execute(_REQUEST, values).fetchone()
                batch.execute(_NOTIFY)
                return int(row[0]) if row is not None else 0
        with self._control_lock:
            conn = self._controls()
            with conn.transaction():
                row = conn.execute(_REQUEST, values).fetchone()
                conn.execute(_NOTIFY)
        return int(row[0]) if row is not None else 0

    def take_control_requests(self, owner: str, limit: int = 100, *,
                              stale_after: float = STALE_AFTER) -> List[Dict[str, Any]]:
        """Take up to *limit* pending requests for *owner*, oldest first (a
        dead taker's are settled first: see :mod:`.controls`). Nothing
        pending: one read, no lock."""
        owner, limit, stale_after = check_take(owner, limit, stale_after)
        with self._control_lock:
            conn = self._controls()
            if conn.execute(_ANY, (stale_after,)).fetchone() is None:
                return []
            with conn.transaction():
                conn.execute(_ABANDON, (ABANDONED, stale_after))
                conn.execute(_RETAKE, (stale_after,))
                rows = conn.execute(_TAKE, (owner, limit)).fetchall()
        return sorted((request_dict(row) for row in rows), key=lambda request: request["id"])

    def answer_control(self, request_id: int, ok: bool, message: str) -> None:
        """Answer a request ('done' when *ok*, else 'failed'); the first
        answer stands; an unknown id is ignored."""
        request_id, ok, message = check_answer(request_id, ok, message)
        with self._control_lock:
            self._controls().execute(_ANSWER, (DONE if ok else FAILED, ok, message,
                                               request_id))

    def control_request(self, request_id: int) -> Optional[Dict[str, Any]]:
        """The request *request_id* (a dict of REQUEST_FIELDS), or None."""
        request_id = check_request_id(request_id)
        with self._control_lock:
            row = self._controls().execute(_LOAD, (request_id,)).fetchone()
        return None if row is None else request_dict(row)

    def listen_control(self, callback: Callable[[], None]) -> None:
        """Call *callback* when a request is written (by the thread that
        waits for changes: ``wait_for_change``)."""
        self._on_control = callback

    @contextlib.contextmanager
    def _in_batch(self) -> Iterator[Optional[Any]]:
        """The cursor of the store's batch when this thread is inside one
        (its lock held through the block), else None."""
        lock: Any = self._lock
        if not lock.acquire(blocking=False):
            yield None  # another thread's batch, or none
            return
        try:
            yield self._cur if self._depth > 0 else None
        finally:
            lock.release()

    def _control_heard(self) -> None:
        callback = self._on_control
        if callback is not None:
            callback()

    def _close_controls(self) -> None:
        with self._control_lock:
            if self._control_conn is not None:
                self._control_conn.close()
