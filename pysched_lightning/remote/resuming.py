"""Bringing a service's stored rows back to work: at start, the rows its
store holds (a restart); with a shared store, later also the rows its inbox
takes over from an instance whose lease lapsed, and a row that is this
instance's again after a run found it another's.

Accepted rows are scheduled again, started ones answered "interrupted"
(they may have run in part, so they are not run twice), done ones
published. A stopping service resumes nothing more: it deregisters, and
another instance takes the rows over.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Container, List, Optional

from .inbox import Row
from .inboxes import InboxStore
from .messages import RemoteError, TaskHeader, encode_response, parse_task
from .outbox import Outbox, Outgoing
from .protocol import STORED_VERSIONS, RejectedMessage, unframe

__all__ = ["Resumer"]

_log = logging.getLogger("pysched_lightning.remote")

#: How the service schedules a task: (task, due time).
Schedule = Callable[[TaskHeader, float], None]
#: How the service answers a task: (message id, client, status, result, exception).
Answer = Callable[[str, str, str, Any, Optional[BaseException]], None]


class Resumer:
    """Resumes the stored rows of the service *name*.

    *schedule* and *answer* are the service's; *scheduled* holds the
    message ids scheduled here already. *lock* is held while rows are
    resumed on the inbox's thread, and the service sets *stopping* under
    it, so none is scheduled once the scheduler may be shut down.
    """

    def __init__(self, name: str, inbox: InboxStore, outbox: Outbox, max_size: int, *,
                 schedule: Schedule, answer: Answer, scheduled: Container[str],
                 lock: threading.Lock, stopping: threading.Event) -> None:
        self.name = name
        self._inbox = inbox
        self._outbox = outbox
        self._max_size = max_size
        self._schedule = schedule
        self._answer = answer
        self._scheduled = scheduled
        self._lock = lock
        self._stopping = stopping

    def recover(self, location: str) -> None:
        """Resume the store: answer interrupted runs, requeue responses,
        reschedule; with a shared store, later also the messages this
        instance takes over from others (on the inbox's thread)."""
        rows = self._inbox.recover(self.adopted)
        self.resume(rows)
        if rows:
            _log.info("service %r resumed %d unfinished message(s) from %s", self.name,
                      len(rows), location)

    def adopted(self, rows: List[Row]) -> None:
        """Resume *rows* taken over from another instance, unless stopping."""
        with self._lock:
            if self._stopping.is_set():
                # Left as they are: this instance deregisters as it stops,
                # and another one takes them over.
                return
            self.resume(rows)

    def taken_back(self, message_id: str) -> None:
        """After a run found its row not this instance's: if the row is this
        instance's again by now (taken back from an instance that died
        meanwhile), schedule it again."""
        try:
            row = self._inbox.runnable(message_id)
        except Exception:
            _log.exception("service %r: reading message %r failed", self.name, message_id)
            return
        if row is not None:
            self.adopted([row])

    def resume(self, rows: List[Row]) -> None:
        """Run accepted rows, answer started ones "interrupted" (they may
        have run in part), publish done ones."""
        interrupted = [row for row in rows if row.state == "started"]
        if interrupted:
            _log.warning("service %r: %d task(s) were running when their service stopped; "
                         "they are answered 'interrupted' and not run again: %s", self.name,
                         len(interrupted), [row.message_id for row in interrupted])
            answers = {row.message_id: encode_response(
                row.message_id, "interrupted", exception=RemoteError(
                    f"the service stopped while task {row.message_id!r} was running; it is "
                    "not run again"), started=row.started, max_size=self._max_size)
                for row in interrupted}
            stored = self._inbox.mark_done(answers.items())
            stored_ids = {message_id for message_id, ok in zip(answers, stored) if ok}
            rows = [row._replace(state="done", response=answers[row.message_id])
                    if row.message_id in stored_ids else row for row in rows
                    if row.message_id not in answers or row.message_id in stored_ids]
        for row in rows:
            if row.state == "done":
                assert row.response is not None
                self._outbox.put(Outgoing(row.message_id, row.client, bytes(row.response), True))
                continue
            if row.message_id in self._scheduled:
                # Scheduled here already: a row this instance took back after
                # its lease lapsed (its start succeeds once, here or there).
                continue
            assert row.body is not None
            try:
                task = parse_task(unframe(bytes(row.body), versions=STORED_VERSIONS)[0])
            except RejectedMessage as exc:  # a stored body no longer parses: answer, not run
                self._answer(row.message_id, row.client, "error", None,
                             RemoteError(f"stored task unreadable: {exc.reason}"))
                continue
            self._schedule(task, row.due)
