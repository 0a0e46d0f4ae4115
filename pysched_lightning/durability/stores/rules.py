"""How every store treats values: the one place the rules are written down.

:class:`~pysched_lightning.stores.memory.MemoryStore` is the reference
implementation and :class:`~pysched_lightning.stores.sqlite.SQLiteStore`
follows it; both normalize their input with the helpers here, before taking
any lock, so bad input raises before anything changes.

Values
  * Text fields take a str or None (bytes are decoded as UTF-8); blob fields
    (the pickles, ``outcome``) bytes-like or None; times (``next_run``,
    ``created``, ``updated``, ``scheduled``, ``started``, ``finished``,
    ``duration``) a real number, kept as a float; counters and codes
    (``runs``, ``missed``, ``run``, ``attempt``, ``exit_code``, ``count``) an
    integer in the signed 64-bit range, kept as an int. A bool, a NaN or a
    value of another type is refused with a TypeError or ValueError naming
    the field and the value; a store never calls str() or repr() on user
    objects, and never unpickles or parses what it keeps (``info`` is JSON
    text only for its readers).
  * ``TaskRecord.priority`` keeps its type: an int stays an int, a float a
    float. ``paused`` is a bool (0 and 1 are accepted).
  * ``status`` (of a task or a run) is one of the codes in
    :data:`~pysched_lightning.protocols.STATUS_NAMES`.
  * Records come back as new objects: :class:`TaskRecord` instances, and run
    records as dicts with exactly the keys of :data:`RUN_FIELDS`, in order.

Runs
  * A run is keyed by ``(task_id, slot, attempt)``; ``slot`` is a non-empty
    str the store never interprets. ``claim_run`` inserts a RUNNING record
    unless the key exists. ``finish_run`` needs ``task_id``, ``slot``,
    ``attempt``, ``status`` and ``scheduled``; it replaces every field of the
    claimed record, except that a None ``name``, ``run`` or ``started``
    keeps the claimed value; a None ``count`` is 1 (a MISSED record may stand
    for several skipped runs: ``count`` >= 1). Keys outside RUN_FIELDS are
    ignored.
  * ``runs()`` lists the newest first: ``scheduled`` descending, then the
    later written first (a record keeps the place of its claim).
    ``before``/``since`` bound ``scheduled`` (``<`` and ``>=``);
    ``statuses`` is an iterable of status codes (empty: nothing matches).
  * ``purge_runs(before)`` deletes the runs that are over (any status but
    RUNNING) and ended before *before*: their ``finished`` time, or for a run
    that never got one its ``started``, else ``scheduled``. It keeps the
    records of each stored task's latest claimed slot (its newest
    ``scheduled`` among the runs that are not MISSED): a restart reads them
    to know whether that slot ran, and what retry it is owed.
  * ``mark_interrupted()`` turns every RUNNING run into an INTERRUPTED one
    whose ``error`` is :data:`INTERRUPTED` (a store written before schema 3
    kept them as ERROR with that error: they read as INTERRUPTED once
    upgraded).
  * ``note_process(task_id, slot, attempt, pid, pid_started)`` keeps, with a
    RUNNING claim, the process that runs it: its pid and its start time
    (``/proc/<pid>/stat`` field 22, clock ticks after boot), so that a
    restart tells that very process from a later one given the same pid.
    ``claimed_processes()`` lists the RUNNING claims that have one, as
    dicts with ``task_id, slot, attempt, run, pid, pid_started``.
  * ``release_run(task_id, slot, attempt)`` deletes that run's record if it
    is RUNNING (a claim given back: its run never executed), so that the
    slot can be claimed again; anything else is left as it is.

Tasks
  * ``save_task(record, replace=False)`` inserts only when no task has that
    id. ``update_task`` and ``remove_task`` on an unknown id do nothing (the
    scheduler may race a cancel); ``remove_task`` keeps the run history.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import operator
from collections import abc
from typing import (Any, Callable, Dict, FrozenSet, Iterable, List, Mapping, Optional, Set,
                    Tuple)

from ...records.protocols import RUN_FIELDS, STATUS_NAMES, TaskRecord

__all__ = ["INTERRUPTED", "PROCESS_FIELDS", "check_process", "TASK_FIELDS", "CLAIMED_FIELDS", "task_row", "task_changes",
           "run_row", "claim_row", "check_key", "check_slot", "check_limit", "check_time",
           "check_statuses"]

#: The error text of a run left running by a process that stopped.
INTERRUPTED = "interrupted: the scheduler process stopped during this run"
#: What claimed_processes() says of each RUNNING claim with a process.
PROCESS_FIELDS = ("task_id", "slot", "attempt", "run", "pid", "pid_started")
#: The fields of TaskRecord, in order (the tasks table's columns).
TASK_FIELDS: Tuple[str, ...] = tuple(f.name for f in dataclasses.fields(TaskRecord))
#: The fields claim_run sets, which a finishing record without them leaves as claimed.
CLAIMED_FIELDS = ("name", "run", "started")

_INT64_MIN, _INT64_MAX = -2 ** 63, 2 ** 63 - 1
_Convert = Callable[[str, Any], Any]


def _field(kind: str, name: str) -> str:
    return f"{kind} field {name!r}"


def _int(kind: str, name: str, value: Any) -> int:
    if type(value) is not int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{_field(kind, name)} must be an int, not {value!r}")
        value = int(value)
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise ValueError(f"{_field(kind, name)} {value!r} is outside the signed 64-bit range")
    return value


def _float(kind: str, name: str, value: Any) -> float:
    if type(value) is not float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{_field(kind, name)} must be a number, not {value!r}")
        value = float(value)
    if value != value:
        raise ValueError(f"{_field(kind, name)} must not be NaN")
    return value


def _number(kind: str, name: str, value: Any) -> Any:
    """An int stays an int, a float a float (priority)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return _int(kind, name, value)
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return _float(kind, name, value)
    raise TypeError(f"{_field(kind, name)} must be an int or a float, not {value!r}")


def _text(kind: str, name: str, value: Any) -> Optional[str]:
    if value is None or type(value) is str:
        return value
    if isinstance(value, str):
        return str.__str__(value)  # a str subclass, without its own __str__
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    raise TypeError(f"{_field(kind, name)} must be a str or None, not {value!r}")


def _blob(kind: str, name: str, value: Any) -> Optional[bytes]:
    if value is None or type(value) is bytes:
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"{_field(kind, name)} must be bytes or None, not {value!r}")


def _optional(convert: _Convert) -> _Convert:
    return lambda name, value: None if value is None else convert(name, value)


def _status(kind: str, name: str, value: Any) -> int:
    code = _int(kind, name, value)
    if code not in STATUS_NAMES:
        raise ValueError(f"{_field(kind, name)} {value!r} is not a status code "
                         f"({', '.join(f'{c} {n}' for c, n in STATUS_NAMES.items())})")
    return code


def _flag(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if type(value) is int and value in (0, 1):
        return bool(value)
    raise TypeError(f"task field {name!r} must be a bool, not {value!r}")


def check_key(value: Any, what: str = "a task id") -> str:
    """*value* as a task id (a str), or TypeError."""
    if type(value) is not str:
        if not isinstance(value, str):
            raise TypeError(f"{what} must be a str, not {value!r}")
        value = str.__str__(value)
    return value


def check_slot(value: Any) -> str:
    """*value* as a run's slot: a non-empty str."""
    slot = check_key(value, "a run's slot")
    if not slot:
        raise ValueError("a run's slot must not be empty")
    return slot


def _count(name: str, value: Any) -> int:
    if value is None:
        return 1
    count = _int("run", name, value)
    if count < 1:
        raise ValueError(f"run field {name!r} must be at least 1, not {value!r}")
    return count


def _task(convert: Callable[[str, str, Any], Any]) -> _Convert:
    return lambda name, value: convert("task", name, value)


def _run(convert: Callable[[str, str, Any], Any]) -> _Convert:
    return lambda name, value: convert("run", name, value)


_TEXT_TASK, _BLOB_TASK = _task(_text), _task(_blob)
#: How each task field is normalized when stored.
TASK_CONVERT: Dict[str, _Convert] = {
    "id": lambda name, value: check_key(value), "name": _TEXT_TASK, "trigger": _TEXT_TASK,
    "interval": _TEXT_TASK, "priority": _task(_number), "fn_ref": _TEXT_TASK,
    "fn_pickle": _BLOB_TASK, "args": _BLOB_TASK, "kwargs": _BLOB_TASK,
    "options": _BLOB_TASK, "schedule": _BLOB_TASK, "next_run": _optional(_task(_float)),
    "paused": _flag, "runs": _task(_int), "missed": _task(_int), "status": _task(_status),
    "created": _task(_float), "updated": _task(_float), "info": _TEXT_TASK,
}
assert set(TASK_CONVERT) == set(TASK_FIELDS), "every TaskRecord field has a rule"
_NONE: type = type(None)
_STR, _TEXT, _BLOB = frozenset({str}), frozenset({str, _NONE}), frozenset({bytes, _NONE})
#: Per task field, the types of the values that are stored as they are (not
#: ints, whose range is checked, nor floats, which must not be NaN).
_TASK_CLEAN: Dict[str, FrozenSet[type]] = {
    "id": _STR, "name": _TEXT, "trigger": _STR, "interval": _STR, "fn_ref": _TEXT,
    "fn_pickle": _BLOB, "args": frozenset({bytes}), "kwargs": frozenset({bytes}),
    "options": _BLOB, "schedule": _BLOB, "paused": frozenset({bool}),
    "info": _TEXT,
}
_TASK_RULES = tuple((name, TASK_CONVERT[name], _TASK_CLEAN.get(name, frozenset()))
                    for name in TASK_FIELDS)
_task_values = operator.attrgetter(*TASK_FIELDS)

_OPT_RUN_INT, _OPT_RUN_FLOAT, _RUN_TEXT = (_optional(_run(_int)), _optional(_run(_float)),
                                           _run(_text))
_RUN_CONVERT: Dict[str, _Convert] = {
    "task_id": lambda name, value: check_key(value), "name": _RUN_TEXT, "run": _OPT_RUN_INT,
    "attempt": _run(_int), "slot": lambda name, value: check_slot(value),
    "status": _run(_status), "scheduled": _run(_float), "started": _OPT_RUN_FLOAT,
    "finished": _OPT_RUN_FLOAT, "duration": _OPT_RUN_FLOAT, "exit_code": _OPT_RUN_INT,
    "result": _RUN_TEXT, "error": _RUN_TEXT, "traceback": _RUN_TEXT, "output": _RUN_TEXT,
    "stderr": _RUN_TEXT, "reason": _RUN_TEXT, "count": _count, "outcome": _run(_blob),
}
assert set(_RUN_CONVERT) == set(RUN_FIELDS), "every run field has a rule"
#: Per run field, the types of the values that are stored as they are (not
#: ints, whose range is checked, nor floats, which must not be NaN).
_RUN_CLEAN: Dict[str, FrozenSet[type]] = {
    "task_id": _STR, "name": _TEXT, "run": frozenset({_NONE}),
    "started": frozenset({_NONE}), "finished": frozenset({_NONE}),
    "duration": frozenset({_NONE}), "exit_code": frozenset({_NONE}), "result": _TEXT,
    "error": _TEXT, "traceback": _TEXT, "output": _TEXT, "stderr": _TEXT, "reason": _TEXT,
    "outcome": _BLOB,
}
#: Per run field, the number type whose values are stored as they are once
#: checked here, without a call (an int in the 64-bit range, a float not NaN).
_RUN_PLAIN: Dict[str, type] = {"run": int, "attempt": int, "exit_code": int, "scheduled": float,
                               "started": float, "finished": float, "duration": float}
_RUN_RULES = tuple((name, _RUN_CONVERT[name], _RUN_CLEAN.get(name, frozenset()),
                    _RUN_PLAIN.get(name)) for name in RUN_FIELDS)
#: The fields a run record must have (not None).
REQUIRED_RUN_FIELDS = ("task_id", "slot", "attempt", "status", "scheduled")


def task_row(record: TaskRecord) -> Tuple[Any, ...]:
    """The normalized values of *record*, in TaskRecord field order."""
    try:
        values = _task_values(record)
    except AttributeError as exc:
        raise TypeError(f"a store keeps TaskRecord objects, not {record!r}") from exc
    return tuple(value if type(value) in clean else convert(name, value)
                 for (name, convert, clean), value in zip(_TASK_RULES, values))


def task_changes(fields: Mapping[str, Any]) -> Dict[str, Any]:
    """*fields* for update_task, checked and normalized."""
    unknown = [name for name in fields if name not in TASK_CONVERT or name == "id"]
    if unknown:
        known = ", ".join(name for name in TASK_FIELDS if name != "id")
        raise TypeError(f"update_task() got unknown field(s) {', '.join(map(repr, unknown))}"
                        f" (a task's id cannot change); known fields: {known}")
    return {name: TASK_CONVERT[name](name, value) for name, value in fields.items()}


def run_row(record: Mapping[str, Any]) -> Tuple[Any, ...]:
    """The normalized values of a run *record*, in RUN_FIELDS order."""
    if type(record) is not dict and not isinstance(record, abc.Mapping):
        raise TypeError(f"a run record is a mapping of RUN_FIELDS, not {record!r}")
    get = record.get
    missing = [name for name in REQUIRED_RUN_FIELDS if get(name) is None]
    if missing:
        raise KeyError(f"a run record needs a value for {', '.join(missing)}; "
                       f"got keys {list(record)}")
    # A value already of its stored type needs no conversion (the common
    # case, and this runs for every run the scheduler records).
    row: List[Any] = []
    for name, convert, clean, plain in _RUN_RULES:
        value: Any = get(name)
        kind = type(value)
        if kind in clean or kind is plain and (
                value == value if kind is float else _INT64_MIN <= value <= _INT64_MAX):
            row.append(value)
        else:
            row.append(convert(name, value))
    return tuple(row)


def claim_row(task_id: str, slot: str, attempt: int, run: int, name: str, scheduled: float,
              started: float, status: int) -> Tuple[Any, ...]:
    """The normalized run record that claim_run inserts (RUN_FIELDS order)."""
    for field, value in (("task_id", task_id), ("slot", slot), ("attempt", attempt),
                         ("scheduled", scheduled)):
        if value is None:
            raise TypeError(f"claim_run() needs a {field}, not None")
    return run_row({"task_id": task_id, "slot": slot, "attempt": attempt, "run": run,
                    "name": name, "scheduled": scheduled, "started": started,
                    "status": status})


def check_process(pid: Any, pid_started: Any) -> Tuple[int, int]:
    """A claim's process: a pid > 0 and its start time (clock ticks >= 0)."""
    pid, started = _int("run", "pid", pid), _int("run", "pid_started", pid_started)
    if pid <= 0:
        raise ValueError(f"run field 'pid' must be a process id > 0, not {pid!r}")
    if started < 0:
        raise ValueError(f"run field 'pid_started' must be >= 0, not {pid_started!r}")
    return pid, started


def check_limit(limit: Any) -> Optional[int]:
    """*limit* for runs(): None or an int >= 0."""
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError(f"limit must be None or an int >= 0, not {limit!r}")
    return int(limit)


def check_time(name: str, value: Any) -> Optional[float]:
    """A ``before``/``since``/purge bound: None or a number (not NaN)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number of POSIX seconds, not {value!r}")
    if math.isnan(value):
        raise ValueError(f"{name} must not be NaN")
    return float(value)


def check_statuses(statuses: Optional[Iterable[int]]) -> Optional[Tuple[int, ...]]:
    """The distinct status codes of *statuses*, sorted; None for no filter."""
    if statuses is None:
        return None
    if isinstance(statuses, (str, bytes)) or not isinstance(statuses, Iterable):
        raise TypeError(f"statuses must be an iterable of status codes, not {statuses!r}")
    codes: Set[int] = set()
    for code in statuses:
        if isinstance(code, bool) or not isinstance(code, numbers.Integral):
            raise TypeError(f"statuses must hold int status codes, not {code!r}")
        if code not in STATUS_NAMES:
            raise ValueError(f"statuses: {code!r} is not a status code "
                             f"({', '.join(f'{c} {n}' for c, n in STATUS_NAMES.items())})")
        codes.add(int(code))
    return tuple(sorted(codes))
