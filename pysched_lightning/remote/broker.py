"""RabbitMQ plumbing shared by the client and the service: connection
parameters, queue names, the declaration both sides make, and the bounded
back-off between reconnection attempts.

Both sides declare every queue they use (durable, no arguments), so a
message sent before the other side first ran is kept, and a queue made by
either side is the same queue.
"""
from __future__ import annotations

import logging
import urllib.parse
from typing import Any, Callable, Optional

import pika
import pika.exceptions
from pika.adapters.utils.connection_workflow import AMQPConnectorException

__all__ = ["DEFAULT_BROKER", "PERSISTENT", "parameters", "redacted", "request_queue",
           "reply_queue", "declare_async", "Backoff", "connect_failure", "LOST"]

_log = logging.getLogger("pysched_lightning.remote")

#: The broker both sides use unless told otherwise (RabbitMQ's local default).
DEFAULT_BROKER = "amqp://guest:guest@localhost:5672/%2F"
#: delivery_mode for messages the broker writes to disk.
PERSISTENT = 2
#: What a blocking call raises when its connection failed, was lost or was
#: dropped at a deadline (a failed connect raises pika's connector errors).
LOST = (pika.exceptions.AMQPConnectionError, pika.exceptions.ChannelClosed,
        pika.exceptions.ChannelWrongStateError, AMQPConnectorException, ConnectionError,
        OSError)


def parameters(url: Any, name: str = "pysched") -> pika.URLParameters:
    """pika's parameters for an ``amqp://`` or ``amqps://`` URL; *name* is what
    the broker's connection list shows (e.g. ``service 'pysched'``)."""
    if not isinstance(url, str) or not url.startswith(("amqp://", "amqps://")):
        raise ValueError(f"broker must be an amqp:// or amqps:// URL, got {url!r}")
    try:
        params = pika.URLParameters(url)
    except Exception as exc:
        raise ValueError(f"broker URL {url!r} cannot be used: {exc}") from None
    params.client_properties = {**(params.client_properties or {}), "connection_name": name}
    return params


def redacted(url: str) -> str:
    """*url* without its password, for log lines and error messages."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def connect_failure(params: Any, error: Optional[BaseException]) -> str:
    """Why connecting to the broker at *params* failed: its host:port and the
    innermost error pika wraps (the OS's own words, e.g. ``[Errno 111]
    Connection refused``), never an empty text."""
    cause = _innermost(error)
    if cause is None:
        text = "the connection failed"
    else:
        detail = str(cause)
        text = f"{type(cause).__name__}: {detail}" if detail else type(cause).__name__
    return f"{params.host}:{params.port}: {text}"


def _innermost(error: Optional[BaseException], depth: int = 0) -> Optional[BaseException]:
    # pika nests what went wrong: AMQPConnectionError(AMQPConnectorSocketConnectError(
    # ConnectionRefusedError(...))), and its outer layers print as nothing.
    if error is None or depth > 8:
        return error
    parts = [getattr(error, "exception", None), *(getattr(error, "exceptions", None) or []),
             *error.args]
    for part in parts:
        if isinstance(part, (tuple, list)):
            part = next((p for p in part if isinstance(p, BaseException)), None)
        if isinstance(part, BaseException):
            return _innermost(part, depth + 1)
    return error


def request_queue(service: str) -> str:
    """The queue a service consumes and clients publish tasks to."""
    return f"{service}.requests"


def reply_queue(service: str, client: str) -> str:
    """The durable queue that holds one client's responses from one service."""
    return f"{service}.replies.{client}"


def declare_async(channel: Any, queue: str, callback: Callable[[Any], None]) -> None:
    channel.queue_declare(queue, durable=True, callback=callback)


class Backoff:
    """Delays between reconnection attempts: 0.5 s, doubling up to *cap*."""

    def __init__(self, first: float = 0.5, cap: float = 30.0) -> None:
        self._first = first
        self._cap = cap
        self._next = first

    def failed(self, what: str, error: Optional[BaseException]) -> float:
        """Log the failure at WARNING; the seconds to wait before the next try."""
        delay = self._next
        self._next = min(self._cap, self._next * 2)
        _log.warning("%s (%s); retrying in %.1f s", what,
                     f"{type(error).__name__}: {error}" if error else "connection lost", delay)
        return delay

    def reset(self) -> None:
        self._next = self._first
