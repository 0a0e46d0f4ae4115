"""The SQLite store's control requests (see :mod:`.controls` for their
rules), and the authorizer of a reader that may write them and nothing else."""
from __future__ import annotations

import sqlite3
import threading
import time
from typing import Any, Callable, ContextManager, Dict, List, Optional

from . import statements as stmt
from .controls import (ABANDONED, DONE, FAILED, STALE_AFTER, check_answer, check_request,
                       check_request_id, check_take, request_dict)

__all__ = ["SQLiteControlRequests", "control_only"]


class SQLiteControlRequests:
    """The control request methods of :class:`~.sqlite.SQLiteStore` (its
    connection, lock and ``batch()``). The SQL is plain enough for any
    database: a pending request is taken by an UPDATE that names its state,
    inside one write transaction."""

    _db_lock: "threading.RLock"
    _conn: sqlite3.Connection
    batch: Callable[[], ContextManager[None]]

    def request_control(self, action: str, task_id: str, requested_by: str) -> int:
        """Store a new pending request to apply *action* ('run_now', 'pause',
        'resume', 'cancel'; another is a ValueError) to *task_id*, made by
        *requested_by* (free text: who asked); return its id (never reused)."""
        values = check_request(action, task_id, requested_by)
        with self._db_lock:
            cursor = self._conn.execute(stmt.REQUEST_CONTROL,
                                        (values[0], values[1], time.time(), values[2]))
            return int(cursor.lastrowid or 0)

    def take_control_requests(self, owner: str, limit: int = 100, *,
                              stale_after: float = STALE_AFTER) -> List[Dict[str, Any]]:
        """Move up to *limit* pending requests to 'taken' by *owner* and return
        them (dicts of REQUEST_FIELDS, state 'taken'), oldest first, in one
        write transaction: two takers never take the same request.

        First, requests taken more than *stale_after* seconds ago and never
        answered (their taker died) are settled: a 'run_now' is answered
        failed (ABANDONED: it may have run), the others become pending again
        and are taken here. When nothing is pending (the usual case), this is
        one read and takes no write lock."""
        owner, limit, stale_after = check_take(owner, limit, stale_after)
        now = time.time()
        stale = now - stale_after
        with self._db_lock:
            if self._conn.execute(stmt.ANY_REQUEST, (stale,)).fetchone() is None:
                return []
            with self.batch():
                execute = self._conn.execute
                execute(stmt.ABANDON_REQUESTS, (ABANDONED, now, stale))
                execute(stmt.RETAKE_REQUESTS, (stale,))
                rows = execute(stmt.PENDING_REQUESTS, (limit,)).fetchall()
                for row in rows:
                    execute(stmt.TAKE_REQUEST, (now, owner, row[0]))
        return [dict(request_dict(row), state="taken") for row in rows]

    def answer_control(self, request_id: int, ok: bool, message: str) -> None:
        """Answer a request: 'done' when *ok*, else 'failed', with *message*
        and the time. A request answered already keeps its first answer; an
        unknown id is ignored (it may have been purged)."""
        request_id, ok, message = check_answer(request_id, ok, message)
        with self._db_lock:
            self._conn.execute(stmt.ANSWER_REQUEST, (DONE if ok else FAILED, int(ok), message,
                                                     time.time(), request_id))

    def control_request(self, request_id: int) -> Optional[Dict[str, Any]]:
        """The request *request_id* (a dict of REQUEST_FIELDS), or None."""
        request_id = check_request_id(request_id)
        with self._db_lock:
            row = self._conn.execute(stmt.LOAD_REQUEST, (request_id,)).fetchone()
        return None if row is None else request_dict(row)


#: The tables a control-only connection may change (AUTOINCREMENT keeps its
#: counter in sqlite_sequence).
_CONTROL_TABLES = frozenset({"control_requests", "sqlite_sequence"})
_WRITES = frozenset({sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_DELETE})
_ALLOWED = frozenset({sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_TRANSACTION,
                      sqlite3.SQLITE_SAVEPOINT, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_PRAGMA})


def control_only(action: int, arg1: Optional[str], arg2: Optional[str],
                  database: Optional[str], trigger: Optional[str]) -> int:
    """SQLite's authorizer for a reader that writes control requests: rows of
    the control table may change; nothing else may (no other table, no
    schema change, no attached file)."""
    if action in _WRITES:
        return sqlite3.SQLITE_OK if arg1 in _CONTROL_TABLES else sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_PRAGMA and arg2 is not None and arg1 != "busy_timeout":
        return sqlite3.SQLITE_DENY  # a pragma that sets something (user_version...)
    return sqlite3.SQLITE_OK if action in _ALLOWED else sqlite3.SQLITE_DENY
