"""What the service admits: every check a delivered request passes, in order.

:func:`admit` takes whatever the broker delivered (any bytes, any AMQP
properties, decodable or not) and returns the checked request, or raises
:class:`RejectedMessage` with the reason; it raises nothing else, so no input
can stop the service's loop. The order: properties pika could decode, size,
signature, framing and version, kind, every header field, then what binds a
signed request to this service and this time (its ``service`` field and its
``sent`` time, within the replay window). Nothing is unpickled here.

A rejected request's sender hears of it (:func:`notify`) when the request
names a reply queue of this service: a client with the wrong secret, say,
then gets an error that gives the reason instead of a timeout.
"""
from __future__ import annotations

import logging
import re
from typing import Any, Optional

import pika

from .broker import PERSISTENT
from .frames import undecodable
from .link import Link
from .messages import TaskHeader, encode_rejection, parse_task
from .protocol import RejectedMessage, shown_id, signature_of, verify

__all__ = ["admit", "reply_queue_of", "notify"]

_log = logging.getLogger("pysched_lightning.remote")
_REJECTION_TYPE = "application/x-pysched-rejection"

_REPLY_NAME = r"[A-Za-z0-9_.:-]{1,200}"


def admit(body: Any, properties: Any, *, key: Optional[bytes], max_size: int, service: str,
          now: float, max_age: Optional[float]) -> TaskHeader:
    """The request in *body*, checked; RejectedMessage (only) if it fails."""
    claimed = getattr(properties, "message_id", None)
    try:
        return _admit(body, properties, key, max_size, service, now, max_age, claimed)
    except RejectedMessage:
        raise
    except Exception as exc:  # a check that failed in a way nobody foresaw: still a rejection
        raise RejectedMessage(f"malformed: {type(exc).__name__} while checking it",
                              shown_id(claimed)) from None


def _admit(body: Any, properties: Any, key: Optional[bytes], max_size: int, service: str,
           now: float, max_age: Optional[float], claimed: Any) -> TaskHeader:
    why = undecodable(properties)
    if why is not None:
        raise RejectedMessage(why, shown_id(claimed))
    if not isinstance(body, bytes):
        raise RejectedMessage(f"malformed: a body of type {type(body).__name__}",
                              shown_id(claimed))
    header, _ = verify(body, signature_of(getattr(properties, "headers", None)), key,
                       max_size, "task", claimed)
    task = parse_task(header)
    addressed = header.get("service")
    if addressed != service:
        shown = repr(addressed)[:80] if isinstance(addressed, str) else "no service"
        raise RejectedMessage(f"addressed to {shown}, not to service {service!r}",
                              task.message_id)
    if max_age is not None and abs(now - task.sent) > max_age:
        raise RejectedMessage(f"outside the replay window: sent {now - task.sent:.0f} s ago "
                              f"(the window is {max_age:g} s either way; are the clocks "
                              "in sync?)", task.message_id)
    return task


def reply_queue_of(properties: Any, service: str) -> Optional[str]:
    """The reply queue a delivery names (``reply_to``) if it is one of
    *service*'s, else None: a rejection notice goes to no other queue (never
    back to the request queue)."""
    queue = getattr(properties, "reply_to", None)
    if isinstance(queue, str) and re.fullmatch(re.escape(service) + r"\.replies\." + _REPLY_NAME,
                                               queue):
        return queue
    return None


def notify(link: Link, queue: str, message_id: str, reason: str) -> None:
    """Publish a rejection notice to *queue* (in the link's thread). It is not
    stored: if it is lost, the sender's wait ends by its own timeout."""
    properties = pika.BasicProperties(delivery_mode=PERSISTENT, message_id=message_id,
                                      content_type=_REJECTION_TYPE)

    def done(error: Optional[BaseException]) -> None:
        if error is not None:
            _log.info("the rejection notice for %r was not delivered (%s)", message_id, error)

    link.publish(queue, encode_rejection(message_id, reason), properties, done)
