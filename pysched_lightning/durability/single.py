"""Writes a store can commit in one statement each, for a store that says
how (PostgreSQL's ``save_and_claim`` and ``end_and_claim``): a ``delay()``
that stores its task with its first run's claim, and what a worker commits
between two runs. One round trip instead of a transaction's five; each
part stands alone, as the journal's write-by-write retry would leave it."""
from __future__ import annotations

from typing import Any, Callable, List, Optional, Tuple

from ..records.runs import error_line
from .writes import Write, WriteKind

__all__ = ["save_alone", "between_runs"]


def save_alone(store: Any, write: Write) -> Optional[List[Tuple[Write, BaseException]]]:
    """A task (and its first run's claim) committed by itself, with a
    store that does it in one statement (``save_and_claim``: a
    ``delay()`` waits one round trip); None when the store cannot. With a
    claim, a store that can (``defers_flush``) commits without waiting for
    its disk flush, so that the run starts sooner: the write is left
    ``unflushed`` for the journal's ``confirm_flushed``."""
    save_and_claim = getattr(store, "save_and_claim", None)
    replace, claim, set_aside, _ = write.fields
    if save_and_claim is None or set_aside is not None:
        return None
    wanted = None if claim is None else claim.row()
    # The run starts at the commit, the delay() returns at the flush.
    soon = wanted is not None and getattr(store, "defers_flush", False)
    try:
        if soon:
            written, granted = save_and_claim(write.target, replace, wanted, flush=False)
        else:
            written, granted = save_and_claim(write.target, replace, wanted)
    except Exception as exc:
        write.error = exc
        if claim is not None:
            claim.refuse(f"could not be claimed in the store: {error_line(exc)}")
        return [(write, exc)]
    write.fields[3] = written
    write.unflushed = soon and bool(written)
    if claim is not None:
        if written:
            claim.answered(granted)
        else:
            claim.refuse("its id is another task's, stored meanwhile")
    return []

def between_runs(store: Any, writes: List[Write],
                 commit: Callable[[List[Write]], List[Tuple[Write, BaseException]]],
                 settled: Callable[[List[Write]], None]
                 ) -> Optional[List[Tuple[Write, BaseException]]]:
    """What workers commit between two runs (a run's record, its task's
    counters, the next run's claim; one such group per worker), with a
    store that writes a group in one statement (``end_and_claim``): one
    round trip each, and each group ``settled`` once committed (its worker
    goes on with its next run while the others' are written). None when
    these writes are not that, or the store cannot (then they go the usual
    way)."""
    groups = _groups(store, writes)
    if groups is None:
        return None
    end_and_claim = store.end_and_claim
    failures: List[Tuple[Write, BaseException]] = []
    for index, (run, update, claim) in enumerate(groups):
        target = None if claim is None else claim.target
        wanted = None if target is None else (
            target.task_id, target.slot, target.attempt, target.run,
            target.name if target.name is not None else target.task_id,
            target.scheduled, target.started)
        try:
            lost, granted = end_and_claim(run.fields, None if update is None
                                          else update.target, {} if update is None
                                          else update.fields, wanted)
        except Exception:  # nothing of this group was written: the rest the usual way
            if index == 0:
                return None
            rest = [write for group in groups[index:] for write in group
                    if write is not None]
            return failures + commit(rest)
        if target is not None:
            target.answered(granted)
        if lost is not None:
            run.error = lost
            failures.append((run, lost))
        settled([write for write in (run, update, claim) if write is not None])
    return failures

def _groups(store: Any, writes: List[Write]) -> Optional[List[Tuple[Write, Optional[Write],
                                                               Optional[Write]]]]:
    """*writes* as (record, its task's update, a claim) groups, or None."""
    if getattr(store, "end_and_claim", None) is None:
        return None
    runs = [w for w in writes if w.kind is WriteKind.RUN]
    updates = {w.target: w for w in writes if w.kind is WriteKind.UPDATE}
    claims = [w for w in writes if w.kind is WriteKind.CLAIM]
    if not runs or len(runs) + len(updates) + len(claims) != len(writes) or \
            len(claims) > len(runs) or len(updates) > len(runs):
        return None
    if any(w.target.granted is not None for w in claims) or \
            (claims and getattr(store, "synchronous", False)):
        return None
    groups = []
    for index, run in enumerate(runs):
        update = updates.pop(run.fields.get("task_id"), None)
        if update is not None and "paused" in update.fields:
            return None
        groups.append((run, update, claims[index] if index < len(claims) else None))
    return groups if not updates else None
