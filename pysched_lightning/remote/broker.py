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

__all__ = ["DEFAULT_BROKER", "PERSISTENT", "parameters", "redacted", "request_queue",
           "reply_queue", "declare_async", "Backoff"]

_log = logging.getLogger("pysched_lightning.remote")

#: The broker both sides use unless told otherwise (RabbitMQ's local default).
DEFAULT_BROKER = "amqp://guest:guest@localhost:5672/%2F"
#: delivery_mode for messages the broker writes to disk.
PERSISTENT = 2


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
