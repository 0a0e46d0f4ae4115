"""The service's outbox: finished tasks' responses, stored, then published.

Responses are put here from any thread. The link's thread takes every
response waiting, stores the new ones (done) in one transaction, publishes
them all at once to their clients' durable reply queues with publisher
confirms, and marks the confirmed ones published, again in one transaction.
A worker whose task was the only one running may instead store and publish
its response itself (``send_here``), on a connection of its own, sparing the
hand-off. Either way a response is stored before it is sent, so a crash in
between only means it is sent again at the next start (clients keep the
first copy); it is marked published only after the broker confirmed it, so
nothing stored is dropped. One that is not confirmed is sent again.
"""
from __future__ import annotations

import collections
import functools
import logging
import threading
from typing import Any, Callable, Deque, List, NamedTuple, Optional

import pika

from .broker import PERSISTENT, Backoff, reply_queue
from .inboxes import InboxStore
from .link import Link
from .protocol import SIGNATURE_HEADER, sign
from .sending import Senders

__all__ = ["Outgoing", "Outbox", "response_properties"]

_log = logging.getLogger("pysched_lightning.remote")

_CONTENT_TYPE = "application/x-pysched-response"
#: How long a worker tries to publish a response itself before it leaves it
#: to the link's thread.
_HERE_TIMEOUT = 0.5


def response_properties(key: Optional[bytes], message_id: str, body: bytes) -> Any:
    """The AMQP properties of a response: persistent, signed when there is a key."""
    headers = {SIGNATURE_HEADER: sign(key, body)} if key else None
    return pika.BasicProperties(delivery_mode=PERSISTENT, message_id=message_id,
                                content_type=_CONTENT_TYPE, headers=headers)


class Outgoing(NamedTuple):
    """A response on its way; ``stored`` is True when its row is done already."""

    message_id: str
    client: str
    body: bytes
    stored: bool = False


class Outbox:
    """The responses of one service on their way to the broker."""

    def __init__(self, service: str, params: pika.URLParameters, inbox: InboxStore,
                 key: Optional[bytes], on_published: Callable[[int], None]) -> None:
        self._service = service
        self._inbox = inbox
        self._key = key
        self._on_published = on_published
        self._senders = Senders(params, f"service {service!r}")  # the workers' connections
        self._here_lock = threading.Lock()  # guards _sent_here
        #: Responses workers published, to mark published with the next commit.
        self._sent_here: List[str] = []
        self._lock = threading.Lock()  # guards _waiting, _drain_asked and _idle
        self._waiting: Deque[Outgoing] = collections.deque()
        self._drain_asked = False
        self._idle = threading.Event()  # nothing waiting, nothing unconfirmed
        self._idle.set()
        self._link: Optional[Link] = None
        # Below: the link's thread only.
        self._sending = 0
        self._confirmed: List[str] = []
        self._backoff = Backoff()

    def attach(self, link: Link) -> None:
        self._link = link

    def put(self, item: Outgoing) -> None:
        """Queue a response (any thread)."""
        with self._lock:
            self._waiting.append(item)
            self._idle.clear()
            ask, self._drain_asked = not self._drain_asked, True
        if ask and self._link is not None:
            self._link.call(self.drain)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every response put so far is confirmed; False on timeout."""
        return self._idle.wait(timeout)

    def send_here(self, item: Outgoing) -> None:
        """Store and publish *item* from this (worker) thread, on its own
        connection; what the broker does not take at once is put() instead."""
        with self._here_lock:
            sent, self._sent_here = self._sent_here, []
        try:  # one commit: this response done, those sent before published
            stored, = self._inbox.mark_done([(item.message_id, item.body)], sent)
        except Exception:
            with self._here_lock:
                self._sent_here[:0] = sent
            self.put(item)  # the link's thread tries the store again
            return
        if not stored:
            _log.error("service %r: the response to %r not stored (its row was not "
                       "running, or is another service instance's now); not sent",
                       self._service, item.message_id)
            return
        try:
            self._senders.send(reply_queue(self._service, item.client), item.body,
                               response_properties(self._key, item.message_id, item.body),
                               _HERE_TIMEOUT)
        except Exception:
            self.put(item._replace(stored=True))
            return
        with self._here_lock:
            self._sent_here.append(item.message_id)
        self._on_published(1)

    def close(self) -> None:
        """Once the workers are gone: close their connections, mark what they sent."""
        self._senders.close()
        with self._here_lock:
            sent, self._sent_here = self._sent_here, []
        if sent:
            self._inbox.mark_published(sent)

    # ------------------------------------------------------------- the link's thread

    def drain(self) -> None:
        """Store and publish every waiting response."""
        if self._confirmed:  # left from a connection that ended
            self._mark_published()
        link = self._link
        with self._lock:
            self._drain_asked = False
            if link is None or not link.ready:
                return  # the link drains again once connected
            items = list(self._waiting)
            self._waiting.clear()
        if items:
            items = self._store(items)
        for item in items:
            self._sending += 1
            link.publish(reply_queue(self._service, item.client), item.body,
                         response_properties(self._key, item.message_id, item.body),
                         functools.partial(self._sent, item))
        self._check_idle()

    def _store(self, items: List[Outgoing]) -> List[Outgoing]:
        new = [item for item in items if not item.stored]
        if not new:
            return items
        try:
            stored = self._inbox.mark_done([(item.message_id, item.body) for item in new])
        except Exception as exc:
            # The rows stay started (a restart answers them "interrupted" if
            # this never succeeds); try again after a pause.
            self._retry(items, f"service {self._service!r}: storing responses failed", exc)
            return []
        dropped = {item.message_id for item, ok in zip(new, stored) if not ok}
        if dropped:
            _log.error("service %r: responses to %s not stored (their rows were not "
                       "running, or are another service instance's now); not sent",
                       self._service, sorted(dropped))
        return [item._replace(stored=True) for item in items if item.message_id not in dropped]

    def _sent(self, item: Outgoing, error: Optional[BaseException]) -> None:
        self._sending -= 1
        if error is not None:
            self._retry([item], f"service {self._service!r}: the response to "
                                f"{item.message_id!r} was not confirmed", error)
            return
        if not self._confirmed:  # mark everything confirmed in this pass at once
            self._link.call_later(0, self._mark_published)  # type: ignore[union-attr]
        self._confirmed.append(item.message_id)

    def _mark_published(self) -> None:
        confirmed, self._confirmed = self._confirmed, []
        if confirmed:
            self._inbox.mark_published(confirmed)
            self._backoff.reset()
            self._on_published(len(confirmed))
        self._check_idle()

    def _retry(self, items: List[Outgoing], what: str, error: BaseException) -> None:
        with self._lock:
            self._waiting.extendleft(reversed(items))
        link = self._link
        if link is not None and link.ready:
            link.call_later(self._backoff.failed(what, error), self.drain)
        # else: drained when the link is ready again

    def _check_idle(self) -> None:
        with self._lock:
            if not self._waiting and not self._sending and not self._confirmed:
                self._idle.set()
