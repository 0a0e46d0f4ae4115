"""Reading AMQP frames that pika cannot decode, and bounding a blocking call.

pika decodes a message's properties while it reads the frame, before any
callback of ours sees the message. A header table that RabbitMQ relays but
pika cannot turn into Python (an AMQP timestamp of 2**64-1 is past what
``datetime`` holds) makes that decode raise, and pika drops the connection;
the message goes back to the queue and the next connection meets it again,
forever, and nothing behind it is ever delivered. :class:`TolerantConnection`
decodes such properties without the table that failed and marks them
(:func:`undecodable`), so the message reaches the consumer, which rejects it
by its delivery tag like any other bad message.

It also lets a thread that blocks in a pika call give up at a deadline
(:meth:`TolerantConnection.expire_at`): the connection is dropped then, which
makes the blocked call raise, however the broker (or the network) stalls.
"""
from __future__ import annotations

import logging
import struct
import time
from typing import Any, Optional, Tuple

import pika
import pika.exceptions
import pika.frame
import pika.spec

__all__ = ["TolerantConnection", "Expired", "undecodable", "close_within"]

_log = logging.getLogger("pysched_lightning.remote")

_FRAME = struct.Struct(">BHL")  # type, channel, size
_CONTENT_HEADER = struct.Struct(">HHQ")  # class, weight, body size
#: The property flags of the two short strings that come before the headers table.
_BEFORE_HEADERS = (pika.spec.BasicProperties.FLAG_CONTENT_TYPE,
                   pika.spec.BasicProperties.FLAG_CONTENT_ENCODING)
_MARK = "_psl_undecodable"


class Expired(TimeoutError):
    """A blocking call passed the deadline set with ``expire_at``."""


def undecodable(properties: Any) -> Optional[str]:
    """Why *properties* could not be decoded as sent (None: they were)."""
    return getattr(properties, _MARK, None)


class TolerantConnection(pika.SelectConnection):
    """A ``SelectConnection`` that hands on messages with undecodable properties
    (see the module's text). As ``BlockingConnection(params, _impl_class=...)``
    it serves the blocking connections too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._psl_timer: Any = None

    def _read_frame(self) -> Tuple[int, Any]:
        try:
            return super()._read_frame()
        except pika.exceptions.InvalidFrameError:
            raise  # the stream itself is broken: nothing can be read after it
        except Exception as exc:  # a frame of its own, whose content failed to decode
            salvaged = _salvage(self._frame_buffer, exc)
            if salvaged is None:
                raise
            return salvaged

    def expire_at(self, deadline: float, what: str) -> None:
        """Drop the connection at *deadline* (monotonic) unless
        :meth:`keep` is called first: a call blocked on it raises."""
        self.keep()
        self._psl_timer = self._adapter_call_later(
            max(0.0, deadline - time.monotonic()), lambda: self._expire(what))

    def keep(self) -> None:
        """Cancel :meth:`expire_at`."""
        timer, self._psl_timer = self._psl_timer, None
        if timer is not None:
            self._adapter_remove_timeout(timer)

    def _expire(self, what: str) -> None:
        self._psl_timer = None
        if not self.is_closed:
            self._terminate_stream(Expired(what))


def close_within(connection: Any, seconds: float) -> None:
    """Close a ``BlockingConnection`` made on a :class:`TolerantConnection`,
    waiting at most *seconds* for the broker to agree (a stalled one never
    does: the connection is dropped then). Never raises."""
    try:
        if connection.is_open:
            connection._impl.expire_at(time.monotonic() + seconds, "closing took too long")
            connection.close()
    except Exception:
        _log.debug("closing a broker connection failed", exc_info=True)


def _salvage(buffer: bytes, error: Exception) -> Optional[Tuple[int, Any]]:
    """The content-header frame at the start of *buffer*, its properties
    decoded without their headers table and marked; None if it is another
    kind of frame (which cannot be skipped safely)."""
    try:
        kind, channel, size = _FRAME.unpack_from(buffer)
        if kind != pika.spec.FRAME_HEADER:
            return None
        end = pika.spec.FRAME_HEADER_SIZE + size + pika.spec.FRAME_END_SIZE
        data = buffer[pika.spec.FRAME_HEADER_SIZE:end - 1]
        _, _, body_size = _CONTENT_HEADER.unpack_from(data)
    except struct.error:
        return None
    properties = pika.spec.BasicProperties()
    try:
        properties.decode(_without_headers(data[_CONTENT_HEADER.size:]))
    except Exception:  # not even the rest decodes: nothing is kept but the mark
        properties = pika.spec.BasicProperties()
    setattr(properties, _MARK, f"undecodable AMQP properties ({type(error).__name__}: "
                               f"{error})")
    _log.debug("a content header pika cannot decode (%r); its headers are dropped", error)
    return end, pika.frame.Header(channel, body_size, properties)


def _without_headers(encoded: bytes) -> bytes:
    """Encoded basic properties with their headers table replaced by an empty one."""
    flags = struct.unpack_from(">H", encoded)[0]
    if not flags & pika.spec.BasicProperties.FLAG_HEADERS:
        return encoded
    offset = 2
    for flag in _BEFORE_HEADERS:
        if flags & flag:
            offset += 1 + encoded[offset]  # a short string: length byte, then bytes
    length = struct.unpack_from(">I", encoded, offset)[0]
    return encoded[:offset] + b"\x00\x00\x00\x00" + encoded[offset + 4 + length:]
