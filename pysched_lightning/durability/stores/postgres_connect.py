"""Connections to a PostgreSQL store, with errors that say where they went."""
from __future__ import annotations

from typing import Any, Dict, Optional

import psycopg
from psycopg import conninfo

__all__ = ["connect", "where"]

#: Seconds a connection attempt may take, unless the URL says otherwise.
CONNECT_TIMEOUT = 10


def where(url: str, shown: str) -> Dict[str, Any]:
    """The host, port and database *url* names (ValueError if malformed)."""
    try:
        params = conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise ValueError(f"store {shown!r} is not a valid PostgreSQL URL: "
                         f"{_hidden(str(exc), url)}") from None
    return params


def connect(url: str, shown: str, *, read_only: bool,
            idle_limit: Optional[float] = None) -> "psycopg.Connection[Any]":
    """An autocommit connection to *url*; read-only ones refuse every write
    (PostgreSQL's read-only transactions). Errors name the host, port and
    database, never the password. With *idle_limit* (seconds), the server
    ends a transaction left open that long (a node paused, or cut off, in
    the middle of one): its row locks must not stop the other nodes for
    longer than its lease."""
    params = where(url, shown)
    extra: Dict[str, Any] = {}
    if "connect_timeout" not in params:
        extra["connect_timeout"] = CONNECT_TIMEOUT
    try:
        conn = psycopg.connect(url, autocommit=True, **extra)
    except psycopg.Error as exc:
        host = params.get("host") or params.get("hostaddr") or "localhost"
        raise psycopg.OperationalError(
            f"cannot connect to the PostgreSQL store {shown} (host {host}, port "
            f"{params.get('port') or 5432}, database {params.get('dbname') or '(default)'}): "
            f"{_hidden(str(exc).strip(), url)}") from None
    try:
        if read_only:
            conn.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        if idle_limit is not None:
            conn.execute("SELECT set_config('idle_in_transaction_session_timeout', %s, false)",
                         (str(max(1, int(idle_limit * 1000))),))
    except BaseException:
        conn.close()
        raise
    return conn


def _hidden(message: str, url: str) -> str:
    """*message* without the password of *url*, should a driver quote it."""
    try:
        password = conninfo.conninfo_to_dict(url).get("password")
    except psycopg.Error:
        return message
    return message.replace(str(password), "***") if password else message
