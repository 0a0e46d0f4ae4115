"""The ``pysched`` command line: its parser, its optional commands, ``main``.

Optional parts add their own command through a module with
``register(subparsers)``, imported only here and only if installed:
``pysched_lightning.dashboard.command`` (``pysched dashboard``) and
``pysched_lightning.remote.cli`` (``pysched serve``). ``register`` adds a
parser to *subparsers* and sets ``handler`` on it
(``parser.set_defaults(handler=fn)``); ``fn(args, config)`` returns the exit
code, as the built-in commands do. A part whose extra is not installed still
shows in ``--help`` and says how to install it.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import math
import os
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..records.errors import install_hint
from .common import (PROG, RUN_LOG_NAME, STORE_FORMS, CommandFailed, UsageError,
                     positive_int)
from .config import Config, ConfigError, load_config, parse_log_level
from .reporting import CLI_LOGGER, setup_logging
from .runner import DEFAULT_GRACE, cmd_run
from .views import DEFAULT_HISTORY, cmd_history, cmd_list

__all__ = ["main", "build_parser", "PLUGINS"]

Handler = Callable[[argparse.Namespace, Config], int]

#: (module, command, extra): optional commands, each from its own module.
PLUGINS: Tuple[Tuple[str, str, str], ...] = (
    ("pysched_lightning.dashboard.command", "dashboard", "dashboard"),
    ("pysched_lightning.remote.cli", "serve", "remote"),
)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a number >= 0")
    return value



def _register_plugins(commands: Any,
                      plugins: Sequence[Tuple[str, str, str]]) -> Dict[str, str]:
    """Add the optional commands that are installed; returns, for those whose
    extra is missing, command -> what to tell the user."""
    missing: Dict[str, str] = {}
    for module_name, command, extra in plugins:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            name = getattr(exc, "name", None) or ""
            if name and (module_name == name or module_name.startswith(name + ".")):
                continue  # this installation has no such part at all
            missing[command] = (f"'{PROG} {command}' needs the '{extra}' extra: "
                                f"{install_hint(extra)}, into the virtual environment "
                                f"{PROG} runs in ({sys.prefix}) ({exc})")
            commands.add_parser(command, help=f"(not installed: needs the '{extra}' extra)",
                                add_help=False)
            continue
        register = getattr(module, "register", None)
        if not callable(register):
            continue
        try:
            register(commands)
        except Exception as exc:  # a broken part must not take the other commands down
            missing[command] = f"'{PROG} {command}' cannot be set up: {exc!r}"
    return missing


def build_parser(plugins: Sequence[Tuple[str, str, str]] = PLUGINS
                 ) -> Tuple[argparse.ArgumentParser, Dict[str, str]]:
    """The parser, and the optional commands (of *plugins*) that cannot run
    here, with why."""
    from .. import __version__

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", metavar="CONFIG",
                        help="an INI file with PyCron's [Timings], [Folders] and [Logging] "
                             "settings (default: built-in defaults)")
    common.add_argument("-s", "--store", metavar="STORE",
                        help=f"the store: {STORE_FORMS} (overrides [Folders] "
                             "PERSISTENCE_FILE; default ./pysched.db)")
    common.add_argument("--log-level", metavar="LEVEL",
                        help="overrides [Logging] LOG_LEVEL (default INFO)")
    jobs = argparse.ArgumentParser(add_help=False)
    jobs.add_argument("-t", "--target", metavar="JOBS_DIR",
                      help="the jobs folder (overrides [Folders] JOBS_FOLDER_DEFAULT; "
                           "default ./jobs)")
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true",
                         help="print a JSON array of objects instead of a table")

    parser = argparse.ArgumentParser(
        prog=PROG, description="Run a folder of job scripts on the schedules their folder "
                               "names give (PyCron), and show what ran.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    run = commands.add_parser(
        "run", parents=[common, jobs], help="run the jobs until SIGINT/SIGTERM",
        description="Run the jobs folder in the foreground until SIGINT or SIGTERM.")
    run.add_argument("-l", "--log-folder", metavar="LOGS_DIR",
                     help=f"where {RUN_LOG_NAME} goes (overrides [Folders] "
                          "LOGS_FOLDER_DEFAULT; default ./logs)")
    run.add_argument("--nuke", action="store_true",
                     help="clear the store (tasks and run history) before starting")
    run.add_argument("--grace", type=_positive_float, default=DEFAULT_GRACE,
                     metavar="SECONDS",
                     help="on SIGINT/SIGTERM, how long running jobs may finish before "
                          f"they are killed (default {DEFAULT_GRACE:g})")
    run.add_argument("--workers", type=positive_int, metavar="N",
                     help="jobs that may run at the same time (default: max(8, CPUs))")
    run.add_argument("--status", action="store_true",
                     help="show a live status screen (running now, next runs, last "
                          "failures) when standard output is a terminal")
    run.set_defaults(handler=cmd_run)

    listing = commands.add_parser(
        "list", parents=[common, jobs, as_json], help="list the jobs and their state",
        description="List the jobs (in the folder or the store) with schedule, next run "
                    "and last status.")
    listing.set_defaults(handler=cmd_list)

    history = commands.add_parser(
        "history", parents=[common, jobs, as_json], help="show recent runs",
        description="Show recent runs from the store, newest first.")
    history.add_argument("job", nargs="?", metavar="JOB",
                         help="a job, as its path in the jobs folder (5min/backup.sh), or a "
                              "task's id or name (default: all jobs)")
    history.add_argument("-n", type=int, default=DEFAULT_HISTORY, metavar="N",
                         help=f"how many runs (default {DEFAULT_HISTORY}; 0 for all)")
    history.set_defaults(handler=cmd_history)
    return parser, _register_plugins(commands, plugins)


def _arguments(argv: Optional[Sequence[str]]) -> List[str]:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0].startswith("-") and args[0] not in ("-h", "--help", "--version"):
        args.insert(0, "run")  # `pysched -c my.ini` runs, as `pycron -c` did
    return args


def main(argv: Optional[Sequence[str]] = None, *,
         plugins: Sequence[Tuple[str, str, str]] = PLUGINS) -> int:
    """The ``pysched`` console script; returns the exit code. *plugins*
    lists the optional commands as (module, command, extra)."""
    args_list = _arguments(argv)
    parser, missing = build_parser(plugins)
    if args_list and args_list[0] in missing:
        print(f"{PROG}: error: {missing[args_list[0]]}", file=sys.stderr)
        return 2
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else 2
    handler: Optional[Handler] = getattr(args, "handler", None)
    if handler is None:  # an optional part's register() that set no handler
        print(f"{PROG}: error: the command {args.command!r} cannot run: its module set "
              "no handler", file=sys.stderr)
        return 2
    try:
        config = load_config(getattr(args, "config", None))
        level = config.log_level
        if getattr(args, "log_level", None):
            try:
                level = parse_log_level(args.log_level)
            except ValueError as exc:
                raise UsageError(f"--log-level: {exc}") from None
        setup_logging(level)
        return handler(args, config)
    except (ConfigError, UsageError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `pysched history | head`
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    except CommandFailed as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except Exception:
        logging.getLogger(CLI_LOGGER).exception("%s failed", PROG)
        print(f"{PROG}: error: unexpected failure (see the traceback above)", file=sys.stderr)
        return 1
