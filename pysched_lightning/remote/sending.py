"""Sending from the calling thread, on a connection of that thread's own.

pika connections are not thread-safe; rather than hand every message to
another thread (two thread switches per message, which on a busy machine
cost more than the broker's own round trip), each thread that sends gets its
own ``BlockingConnection``, made on its first send and reused: a client's
launching threads, a service's workers. A publish waits for the broker's
confirm; a lost connection is made again and the message sent again (the
receiver recognises a copy by its message id). The whole send, connecting
included, ends at its deadline however the broker or the network stalls:
the connection is dropped then and :class:`LaunchTimeout` raised. Connections of threads that
have ended are closed when the next one is made, and all of them by
:meth:`Senders.close`.
"""
from __future__ import annotations

import copy
import logging
import threading
import time
import weakref
from typing import Any, Dict, Optional, Set, Tuple

import pika
import pika.exceptions

from .broker import LOST, Backoff
from .frames import TolerantConnection, close_within

__all__ = ["Senders", "LaunchError", "LaunchTimeout"]

_log = logging.getLogger("pysched_lightning.remote")



#: How long closing a connection may wait for the broker (s).
_CLOSE_TIMEOUT = 5.0


class LaunchError(RuntimeError):
    """The broker refused a message (negative confirm, or no queue to take it)."""

    def __init__(self, text: str, message_id: Optional[str] = None) -> None:
        super().__init__(text)
        self.message_id = message_id


class LaunchTimeout(TimeoutError):
    """The broker did not confirm a message in time. It may have reached the
    broker all the same, and run: ``message_id`` names it, so its response
    can be awaited, and ``request`` (set by ``Client.push``) is the request
    with that id, to push again: the service recognises a copy by its id and
    does not run it twice."""

    def __init__(self, text: str, message_id: Optional[str] = None) -> None:
        super().__init__(text)
        self.message_id = message_id
        self.request: Any = None


class _Sender:
    """One thread's connection and confirm-mode channel."""

    def __init__(self, params: pika.URLParameters) -> None:
        self.params = params
        self.lock = threading.Lock()  # held while its thread publishes; close() takes it
        self.connection: Any = None
        self.channel: Any = None
        self.declared: Set[str] = set()  # queues declared on this connection

    def send(self, queue: str, body: bytes, properties: Any, deadline: float,
             label: str) -> None:
        message_id = properties.message_id
        with self.lock:
            backoff = Backoff(first=0.05, cap=2.0)
            idle = self.channel is not None  # a connection kept from an earlier send
            while True:
                try:
                    self._publish(queue, body, properties, deadline, label)
                    return
                except pika.exceptions.NackError:
                    raise LaunchError(f"the broker refused message {message_id!r}",
                                      message_id) from None
                except pika.exceptions.UnroutableError:
                    self.close_now()  # its queue went away: declared again next time
                    raise LaunchError(f"no queue took message {message_id!r}",
                                      message_id) from None
                except LOST as exc:
                    self.close_now()
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise LaunchTimeout(
                            f"{label}: the broker did not confirm message {message_id!r} in "
                            f"time ({type(exc).__name__}: {exc}); it may have reached the "
                            "broker all the same and run: await its response, or push the "
                            "same request again (LaunchTimeout.request; a copy is not run "
                            "twice)", message_id) from exc
                    if idle:  # the broker closes idle connections (missed heartbeats)
                        idle = False
                        _log.info("%s: a connection was closed while idle (%s); "
                                  "connecting again", label, exc)
                        continue
                    time.sleep(min(remaining, backoff.failed(f"{label}: sending failed", exc)))

    def _publish(self, queue: str, body: bytes, properties: Any, deadline: float,
                 label: str) -> None:
        """One attempt, dropped at *deadline* (the blocked call then raises)."""
        channel = self.channel
        if channel is None or not channel.is_open:
            channel = self._connect(deadline)
        impl = self.connection._impl  # pika's own connection, under the blocking one
        impl.expire_at(deadline, f"{label}: no answer from the broker in time")
        try:
            if queue not in self.declared:
                channel.queue_declare(queue, durable=True)
                self.declared.add(queue)
            channel.basic_publish("", queue, body, properties, mandatory=True)
        finally:
            impl.keep()

    def _connect(self, deadline: float) -> Any:
        self.close_now()
        remaining = max(0.001, deadline - time.monotonic())
        params = copy.copy(self.params)  # connecting too ends by the deadline
        params.socket_timeout = min(params.socket_timeout or remaining, remaining)
        params.stack_timeout = min(params.stack_timeout or remaining, remaining)
        connection = pika.BlockingConnection(params, _impl_class=TolerantConnection)
        try:
            connection._impl.expire_at(deadline, "no answer from the broker in time")
            channel = connection.channel()
            channel.confirm_delivery()
            connection._impl.keep()
        except BaseException:
            close_within(connection, _CLOSE_TIMEOUT)
            raise
        self.connection, self.channel = connection, channel
        return channel

    def close_now(self) -> None:
        connection, self.connection, self.channel = self.connection, None, None
        self.declared = set()
        if connection is not None:
            close_within(connection, _CLOSE_TIMEOUT)


class Senders:
    """The sending connections of one client or service, one per thread."""

    def __init__(self, params: pika.URLParameters, label: str) -> None:
        self._params = params
        self._label = label
        self._lock = threading.Lock()  # guards _senders and _closed
        self._senders: Dict[int, Tuple["weakref.ref[threading.Thread]", _Sender]] = {}
        self._closed = False

    def send(self, queue: str, body: bytes, properties: Any, timeout: float) -> None:
        """Publish to *queue* (declared first) from the calling thread; returns
        once the broker confirmed. Raises LaunchError if the broker refused it,
        LaunchTimeout if it was not confirmed in *timeout* seconds."""
        self._mine().send(queue, body, properties, time.monotonic() + timeout, self._label)

    def _mine(self) -> _Sender:
        thread = threading.current_thread()
        key = id(thread)
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self._label} is closed")
            entry = self._senders.get(key)
            if entry is not None and entry[0]() is thread:
                return entry[1]
            ended = [k for k, (ref, _) in self._senders.items()
                     if ref() is None or not ref().is_alive()]  # type: ignore[union-attr]
            gone = [self._senders.pop(k)[1] for k in ended]
            sender = _Sender(self._params)
            self._senders[key] = (weakref.ref(thread), sender)
        for old in gone:  # their threads ended: nobody else uses these
            old.close_now()
        return sender

    def close(self) -> None:
        """Close every connection, after any publish in progress."""
        with self._lock:
            self._closed = True
            senders = [sender for _, sender in self._senders.values()]
            self._senders.clear()
        for sender in senders:
            with sender.lock:
                sender.close_now()
