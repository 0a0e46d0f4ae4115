"""Rows of the PostgreSQL store as Python values: a task's priority in two
columns (an int stays an int, a float a float), claims as tuples, and the
error of a claim another node took over."""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Tuple

from ...records.protocols import RUN_FIELDS, ClaimLostError, TaskRecord
from . import postgres_sql as sql

__all__ = ["Claim", "priority_columns", "task_params", "task_record_of", "claim_tuple",
           "claim_params", "attempt_of", "lost_claim"]

#: A claim as ``claim_runs`` takes it.
Claim = Tuple[str, str, int, int, str, float, float]


def priority_columns(value: Any) -> Dict[str, Any]:
    """A priority as its two columns: an int, or a float."""
    is_int = isinstance(value, int)
    return {"priority_int": value if is_int else None,
            "priority_real": None if is_int else value}


def task_params(row: Tuple[Any, ...]) -> Dict[str, Any]:
    values = list(row)
    priority = values.pop(sql.PRIORITY)
    names = [name for name in sql.TASK_COLUMNS if not name.startswith("priority_")]
    params = dict(zip(names, values))
    params.update(priority_columns(priority))
    return params


def task_record_of(row: Tuple[Any, ...]) -> TaskRecord:
    values = list(row)
    as_int, as_real = values.pop(sql.PRIORITY), values.pop(sql.PRIORITY)
    values.insert(sql.PRIORITY, as_int if as_int is not None else as_real)
    return TaskRecord(*values)


def claim_tuple(claim: Any) -> Claim:
    if not isinstance(claim, tuple) or len(claim) != 7:
        raise TypeError("a claim is a tuple (task_id, slot, attempt, run, name, scheduled, "
                        f"started), not {claim!r}")
    return claim  # (its values are checked by claim_row)


#: Each ``claim_<field>`` parameter and its place in a run row.
_CLAIM_PARAMS = tuple((f"claim_{name}", RUN_FIELDS.index(name)) for name in sql.CLAIMED)


def claim_params(claimed: Optional[Tuple[Any, ...]]) -> Dict[str, Any]:
    """The ``claim_<field>`` parameters of a claim's run row (all None: no claim)."""
    if claimed is None:
        return dict.fromkeys(name for name, _ in _CLAIM_PARAMS)
    return {name: claimed[index] for name, index in _CLAIM_PARAMS}


def attempt_of(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"a run's attempt must be an int, not {value!r}")
    return int(value)


def lost_claim(params: Mapping[str, Any], what: str) -> ClaimLostError:
    return ClaimLostError(
        f"task {params['task_id']!r} slot {params['slot']!r} attempt {params['attempt']!r}: "
        f"this node's claim (owner {params['owner']!r}, epoch {params['epoch']}) was taken "
        f"over after its lease expired, so {what}")
