"""What every ``pysched`` command shares: its errors, paths and store opening."""
from __future__ import annotations

import argparse
import os
from typing import Any, Tuple

from ..config import Config

__all__ = ["PROG", "RUN_LOG_NAME", "UsageError", "CommandFailed", "paths", "open_store"]

PROG = "pysched"
#: The run log's file name inside the logs folder (PyCron's).
RUN_LOG_NAME = "job_status.log"


class UsageError(Exception):
    """A user mistake: reported on stderr, exit code 2."""


class CommandFailed(Exception):
    """An expected failure (a store in use, a file that cannot be read):
    reported on stderr without a traceback, exit code 1."""


def paths(args: argparse.Namespace, config: Config) -> Tuple[str, str, str]:
    """The jobs folder, the logs folder and the store file, absolute."""
    jobs = getattr(args, "target", None) or config.jobs_folder
    logs = getattr(args, "log_folder", None) or config.logs_folder
    store = getattr(args, "store", None) or config.persistence_file
    return (os.path.abspath(os.path.expanduser(jobs)),
            os.path.abspath(os.path.expanduser(logs)),
            os.path.abspath(os.path.expanduser(store)))


def open_store(path: str) -> Any:
    """The SQLite store at *path*; CommandFailed (saying why) if it cannot be opened."""
    from ..stores import open_store as _open
    try:
        return _open(path)
    except Exception as exc:  # sqlite3.DatabaseError, OSError...
        why = str(exc) if path in str(exc) else f"{path}: {exc}"
        hint = ""
        if "not a database" in why:
            hint = (" (PERSISTENCE_FILE must name a pysched SQLite file, not a PyCron "
                    "pickle; point it to a new file)")
        raise CommandFailed(f"cannot open the store {why}{hint}") from None
