"""Leaving a WAL-mode SQLite file as a reader found it.

A WAL file's ``-wal`` and ``-shm`` files are made by whoever reads it first
and folded back (checkpointed) and removed by the last connection to close,
but only by one that may write: a ``mode=ro`` reader leaves them behind,
and when the writer closed while the reader was still open, the committed
changes stay in the ``-wal`` file alone. So a reader, once closed, opens the
file again writable but asking nothing that writes, and closes at once: if
it is the last connection, SQLite folds the WAL into the file and removes
both; if a writer is still open, the files are the writer's and stay.
"""
from __future__ import annotations

import logging
import os
import sqlite3
import urllib.parse

__all__ = ["fold_wal"]

_log = logging.getLogger("pysched_lightning.durability")

#: How long the fold waits for another connection's lock, in seconds.
_WAIT = 1.0


def fold_wal(path: str) -> None:
    """Fold *path*'s WAL back into it and remove ``-wal`` and ``-shm`` when
    no other connection has the file open (nothing happens otherwise, nor
    when this process may not write the file or its folder)."""
    if not (os.path.exists(path + "-wal") or os.path.exists(path + "-shm")):
        return
    if not (os.access(path, os.W_OK) and os.access(os.path.dirname(path) or ".", os.W_OK)):
        return
    uri = "file:" + urllib.parse.quote(path) + "?mode=rw"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=_WAIT, isolation_level=None)
        try:
            conn.execute("PRAGMA query_only = ON")  # this connection never changes a row
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # opens the WAL
        finally:
            conn.close()  # the last connection's close folds the WAL and removes it
    except sqlite3.Error as exc:
        _log.debug("could not fold the WAL of %s back: %s", path, exc)
