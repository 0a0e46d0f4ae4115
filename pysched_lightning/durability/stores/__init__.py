"""Where tasks and runs are kept: the store protocol, its stores (memory,
SQLite, PostgreSQL), and :func:`open_store` to make one from
``Scheduler(store=...)``."""
from __future__ import annotations

import os
import re
from typing import Any, Optional

from ...records.errors import install_hint
from ...records.protocols import (RUN_FIELDS, STATUS_NAMES, ClaimLostError, Store,
                                  StoreLockedError, TaskRecord)
from .memory import MemoryStore
from .sqlite import SQLiteStore
from .urls import hide_password

__all__ = ["Store", "TaskRecord", "RUN_FIELDS", "STATUS_NAMES", "StoreLockedError",
           "ClaimLostError", "SQLiteStore", "MemoryStore", "open_store", "sqlite_path",
           "sqlite_file", "store_location", "is_shared"]

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
      (needs psycopg: the ``postgres`` extra);
    * any other str or :class:`os.PathLike`: a :class:`SQLiteStore` at that path
      (see :func:`store_location`), in a folder that must exist.

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
    location = store_location(spec)
    match = _SCHEME.match(location)
    if match is None:
        return SQLiteStore(location, read_only=read_only, control=control)
    shown = hide_password(location)
    if match.group(1).lower() != "memory":
        return _postgres(location, shown, read_only, control)
    if location[match.end():]:
        raise ValueError(f"store {shown!r}: 'memory://' takes nothing after it")
    if read_only:
        raise ValueError(f"store {shown!r}: a new memory store has nothing to read; "
                         "read a SQLite store, or the scheduler that owns the memory store")
    return MemoryStore()


def store_location(spec: str) -> str:
    """The store *spec* names, in the one form every command and
    ``store=`` opens: a ``postgresql://``/``postgres://`` or ``memory://``
    URL as given; a SQLite file, given as a path, as ``sqlite:///relative.db``
    or as ``sqlite:////absolute.db``, as its absolute path. ValueError
    (naming *spec*, without a password) for a malformed or unknown URL."""
    if not spec.strip():
        raise ValueError(f"store must not be an empty string; use {SUPPORTED}")
    if spec[:7].lower() == "sqlite:":
        return os.path.abspath(sqlite_path(spec))
    match = _SCHEME.match(spec)
    if match is None:
        return os.path.abspath(spec)
    scheme = match.group(1).lower()
    if scheme not in ("memory", "postgresql", "postgres"):
        raise ValueError(f"store {hide_password(spec)!r}: unsupported scheme {scheme!r}; "
                         f"use {SUPPORTED}")
    return spec


def sqlite_file(spec: Any) -> Optional[str]:
    """The absolute path of the SQLite file the store *spec* names; None for
    no store, a store object, a memory or a PostgreSQL store."""
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
        return os.path.abspath(spec) if isinstance(spec, str) and spec else None
    if not isinstance(spec, str) or not spec.strip():
        return None
    location = store_location(spec)
    return None if _SCHEME.match(location) else location


def sqlite_path(spec: str) -> str:
    """The file a ``sqlite:///`` URL names (relative to the working folder
    with three slashes, absolute with four); ValueError for a malformed one."""
    shown = hide_password(spec)
    if spec[:7].lower() != "sqlite:":
        raise ValueError(f"store {shown!r} is not a sqlite:/// URL")
    if not spec[7:].startswith("///"):
        raise ValueError(f"store {shown!r}: a sqlite URL has three slashes before a "
                         "relative path ('sqlite:///jobs.db') and four before an absolute "
                         "one ('sqlite:////var/lib/jobs.db')")
    path = spec[10:]
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
                          f"installed ({exc}); {install_hint('postgres')}") from exc
    return PostgresStore(url, read_only=read_only, control=control)
