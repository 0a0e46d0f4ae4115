"""The ``pysched`` INI configuration, with PyCron's sections and keys.

::

    [Timings]
    # minutes between two wake-ups of the main loop (fractions allowed)
    SLEEP_DURATION = 1
    # rescan the jobs folder every x minutes
    CHECK_FOR_NEW_JOBS_EVERY = 15
    # a failed job is re-run after x minutes
    JOB_FAIL_TIMEOUT_PERIOD_MINUTES = 5

    [Folders]
    JOBS_FOLDER_DEFAULT = jobs
    LOGS_FOLDER_DEFAULT = logs
    PERSISTENCE_FILE = pysched.db

    [Logging]
    LOG_LEVEL = INFO

Every key is optional and so is the file: the defaults are those above.
Section and key names are matched without regard to case. Durations are
minutes, fractions allowed (``0.05`` is 3 s), and must be positive.
Relative folder and file paths are read relative to the folder of the INI
file (without a file, relative to the working directory); ``~`` is expanded.
``LOG_LEVEL`` is a :mod:`logging` level name (``NOTSET``, ``DEBUG``,
``INFO``, ``WARNING``, ``ERROR``, ``CRITICAL``) or number.

An unknown section or key, a key given twice, or a bad value raises
:class:`ConfigError`, whose message names the file, the section and the key.
"""
from __future__ import annotations

import configparser
import dataclasses
import logging
import math
import os
from typing import Any, Callable, Dict, Optional, Tuple, Union

__all__ = ["Config", "ConfigError", "load_config", "parse_log_level", "DEFAULTS"]

_PathLike = Union[str, "os.PathLike[str]"]


class ConfigError(ValueError):
    """The configuration file cannot be used; the message says where and why."""


@dataclasses.dataclass(frozen=True)
class Config:
    """The settings ``pysched`` runs with (durations in minutes)."""

    sleep_duration: float = 1.0
    check_for_new_jobs_every: float = 15.0
    job_fail_timeout_period_minutes: float = 5.0
    jobs_folder: str = "jobs"
    logs_folder: str = "logs"
    persistence_file: str = "pysched.db"
    log_level: int = logging.INFO
    #: The INI file these settings came from, if any (absolute).
    source: Optional[str] = None


DEFAULTS = Config()


def _minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number of minutes") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{text!r} must be a positive, finite number of minutes")
    return value


def _path(text: str) -> str:
    if not text:
        raise ValueError("a path is required (the value is empty)")
    if "\0" in text:
        raise ValueError(f"{text!r} contains a NUL character")
    return text


def parse_log_level(text: str) -> int:
    """A logging level name or number as an int; ValueError if it is neither."""
    name = text.strip().upper()
    if name.lstrip("-").isdigit():
        return int(name)
    level = logging.getLevelName(name)
    if isinstance(level, int):
        return level
    raise ValueError(f"{text!r} is not a log level; use NOTSET, DEBUG, INFO, WARNING, "
                     "ERROR, CRITICAL or a number")


#: section -> key -> (Config field, parser). Upper-case names, as PyCron writes them.
_SCHEMA: Dict[str, Dict[str, Tuple[str, Callable[[str], object]]]] = {
    "TIMINGS": {
        "SLEEP_DURATION": ("sleep_duration", _minutes),
        "CHECK_FOR_NEW_JOBS_EVERY": ("check_for_new_jobs_every", _minutes),
        "JOB_FAIL_TIMEOUT_PERIOD_MINUTES": ("job_fail_timeout_period_minutes", _minutes),
    },
    "FOLDERS": {
        "JOBS_FOLDER_DEFAULT": ("jobs_folder", _path),
        "LOGS_FOLDER_DEFAULT": ("logs_folder", _path),
        "PERSISTENCE_FILE": ("persistence_file", _path),
    },
    "LOGGING": {
        "LOG_LEVEL": ("log_level", parse_log_level),
    },
}
_PATH_FIELDS = ("jobs_folder", "logs_folder", "persistence_file")
_SECTIONS = "[Timings], [Folders], [Logging]"


class _CaseKeepingParser(configparser.ConfigParser):
    """Keeps keys as written: load_config matches them without regard to case
    itself, and its messages quote them as the user wrote them."""

    def optionxform(self, optionstr: str) -> str:
        return optionstr


def load_config(path: Optional[_PathLike] = None) -> Config:
    """The configuration in the INI file *path*, or the defaults without one.

    Relative paths in the file are made absolute against the file's folder;
    the defaults (no file, or a key left out) stay relative to the working
    directory. Raises :class:`ConfigError`.
    """
    if path is None:
        return DEFAULTS
    filename = os.path.abspath(os.fspath(path))
    parser = _CaseKeepingParser(
        interpolation=None, strict=True, default_section="\0no default section",
        inline_comment_prefixes=("#", ";"), empty_lines_in_values=False)
    try:
        with open(filename, encoding="utf-8") as stream:
            parser.read_file(stream, source=filename)
    except OSError as exc:
        raise ConfigError(f"{filename}: cannot read the config file: "
                          f"{exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{filename}: not a UTF-8 text file ({exc.reason})") from None
    except configparser.DuplicateOptionError as exc:
        raise ConfigError(f"{filename}: [{exc.section}] {exc.option}: key given twice "
                          f"(line {exc.lineno})") from None
    except configparser.DuplicateSectionError as exc:
        raise ConfigError(f"{filename}: [{exc.section}]: section given twice "
                          f"(line {exc.lineno})") from None
    except configparser.MissingSectionHeaderError as exc:
        raise ConfigError(f"{filename}: line {exc.lineno}: {exc.line.strip()!r} is outside "
                          f"any section; the sections are {_SECTIONS}") from None
    except configparser.Error as exc:
        raise ConfigError(f"{filename}: not a valid INI file: {exc.message}") from None

    values: Dict[str, Any] = {}  # Config field -> value of that field's type
    seen: Dict[str, str] = {}
    for section in parser.sections():
        keys = _SCHEMA.get(section.upper())
        if keys is None:
            raise ConfigError(f"{filename}: [{section}]: unknown section; the sections "
                              f"are {_SECTIONS}")
        if section.upper() in seen:
            raise ConfigError(f"{filename}: [{section}]: section given twice (also as "
                              f"[{seen[section.upper()]}])")
        seen[section.upper()] = section
        given: Dict[str, str] = {}
        for key, raw in parser.items(section):
            spec = keys.get(key.upper())
            if spec is None:
                raise ConfigError(f"{filename}: [{section}] {key}: unknown key; "
                                  f"[{section}] takes {', '.join(keys)}")
            if key.upper() in given:
                raise ConfigError(f"{filename}: [{section}] {key}: key given twice (also "
                                  f"as {given[key.upper()]})")
            given[key.upper()] = key
            field, parse = spec
            try:
                value = parse(raw.strip())
            except ValueError as exc:
                raise ConfigError(f"{filename}: [{section}] {key}: bad value: {exc}") from None
            if field in _PATH_FIELDS:
                value = os.path.join(os.path.dirname(filename),
                                     os.path.expanduser(str(value)))
            values[field] = value
    return dataclasses.replace(DEFAULTS, source=filename, **values)
