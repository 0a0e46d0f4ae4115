"""``pysched serve``: run a Service in the foreground until SIGINT/SIGTERM.

::

    PYSCHED_SECRET=... pysched serve --broker URL --store PATH [--name pysched]
    pysched serve --broker URL --store PATH --secret-file FILE
    pysched serve --broker URL --store postgresql://HOST/DB [--lease SECONDS]

With a SQLite store one service runs per name; with a PostgreSQL store any
number of them share the name's request queue (and each task runs once).

The secret comes from ``--secret-file`` (its content, without the trailing
newline) or else the environment variable ``PYSCHED_SECRET``; a secret file
that other users may read is refused. ``--insecure`` runs without one. The
broker client is imported only when the command runs, so ``pysched`` works
without the ``remote`` extra.
"""
from __future__ import annotations

import argparse
import logging
import os
import stat
from typing import Any, Optional

from ..cli.common import STORE_FORMS, positive_int, stopped_by_signals, store_spec
from ..cli.config import ConfigError
from ..records.errors import install_hint

__all__ = ["register", "add_serve_parser", "cmd_serve", "read_secret", "SECRET_ENV"]

_log = logging.getLogger("pysched_lightning.remote")

#: The environment variable that holds the secret (unless --secret-file).
SECRET_ENV = "PYSCHED_SECRET"


def register(commands: Any) -> argparse.ArgumentParser:
    """``pysched serve``: the sub-command the ``pysched`` parser loads from
    here (its handler is :func:`cmd_serve`)."""
    return add_serve_parser(commands)


def add_serve_parser(commands: Any) -> argparse.ArgumentParser:
    """Register ``serve`` on the ``pysched`` sub-command parser *commands*."""
    serve = commands.add_parser(
        "serve", help="run the task service for remote clients (RabbitMQ)",
        description="Run a pysched_lightning.remote.Service until SIGINT or SIGTERM: it "
                    "runs tasks that clients holding the shared secret send through the "
                    f"broker. The secret comes from --secret-file or ${SECRET_ENV}.")
    serve.add_argument("--broker", required=True, metavar="URL",
                       help="the RabbitMQ URL, e.g. amqp://guest:guest@localhost:5672/%%2F")
    serve.add_argument("-s", "--store", required=True, metavar="STORE",
                       help="where the service keeps every accepted task until its "
                            f"response is published ({STORE_FORMS}): a SQLite file, one "
                            "service per name; or a PostgreSQL database, shared "
                            "by every service of the name, which then consume its requests "
                            "together, each task still run once")
    serve.add_argument("--name", default="pysched",
                       help="the service's name: clients send to it by this name "
                            "(default pysched)")
    serve.add_argument("--secret-file", metavar="FILE",
                       help=f"read the secret from FILE (not readable by others) instead of "
                            f"${SECRET_ENV}")
    serve.add_argument("--insecure", action="store_true",
                       help="run without a secret: anyone who can publish to the broker "
                            "can run code here")
    serve.add_argument("--workers", type=positive_int, metavar="N",
                       help="threads for ordinary tasks (default: one per core)")
    serve.add_argument("--max-message-size", type=positive_int, metavar="BYTES",
                       help="refuse larger messages (default 10 MiB)")
    serve.add_argument("--max-message-age", type=float, metavar="SECONDS",
                       help="the replay window: refuse requests sent longer ago (or that "
                            "far ahead of this clock) than this (default 86400, a day)")
    serve.add_argument("--lease", type=float, metavar="SECONDS",
                       help="with a PostgreSQL store: after this long without renewing its "
                            "lease (killed, stalled), a service's tasks are taken over by "
                            "another one of the name (default 10)")
    serve.add_argument("--grace", type=float, default=30.0, metavar="SECONDS",
                       help="on SIGINT/SIGTERM, how long running tasks may finish before "
                            "they are answered 'timeout' (default 30)")
    serve.add_argument("--log-level", metavar="LEVEL", help="default INFO")
    serve.set_defaults(config=None, handler=cmd_serve)
    return serve


def read_secret(secret_file: Optional[str], environ: Any = os.environ) -> Optional[str]:
    """The secret from *secret_file*, else from ``$PYSCHED_SECRET``, else None."""
    if secret_file is None:
        return environ.get(SECRET_ENV) or None
    try:
        mode = os.stat(secret_file).st_mode
        if mode & (stat.S_IROTH | stat.S_IWOTH):
            raise ConfigError(f"the secret file {secret_file} is readable or writable by "
                              f"every user; chmod 600 it first")
        if mode & stat.S_IRGRP:
            _log.warning("the secret file %s is readable by its group", secret_file)
        with open(secret_file, encoding="utf-8") as handle:
            secret = handle.read().rstrip("\r\n")
    except OSError as exc:
        raise ConfigError(f"cannot read the secret file: {exc}") from None
    if not secret:
        raise ConfigError(f"the secret file {secret_file} is empty")
    return secret


def cmd_serve(args: argparse.Namespace, config: Any) -> int:
    """``pysched serve``: the service in the foreground; 0 after a signal."""
    secret = read_secret(args.secret_file)
    if secret is None and not args.insecure:
        raise ConfigError(f"no secret: set ${SECRET_ENV} or pass --secret-file "
                          "(or --insecure, to accept tasks from anyone)")
    if args.grace < 0:
        raise ConfigError(f"--grace must be >= 0, got {args.grace!r}")
    try:
        from .service import Service  # the broker client is needed from here on
    except ImportError as exc:
        _log.error("pysched serve needs the 'remote' extra (%s): %s", install_hint("remote"),
                   exc)
        return 1

    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        # pika logs a line per connection, and a traceback when one drops;
        # the service's own lines already say what happened and what it does.
        logging.getLogger("pika").setLevel(logging.CRITICAL)

    options: dict = {}
    if args.max_message_size:
        options["max_message_size"] = args.max_message_size
    if args.max_message_age is not None:
        options["max_message_age"] = args.max_message_age
    if args.lease is not None:
        options["lease"] = args.lease
    try:
        service = Service(args.name, args.broker, store_spec(args.store), secret,
                          insecure=secret is None, workers=args.workers, **options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from None

    with stopped_by_signals() as (stop, received):
        try:
            service.start(block=False)
        except (OSError, RuntimeError) as exc:  # (ConnectionError, a store's folder...)
            _log.error("pysched serve: %s", exc)
            return 1
        while not stop.wait(1.0):
            if not service.running:  # it stopped itself (its log says why)
                return 1
        _log.info("pysched serve: %s received; stopping (running tasks get %g s)",
                  received[0], args.grace)
        service.stop(timeout=args.grace)
    return 0

