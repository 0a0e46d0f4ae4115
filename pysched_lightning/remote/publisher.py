"""The service's outbox: stores finished tasks' responses, then publishes them.

One thread with its own broker connection (pika connections are not
thread-safe). It takes every response waiting, stores the new ones (done)
in one transaction, publishes each to its client's durable reply queue with
publisher confirms, then marks them published. A response is stored before
it is sent, so a crash in between only means it is sent again at the next
start (clients keep the first copy); the broker's confirm comes before the
row says published, so nothing stored is ever dropped.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Callable, List, NamedTuple, Optional, Set

import pika
import pika.exceptions

from .broker import PERSISTENT, RECOVERABLE, Backoff, close_quietly, declare, reply_queue
from .inbox import Inbox
from .protocol import SIGNATURE_HEADER, sign

__all__ = ["Outgoing", "Publisher"]

_log = logging.getLogger("pysched_lightning.remote")

_CONTENT_TYPE = "application/x-pysched-response"


class Outgoing(NamedTuple):
    """A response on its way; ``stored`` is True when its row is done already."""

    message_id: str
    client: str
    body: bytes
    stored: bool = False


_STOP = Outgoing("", "", b"")


class Publisher:
    """The thread that stores and publishes a service's responses."""

    def __init__(self, params: pika.URLParameters, service: str, inbox: Inbox,
                 key: Optional[bytes], on_published: Callable[[int], None]) -> None:
        self._params = params
        self._service = service
        self._inbox = inbox
        self._key = key
        self._on_published = on_published
        self._queue: "queue.Queue[Outgoing]" = queue.Queue()
        self._stopping = threading.Event()  # cuts a retry's sleep short
        self._give_up_at = 0.0  # set by stop(), before _stopping
        self._connection: Any = None
        self._channel: Any = None
        self._declared: Set[str] = set()  # reply queues declared on this connection
        self._backoff = Backoff()
        self._thread = threading.Thread(target=self._run, name=f"pysched-publisher-{service}",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def put(self, item: Outgoing) -> None:
        self._queue.put(item)

    def stop(self, timeout: float = 10.0) -> None:
        """Publish what was put before this call, then close. What the broker
        does not take within *timeout* seconds stays stored (done) and goes
        out at the next start."""
        self._give_up_at = time.monotonic() + timeout
        self._stopping.set()
        self._queue.put(_STOP)
        self._thread.join()

    # ------------------------------------------------------------- the thread

    def _run(self) -> None:
        try:
            while True:
                batch = [self._queue.get()]
                while True:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                items = [item for item in batch if item is not _STOP]
                if items and not self._handle(items):
                    return  # gave up at stop: the rest is stored, published next start
                if len(items) < len(batch):
                    return
        except Exception:
            _log.exception("the response publisher of service %r failed", self._service)
        finally:
            close_quietly(self._connection)

    def _handle(self, items: List[Outgoing]) -> bool:
        new = [item for item in items if not item.stored]
        if new:
            stored = self._store(new)
            if stored is None:
                return False
            dropped = {item.message_id for item, ok in zip(new, stored) if not ok}
            if dropped:
                _log.error("responses to %s not stored: their rows were not running; "
                           "not sent", sorted(dropped))
                items = [item for item in items if item.message_id not in dropped]
        sent: List[str] = []
        for item in items:
            if not self._publish(item):
                break
            sent.append(item.message_id)
        if sent:
            self._inbox.mark_published(sent)
            self._on_published(len(sent))
        return len(sent) == len(items)

    def _store(self, new: List[Outgoing]) -> Optional[List[bool]]:
        """Store the responses (done); None if the store keeps failing until stop."""
        while True:
            try:
                return self._inbox.mark_done([(item.message_id, item.body) for item in new])
            except Exception as exc:
                # The rows stay started: if this never succeeds, a restart
                # answers them "interrupted".
                if not self._pause(f"service {self._service!r}: storing responses failed", exc):
                    return None

    def _publish(self, item: Outgoing) -> bool:
        """Publish until the broker confirms; False only when giving up at stop."""
        routing_key = reply_queue(self._service, item.client)
        headers = {SIGNATURE_HEADER: sign(self._key, item.body)} if self._key else None
        properties = pika.BasicProperties(delivery_mode=PERSISTENT,
                                          message_id=item.message_id,
                                          content_type=_CONTENT_TYPE, headers=headers)
        while True:
            try:
                channel = self._open()
                if routing_key not in self._declared:
                    declare(channel, routing_key)
                    self._declared.add(routing_key)
                channel.basic_publish("", routing_key, item.body, properties, mandatory=True)
                self._backoff.reset()
                return True
            except pika.exceptions.UnroutableError as exc:
                self._declared.discard(routing_key)  # deleted under us: declare it again
                error: BaseException = exc
            except pika.exceptions.NackError as exc:
                error = exc
            except RECOVERABLE as exc:
                close_quietly(self._connection)
                self._connection = self._channel = None
                error = exc
            if not self._pause(f"service {self._service!r}: publishing the response to "
                               f"{item.message_id!r} failed", error):
                return False

    def _pause(self, what: str, error: BaseException) -> bool:
        """Wait before retrying; False once stopping and past the give-up time."""
        delay = self._backoff.failed(what, error)
        if not self._stopping.is_set():
            self._stopping.wait(delay)  # stop() cuts it short; the deadline then applies
            return True
        remaining = self._give_up_at - time.monotonic()
        if remaining <= 0:
            _log.warning("service %r stops with responses not yet published; they are "
                         "stored and go out at its next start", self._service)
            return False
        time.sleep(min(delay, remaining))
        return True

    def _open(self) -> Any:
        if self._channel is None or not self._channel.is_open:
            close_quietly(self._connection)
            self._declared.clear()
            self._connection = pika.BlockingConnection(self._params)
            self._channel = self._connection.channel()
            self._channel.confirm_delivery()
        return self._channel
