"""What the service needs of its inbox, and which one a store URL names.

``postgresql://`` and ``postgres://`` URLs name a PostgreSQL inbox, shared
by every instance of a service name (they consume the request queue
together); anything else is a SQLite file, one service per file (its
consumer is exclusive). Both keep the same rows and states (inbox.py).
"""
from __future__ import annotations

import urllib.parse
from typing import Any, Callable, Iterable, List, Optional, Protocol, Sequence, Tuple

from ..records.errors import install_hint
from .inbox import Inbox, NewMessage, Row, store_path

__all__ = ["InboxStore", "open_inbox", "store_location", "is_postgres_url", "redacted_url",
           "DEFAULT_LEASE"]

#: Seconds a PostgreSQL inbox's registration holds without renewal: how long
#: the other instances wait before they take over a silent one's messages.
DEFAULT_LEASE = 10.0


class InboxStore(Protocol):
    """The durable rows of a service's messages (see inbox.py for the states)."""

    #: True when several instances of one service name share it.
    shared: bool
    #: Where it is, for log lines (no password).
    location: str

    def accept(self, messages: Sequence[NewMessage]) -> List[bool]: ...

    def start(self, message_id: str, started: float) -> Optional[bytes]: ...

    def starter(self) -> Callable[[str, float], Optional[bytes]]: ...

    def mark_done(self, outcomes: Iterable[Tuple[str, bytes]],
                  published: Sequence[str] = ()) -> List[bool]: ...

    def mark_published(self, message_ids: Sequence[str]) -> None: ...

    def recover(self, on_adopted: Callable[[List[Row]], None]) -> List[Row]: ...

    def runnable(self, message_id: str) -> Optional[Row]: ...

    def state(self, message_id: str) -> Optional[str]: ...

    def client_of(self, message_id: str) -> Optional[str]: ...

    def close(self) -> None: ...


def is_postgres_url(store: Any) -> bool:
    """True for a ``postgresql://`` or ``postgres://`` URL."""
    return isinstance(store, str) and store.startswith(("postgresql://", "postgres://"))


def redacted_url(url: str) -> str:
    """*url* without its password (in the user part or the query), for logs."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = netloc.replace(f":{parts.password}@", ":***@", 1)
    query = "&".join("password=***" if item.lower().startswith("password=") else item
                     for item in parts.query.split("&")) if parts.query else ""
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))


def store_location(store: Any) -> str:
    """The checked *store*, as log lines show it: a PostgreSQL URL without
    its password, or a SQLite file's path."""
    if is_postgres_url(store):
        if not store.split("://", 1)[1]:
            raise ValueError(f"store must name a PostgreSQL database, got {store!r}")
        return redacted_url(store)
    return store_path(store)


def open_inbox(store: str, name: str, *, fsync: bool = False,
               lease: float = DEFAULT_LEASE) -> InboxStore:
    """The inbox *store* names: PostgreSQL (shared by the instances of
    *name*, each holding a *lease* of that many seconds) or SQLite."""
    if is_postgres_url(store):
        try:
            from .pg_inbox import PgInbox
        except ImportError as exc:
            raise RuntimeError(f"a PostgreSQL store needs psycopg "
                               f"({install_hint('postgres')}): {exc}") from None
        return PgInbox(store, name, lease)
    return Inbox(store_path(store), fsync)
