"""The service's durable state: one SQLite row per accepted message.

A row goes accepted -> started -> done -> published. The message id is the
key, so a redelivered or duplicated message is recognised and not run again.
The service acknowledges a message to the broker only after its row is
committed; a task's row is marked started (committed) right before its code
runs, in the thread or process that runs it; a response is stored (done)
before it is published. After a crash the rows say exactly what to do: run
accepted ones, publish done ones, and answer started ones "interrupted"
(they may have run partly, so they are not run again).

Published rows keep only their id (body and response are dropped), so a
replay of an old message is still recognised. (A response is marked
published with the next commit after the broker confirmed it, so one
confirmed just before a crash is sent again: clients keep the first copy.)
"""
from __future__ import annotations

import fcntl
import functools
import os
import sqlite3
import threading
import time
from typing import IO, Callable, Iterable, List, NamedTuple, Optional, Sequence, Tuple

from ..durability.folders import check_folder
from ..durability.stores import store_location

__all__ = ["Inbox", "Row", "NewMessage", "store_path", "start_in"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS remote_messages (
    message_id TEXT PRIMARY KEY,
    client     TEXT NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('accepted', 'started', 'done', 'published')),
    due        REAL NOT NULL,
    received   REAL NOT NULL,
    started    REAL,
    body       BLOB,
    response   BLOB
);
CREATE INDEX IF NOT EXISTS remote_messages_open ON remote_messages (state)
    WHERE state != 'published';
"""
#: How long a write waits for another connection (a hard task's process).
_BUSY_TIMEOUT_MS = 10_000
#: UPDATE ... RETURNING (SQLite 3.35): start a row and read it in one statement.
_RETURNING = sqlite3.sqlite_version_info >= (3, 35)


class NewMessage(NamedTuple):
    """A verified message to store: accepted, or done at once (overdue)."""

    message_id: str
    client: str
    due: float
    body: bytes
    response: Optional[bytes] = None


class Row(NamedTuple):
    """An unfinished row, as recovery reads it."""

    message_id: str
    client: str
    state: str
    due: float
    started: Optional[float]
    body: Optional[bytes]
    response: Optional[bytes]


def store_path(store: str) -> str:
    """The absolute path of the file a ``sqlite:///relative.db`` /
    ``sqlite:////absolute.db`` URL or a plain path names (as every ``store=``
    reads it: :func:`~pysched_lightning.durability.stores.store_location`)."""
    if not isinstance(store, (str, os.PathLike)):
        raise TypeError(f"store must be a 'sqlite:///' URL or a path, got {store!r}")
    text = os.fspath(store)
    if not text or text == ":memory:":
        raise ValueError(f"store must name a file (the service's state must survive a "
                         f"restart), got {store!r}")
    location = store_location(text)
    if "://" in location:
        raise ValueError(f"store must be a 'sqlite:///FILE' URL or a path, got {store!r}")
    return location


def _connect(path: str, fsync: bool) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                         timeout=_BUSY_TIMEOUT_MS / 1000)
    db.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
    db.execute("PRAGMA journal_mode = WAL")
    # NORMAL in WAL mode: a commit survives the process dying (even SIGKILL);
    # FULL also survives the machine losing power, at one fsync per commit.
    db.execute(f"PRAGMA synchronous = {'FULL' if fsync else 'NORMAL'}")
    return db


class Inbox:
    """The rows of one service, in the SQLite file *path*, locked for this process."""

    #: One service per file (the lock), so its consumer is exclusive.
    shared = False

    def __init__(self, path: str, fsync: bool = False) -> None:
        self.path = path
        self.location = path
        self.fsync = fsync
        check_folder(os.path.abspath(path), "the store")
        self._lockfile = _lock(path + ".lock")
        try:
            self._db = _connect(path, fsync)
            self._db.executescript(_SCHEMA)
        except BaseException:
            self._lockfile.close()
            raise
        self._db_lock = threading.Lock()  # guards self._db: one statement batch at a time

    def accept(self, messages: Sequence[NewMessage]) -> List[bool]:
        """Store *messages* in one transaction; for each, True if it was new."""
        now = time.time()
        fresh = []
        with self._db_lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                for m in messages:
                    cursor = db.execute(
                        "INSERT OR IGNORE INTO remote_messages (message_id, client, state, due,"
                        " received, body, response) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (m.message_id, m.client, "accepted" if m.response is None else "done",
                         m.due, now, m.body, m.response))
                    fresh.append(cursor.rowcount == 1)
                db.execute("COMMIT")
            except BaseException:
                _rollback(db)
                raise
        return fresh

    def start(self, message_id: str, started: float) -> Optional[bytes]:
        """accepted -> started, committed; the stored body, or None if the
        row was not accepted (it is not to be run)."""
        with self._db_lock:
            return _start(self._db, message_id, started)

    def starter(self) -> Callable[[str, float], Optional[bytes]]:
        """:meth:`start` for another process (a hard task's): picklable."""
        return functools.partial(start_in, self.path, self.fsync)

    def recover(self, on_adopted: Callable[[List[Row]], None]) -> List[Row]:
        """The rows to resume after a start: every unfinished one (no other
        service shares the file, so nothing is adopted later)."""
        return self.unfinished()

    def mark_done(self, outcomes: Iterable[Tuple[str, bytes]],
                  published: Sequence[str] = ()) -> List[bool]:
        """Store responses (accepted or started -> done); for each, True if
        stored. Rows in *published* are marked published in the same commit."""
        stored = []
        with self._db_lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                for message_id, response in outcomes:
                    cursor = db.execute(
                        "UPDATE remote_messages SET state = 'done', response = ? "
                        "WHERE message_id = ? AND state IN ('accepted', 'started')",
                        (response, message_id))
                    stored.append(cursor.rowcount == 1)
                _published(db, published)
                db.execute("COMMIT")
            except BaseException:
                _rollback(db)
                raise
        return stored

    def mark_published(self, message_ids: Sequence[str]) -> None:
        """done -> published; the body and response are dropped, the id is kept."""
        with self._db_lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                _published(db, message_ids)
                db.execute("COMMIT")
            except BaseException:
                _rollback(db)
                raise

    def unfinished(self) -> List[Row]:
        """Every row not yet published, oldest first."""
        with self._db_lock:
            rows = self._db.execute(
                "SELECT message_id, client, state, due, started, body, response "
                "FROM remote_messages WHERE state != 'published' ORDER BY received").fetchall()
        return [Row(*row) for row in rows]

    def runnable(self, message_id: str) -> Optional[Row]:
        """The row of *message_id* if it is accepted (to be run), else None."""
        with self._db_lock:
            row = self._db.execute(
                "SELECT message_id, client, state, due, started, body, response "
                "FROM remote_messages WHERE message_id = ? AND state = 'accepted'",
                (message_id,)).fetchone()
        return None if row is None else Row(*row)

    def state(self, message_id: str) -> Optional[str]:
        with self._db_lock:
            row = self._db.execute("SELECT state FROM remote_messages WHERE message_id = ?",
                                   (message_id,)).fetchone()
        return row[0] if row else None

    def client_of(self, message_id: str) -> Optional[str]:
        """The client whose message was stored under *message_id*, if any."""
        with self._db_lock:
            row = self._db.execute("SELECT client FROM remote_messages WHERE message_id = ?",
                                   (message_id,)).fetchone()
        return row[0] if row else None

    def close(self) -> None:
        with self._db_lock:
            self._db.close()
        self._lockfile.close()  # releases the lock

    def __repr__(self) -> str:
        return f"<Inbox {self.path!r}>"


def start_in(path: str, fsync: bool, message_id: str, started: float) -> Optional[bytes]:
    """:meth:`Inbox.start` from another process (a hard task's own)."""
    db = _connect(path, fsync)
    try:
        return _start(db, message_id, started)
    finally:
        db.close()


def _start(db: sqlite3.Connection, message_id: str, started: float) -> Optional[bytes]:
    # Autocommit: the update is committed when the statement is done.
    if _RETURNING:
        row = db.execute("UPDATE remote_messages SET state = 'started', started = ? "
                         "WHERE message_id = ? AND state = 'accepted' RETURNING body",
                         (started, message_id)).fetchone()
        return None if row is None else bytes(row[0])
    cursor = db.execute("UPDATE remote_messages SET state = 'started', started = ? "
                        "WHERE message_id = ? AND state = 'accepted'", (started, message_id))
    if cursor.rowcount != 1:
        return None
    row = db.execute("SELECT body FROM remote_messages WHERE message_id = ?",
                     (message_id,)).fetchone()
    return bytes(row[0])


def _published(db: sqlite3.Connection, message_ids: Sequence[str]) -> None:
    if message_ids:
        db.executemany("UPDATE remote_messages SET state = 'published', body = NULL, "
                       "response = NULL WHERE message_id = ? AND state = 'done'",
                       [(message_id,) for message_id in message_ids])


def _rollback(db: sqlite3.Connection) -> None:
    try:
        db.execute("ROLLBACK")
    except sqlite3.Error:
        pass  # no transaction left to roll back


def _lock(path: str) -> IO[str]:
    """An exclusive OS lock on *path*, held while the file stays open."""
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise RuntimeError(f"the store {path[:-5]!r} is in use by {holder} "
                           "(one service per store)") from None
    except BaseException:
        handle.close()
        raise
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}\n")
    handle.flush()
    return handle
