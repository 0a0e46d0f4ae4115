"""A JSON run log: one line per finished run, rotated daily (PyCron's job_status.log).

Each line is a JSON object with the run's fields in the order given, such as
``task_id, name, status, attempt, run, scheduled, started, finished,
duration, exit_code, output, error, traceback, result``. Times are written as
ISO 8601 UTC strings with an explicit ``+00:00`` offset and microseconds
(``2024-05-01T12:00:00.250000+00:00``), a form ``datetime.fromisoformat``
reads back on every Python this package supports (3.9 does not read ``Z``).

Rotation is the standard library's :class:`~logging.handlers.TimedRotatingFileHandler`
used directly, not through the logging tree: nothing is added to the global
logging configuration. One process should own a run log file.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
import threading
from datetime import date, datetime, timezone
from logging.handlers import TimedRotatingFileHandler
from typing import Any, Dict, List, Mapping, Union

from ..records.task import task_label
from .folders import check_folder

__all__ = ["RunLog", "read_run_log"]

_log = logging.getLogger("pysched_lightning")

#: Keys holding times besides those ending in ``_at``.
_TIME_KEYS = frozenset({"scheduled", "started", "finished"})
#: How deep nested containers are converted before falling back to repr().
_MAX_DEPTH = 20
#: Suffixes TimedRotatingFileHandler gives rotated files, for any ``when``.
_ROTATED = re.compile(r"^\d{4}-\d{2}-\d{2}(_\d{2}(-\d{2}){0,2})?$", re.ASCII)
_WHEN = re.compile(r"^(S|M|H|D|MIDNIGHT|W[0-6])$")

_PathLike = Union[str, "os.PathLike[str]"]
#: What json.dumps takes as a key.
_JsonKey = Union[str, int, float, None]


class RunLog:
    """Appends one JSON line per finished run to *path*, rotating it.

    The file rotates *when* (a :class:`~logging.handlers.TimedRotatingFileHandler`
    interval: ``"midnight"`` by default, ``"H"``, ``"D"``, ``"W0"``...), in
    UTC unless ``utc=False``, and *backup_count* rotated files are kept (0
    keeps them all). Its folder must exist (FileNotFoundError naming it
    otherwise: a typo must not create folders).
    :meth:`write` is thread-safe and never raises because of a value in the
    record; a record written after :meth:`close` is dropped with a warning.
    """

    def __init__(self, path: _PathLike, *, when: str = "midnight",
                 backup_count: int = 30, utc: bool = True) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"run log path must be a path, not {path!r}")
        filename = os.fspath(path)
        if not isinstance(filename, str) or not filename:
            raise ValueError(f"run log path must be a non-empty str path, not {path!r}")
        if not isinstance(when, str) or not _WHEN.match(when.upper()):
            raise ValueError(f"unknown rotation interval when={when!r}; use 'S', 'M', "
                             f"'H', 'D', 'midnight' or 'W0'..'W6'")
        if isinstance(backup_count, bool) or not isinstance(backup_count, int):
            raise TypeError(f"backup_count must be an int, not {backup_count!r}")
        if backup_count < 0:
            raise ValueError(f"backup_count must be >= 0, not {backup_count!r}")
        if not isinstance(utc, bool):
            raise TypeError(f"utc must be True or False, not {utc!r}")
        filename = os.path.abspath(filename)
        check_folder(filename, "the run log")
        self._path = filename
        self._closed = False
        self._lock = threading.Lock()
        self._handler = _RunLogHandler(filename, when=when, backupCount=backup_count,
                                       utc=utc, encoding="utf-8",
                                       errors="backslashreplace")

    @property
    def path(self) -> str:
        """The absolute path of the current log file."""
        return self._path

    def write(self, record: Mapping[str, Any]) -> None:
        """Append *record* as one JSON line; see the module docstring for the format."""
        if not isinstance(record, Mapping):
            raise TypeError(f"a run log record must be a mapping, not {record!r}")
        line = _to_json_line(record)
        entry = logging.LogRecord("pysched_lightning.runlog", logging.INFO,
                                  __file__, 0, line, None, None)
        # One write at a time: lines never interleave, a rollover happens
        # between two whole lines, and no write reopens a closed file.
        with self._lock:
            if not self._closed:
                self._handler.handle(entry)
                return
        _log.warning("run log %r is closed; dropped a record for %s", self._path,
                     _label(record))

    def close(self) -> None:
        """Flush and close the file; later writes are dropped."""
        with self._lock:
            self._closed = True
            self._handler.close()

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<RunLog {self._path!r}{state}>"


class _RunLogHandler(TimedRotatingFileHandler):
    """Reports I/O errors through our logger instead of printing them."""

    def handleError(self, record: logging.LogRecord) -> None:
        _log.error("cannot write to run log %r", self.baseFilename,
                   exc_info=sys.exc_info())


def _to_json_line(record: Mapping[str, Any]) -> str:
    converted: Dict[_JsonKey, object] = {}
    for key, value in record.items():
        name = _json_key(key)
        if isinstance(name, str) and (name in _TIME_KEYS or name.endswith("_at")):
            converted[name] = _time_value(name, value)
        else:
            converted[name] = _jsonable(value, 0)
    try:
        return json.dumps(converted, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError):  # pragma: no cover - defensive
        _log.warning("run log record for %s is not serializable; writing its repr",
                     _label(record), exc_info=True)
        return json.dumps({"task_id": _jsonable(record.get("task_id"), 0),
                           "record": _safe_repr(record)}, ensure_ascii=False)


def _json_key(key: object) -> _JsonKey:
    if isinstance(key, str) or key is None or isinstance(key, (bool, int)):
        return key
    if isinstance(key, float) and math.isfinite(key):
        return key
    return _safe_repr(key)


def _time_value(key: str, value: object) -> object:
    """An epoch float or a datetime as ISO 8601 UTC; anything else as usual."""
    try:
        if isinstance(value, datetime):
            return _iso_utc(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if math.isfinite(value):
                return _iso_utc(datetime.fromtimestamp(value, timezone.utc))
    except (OverflowError, ValueError, OSError):
        _log.warning("run log: %s=%r is not a valid time; writing its repr", key, value)
        return _safe_repr(value)
    return _jsonable(value, 0)


def _iso_utc(moment: datetime) -> str:
    # A naive datetime is local time, as datetime.timestamp() reads it.
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


def _jsonable(value: object, depth: int) -> object:
    """*value* as plain JSON types; what JSON cannot hold becomes its repr()."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, datetime):
        try:
            return _iso_utc(value)
        except (OverflowError, ValueError, OSError):
            return _safe_repr(value)
    if isinstance(value, date):
        return value.isoformat()
    if depth < _MAX_DEPTH:
        if isinstance(value, Mapping):
            return {_json_key(k): _jsonable(v, depth + 1) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [_jsonable(v, depth + 1) for v in value]
    return _safe_repr(value)


def _safe_repr(value: object) -> str:
    try:
        return repr(value)
    except Exception:
        _log.warning("run log: repr() of a %s value failed", type(value).__qualname__,
                     exc_info=True)
        return f"<unrepresentable {type(value).__qualname__}>"


def read_run_log(path: _PathLike, *, include_rotated: bool = False) -> List[Dict[str, Any]]:
    """The records in the run log at *path*, oldest first.

    With ``include_rotated=True`` the rotated files next to it come first,
    in date order. A torn last line (a write in progress or cut by a crash)
    is skipped; a malformed line elsewhere is skipped with a warning.
    Raises FileNotFoundError when *path* does not exist.
    """
    filename = os.path.abspath(os.fspath(path))
    files: List[str] = []
    if include_rotated:
        folder, base = os.path.split(filename)
        prefix = base + "."
        rotated = [name for name in os.listdir(folder or ".")
                   if name.startswith(prefix) and _ROTATED.match(name[len(prefix):])]
        files.extend(os.path.join(folder, name) for name in sorted(rotated))
    files.append(filename)
    records: List[Dict[str, Any]] = []
    for name in files:
        records.extend(_read_file(name))
    return records


def _read_file(filename: str) -> List[Dict[str, Any]]:
    with open(filename, "rb") as stream:
        data = stream.read()
    # Split on "\n" only: JSON strings may hold U+2028 and other characters
    # that str.splitlines() would treat as line ends.
    lines = data.split(b"\n")
    complete = data.endswith(b"\n")
    records: List[Dict[str, Any]] = []
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        last = number == len(lines)
        try:
            value = json.loads(raw.decode("utf-8", errors="replace"))
        except ValueError:
            value = None
        if isinstance(value, dict):
            records.append(value)
        elif not (last and not complete):
            _log.warning("run log %r: line %d is not a JSON object; skipped",
                         filename, number)
    return records


def _label(record: Mapping[str, Any]) -> str:
    """The record's task as log lines name tasks (its name and id are plain
    values of the record)."""
    task_id, name = record.get("task_id"), record.get("name")
    return task_label(str(task_id), name if isinstance(name, str) else None)
