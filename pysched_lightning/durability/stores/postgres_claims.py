"""The PostgreSQL store's claims: a run's slot taken for this node, only
while its lease is live, one at a time, many in one statement, or with the
task a ``delay()`` stores (one round trip)."""
from __future__ import annotations

import logging
from typing import (Any, Callable, ContextManager, Dict, List, Mapping, Optional, Sequence,
                    Set, Tuple)

import psycopg

from ...records.protocols import RUN_FIELDS, RUNNING, ClaimLostError, TaskRecord
from . import postgres_sql as sql
from .postgres_rows import (Claim, claim_params, claim_tuple, lost_claim, priority_columns,
                            task_params)
from .rules import check_key, claim_row, run_row, task_changes, task_row

__all__ = ["PostgresClaims"]

_log = logging.getLogger("pysched_lightning.stores")


class PostgresClaims:
    """The claim methods of :class:`~.postgres.PostgresStore` (its data
    connection under ``_lock``, its side connection, its lease's fence)."""

    _lock: Any
    _depth: int
    _strict: bool
    synchronous: bool
    lost_lease: bool
    _row: Callable[..., Tuple[Any, ...]]
    _run: Callable[..., Any]
    _on_side: Callable[..., List[Tuple[Any, ...]]]
    _fence: Callable[[], Dict[str, Any]]
    _strictly: Callable[[], ContextManager[None]]
    _closed: Any
    owner: Optional[str]
    url: str
    lease: float
    acquire: Callable[..., bool]
    #: True once the server refused the statement of :meth:`wait_flushed`.
    _flush_refused = False

    def claim_run(self, task_id: str, slot: str, attempt: int, *, run: int, name: str,
                  scheduled: float, started: float) -> bool:
        """Insert a RUNNING record, this node's, unless the key exists or this
        node's lease is lost (then ``lost_lease`` is set)."""
        row = claim_row(task_id, slot, attempt, run, name, scheduled, started, RUNNING)
        while True:
            params = dict(zip(RUN_FIELDS, row), **self._fence())
            with self._strictly() if self.synchronous else self._lock:
                live, inserted = self._row(sql.CLAIM_RUN, params)
            if live or not self._rejoin():
                return bool(inserted)

    def claim_runs(self, claims: Sequence[Claim]) -> List[bool]:
        """:meth:`claim_run` for each ``(task_id, slot, attempt, run, name,
        scheduled, started)``, in one statement: whether each was granted,
        in order (a key given twice is granted once at most)."""
        rows = [claim_row(t, s, a, r, n, sc, st, RUNNING)
                for t, s, a, r, n, sc, st in map(claim_tuple, claims)]
        if not rows:
            return []
        columns = list(zip(*rows))
        while True:
            params = {"task_ids": list(columns[0]), "slots": list(columns[4]),
                      "attempts": list(columns[3]), "runs": list(columns[2]),
                      "names": list(columns[1]), "scheduleds": list(columns[6]),
                      "starteds": list(columns[7]), **self._fence()}
            with self._strictly() if self.synchronous else self._lock:
                answer = self._run(sql.CLAIM_RUNS, params).fetchall()
            if answer and answer[0][0]:
                break
            if not self._rejoin():
                return [False] * len(rows)
        granted = {(t, s, a) for _, t, s, a in answer if t is not None}
        result = []
        for row in rows:
            key = (row[0], row[4], row[3])
            result.append(key in granted)
            granted.discard(key)
        return result

    def claimed_keys(self, keys: Sequence[Tuple[str, str, int]]) -> Set[Tuple[str, str, int]]:
        """Which of the ``(task_id, slot, attempt)`` *keys* are claimed
        already, by any node: a claim of them would be refused. One
        statement, for a node that would otherwise learn it claim by claim."""
        if not keys:
            return set()
        task_ids, slots, attempts = (list(column) for column in zip(*keys))
        params = {"task_ids": task_ids, "slots": slots, "attempts": attempts}
        with self._lock:
            rows = self._run(sql.CLAIMED_KEYS, params).fetchall()
        return {(str(t), str(s), int(a)) for t, s, a in rows}

    def save_and_claim(self, record: TaskRecord, replace: bool, claim: Optional[Claim],
                       flush: bool = True) -> Tuple[bool, bool]:
        """``save_task(record, replace)`` and, if the task was written, the
        claim of its first run (a ``claim_runs`` tuple, or None), in one
        statement committed with the WAL flushed: one round trip, for a
        ``delay()`` that waits for it. Returns (written, claimed).

        ``flush=False`` (with a claim): the commit may not wait for the
        flush, so that the run can start sooner, like every other claim;
        the caller then calls :meth:`wait_flushed` before it tells anyone
        the task is stored."""
        params = task_params(task_row(record))
        claimed = None if claim is None else claim_row(*claim_tuple(claim), RUNNING)
        params.update(claim_params(claimed))
        params.update(self._fence())
        statement = sql.SAVE_AND_CLAIM if replace else sql.ADD_AND_CLAIM
        with self._lock:
            if self._depth:  # (in a batch: with it, and its commit waits for the flush)
                self._strict = True
                written, live, inserted = self._row(statement, params)
            else:
                if not flush and claim is not None and self.defers_flush:
                    statement = sql.SAVE_AND_CLAIM_SOON if replace else sql.ADD_AND_CLAIM_SOON
                [(written, live, inserted, *_)] = self._on_side(statement, params)
        if claim is not None and written and not live and self._rejoin():
            return True, self._claim_again(claim)
        return bool(written), bool(inserted)

    @property
    def defers_flush(self) -> bool:
        """True when ``save_and_claim(..., flush=False)`` commits without
        the WAL flush (not on a ``synchronous`` store, nor once the server
        refused :meth:`wait_flushed`'s statement)."""
        return not self.synchronous and not self._flush_refused

    def wait_flushed(self) -> None:
        """Return once every commit this store made is on the server's disk
        (what ``save_and_claim(..., flush=False)`` left to flush)."""
        try:
            self._on_side(sql.FLUSH_WAL)
        except (psycopg.errors.InsufficientPrivilege, psycopg.errors.UndefinedFunction):
            self._flush_refused = True  # (from now on, definitions commit flushed)
            raise

    def end_and_claim(self, record: Mapping[str, Any], task_id: Optional[str],
                      fields: Mapping[str, Any], claim: Optional[Claim]
                      ) -> Tuple[Optional[ClaimLostError], bool]:
        """``finish_run(record)``, ``update_task(task_id, **fields)`` (not
        ``paused``) and ``claim_run(*claim)`` in one statement of its own
        (outside a batch): a worker's commit between two runs, one round
        trip. Each part stands alone, as if written one by one: returns the
        ClaimLostError of a record that is another node's now (not written;
        the rest is) and whether the claim was granted."""
        row = run_row(record)
        params: Dict[str, Any] = dict(zip(RUN_FIELDS, row), **self._fence())
        columns: Tuple[str, ...] = ()
        if task_id is not None:
            params["u_id"] = check_key(task_id)
            for name, value in task_changes(fields).items():
                if name == "priority":
                    params.update({f"u_{key}": item
                                   for key, item in priority_columns(value).items()})
                else:
                    params[f"u_{name}"] = value
            columns = tuple(key[2:] for key in params if key.startswith("u_") and key != "u_id")
            if "paused" in columns:
                raise ValueError("end_and_claim() does not change a task's pause")
        if claim is not None:
            claimed = claim_row(*claim_tuple(claim), RUNNING)
            params.update(claim_params(claimed))
        with self._lock:
            if self._depth:
                raise RuntimeError("end_and_claim() commits by itself: not inside a batch")
            finished, inserted, live, granted = self._row(sql.cycle_sql(columns, claim is not None),
                                                         params)
        lost = None
        if not finished and not inserted and params["epoch"] is not None:
            lost = lost_claim(params, "the outcome is not recorded")
        if claim is not None and not live and self._rejoin():
            granted = self._claim_again(claim)
        return lost, bool(granted)

    def _claim_again(self, claim: Claim) -> bool:
        """*claim* once more, after :meth:`_rejoin` (under the new epoch)."""
        task_id, slot, attempt, run, name, scheduled, started = claim_tuple(claim)
        return self.claim_run(task_id, slot, attempt, run=run, name=name, scheduled=scheduled,
                              started=started)

    def _rejoin(self) -> bool:
        """A claim found this node's lease lost (the node was cut off or
        stalled longer than it): its runs are the others' to record
        interrupted; it joins again under a new epoch, so that its claims
        from now on count. False when it cannot (never joined, or closed):
        then ``lost_lease`` says so."""
        self.lost_lease = True
        owner = self.owner
        if owner is None or self._closed.is_set():
            return False
        _log.warning("store %s: this scheduler's lease expired (it was cut off from the "
                     "database or stalled for longer than %s s): it joins again under a "
                     "new epoch", self.url, self.lease)
        self.acquire(owner)
        return True
