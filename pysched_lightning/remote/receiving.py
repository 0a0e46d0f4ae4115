"""Receiving responses: the reply queue, read by whichever thread waits.

There is no thread of its own. A thread that waits for a response takes the
reader role if no other thread has it, reads from the connection until its
response has come (keeping every other response it reads for the threads
that wait for those, and waking them), then hands the role on; the others
wait on a condition meanwhile. So a response reaches the thread that waits
for it without a switch to another thread, and responses nobody asks for
yet stay in the durable reply queue, not in this process. Each response's
signature is checked before it is unpickled; a bad one is logged and
dropped. Responses are acknowledged, together, once they are kept.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Dict, Optional, Sequence

import pika
import pika.exceptions

from .broker import Backoff
from .messages import Response, decode_response
from .protocol import RejectedMessage, signature_of

__all__ = ["Replies"]

_log = logging.getLogger("pysched_lightning.remote")

_PREFETCH = 256
#: Kept responses are acknowledged together: once this many...
_ACK_EVERY = 64
#: ...or once the oldest has waited this long (s), at the next read.
_ACK_AFTER = 0.5
#: A reader re-checks for close() and cancellation at least this often (s).
_SLICE = 1.0
#: Unread for this long (s), the connection may have been closed by the broker.
_IDLE = 30.0
_LOST = (pika.exceptions.AMQPConnectionError, pika.exceptions.ChannelClosed,
         pika.exceptions.ChannelWrongStateError, ConnectionError, OSError)


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
        self._lock = threading.Lock()  # guards _responses, _reading and _closed
        self._arrived = threading.Condition(self._lock)
        self._responses: Dict[str, Response] = {}
        self._reading = False
        self._closed = False
        # Used only by the thread in the reader role (or by close() once none is).
        self._connection: Any = None
        self._channel: Any = None
        self._last_tag = 0  # the newest response kept and not acknowledged
        self._acked = 0  # the newest acknowledged (tags count up per connection)
        self._kept_since = 0.0  # when the oldest one not acknowledged was kept
        self._backoff = Backoff(first=0.05, cap=5.0)
        self._retry_at = 0.0  # peek() does not reconnect before this (monotonic)
        self._last_read = time.monotonic()

    def connect(self) -> None:
        """The first connection; declares the queues (raises if unreachable)."""
        self._connect()

    def get(self, message_id: str) -> Optional[Response]:
        with self._lock:
            return self._responses.get(message_id)

    def peek(self, message_id: str) -> Optional[Response]:
        """The response if kept, else read what has arrived (without waiting)."""
        with self._lock:
            response = self._responses.get(message_id)
            if response is not None or self._reading or self._closed:
                return response
            self._reading = True
        try:
            if self._channel is not None or time.monotonic() >= self._retry_at:
                self._read(0)
        except _LOST as exc:  # no waiting here: the next try is after a pause
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
                    response = self._responses.get(message_id)
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
            except _LOST as exc:
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
                self._ack_kept(now=True)
        except _LOST:
            pass  # not acknowledged: delivered again to the next client of this name
        self._drop_connection()

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
        self._ack_kept()
        self._connection.process_data_events(time_limit=time_limit)
        self._last_read = time.monotonic()
        self._backoff.reset()

    def _ack_kept(self, now: bool = False) -> None:
        """Acknowledge the responses kept so far, in one frame: at the start
        of a read once a few are kept or the oldest is a moment old, and at
        close; not while the waiting thread could be returning its response.
        If the process dies first, they are delivered again, to the next
        client of this name."""
        if self._last_tag and (now or self._last_tag - self._acked >= _ACK_EVERY
                               or time.monotonic() - self._kept_since >= _ACK_AFTER):
            self._channel.basic_ack(self._last_tag, multiple=True)
            self._acked = self._last_tag
            self._last_tag = 0

    def _connect(self) -> None:
        self._drop_connection()
        connection = pika.BlockingConnection(self._params)
        try:
            channel = connection.channel()
            for queue in self._declare:
                channel.queue_declare(queue, durable=True)
            channel.basic_qos(prefetch_count=_PREFETCH)
            channel.basic_consume(self._queue, self._on_response)
        except BaseException:
            connection.close()
            raise
        self._connection, self._channel = connection, channel

    def _drop_connection(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        self._last_tag = self._acked = 0  # not acknowledged: the broker delivers them again
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except Exception:
                _log.debug("closing the reply connection failed", exc_info=True)

    def _on_response(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        try:
            response = decode_response(body, signature_of(properties.headers), self._key,
                                       self._max_size, properties.message_id)
        except RejectedMessage as exc:
            _log.warning("%s dropped a response %r: %s", self._label, exc.message_id,
                         exc.reason)
            channel.basic_reject(method.delivery_tag, requeue=False)
            return
        with self._lock:  # a copy sent again: the first one is kept
            self._responses.setdefault(response.message_id, response)
            self._arrived.notify_all()
        if not self._last_tag:
            self._kept_since = time.monotonic()
        self._last_tag = method.delivery_tag


def _nothing() -> None:
    """A callback that only wakes the reader."""
