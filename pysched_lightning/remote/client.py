"""The Client: sends tasks to a Service and collects its responses.

One I/O thread owns the client's broker connection (pika connections are not
thread-safe). ``launch()`` and ``push()``, from any thread, queue the signed
message, wake the I/O thread, and wait until the broker confirms it: when
they return, the broker has the message. The same thread consumes the
client's durable reply queue (``<service>.replies.<name>``), checks each
response's signature before unpickling it, and keeps it for
``get_response()``; responses that arrived while no client of that name was
running wait in that queue.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

import pika
import pika.exceptions

from .broker import (DEFAULT_BROKER, PERSISTENT, RECOVERABLE, Backoff, close_quietly, declare,
                     parameters, reply_queue, request_queue)
from .messages import Request, Response, decode_response, encode_request
from .protocol import (DEFAULT_MAX_MESSAGE_SIZE, SIGNATURE_HEADER, RejectedMessage, check_limit,
                       check_name, check_number, make_key, sign, signature_of)
from .tasks import RemoteTask

__all__ = ["Client", "LaunchError"]

_log = logging.getLogger("pysched_lightning.remote")

_CONTENT_TYPE = "application/x-pysched-task"
_REPLY_PREFETCH = 256


class LaunchError(RuntimeError):
    """The broker refused a message (negative confirm, or no queue to take it)."""


class _Outgoing:
    """A message handed to the I/O thread, and what became of it."""

    __slots__ = ("message_id", "body", "properties", "state", "error", "done")

    def __init__(self, message_id: str, body: bytes, properties: Any) -> None:
        self.message_id = message_id
        self.body = body
        self.properties = properties
        self.state = "queued"  # -> sending -> sent | failed
        self.error: Optional[BaseException] = None
        self.done = threading.Event()


class Client:
    """Sends tasks to the service *service* and receives its responses.

    ``name`` identifies this client: its responses wait in a durable queue of
    that name, so it must be unique among running clients and the same
    across restarts to get responses that came while it was away.
    ``secret`` (bytes or str, the service's) is required unless
    ``insecure=True``. ``task_lifetime`` and ``hard_task_lifetime`` are the
    default timeouts, in seconds, of ordinary and hard tasks;
    ``enable_overdue=False`` asks the service not to run a task whose delay
    has passed when it arrives. ``confirm_timeout`` bounds how long a launch
    waits for the broker.
    """

    def __init__(self, name: str, service: str = "pysched", broker: str = DEFAULT_BROKER,
                 secret: Any = None, *, insecure: bool = False,
                 task_lifetime: Optional[float] = None,
                 hard_task_lifetime: Optional[float] = None, enable_overdue: bool = True,
                 max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
                 confirm_timeout: float = 30.0) -> None:
        self.name = check_name("name", name)
        self.service = check_name("service", service)
        self._params = parameters(broker)
        self._key = make_key(secret, insecure)
        self.task_lifetime = check_number("task_lifetime", task_lifetime, allow_min=False)
        self.hard_task_lifetime = check_number("hard_task_lifetime", hard_task_lifetime,
                                               allow_min=False)
        if not isinstance(enable_overdue, bool):
            raise TypeError(f"enable_overdue must be True or False, got {enable_overdue!r}")
        self.enable_overdue = enable_overdue
        self._max_size = check_limit(max_message_size)
        self._confirm_timeout = check_number("confirm_timeout", confirm_timeout,
                                             allow_min=False, allow_none=False)
        self._requests = request_queue(self.service)
        self._replies = reply_queue(self.service, self.name)
        self._lock = threading.Lock()  # guards _outbox, _closed, _responses, _async_waiters
        self._arrived = threading.Condition(self._lock)
        self._outbox: Deque[_Outgoing] = deque()
        self._closed = False
        self._responses: Dict[str, Response] = {}
        self._async_waiters: Dict[str, List[Tuple[asyncio.AbstractEventLoop, Any]]] = {}
        self._closing = threading.Event()
        self._ready = threading.Event()
        self._first_error: Optional[BaseException] = None
        self._connection: Any = None  # used only by the I/O thread (but for waking it)
        self._channel: Any = None
        self._thread = threading.Thread(target=self._io, daemon=True,
                                        name=f"pysched-client-{self.name}")
        self._thread.start()
        self._ready.wait()
        if self._first_error is not None:
            self._thread.join()
            raise ConnectionError(f"client {self.name!r} cannot reach the broker: "
                                  f"{type(self._first_error).__name__}: "
                                  f"{self._first_error}") from None

    def __repr__(self) -> str:
        return f"<Client {self.name!r} -> service {self.service!r}>"

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:
        """Stop the I/O thread and close the connection. Responses received
        so far stay readable; launches still waiting fail."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._arrived.notify_all()
        self._closing.set()
        self._wake()
        self._thread.join()

    # ------------------------------------------------------------- sending

    def task(self, fn: Callable[..., Any]) -> RemoteTask:
        """Decorator: *fn* stays callable here and gains ``set_parameters``
        and ``launch``."""
        return RemoteTask(self, fn)

    def push(self, request: Request) -> str:
        """Sign and send *request*; returns its message id once the broker has it."""
        if not isinstance(request, Request):
            raise TypeError(f"push() takes a Request, got {request!r}")
        message_id, body = encode_request(request, self.name, time.time())
        if len(body) > self._max_size:
            raise ValueError(f"task {message_id!r} is {len(body)} bytes, over the message "
                             f"size limit of {self._max_size}")
        headers = {SIGNATURE_HEADER: sign(self._key, body)} if self._key else None
        properties = pika.BasicProperties(delivery_mode=PERSISTENT, message_id=message_id,
                                          content_type=_CONTENT_TYPE, headers=headers)
        self._send(_Outgoing(message_id, body, properties))
        return message_id

    def _send(self, item: _Outgoing) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError(f"client {self.name!r} is closed")
            self._outbox.append(item)
        self._wake()
        if item.done.wait(self._confirm_timeout):
            if item.error is not None:
                raise item.error
            return
        with self._lock:
            if item.state == "queued":
                self._outbox.remove(item)
                item.state = "failed"
                raise TimeoutError(f"message {item.message_id!r} was not sent: the broker "
                                   f"was not reachable for {self._confirm_timeout:g} s")
        raise TimeoutError(f"the broker did not confirm message {item.message_id!r} within "
                           f"{self._confirm_timeout:g} s; it may still arrive")

    def _wake(self) -> None:
        connection = self._connection
        if connection is not None:
            try:
                connection.add_callback_threadsafe(_nothing)
            except Exception:
                pass  # closed: the I/O thread is reconnecting and sends the outbox then

    # ------------------------------------------------------------- responses

    def get_response(self, message_id: str) -> Optional[Response]:
        """The response to *message_id*, or None if it has not arrived (yet).
        Asking again returns the same response."""
        with self._lock:
            return self._responses.get(message_id)

    def sync_await_response(self, message_id: str,
                            timeout: Optional[float] = None) -> Response:
        """Wait for the response to *message_id*; TimeoutError after *timeout* s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while message_id not in self._responses:
                if self._closed:
                    raise RuntimeError(f"client {self.name!r} is closed")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"no response to {message_id!r} within {timeout:g} s")
                self._arrived.wait(remaining)
            return self._responses[message_id]

    async def async_get_response(self, message_id: str,
                                 timeout: Optional[float] = None) -> Response:
        """Await the response to *message_id*; TimeoutError after *timeout* s."""
        loop = asyncio.get_running_loop()
        with self._lock:
            response = self._responses.get(message_id)
            if response is not None:
                return response
            if self._closed:
                raise RuntimeError(f"client {self.name!r} is closed")
            future = loop.create_future()
            entry = (loop, future)
            self._async_waiters.setdefault(message_id, []).append(entry)
        try:
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:  # not the builtin before Python 3.11
            raise TimeoutError(f"no response to {message_id!r} within {timeout:g} s") from None
        finally:
            with self._lock:
                waiting = self._async_waiters.get(message_id)
                if waiting and entry in waiting:
                    waiting.remove(entry)
                    if not waiting:
                        del self._async_waiters[message_id]

    # ------------------------------------------------------------- the I/O thread

    def _io(self) -> None:
        backoff = Backoff()
        try:
            while not self._closing.is_set():
                try:
                    if self._connection is None:
                        self._connection, self._channel = self._connect()
                        if self._ready.is_set():
                            _log.info("client %r: connected to the broker again", self.name)
                        self._ready.set()
                        backoff.reset()
                        continue  # see a close() made while connecting before blocking
                    self._flush_outbox()
                    self._connection.process_data_events(time_limit=None)
                except RECOVERABLE as exc:
                    close_quietly(self._connection)
                    self._connection = self._channel = None
                    if not self._ready.is_set():
                        self._first_error = exc
                        return
                    self._closing.wait(backoff.failed(f"client {self.name!r}: broker "
                                                      "connection failed", exc))
        finally:
            close_quietly(self._connection)
            self._connection = self._channel = None
            self._abandon_outbox()
            self._ready.set()

    def _connect(self) -> Tuple[Any, Any]:
        connection = pika.BlockingConnection(self._params)
        try:
            channel = connection.channel()
            channel.confirm_delivery()
            declare(channel, self._requests)
            declare(channel, self._replies)
            channel.basic_qos(prefetch_count=_REPLY_PREFETCH)
            channel.basic_consume(self._replies, self._on_response)
        except BaseException:
            close_quietly(connection)
            raise
        return connection, channel

    def _flush_outbox(self) -> None:
        """Publish every queued message, each confirmed by the broker."""
        while True:
            with self._lock:
                if not self._outbox:
                    return
                item = self._outbox.popleft()
                item.state = "sending"
            try:
                self._channel.basic_publish("", self._requests, item.body, item.properties,
                                            mandatory=True)
            except (pika.exceptions.UnroutableError, pika.exceptions.NackError) as exc:
                self._settle(item, LaunchError(f"the broker refused message "
                                               f"{item.message_id!r}: {exc}"))
                continue
            except BaseException:
                with self._lock:  # sent again after reconnecting (the service drops a copy)
                    item.state = "queued"
                    self._outbox.appendleft(item)
                raise
            self._settle(item, None)

    def _settle(self, item: _Outgoing, error: Optional[BaseException]) -> None:
        with self._lock:
            item.state = "failed" if error else "sent"
            item.error = error
        item.done.set()

    def _abandon_outbox(self) -> None:
        with self._lock:
            left, self._outbox = list(self._outbox), deque()
        for item in left:
            self._settle(item, RuntimeError(f"client {self.name!r} closed before message "
                                            f"{item.message_id!r} was sent"))

    def _on_response(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        try:
            response = decode_response(body, signature_of(properties.headers), self._key,
                                       self._max_size, properties.message_id)
        except RejectedMessage as exc:
            _log.warning("client %r dropped a response %r: %s", self.name, exc.message_id,
                         exc.reason)
            channel.basic_reject(method.delivery_tag, requeue=False)
            return
        with self._lock:
            self._responses.setdefault(response.message_id, response)  # a resent copy: the first
            response = self._responses[response.message_id]
            waiters = self._async_waiters.pop(response.message_id, [])
            self._arrived.notify_all()
        for loop, future in waiters:
            try:
                loop.call_soon_threadsafe(_resolve, future, response)
            except RuntimeError:
                pass  # that event loop is closed
        channel.basic_ack(method.delivery_tag)


def _resolve(future: Any, response: Response) -> None:
    if not future.done():
        future.set_result(response)


def _nothing() -> None:
    """A callback that only wakes the I/O thread."""
