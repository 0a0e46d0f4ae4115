"""Where tasks and runs are kept: the store protocol, its stores (memory,
SQLite, PostgreSQL), and :func:`open_store` to make one from
``Scheduler(store=...)``."""
from __future__ import annotations

import os
import re
from typing import Any, Optional

from ...records.protocols import (RUN_FIELDS, STATUS_NAMES, ClaimLostError, Store,
                                  StoreLockedError, TaskRecord)
from .memory import MemoryStore
from .sqlite import SQLiteStore
from .urls import hide_password

__all__ = ["Store", "TaskRecord", "RUN_FIELDS", "STATUS_NAMES", "StoreLockedError",
           "ClaimLostError", "SQLiteStore", "MemoryStore", "open_store", "sqlite_path",
           "is_shared"]

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
SUPPORTED = ("'sqlite:///relative/path.db', 'sqlite:////absolute/path.db', "
             "'postgresql://user@host:5432/database', 'memory://' or a file path")


def open_store(spec: Any, *, read_only: bool = False,
               control: bool = False) -> Optional[Store]:
    """The store *spec* names.

    * ``None``: None (the scheduler keeps everything in memory, no store);
    * an object with the store methods: itself;
    * ``'sqlite:///jobs.db'``: a :class:`SQLiteStore` at ``jobs.db``, relative
      to the working directory; ``'sqlite:////var/lib/jobs.db'`` (four
      slashes): the absolute path (SQLAlchemy's convention);
    * ``'memory://'``: a new :class:`MemoryStore`;
    * ``'postgresql://user:password@host:5432/database'`` (or ``postgres://``):
      a :class:`~.postgres.PostgresStore`, shared by several schedulers
      (needs psycopg: ``pip install '.[postgres]'``);
    * any other str or :class:`os.PathLike`: a :class:`SQLiteStore` at that path.

    With *read_only*, a SQLite file is opened for reading only (it must
    exist: FileNotFoundError otherwise), a PostgreSQL store in read-only
    transactions (its schema must exist), and ``'memory://'`` is refused,
    since a new memory store has nothing to read. With *control* too, the
    store may write control requests and nothing else (a dashboard's
    actions; see :class:`SQLiteStore`).

    Raises ValueError for another URL scheme or a malformed URL, TypeError
    for another type; the message names the value (without a URL's password).
    """
    if spec is None:
        return None
    if isinstance(spec, os.PathLike):
        return SQLiteStore(spec, read_only=read_only, control=control)
    if not isinstance(spec, str):
        if isinstance(spec, Store):
            return spec
        raise TypeError(f"store must be None, a Store, a URL or a path; got "
                        f"{type(spec).__name__} {spec!r}")
    if not spec.strip():
        raise ValueError(f"store must not be an empty string; use {SUPPORTED}")
    match = _SCHEME.match(spec)
    if match is None:
        return SQLiteStore(spec, read_only=read_only, control=control)
    scheme, rest, shown = match.group(1).lower(), spec[match.end():], hide_password(spec)
    if scheme == "memory":
        if rest:
            raise ValueError(f"store {shown!r}: 'memory://' takes nothing after it")
        if read_only:
            raise ValueError(f"store {shown!r}: a new memory store has nothing to read; "
                             "read a SQLite store, or the scheduler that owns the memory store")
        return MemoryStore()
    if scheme in ("postgresql", "postgres"):
        return _postgres(spec, shown, read_only, control)
    if scheme != "sqlite":
        raise ValueError(f"store {shown!r}: unsupported scheme {scheme!r}; use {SUPPORTED}")
    return SQLiteStore(sqlite_path(spec), read_only=read_only, control=control)


def sqlite_path(spec: str) -> str:
    """The file a ``sqlite:///`` URL names (relative to the working folder
    with three slashes, absolute with four); ValueError for a malformed one."""
    shown = hide_password(spec)
    match = _SCHEME.match(spec)
    if match is None or match.group(1).lower() != "sqlite":
        raise ValueError(f"store {shown!r} is not a sqlite:/// URL")
    rest = spec[match.end():]
    if not rest.startswith("/"):
        raise ValueError(f"store {shown!r}: a sqlite URL has three slashes before a "
                         "relative path ('sqlite:///jobs.db') and four before an absolute "
                         "one ('sqlite:////var/lib/jobs.db')")
    path = rest[1:]
    if not path or path == ":memory:":
        raise ValueError(f"store {shown!r} names no file; use 'memory://' for a store in memory")
    if "?" in path:
        raise ValueError(f"store {shown!r}: URL query parameters are not supported")
    return path


def is_shared(spec: Any) -> bool:
    """True when *spec* names a PostgreSQL store (a URL), shared by schedulers."""
    match = _SCHEME.match(spec) if isinstance(spec, str) else None
    return match is not None and match.group(1).lower() in ("postgresql", "postgres")


def _postgres(url: str, shown: str, read_only: bool, control: bool) -> Store:
    """A PostgresStore at *url*, or ImportError saying how to install psycopg."""
    try:
        from .postgres import PostgresStore
    except ImportError as exc:
        raise ImportError(f"store {shown!r} needs psycopg 3 and psycopg-pool, which are not "
                          f"installed ({exc}); pip install '.[postgres]' (or "
                          "'pysched_lightning[postgres]')") from exc
    return PostgresStore(url, read_only=read_only, control=control)
