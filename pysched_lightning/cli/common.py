"""What every ``pysched`` command shares: its errors, paths, store opening,
argument types and the signals that stop it."""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import threading
from typing import Any, Dict, Iterator, List, Optional, Tuple

from .config import Config

__all__ = ["PROG", "STORE_FORMS", "RUN_LOG_NAME", "UsageError", "CommandFailed", "paths",
           "store_spec", "shown", "missing_store", "open_failure", "open_store",
           "positive_int", "stopped_by_signals"]

PROG = "pysched"
#: The forms every --store (and store=) takes, for help texts.
STORE_FORMS = ("a path, sqlite:///relative.db, sqlite:////absolute.db or "
               "postgresql://USER@HOST/DB")
#: The run log's file name inside the logs folder (PyCron's).
RUN_LOG_NAME = "job_status.log"


class UsageError(Exception):
    """A user mistake: reported on stderr, exit code 2."""


class CommandFailed(Exception):
    """An expected failure (a store in use, a file that cannot be read):
    reported on stderr without a traceback, exit code 1."""


def paths(args: argparse.Namespace, config: Config) -> Tuple[str, str, str]:
    """The jobs folder, the logs folder and the store (see :func:`store_spec`)."""
    jobs = getattr(args, "target", None) or config.jobs_folder
    logs = getattr(args, "log_folder", None) or config.logs_folder
    store = getattr(args, "store", None) or config.persistence_file
    return (os.path.abspath(os.path.expanduser(jobs)),
            os.path.abspath(os.path.expanduser(logs)), store_spec(store))


def store_spec(text: str) -> str:
    """A store as every command takes it (and ``Scheduler(store=...)``, see
    :func:`~pysched_lightning.durability.stores.store_location`): a
    PostgreSQL URL as given; a ``sqlite:///`` URL (``sqlite:////`` for an
    absolute path) or a plain path (``~`` expanded) as the file's absolute
    path. UsageError for a malformed URL."""
    from ..durability.stores import store_location
    try:
        return store_location(os.path.expanduser(text))
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def shown(spec: str) -> str:
    """*spec* as messages show it (a URL without its password)."""
    from ..durability.stores.urls import hide_password
    return hide_password(spec)


def missing_store(path: str) -> Optional[str]:
    """What a reading command says when the SQLite store *path* is not there
    (it creates nothing), or None when it is (or is a URL)."""
    from ..durability.stores import is_shared
    if is_shared(path) or os.path.exists(path):
        return None
    return (f"no store at {path} (`{PROG} run` makes it; name another with -s/--store "
            "or PERSISTENCE_FILE)")


def open_failure(path: str, exc: BaseException) -> str:
    """The one message for a store *path* that cannot be opened (*exc* says why)."""
    why = str(exc)
    if not why.startswith("cannot open the store"):  # (else it names itself)
        path = shown(path)
        why = "cannot open the store " + (why if path in why else f"{path}: {why}")
    if "not a database" in why:
        why += (" (PERSISTENCE_FILE must name a pysched SQLite file, not a PyCron "
                "pickle; point it to a new file)")
    return why


def open_store(path: str, *, read_only: bool = False) -> Any:
    """The store *path* names; CommandFailed (saying why) if it cannot be opened."""
    from ..durability.stores import open_store as _open
    try:
        return _open(path, read_only=read_only)
    except Exception as exc:  # sqlite3.DatabaseError, OSError, psycopg.Error...
        raise CommandFailed(open_failure(path, exc)) from None


def positive_int(text: str) -> int:
    """An argparse type: an int of 1 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be 1 or more")
    return value


@contextlib.contextmanager
def stopped_by_signals() -> Iterator[Tuple[threading.Event, List[str]]]:
    """While inside, SIGINT and SIGTERM set the event (and are named in the
    list) instead of ending the process; the previous handlers come back
    after."""
    stop = threading.Event()
    received: List[str] = []

    def on_signal(signum: int, frame: Any) -> None:
        received.append(signal.Signals(signum).name)
        stop.set()

    previous: Dict[signal.Signals, Any] = {
        sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop, received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
