"""What the journal hands the run log, and when.

Records are written in the order given, by one thread at a time (a run
log's ``write`` that calls back into the scheduler only adds more), each
whatever another's ``write`` raised. A MISSED record stands for a stretch
of skipped runs whose count grows while the stretch lasts (the store keeps
one record, rewritten): the run log gets it once, with its final count,
when the stretch ends -- at the task's next record, or at close -- so that
a sum of counts over the log is right.
"""
from __future__ import annotations

import collections
import logging
import threading
from typing import Any, Deque, Dict, Iterable, Mapping, Optional

from ..records.protocols import MISSED
from ..records.runs import TaskStatus, error_line

__all__ = ["RunLogFeed"]

_log = logging.getLogger("pysched_lightning")


class RunLogFeed:
    """The records waiting for *run_log*, and the MISSED ones held."""

    def __init__(self, run_log: Any) -> None:
        self.run_log = run_log
        self._queue: Deque[Mapping[str, Any]] = collections.deque()
        #: Guards the held MISSED records (one per task: its open stretch).
        self._held_lock = threading.Lock()
        self._held: Dict[str, Mapping[str, Any]] = {}
        #: One writer at a time.
        self._write_lock = threading.Lock()

    def add(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Queue *records* (committed to the store, in order); a MISSED one
        is held until its stretch ends."""
        with self._held_lock:
            for record in records:
                task_id = record["task_id"]
                held = self._held.get(task_id)
                if held is not None and (record["status"] != MISSED
                                         or _stretch(record) != _stretch(held)):
                    self._queue.append(self._held.pop(task_id))  # its stretch ended
                if record["status"] == MISSED:
                    self._held[task_id] = record  # (its count may grow yet)
                else:
                    self._queue.append(record)

    def release_held(self) -> None:
        """Queue the MISSED records held (the scheduler stops)."""
        with self._held_lock:
            self._queue.extend(self._held.values())
            self._held.clear()

    def write(self) -> None:
        """Write the queued records, one thread at a time; each is written,
        whatever another's ``write`` raised (the first interrupt is raised
        at the end)."""
        queue = self._queue
        first: Optional[BaseException] = None
        while queue and self._write_lock.acquire(False):
            try:
                while queue:
                    try:
                        self._write_one(queue.popleft())
                    except BaseException as exc:  # (_write_one logs an Exception)
                        first = first or exc
            finally:
                self._write_lock.release()
        if first is not None:
            raise first

    def _write_one(self, record: Mapping[str, Any]) -> None:
        logged = {key: value for key, value in record.items() if key != "outcome"}
        logged["status"] = TaskStatus(record["status"]).label
        try:
            self.run_log.write(logged)
        except Exception as exc:
            _log.error("writing run %s #%s to the run log failed: %s", record["task_id"],
                       record["run"], error_line(exc))


def _stretch(record: Mapping[str, Any]) -> Any:
    """What names a MISSED record's stretch (its first skipped slot)."""
    return record.get("slot"), record.get("scheduled")
