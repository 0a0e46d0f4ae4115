"""Receiving responses: the reply queue, read by whichever thread waits.

There is no thread of its own. A thread that waits for a response takes the
reader role if no other thread has it, reads from the connection until its
response has come (keeping every other response it reads for the threads
that wait for those, and waking them), then hands the role on; the others
wait on a condition meanwhile. So a response reaches the thread that waits
for it without a switch to another thread. Each response's signature is
checked before it is unpickled; a bad one (or one whose AMQP properties
cannot even be decoded) is logged and dropped, and reading goes on.

A response is acknowledged only once it was handed to a caller (returned by
a wait or by ``get_response``), at the next read or at close: one read and
kept but not yet asked for stays in the durable reply queue, so a client
that dies (even by SIGKILL) loses none; the next client of its name gets
it. Since responses stay unacknowledged until asked for, the channel has no
prefetch limit (one would stop deliveries once that many waited, and a wait
for the next one would never end). A rejection notice from the service
ends the wait for its message with the :class:`RejectedMessage` it carries.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Dict, List, Optional, Sequence, Set, Union

import pika
import pika.exceptions

from .broker import LOST, Backoff
from .frames import TolerantConnection, close_within, undecodable
from .messages import Response, decode_reply
from .protocol import RejectedMessage, shown_id, signature_of

__all__ = ["Replies"]

_log = logging.getLogger("pysched_lightning.remote")

#: No limit (see the module's text).
_PREFETCH = 0
#: A reader re-checks for close() and cancellation at least this often (s).
_SLICE = 1.0
#: Unread for this long (s), the connection may have been closed by the broker.
_IDLE = 30.0
#: How long closing the connection may wait for the broker (s).
_CLOSE_TIMEOUT = 5.0


Reply = Union[Response, RejectedMessage]


class Replies:
    """The responses of one client: those kept, and the queue they come from."""

    def __init__(self, params: pika.URLParameters, queue: str, declare: Sequence[str],
                 key: Optional[bytes], max_size: int, label: str) -> None:
        self._params = params
        self._queue = queue
        self._declare = tuple(declare)
        self._key = key
        self._max_size = max_size
        self._label = label
        self._lock = threading.Lock()  # guards the five below
        self._arrived = threading.Condition(self._lock)
        self._responses: Dict[str, Reply] = {}
        self._pending: Dict[str, int] = {}  # id -> delivery tag not acknowledged, not asked for
        self._taken: Set[str] = set()  # handed to a caller
        self._to_ack: List[int] = []  # tags of responses handed out, for the next read
        self._reading = False
        self._closed = False
        # Used only by the thread in the reader role (or by close() once none is).
        self._connection: Any = None
        self._channel: Any = None
        self._backoff = Backoff(first=0.05, cap=5.0)
        self._retry_at = 0.0  # peek() does not reconnect before this (monotonic)
        self._last_read = time.monotonic()

    def connect(self) -> None:
        """The first connection; declares the queues (raises if unreachable)."""
        self._connect()

    def get(self, message_id: str) -> Optional[Response]:
        """The response if kept (RejectedMessage if the service rejected it)."""
        with self._lock:
            return self._take(message_id)

    def peek(self, message_id: str) -> Optional[Response]:
        """The response if kept, else read what has arrived (without waiting)."""
        with self._lock:
            if message_id in self._responses or self._reading or self._closed:
                return self._take(message_id)
            self._reading = True
        try:
            if self._channel is not None or time.monotonic() >= self._retry_at:
                self._read(0)
        except LOST as exc:  # no waiting here: the next try is after a pause
            self._retry_at = time.monotonic() + self._backoff.failed(
                f"{self._label}: reading responses failed", exc)
        finally:
            self._hand_on()
        return self.get(message_id)

    def wait(self, message_id: str, deadline: Optional[float],
             cancelled: Optional[threading.Event] = None) -> Optional[Response]:
        """The response to *message_id*; None at *deadline* (monotonic) or once
        *cancelled* is set. Raises RuntimeError if the client closes."""
        while True:
            with self._lock:
                while True:
                    response = self._take(message_id)
                    if response is not None:
                        return response
                    if self._closed:
                        raise RuntimeError(f"{self._label} is closed")
                    remaining = _SLICE if deadline is None else deadline - time.monotonic()
                    if remaining <= 0 or (cancelled is not None and cancelled.is_set()):
                        return None
                    if not self._reading:
                        self._reading = True
                        break
                    self._arrived.wait(min(remaining, _SLICE))
            try:
                self._read(min(remaining, _SLICE))
            except LOST as exc:
                if self._idle_loss(exc):
                    continue
                time.sleep(min(max(remaining, 0.0), self._backoff.failed(
                    f"{self._label}: reading responses failed", exc)))
            finally:
                self._hand_on()

    def close(self) -> None:
        """Stop reading (waking a reader) and close the connection."""
        with self._lock:
            self._closed = True
            self._arrived.notify_all()
            if self._reading and self._connection is not None:
                try:
                    self._connection.add_callback_threadsafe(_nothing)
                except Exception:
                    pass  # closing already
            while self._reading:
                self._arrived.wait()
        try:
            if self._channel is not None and self._channel.is_open:
                self._ack_taken()
        except LOST:
            pass  # not acknowledged: delivered again to the next client of this name
        self._drop_connection()

    def _take(self, message_id: str) -> Optional[Response]:
        """Under _lock: the response to *message_id*, now handed to a caller
        (so acknowledged at the next read); raises the rejection it is."""
        reply = self._responses.get(message_id)
        if reply is None:
            return None
        if message_id not in self._taken:
            self._taken.add(message_id)
            tag = self._pending.pop(message_id, None)
            if tag is not None:
                self._to_ack.append(tag)
        if isinstance(reply, RejectedMessage):
            raise RejectedMessage(reply.reason, reply.message_id)
        return reply

    # ------------------------------------------------------------- the reader

    def _idle_loss(self, error: BaseException) -> bool:
        """True (and quiet) when the connection was lost while nobody read: the
        broker closes connections whose heartbeats stop. Connect again at once."""
        if time.monotonic() - self._last_read < _IDLE:
            return False
        _log.info("%s: the reply connection was closed while idle (%s); connecting again",
                  self._label, error)
        self._drop_connection()
        self._last_read = time.monotonic()
        return True

    def _hand_on(self) -> None:
        with self._lock:
            self._reading = False
            self._arrived.notify_all()

    def _read(self, time_limit: float) -> None:
        if self._channel is None or not self._channel.is_open:
            self._connect()
        self._ack_taken()
        self._connection.process_data_events(time_limit=time_limit)
        self._last_read = time.monotonic()
        self._backoff.reset()

    def _ack_taken(self) -> None:
        """Acknowledge the responses handed to callers since the last read."""
        with self._lock:
            tags, self._to_ack = self._to_ack, []
        for tag in tags:
            self._channel.basic_ack(tag)

    def _connect(self) -> None:
        self._drop_connection()
        connection = pika.BlockingConnection(self._params, _impl_class=TolerantConnection)
        try:
            channel = connection.channel()
            for queue in self._declare:
                channel.queue_declare(queue, durable=True)
            channel.basic_qos(prefetch_count=_PREFETCH)
            channel.basic_consume(self._queue, self._on_response)
        except BaseException:
            _close_quietly(connection)  # it may be closed already: keep the first error
            raise
        self._connection, self._channel = connection, channel

    def _drop_connection(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        with self._lock:  # not acknowledged: the broker delivers them again, with new tags
            self._pending.clear()
            self._to_ack = []
        if connection is not None:
            _close_quietly(connection)

    def _on_response(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        try:
            reply = self._decode(properties, body)
        except RejectedMessage as exc:
            _log.warning("%s dropped a response %r: %s", self._label, exc.message_id,
                         exc.reason)
            channel.basic_reject(method.delivery_tag, requeue=False)
            return
        message_id = reply.message_id
        assert message_id is not None
        if isinstance(reply, RejectedMessage):
            _log.warning("%s: %s", self._label, reply.reason)
        with self._lock:
            self._responses.setdefault(message_id, reply)  # a copy: the first is kept
            if message_id in self._taken or message_id in self._pending:
                self._to_ack.append(method.delivery_tag)  # asked for already, or a copy
            else:
                self._pending[message_id] = method.delivery_tag
            self._arrived.notify_all()

    def _decode(self, properties: Any, body: bytes) -> Reply:
        """The response or rejection notice in a delivery; RejectedMessage
        (raised) for anything else, whatever it holds."""
        why = undecodable(properties)
        if why is not None:
            raise RejectedMessage(why, shown_id(properties.message_id))
        try:
            return decode_reply(body, signature_of(properties.headers), self._key,
                                self._max_size, properties.message_id)
        except RejectedMessage:
            raise
        except Exception as exc:  # nothing a message holds may stop the reader
            raise RejectedMessage(f"malformed: {type(exc).__name__} while checking it",
                                  shown_id(properties.message_id)) from None


def _close_quietly(connection: Any) -> None:
    close_within(connection, _CLOSE_TIMEOUT)


def _nothing() -> None:
    """A callback that only wakes the reader."""
