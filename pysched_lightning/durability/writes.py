"""What the journal notes for the store: a write's kind and target, and
how each is shown, built and matched to its task (outside any lock)."""
from __future__ import annotations

import enum
from typing import Any, Mapping, Optional

from ..records.protocols import TaskRecord
from ..records.runs import Run, error_line
from .claims import Claim
from .encoding import run_record

__all__ = ["WriteKind", "Write", "inserted", "run_name", "task_of", "safe_record",
           "describe"]


class WriteKind(enum.Enum):
    """What a noted write does to the store (and the run log)."""

    #: Store a task record (with an early claim, maybe).
    SAVE = "save"
    #: Change some fields of a stored task.
    UPDATE = "update"
    #: Delete a stored task.
    REMOVE = "remove"
    #: Claim a run's slot before it executes.
    CLAIM = "claim"
    #: Give back a claim whose run never executed.
    RELEASE = "release"
    #: A run's record (built from the run, outside the locks).
    RUN = "run"


class Write:
    """One noted change; after a flush, ``error`` says whether it failed."""

    __slots__ = ("kind", "target", "fields", "error", "ready", "unflushed", "done")

    def __init__(self, kind: WriteKind, target: Any, fields: Any = None,
                 ready: bool = True) -> None:
        self.kind = kind
        self.target = target
        self.fields = fields
        self.error: Optional[BaseException] = None
        #: False until its arguments are built (a run's record).
        self.ready = ready
        #: A task saved with its first run's claim, committed without
        #: waiting for the store's disk flush (see Journal.confirm_flushed).
        self.unflushed = False
        #: Committed, or failed: a flush waiting for it goes on.
        self.done = False


def inserted(write: Write) -> bool:
    """Whether :meth:`Journal.store_task` stored its task (without
    *replace*: whether the id was free)."""
    return write.error is None and write.fields[3] is True


def run_name(claim: Claim) -> str:
    source = claim._source
    try:
        return source.name if source is not None else claim.task_id
    except Exception:
        return claim.task_id


def task_of(write: Write) -> Optional[str]:
    target = write.target
    if isinstance(target, str):
        return target
    return getattr(target, "task_id", None) or getattr(target, "id", None)


def safe_record(run: Run) -> Mapping[str, Any]:
    """The run's record; a result or exception that cannot be shown or
    pickled never loses the record itself."""
    try:
        return run_record(run)
    except Exception as exc:  # e.g. a name property that raises
        return {"task_id": run.task_id, "name": run.task_id, "run": run.run_number,
                "attempt": run.attempt, "slot": run._slot, "status": int(run.status),
                "scheduled": run._t_scheduled + run._offset,
                "error": run.error or f"<record failed: {error_line(exc)}>"}


def describe(write: Write) -> str:
    target = write.target
    if isinstance(target, Run):
        return f"{target.task_id} #{target.run_number}"
    if isinstance(target, Claim):
        return f"{target.task_id} #{target.run}"
    if isinstance(target, TaskRecord):
        return target.id
    return str(target)
