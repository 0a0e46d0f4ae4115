"""Where tasks and runs are kept: the store protocol, its two stores, and
:func:`open_store` to make one from ``Scheduler(store=...)``."""
from __future__ import annotations

import os
import re
from typing import Any, Optional

from ...records.protocols import (RUN_FIELDS, STATUS_NAMES, Store, StoreLockedError,
                                  TaskRecord)
from .memory import MemoryStore
from .sqlite import SQLiteStore

__all__ = ["Store", "TaskRecord", "RUN_FIELDS", "STATUS_NAMES", "StoreLockedError",
           "SQLiteStore", "MemoryStore", "open_store"]

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_PASSWORD = re.compile(r"(//[^/@:]*):[^/@]*@")
SUPPORTED = "'sqlite:///relative/path.db', 'sqlite:////absolute/path.db', 'memory://' or a file path"


def open_store(spec: Any, *, read_only: bool = False,
               control: bool = False) -> Optional[Store]:
    """The store *spec* names.

    * ``None``: None (the scheduler keeps everything in memory, no store);
    * an object with the store methods: itself;
    * ``'sqlite:///jobs.db'``: a :class:`SQLiteStore` at ``jobs.db``, relative
      to the working directory; ``'sqlite:////var/lib/jobs.db'`` (four
      slashes): the absolute path (SQLAlchemy's convention);
    * ``'memory://'``: a new :class:`MemoryStore`;
    * any other str or :class:`os.PathLike`: a :class:`SQLiteStore` at that path.

    With *read_only*, a SQLite file is opened for reading only (it must
    exist: FileNotFoundError otherwise) and ``'memory://'`` is refused, since
    a new memory store has nothing to read. With *control* too, a SQLite
    store may write control requests and nothing else (a dashboard's actions;
    see :class:`SQLiteStore`).

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
    scheme, rest, shown = match.group(1).lower(), spec[match.end():], _PASSWORD.sub(r"\1:***@", spec)
    if scheme == "memory":
        if rest:
            raise ValueError(f"store {shown!r}: 'memory://' takes nothing after it")
        if read_only:
            raise ValueError(f"store {shown!r}: a new memory store has nothing to read; "
                             "read a SQLite store, or the scheduler that owns the memory store")
        return MemoryStore()
    if scheme != "sqlite":
        raise ValueError(f"store {shown!r}: unsupported scheme {scheme!r}; use {SUPPORTED}")
    if not rest.startswith("/"):
        raise ValueError(f"store {shown!r}: a sqlite URL has three slashes before a "
                         "relative path ('sqlite:///jobs.db') and four before an absolute "
                         "one ('sqlite:////var/lib/jobs.db')")
    path = rest[1:]
    if not path or path == ":memory:":
        raise ValueError(f"store {shown!r} names no file; use 'memory://' for a store in memory")
    if "?" in path:
        raise ValueError(f"store {shown!r}: URL query parameters are not supported")
    return SQLiteStore(path, read_only=read_only, control=control)
