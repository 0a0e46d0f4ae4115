"""Sending from the calling thread, on a connection of that thread's own.

pika connections are not thread-safe; rather than hand every message to
another thread (two thread switches per message, which on a busy machine
cost more than the broker's own round trip), each thread that sends gets its
own ``BlockingConnection``, made on its first send and reused: a client's
launching threads, a service's workers. A publish waits for the broker's
confirm; a lost connection is made again and the message sent again (the
receiver recognises a copy by its message id). Connections of threads that
have ended are closed when the next one is made, and all of them by
:meth:`Senders.close`.
"""
from __future__ import annotations

import logging
import threading
import time
import weakref
from typing import Any, Dict, Set, Tuple

import pika
import pika.exceptions

from .broker import Backoff

__all__ = ["Senders", "LaunchError"]

_log = logging.getLogger("pysched_lightning.remote")

_LOST = (pika.exceptions.AMQPConnectionError, pika.exceptions.ChannelClosed,
         pika.exceptions.ChannelWrongStateError, ConnectionError, OSError)


class LaunchError(RuntimeError):
    """The broker refused a message (negative confirm, or no queue to take it)."""


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
        with self.lock:
            backoff = Backoff(first=0.05, cap=2.0)
            idle = self.channel is not None  # a connection kept from an earlier send
            while True:
                try:
                    channel = self.channel
                    if channel is None or not channel.is_open:
                        channel = self._connect()
                    if queue not in self.declared:
                        channel.queue_declare(queue, durable=True)
                        self.declared.add(queue)
                    channel.basic_publish("", queue, body, properties, mandatory=True)
                    return
                except pika.exceptions.NackError:
                    raise LaunchError(f"the broker refused message {properties.message_id!r}")
                except pika.exceptions.UnroutableError:
                    self.close_now()  # its queue went away: declared again next time
                    raise LaunchError(f"no queue took message {properties.message_id!r}")
                except _LOST as exc:
                    self.close_now()
                    if idle:  # the broker closes idle connections (missed heartbeats)
                        idle = False
                        _log.info("%s: a connection was closed while idle (%s); "
                                  "connecting again", label, exc)
                        continue
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError(f"{label}: the broker did not take message "
                                           f"{properties.message_id!r} in time ({exc})") from exc
                    time.sleep(min(remaining, backoff.failed(f"{label}: sending failed", exc)))

    def _connect(self) -> Any:
        self.close_now()
        connection = pika.BlockingConnection(self.params)
        try:
            channel = connection.channel()
            channel.confirm_delivery()
        except BaseException:
            connection.close()
            raise
        self.connection, self.channel = connection, channel
        return channel

    def close_now(self) -> None:
        connection, self.connection, self.channel = self.connection, None, None
        self.declared = set()
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except Exception:
                _log.debug("closing a sending connection failed", exc_info=True)


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
        TimeoutError if it could not be sent in *timeout* seconds."""
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
