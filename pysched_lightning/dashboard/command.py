"""``pysched dashboard``: serve the dashboard of a store.

::

    pysched dashboard [-s STORE] [--host 127.0.0.1] [--port 8765] [--refresh 5]
                      [--token TOKEN] [-c CONFIG] [--log-level LEVEL]

(also ``python -m pysched_lightning.dashboard ...``). The store is the one
``pysched run`` writes: ``--store``, else the config's PERSISTENCE_FILE, else
``./pysched.db``; a URL (``sqlite:///jobs.db``) or a path. It is only read,
so the dashboard runs beside the scheduler. With a token (``--token``, or
the environment variable PYSCHED_DASHBOARD_TOKEN, which other users cannot
read in the process list), viewers who sign in with it may run now, pause,
resume and cancel tasks: the dashboard writes each as a control request to
the store, and nothing else, for the running scheduler to apply. A SQLite
file older than schema 4 is not upgraded for that: the command says so. It
serves until SIGINT or SIGTERM. This module imports no web package until the command runs, so
``pysched`` works without the dashboard extra.

Exit codes: 0 stopped by a signal, 2 a usage or configuration error, 1 any
other failure (no store file, the extra missing, the port taken).
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from typing import Any, Optional, Sequence

from ..cli.common import STORE_FORMS

__all__ = ["register", "add_arguments", "cmd_dashboard", "main", "DEFAULT_PORT"]

_log = logging.getLogger("pysched_lightning.dashboard")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
DEFAULT_REFRESH = 5.0
_PROG = "pysched dashboard"
#: The environment variable that holds the token when --token is not given.
TOKEN_VARIABLE = "PYSCHED_DASHBOARD_TOKEN"


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} must be from 0 (any free port) to 65535")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value < 86400:
        raise argparse.ArgumentTypeError(f"{text!r} must be from 0 (never) to 86399 seconds")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's options (the same ``-c``, ``-s``, ``--log-level`` as
    the other ``pysched`` commands)."""
    parser.add_argument("-s", "--store", metavar="STORE",
                        help=f"the store to show: {STORE_FORMS} (default: [Folders] "
                             "PERSISTENCE_FILE, else ./pysched.db)")
    parser.add_argument("-c", "--config", metavar="CONFIG",
                        help="an INI file with PyCron's settings (for PERSISTENCE_FILE "
                             "and LOG_LEVEL)")
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help=f"the address to listen on (default {DEFAULT_HOST}: this machine "
                             "only)")
    parser.add_argument("--port", type=_port, default=DEFAULT_PORT,
                        help=f"the port (default {DEFAULT_PORT}; 0: any free port)")
    parser.add_argument("--refresh", type=_seconds, default=DEFAULT_REFRESH, metavar="SECONDS",
                        help=f"how often the pages refresh themselves (default "
                             f"{DEFAULT_REFRESH:g}; 0: never)")
    parser.add_argument("--log-level", metavar="LEVEL",
                        help="overrides [Logging] LOG_LEVEL (default INFO)")
    parser.add_argument("--token", metavar="TOKEN",
                        help=f"turn actions on (run now, pause, resume, cancel) for viewers who "
                             f"sign in with this secret of 16 characters or more; default: "
                             f"${TOKEN_VARIABLE}, which keeps it out of the process list; "
                             f"without either, the dashboard is read-only")


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``dashboard`` to ``pysched``'s sub-commands (the object
    ``add_subparsers()`` returned). Its parser's default ``handler`` is
    :func:`cmd_dashboard`, called as ``handler(args, config)``."""
    parser = subparsers.add_parser(
        "dashboard", help="serve a web dashboard of the store",
        description="Serve a web dashboard of the store that `pysched run` writes: tasks, "
                    "runs, failures and a timeline. It only reads the store, so it runs "
                    "beside the scheduler; with a token, it also writes the actions of "
                    "signed-in viewers as requests that the scheduler applies. Stop it "
                    "with Ctrl-C.")
    add_arguments(parser)
    parser.set_defaults(handler=cmd_dashboard)
    return parser


def cmd_dashboard(args: argparse.Namespace, config: Any = None) -> int:
    """Serve the dashboard until SIGINT/SIGTERM; returns the exit code.
    *config* is ``pysched``'s Config (for PERSISTENCE_FILE), or None."""
    from . import MissingExtra, app, serve

    from ..cli.common import UsageError, missing_store, open_failure, store_spec
    try:
        spec = store_spec(args.store or getattr(config, "persistence_file", None)
                          or "pysched.db")
    except UsageError as exc:
        return _fail(str(exc), 2)
    missing = missing_store(spec)
    if missing is not None:
        return _fail(missing, 1)
    from .security import hosts_for_address
    token = args.token if getattr(args, "token", None) is not None \
        else os.environ.get(TOKEN_VARIABLE)
    if token is not None and not token.strip():
        where = "--token" if args.token is not None else TOKEN_VARIABLE
        return _fail(f"{where} is empty: give a secret of 16 characters or more, or none "
                     "for a read-only dashboard", 2)
    try:
        application = app(spec, refresh=args.refresh, actions=token is not None, token=token,
                          allowed_hosts=hosts_for_address(args.host))
    except MissingExtra as exc:
        return _fail(str(exc), 1)
    except ValueError as exc:
        return _fail(str(exc), 2)
    except Exception as exc:  # sqlite3.DatabaseError, OSError, psycopg.Error...
        return _fail(open_failure(spec, exc), 1)
    try:
        server = serve(application, args.host, args.port)
    except OSError as exc:
        application.close()
        return _fail(f"cannot listen on {args.host}:{args.port}: {exc}", 1)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.start()
        mode = "actions on: sign in with the token" if token is not None else "read-only"
        print(f"{_PROG}: {server.url} showing {application.source.describe()} ({mode}); "
              "Ctrl-C stops it", flush=True)
        stop.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.close()
        application.close()
    _log.info("dashboard stopped")
    return 0


def _fail(message: str, code: int) -> int:
    print(f"{_PROG}: error: {message}", file=sys.stderr)
    return code


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m pysched_lightning.dashboard``: the command on its own."""
    from ..cli.config import ConfigError, load_config, parse_log_level

    parser = argparse.ArgumentParser(prog="python -m pysched_lightning.dashboard",
                                     description=__doc__.splitlines()[0])
    add_arguments(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    try:
        config = load_config(args.config)
        level = parse_log_level(args.log_level) if args.log_level else config.log_level
    except (ConfigError, ValueError) as exc:
        return _fail(str(exc), 2)
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return cmd_dashboard(args, config)
