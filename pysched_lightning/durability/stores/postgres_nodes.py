"""A node's link to the other nodes sharing a PostgreSQL store: its
registration and lease, the database's clock, and the changes others commit.

These run on a connection of their own (``_side``), so a heartbeat never
waits behind the store's batches; ``wait_for_change`` listens on a third.
Lease times are the database's, never this host's clock.
"""
from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

import psycopg

from . import postgres_sql as sql
from .postgres_connect import connect
from .postgres_controls import CONTROL_CHANNEL
from .rules import check_key
from .urls import hide_password

__all__ = ["NodeLink"]

#: How often a waiting ``wait_for_change`` looks whether the store was closed.
_WAKE_CHECK = 0.1


class NodeLink:
    """This node among the nodes of the database *url*, with leases of
    *lease* seconds (the base of :class:`~.postgres.PostgresStore`)."""

    def __init__(self, url: str, lease: float, read_only: bool) -> None:
        if not isinstance(url, str):
            raise TypeError(f"a PostgreSQL store needs a URL str, not {url!r}")
        if isinstance(lease, bool) or not isinstance(lease, (int, float)) or \
                not 0 < lease < float("inf"):
            raise ValueError(f"lease must be a number of seconds > 0, not {lease!r}")
        self._url = url
        #: The URL, without its password.
        self.url = hide_password(url)
        #: Seconds a node's lease lasts after each acquire() or renew().
        self.lease = float(lease)
        #: True for a reader that never writes (a dashboard beside the schedulers).
        self.read_only = bool(read_only)
        #: Set when a claim or a renew() found this node's lease lost: the
        #: node must acquire() again (a new epoch) before it claims.
        self.lost_lease = False
        self._node: Tuple[Optional[str], Optional[int]] = (None, None)  # (owner, epoch)
        self._closed = threading.Event()
        self._side_lock = threading.Lock()  # leases, clock, changes
        self._side: Optional["psycopg.Connection[Any]"] = None
        self._listen_lock = threading.Lock()
        self._listener: Optional["psycopg.Connection[Any]"] = None
        #: A node joined or left since nodes_changed() was last asked (or
        #: nobody listened: any may have).
        self._nodes_changed = True

    @property
    def owner(self) -> Optional[str]:
        """The owner given to the last acquire(), or None."""
        return self._node[0]

    @property
    def epoch(self) -> Optional[int]:
        """This node's epoch while registered (acquire() to release()), else None."""
        return self._node[1]

    def _on_side(self, statement: str, params: Any = None) -> List[Tuple[Any, ...]]:
        """The rows of *statement* on the side connection (its own transaction)."""
        with self._side_lock:
            if self._closed.is_set():
                raise RuntimeError(f"the store {self.url} is closed")
            if self._side is None or self._side.broken:
                self._side = connect(self._url, self.url, read_only=self.read_only,
                                     idle_limit=self.lease)
            cursor = self._side.execute(statement, params)
            return cursor.fetchall() if cursor.description else []

    def _fence(self) -> Dict[str, Any]:
        owner, epoch = self._node
        return {"owner": owner if epoch is not None else None, "epoch": epoch}

    # -- nodes and leases -----------------------------------------------------------

    def acquire(self, owner: str, wait: bool = False) -> bool:
        """Register this node as *owner*, with a new epoch and a lease of
        ``lease`` seconds; always True (every node is active)."""
        owner = check_key(owner, "an owner")
        if self.read_only:
            raise PermissionError(f"the store {self.url} is open read-only: it cannot be "
                                  f"held by {owner!r}")
        [(epoch, _)] = self._on_side(sql.ACQUIRE, {"owner": owner, "lease": self.lease,
                                                 "host": socket.gethostname(),
                                                 "pid": os.getpid()})
        self._node = (owner, int(epoch))
        self.lost_lease = False
        return True

    def renew(self) -> bool:
        """Extend this node's lease; False if it was lost (expired, or reaped
        by another node): then acquire() again for a new epoch."""
        owner, epoch = self._node
        if epoch is None:
            return False
        if self._on_side(sql.RENEW, {"owner": owner, "epoch": epoch, "lease": self.lease}):
            return True
        self.lost_lease = True
        return False

    def holder(self) -> Optional[str]:
        """None: every node is active, none holds the store alone."""
        return None

    def release(self) -> None:
        """Unregister this node (nothing if it is not registered)."""
        owner, epoch = self._node
        if epoch is None:
            return
        self._node = (owner, None)
        self._on_side(sql.RELEASE, {"owner": owner, "epoch": epoch})

    def nodes(self) -> List[Dict[str, Any]]:
        """The live nodes: owner, epoch, host, pid, joined, lease_until (POSIX seconds)."""
        return [dict(zip(sql.NODE_FIELDS, row)) for row in self._on_side(sql.NODES)]

    def nodes_changed(self) -> bool:
        """True when a node joined or left since the last call (as heard by
        ``wait_for_change``; True too until it listens)."""
        changed, self._nodes_changed = self._nodes_changed, False
        return changed

    def now(self) -> float:
        """The database's time, in POSIX seconds (the clock of every lease)."""
        return float(self._on_side(sql.NOW)[0][0])

    # -- changes --------------------------------------------------------------------

    def changes_since(self, seq: int) -> Tuple[int, List[Tuple[int, str, str]]]:
        """The newest change number and the changes after *seq* (seq,
        task_id, kind), oldest first. Numbers follow commit order, so a
        reader never skips a change committed later under a lower number."""
        if isinstance(seq, bool) or not isinstance(seq, int):
            raise TypeError(f"seq must be an int, not {seq!r}")
        rows = [(int(s), str(t), str(k)) for s, t, k in self._on_side(sql.CHANGES_SINCE, (seq,))]
        return (rows[-1][0] if rows else seq), rows

    def last_change(self) -> int:
        """The newest change's number (0 when there is none)."""
        return int(self._on_side(sql.LAST_CHANGE)[0][0])

    def wait_for_change(self, timeout: float) -> bool:
        """Block until a change is committed, by any node (this one too), or
        one came since the last call (True), or *timeout* seconds pass
        (False; 0 only polls). The first call starts listening and returns
        True at once: a change may have come before it listened. close()
        ends a wait within ~0.1 s."""
        deadline = time.monotonic() + max(0.0, float(timeout))
        with self._listen_lock:
            if self._closed.is_set():
                return False
            if self._listener is None or self._listener.broken:
                self._listener = connect(self._url, self.url, read_only=False)
                for listen in sql.LISTEN:
                    self._listener.execute(listen)
                self._nodes_changed = True
                return True
            while True:
                left = max(0.0, deadline - time.monotonic())
                for notice in self._listener.notifies(timeout=min(left, _WAKE_CHECK),
                                                      stop_after=1):
                    if notice.channel != CONTROL_CHANNEL:
                        if notice.payload == sql.NODES_PAYLOAD:
                            self._nodes_changed = True
                        return True
                    self._control_heard()  # a control request: its taker wakes
                if left == 0 or self._closed.is_set():
                    return False

    def _control_heard(self) -> None:
        """A control request was written (see the store's ``listen_control``)."""

    def _close_links(self) -> None:
        """Close the side and listening connections (a wait ends within
        ~0.1 s: it sees ``_closed``)."""
        self._closed.set()
        with self._side_lock:
            if self._side is not None:
                self._side.close()
        with self._listen_lock:
            if self._listener is not None:
                self._listener.close()
