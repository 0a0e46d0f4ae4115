"""The Client: sends tasks to a Service and collects its responses.

``launch()`` and ``push()`` sign the message and publish it from the calling
thread, on that thread's own connection, and return once the broker has
confirmed it. Responses come from the client's durable reply queue
(``<service>.replies.<name>``), read by the threads that wait for them; those
that come while no client of that name runs wait in that queue. The client
has no thread of its own.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from typing import Any, Callable, Optional

import pika
import pika.exceptions

from .broker import (DEFAULT_BROKER, PERSISTENT, connect_failure, parameters, redacted,
                     reply_queue, request_queue)
from .messages import Request, Response, encode_request
from .protocol import (DEFAULT_MAX_MESSAGE_SIZE, SIGNATURE_HEADER, check_limit, check_name,
                       check_number, make_key, sign)
from .receiving import Replies
from .sending import LaunchError, LaunchTimeout, Senders
from .tasks import RemoteTask

__all__ = ["Client", "LaunchError", "LaunchTimeout"]

_log = logging.getLogger("pysched_lightning.remote")

_CONTENT_TYPE = "application/x-pysched-task"


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
    may wait for the broker.
    """

    def __init__(self, name: str, service: str = "pysched", broker: str = DEFAULT_BROKER,
                 secret: Any = None, *, insecure: bool = False,
                 task_lifetime: Optional[float] = None,
                 hard_task_lifetime: Optional[float] = None, enable_overdue: bool = True,
                 max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
                 confirm_timeout: float = 30.0) -> None:
        self.name = check_name("name", name)
        self.service = check_name("service", service)
        params = parameters(broker, f"pysched client {self.name!r}")
        self._key = make_key(secret, insecure)
        if self._key is None:
            _log.warning("client %r runs without a secret (insecure): its tasks are not "
                         "signed, and it reads responses that anyone may have forged",
                         self.name)
        self.task_lifetime = check_number("task_lifetime", task_lifetime, allow_min=False)
        self.hard_task_lifetime = check_number("hard_task_lifetime", hard_task_lifetime,
                                               allow_min=False)
        if not isinstance(enable_overdue, bool):
            raise TypeError(f"enable_overdue must be True or False, got {enable_overdue!r}")
        self.enable_overdue = enable_overdue
        self._max_size = check_limit(max_message_size)
        timeout = check_number("confirm_timeout", confirm_timeout, allow_min=False,
                               allow_none=False)
        assert timeout is not None
        self._confirm_timeout = timeout
        label = f"client {self.name!r}"
        requests, replies = request_queue(self.service), reply_queue(self.service, self.name)
        self._requests, self._reply_to = requests, replies
        self._senders = Senders(params, label)
        self._replies = Replies(params, replies, [requests, replies], self._key,
                                self._max_size, label)
        try:
            self._replies.connect()
        except pika.exceptions.ChannelClosedByBroker as exc:
            raise RuntimeError(f"{label}: the broker refused: {exc.reply_text}") from None
        except Exception as exc:
            raise ConnectionError(f"{label} cannot reach the broker at {redacted(broker)}: "
                                  f"{connect_failure(params, exc)}") from None
        self._closed = False

    def __repr__(self) -> str:
        return f"<Client {self.name!r} -> service {self.service!r}>"

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections (after any launch in progress). Responses
        received so far stay readable; waiting for others raises."""
        if self._closed:
            return
        self._closed = True
        self._replies.close()
        self._senders.close()

    # ------------------------------------------------------------- sending

    def task(self, fn: Callable[..., Any]) -> RemoteTask:
        """Decorator: *fn* stays callable here and gains ``set_parameters``
        and ``launch``."""
        return RemoteTask(self, fn)

    def push(self, request: Request) -> str:
        """Sign and send *request*; returns its message id once the broker has it.

        Raises ``LaunchError`` if the broker refuses it and ``LaunchTimeout``
        (a ``TimeoutError``) if the broker does not confirm it within
        ``confirm_timeout`` seconds: it may have arrived all the same, so
        push ``error.request`` again rather than a new request (its id is
        the same, and the service runs a message id once).
        """
        if not isinstance(request, Request):
            raise TypeError(f"push() takes a Request, got {request!r}")
        message_id, body = encode_request(request, self.name, time.time(), self.service)
        if len(body) > self._max_size:
            raise ValueError(f"task {message_id!r} is {len(body)} bytes, over the message "
                             f"size limit of {self._max_size}")
        headers = {SIGNATURE_HEADER: sign(self._key, body)} if self._key else None
        # reply_to: where the service sends a rejection notice (it answers
        # only to its own reply queues).
        properties = pika.BasicProperties(delivery_mode=PERSISTENT, message_id=message_id,
                                          content_type=_CONTENT_TYPE, headers=headers,
                                          reply_to=self._reply_to)
        try:
            self._senders.send(self._requests, body, properties, self._confirm_timeout)
        except LaunchTimeout as exc:
            exc.request = dataclasses.replace(request, message_id=message_id)
            raise
        return message_id

    # ------------------------------------------------------------- responses

    def get_response(self, message_id: str) -> Optional[Response]:
        """The response to *message_id*, or None if it has not arrived (yet).
        Asking again returns the same response. Raises ``RejectedMessage``
        (with the reason) if the service rejected the message."""
        return self._replies.peek(message_id)

    def sync_await_response(self, message_id: str,
                            timeout: Optional[float] = None) -> Response:
        """Wait for the response to *message_id*; TimeoutError after *timeout* s,
        ``RejectedMessage`` (with the reason) if the service rejected it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        response = self._replies.wait(message_id, deadline)
        if response is None:
            raise TimeoutError(f"no response to {message_id!r} within {timeout:g} s")
        return response

    async def async_get_response(self, message_id: str,
                                 timeout: Optional[float] = None) -> Response:
        """Await the response to *message_id*; TimeoutError after *timeout* s.

        The waiting (and reading) happens in the event loop's default
        executor, so the loop itself never blocks on the broker.
        """
        response = self._replies.get(message_id)
        if response is not None:
            return response
        deadline = None if timeout is None else time.monotonic() + timeout
        cancelled = threading.Event()
        loop = asyncio.get_running_loop()
        try:
            response = await loop.run_in_executor(None, self._replies.wait, message_id,
                                                  deadline, cancelled)
        finally:
            cancelled.set()  # a cancelled await stops its reader within a second
        if response is None:
            raise TimeoutError(f"no response to {message_id!r} within {timeout:g} s")
        return response
