"""The service's durable state in PostgreSQL, shared by the services of one name.

The rows and their states are the SQLite inbox's (inbox.py): accepted ->
started -> done -> published, keyed by (service name, message id), so a
message is recognised whichever instance it reaches, however often. Each
row also names the instance that owns it: owner id + epoch, one
registration in ``remote_services``. An instance holds a lease there
(``lease_until``, in the database's time) that its thread renews every
lease/3. Once a lease has lapsed, one surviving instance (the one holding
the name's advisory lock) deletes that registration and adopts its rows in
the same transaction: it runs the accepted ones, answers the started ones
"interrupted" (they may have run in part) and publishes the done ones.

Fencing: every write of a row is conditional on the row being this
instance's under a registration that still exists; row locks order it
with an adoption. So an instance whose lease was taken (it stalled, or
lost the database) can neither start a message nor overwrite an outcome:
it logs that it lost its lease, registers again, and goes on with new
messages. The tables and the statements are pg_sql.py's.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import psycopg

from . import pg_sql as sql
from .inbox import NewMessage, Row
from .inboxes import DEFAULT_LEASE, is_postgres_url, redacted_url

__all__ = ["PgInbox", "LeaseLost", "pg_start_in"]

_log = logging.getLogger("pysched_lightning.remote")

_CONNECT_TIMEOUT = 10


class LeaseLost(RuntimeError):
    """This instance's registration was taken over; it registers again."""


class _Connection:
    """One connection, used by one thread at a time, made again once it broke."""

    def __init__(self, url: str, idle_limit: float) -> None:
        self._url = url
        self._idle_limit = idle_limit
        self._lock = threading.Lock()  # guards _conn: one statement or transaction at a time
        self._conn: Optional[psycopg.Connection[Any]] = None

    @contextlib.contextmanager
    def use(self) -> Iterator[psycopg.Connection[Any]]:
        with self._lock:
            conn = self._conn
            if conn is None or conn.closed or conn.broken:
                if conn is not None:
                    conn.close()
                self._conn = None
                conn = self._conn = _connect(self._url, self._idle_limit)
            yield conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _connect(url: str, idle_limit: Optional[float] = None) -> psycopg.Connection[Any]:
    """An autocommit connection; with *idle_limit* (seconds), the server ends a
    transaction left open that long (an instance stalled in the middle of
    one): its row locks must not keep the others from adopting its rows."""
    conn = psycopg.connect(url, autocommit=True, connect_timeout=_CONNECT_TIMEOUT,
                           application_name="pysched service")
    if idle_limit is not None:
        conn.execute("SELECT set_config('idle_in_transaction_session_timeout', %s, false)",
                     (str(max(1, int(idle_limit * 1000))),))
    return conn


class PgInbox:
    """The rows of the service *name* in the PostgreSQL database at *url*,
    shared with the other instances of that name; *lease* in seconds."""

    shared = True

    def __init__(self, url: str, name: str, lease: float = DEFAULT_LEASE) -> None:
        if not is_postgres_url(url):
            raise ValueError(f"store must be a postgresql:// URL, got {url!r}")
        if isinstance(lease, bool) or not isinstance(lease, (int, float)) \
                or not 0 < lease < 1e6:
            raise ValueError(f"lease must be a number of seconds > 0, got {lease!r}")
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty str, got {name!r}")
        self.url = url
        self.name = name
        self.lease = float(lease)
        self.location = redacted_url(url)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self._main = _Connection(url, lease)  # accept, start, outcomes: any thread, one at a time
        self._leasing = _Connection(url, lease)  # renewal and adoption
        try:
            with self._main.use() as db:
                _create_tables(db)
                self._epoch = self._register(db)  # written by the lease thread after this
        except psycopg.OperationalError as exc:
            self._main.close()
            raise ConnectionError(f"cannot use the PostgreSQL store {self.location}: "
                                  f"{exc}".rstrip()) from None
        except psycopg.Error as exc:  # e.g. no right to make the tables
            self._main.close()
            raise RuntimeError(f"cannot use the PostgreSQL store {self.location}: "
                               f"{exc}".rstrip()) from None
        except BaseException:
            self._main.close()
            raise
        self._on_adopted: Optional[Callable[[List[Row]], None]] = None
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._keep_lease, daemon=True,
                                        name=f"pysched-lease-{name}")
        self._thread.start()

    def __repr__(self) -> str:
        return f"<PgInbox {self.name!r} {self.owner} at {self.location}>"

    @property
    def epoch(self) -> int:
        return self._epoch

    # ------------------------------------------------------------- the messages

    def accept(self, messages: Sequence[NewMessage]) -> List[bool]:
        """Store *messages* in one transaction; for each, True if it was new
        (to this service name: whichever instance stored it first)."""
        first: Dict[str, NewMessage] = {}
        for m in messages:  # a second copy in one batch is not new
            first.setdefault(m.message_id, m)
        batch = list(first.values())
        now, epoch = time.time(), self._epoch
        if not batch:
            return []
        with self._main.use() as db, db.transaction():
            # Shared: an adoption (which deletes the registration) waits for
            # this commit, then takes these rows too.
            if db.execute(sql.REGISTERED_FOR_SHARE, (self.owner, epoch)).fetchone() is None:
                raise LeaseLost(f"service {self.name!r}: instance {self.owner} lost its "
                                "lease; it stores new messages once registered again")
            stored = {row[0] for row in db.execute(sql.ACCEPT, {
                "name": self.name, "now": now, "owner": self.owner, "epoch": epoch,
                "ids": [m.message_id for m in batch], "clients": [m.client for m in batch],
                "states": ["accepted" if m.response is None else "done" for m in batch],
                "dues": [float(m.due) for m in batch], "bodies": [m.body for m in batch],
                "responses": [m.response for m in batch]}).fetchall()}
        fresh = []
        for m in messages:
            fresh.append(first.get(m.message_id) is m and m.message_id in stored)
        return fresh

    def start(self, message_id: str, started: float) -> Optional[bytes]:
        """accepted -> started, if the row is this instance's; the stored
        body, or None if it is not to be run here."""
        with self._main.use() as db:
            body = _start(db, self.name, self.owner, message_id, started)
            if body is None:
                self._explain(db, [message_id], "not run here")
        return body

    def starter(self) -> Callable[[str, float], Optional[bytes]]:
        """:meth:`start` for another process (a hard task's): picklable."""
        return functools.partial(pg_start_in, self.url, self.name, self.owner)

    def mark_done(self, outcomes: Iterable[Tuple[str, bytes]],
                  published: Sequence[str] = ()) -> List[bool]:
        """Store responses (accepted or started -> done) of this instance's
        rows; for each, True if stored. Rows in *published* are marked
        published in the same transaction."""
        pairs = list(outcomes)
        with self._main.use() as db:
            with db.transaction():
                stored = set()
                if pairs:
                    stored = {row[0] for row in db.execute(sql.DONE, {
                        "name": self.name, "owner": self.owner,
                        "ids": [message_id for message_id, _ in pairs],
                        "responses": [response for _, response in pairs]}).fetchall()}
                self._published(db, published)
            missing = [message_id for message_id, _ in pairs if message_id not in stored]
            if missing:
                self._explain(db, missing, "its response is not stored")
        return [message_id in stored for message_id, _ in pairs]

    def mark_published(self, message_ids: Sequence[str]) -> None:
        """done -> published; the body and response are dropped, the id is kept."""
        with self._main.use() as db:
            self._published(db, message_ids)

    def _published(self, db: psycopg.Connection[Any], message_ids: Sequence[str]) -> None:
        if message_ids:
            db.execute(sql.PUBLISHED, {"name": self.name, "owner": self.owner,
                                       "ids": list(message_ids)})

    def unfinished(self) -> List[Row]:
        """Every row of this service name not yet published (any instance's), oldest first."""
        with self._main.use() as db:
            rows = db.execute(sql.UNFINISHED, (self.name,)).fetchall()
        return _rows(rows)

    def runnable(self, message_id: str) -> Optional[Row]:
        """The row of *message_id* if it is accepted and this instance's to run."""
        with self._main.use() as db:
            rows = db.execute(sql.RUNNABLE, {"name": self.name, "id": message_id,
                                             "owner": self.owner}).fetchall()
        found = _rows(rows)
        return found[0] if found else None

    def state(self, message_id: str) -> Optional[str]:
        return self._column("state", message_id)

    def client_of(self, message_id: str) -> Optional[str]:
        """The client whose message was stored under *message_id*, if any."""
        return self._column("client", message_id)

    def _column(self, column: str, message_id: str) -> Optional[str]:
        with self._main.use() as db:
            row = db.execute(sql.COLUMN.format(column), (self.name, message_id)).fetchone()
        return row[0] if row and isinstance(row[0], str) else None

    def _explain(self, db: psycopg.Connection[Any], message_ids: List[str], what: str) -> None:
        """Log the rows among *message_ids* that another instance owns now."""
        taken = db.execute(sql.TAKEN, {"name": self.name, "owner": self.owner,
                                       "ids": message_ids}).fetchall()
        if taken:
            _log.warning("service %r: message(s) %s are another instance's now, not this "
                         "one's (%s: its lease lapsed and they were taken over); %s",
                         self.name, [row[0] for row in taken], self.owner, what)

    # ------------------------------------------------------------- the lease

    def recover(self, on_adopted: Callable[[List[Row]], None]) -> List[Row]:
        """The rows to resume now: those of instances whose lease lapsed (or
        that stopped). From now on the lease thread hands the rows it adopts
        later to *on_adopted* (never under a lock of this inbox)."""
        rows = self.adopt()
        self._on_adopted = on_adopted
        return rows

    def adopt(self) -> List[Row]:
        """Take over the rows of lapsed or stopped instances of this name, in
        one transaction, unless another instance is doing so right now."""
        with self._leasing.use() as db:
            with db.transaction():
                locked = db.execute(sql.TRY_ADOPT_LOCK,
                                    (sql.ADOPT_LOCK_CLASS, self.name)).fetchone()
                if not locked or not locked[0]:
                    return []  # another instance adopts now; the next round sees the rest
                me = {"name": self.name, "owner": self.owner, "epoch": self._epoch}
                if db.execute(sql.REGISTERED, me).fetchone() is None:
                    return []  # taken over itself: the renewal says so and registers again
                lapsed = db.execute(sql.DELETE_LAPSED, me).fetchall()
                # Rows whose registration is gone (lapsed, or deleted at a clean stop).
                rows = _rows(db.execute(sql.ADOPT, me).fetchall())
        if lapsed:
            _log.warning("service %r: instance(s) %s let their lease lapse; instance %s "
                         "takes over their %d unfinished message(s)", self.name,
                         sorted(row[0] for row in lapsed), self.owner, len(rows))
        elif rows:
            _log.info("service %r: instance %s takes over %d unfinished message(s) left by "
                      "stopped instances", self.name, self.owner, len(rows))
        return rows

    def renew(self) -> bool:
        """Extend this instance's lease; if it was taken over, register again
        (a new epoch) and return False."""
        with self._leasing.use() as db:
            late = db.execute(sql.RENEW, {"lease": self.lease, "owner": self.owner,
                                          "epoch": self._epoch}).fetchone()
            if late is not None:
                seconds = _number(late[0])
                if seconds is not None and seconds > 0:  # nobody took it meanwhile
                    _log.warning("service %r: instance %s renewed its lease %.1f s after it "
                                 "lapsed (this process or the database stalled)", self.name,
                                 self.owner, seconds)
                return True
            _log.warning("service %r: instance %s lost its lease (it stalled or lost the "
                         "database for over %g s) and its messages were taken over by "
                         "another instance; it no longer runs or answers them, and registers "
                         "again", self.name, self.owner, self.lease)
            self._epoch = self._register(db)
        return False

    def _register(self, db: psycopg.Connection[Any]) -> int:
        row = db.execute(sql.REGISTER, (self.owner, self.name, socket.gethostname(),
                                        os.getpid(), self.lease)).fetchone()
        if row is None or not isinstance(row[0], int):
            raise RuntimeError(f"registering service {self.name!r} returned {row!r}")
        return row[0]

    def _keep_lease(self) -> None:
        while not self._closing.wait(self.lease / 3):
            try:
                self.renew()
                callback = self._on_adopted
                rows = self.adopt() if callback is not None else []
            except Exception as exc:  # the database went away: try again next round
                _log.warning("service %r: renewing the lease of instance %s failed (the "
                             "next try is in %g s): %s", self.name, self.owner,
                             self.lease / 3, exc)
                continue
            if rows and callback is not None:
                try:
                    callback(rows)
                except Exception:
                    _log.exception("service %r: resuming adopted messages failed", self.name)

    def close(self) -> None:
        """Stop renewing and deregister: this instance's unfinished rows (not
        yet due, or not yet published) go to the next instance that adopts."""
        self._closing.set()
        if self._thread is not threading.current_thread():
            self._thread.join()
        try:
            with self._main.use() as db:
                db.execute(sql.DEREGISTER, (self.owner, self._epoch))
        except psycopg.Error as exc:  # its lease lapses instead
            _log.warning("service %r: instance %s could not deregister: %s", self.name,
                         self.owner, exc)
        finally:
            self._main.close()
            self._leasing.close()


def pg_start_in(url: str, name: str, owner: str, message_id: str,
                started: float) -> Optional[bytes]:
    """:meth:`PgInbox.start` from another process (a hard task's own)."""
    with _connect(url) as db:
        return _start(db, name, owner, message_id, started)


def _start(db: psycopg.Connection[Any], name: str, owner: str, message_id: str,
           started: float) -> Optional[bytes]:
    row = db.execute(sql.START, {"name": name, "owner": owner, "id": message_id,
                                 "started": started}).fetchone()
    if row is None:
        return None
    if not isinstance(row[0], (bytes, memoryview)):
        raise RuntimeError(f"message {message_id!r} has no stored body (got {type(row[0])!r})")
    return bytes(row[0])


def _create_tables(db: psycopg.Connection[Any]) -> None:
    """The tables, made once even when several instances start together."""
    with db.transaction():
        db.execute(sql.LOCK_SCHEMA, sql.SCHEMA_LOCK)
        for statement in sql.SCHEMA:
            db.execute(statement)


def _rows(rows: Iterable[Tuple[Any, ...]]) -> List[Row]:
    """Rows read from the database, checked; a malformed one is logged and left."""
    good = []
    for values in sorted(rows, key=lambda values: _number(values[7]) or 0.0):  # by seq
        message_id, client, state, due, started, body, response, _ = values
        needs = {"accepted": body, "started": True, "done": response}.get(state)
        if not isinstance(message_id, str) or not isinstance(client, str) \
                or _number(due) is None or needs is None:
            _log.error("remote_messages: a malformed row left as it is: %r",
                       (message_id, client, state, due))
            continue
        good.append(Row(message_id, client, state, float(due), _number(started),
                        None if body is None else bytes(body),
                        None if response is None else bytes(response)))
    return good


def _number(value: Any) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else None


