"""The wire format between Client and Service: framing, signing, limits.

A message body is::

    b"PSL" | version (1 byte) | header length (4 bytes, big-endian) | header | payload

where the header is a UTF-8 JSON object (what the receiver needs to decide
what to do) and the payload is cloudpickle bytes. The HMAC-SHA256 of the
exact body travels beside it in the AMQP header ``x-psl-signature`` (hex).
A receiver checks the size first, then the signature, then the framing, and
only then decodes the header; the payload is unpickled later, by whoever
runs or reads it, so nothing from an unchecked message is ever unpickled.
Requests and responses are signed with the same secret and told apart by
the header's ``kind``, so one cannot be replayed as the other.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import struct
from typing import Any, Dict, Mapping, Optional, Tuple, Union

__all__ = ["PROTOCOL_VERSION", "DEFAULT_MAX_MESSAGE_SIZE", "SIGNATURE_HEADER", "MIN_SECRET_BYTES",
           "STORED_VERSIONS",
           "RejectedMessage", "make_key", "check_name", "check_limit", "check_number",
           "check_priority", "sign", "frame", "unframe", "verify", "signature_of", "shown_id"]

#: The version this code writes and the only one it reads. Version 2 binds a
#: request to the service it is for and to a replay window (its ``service``
#: and ``sent`` fields are signed with it), and adds rejection notices.
PROTOCOL_VERSION = 2
#: The versions of stored bodies still read: tasks a version-1 service
#: accepted run after an upgrade (they were checked when they arrived).
STORED_VERSIONS = (1, PROTOCOL_VERSION)
#: The largest body accepted, by default (10 MiB).
DEFAULT_MAX_MESSAGE_SIZE = 10 * 1024 * 1024
#: The AMQP header that carries the body's signature.
SIGNATURE_HEADER = "x-psl-signature"
#: The shortest secret accepted: a guessable one would let anyone run code.
MIN_SECRET_BYTES = 16

_MAGIC = b"PSL"
_PREFIX = struct.Struct(">3sBI")  # magic, version, header length
_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,200}")
_MAX_CLAIMED_ID = 80  # how much of an unchecked message id a log line shows


class RejectedMessage(ValueError):
    """A message that failed a check; ``reason`` says which, in words."""

    def __init__(self, reason: str, message_id: Optional[str] = None) -> None:
        super().__init__(reason)
        self.reason = reason
        #: The id the message claims (its AMQP ``message_id``), unverified.
        self.message_id = message_id


def make_key(secret: Union[bytes, str, None], insecure: bool) -> Optional[bytes]:
    """The HMAC key for *secret*; None only when *insecure* is explicitly True."""
    if not isinstance(insecure, bool):
        raise TypeError(f"insecure must be True or False, got {insecure!r}")
    if secret is None:
        if insecure:
            return None
        raise ValueError("a secret is required (bytes or str shared by clients and the "
                         "service); pass insecure=True to run without one")
    if isinstance(secret, str):
        secret = secret.encode("utf-8")
    if not isinstance(secret, bytes):
        raise TypeError(f"secret must be bytes or str, got {type(secret).__name__}")
    if not secret:
        raise ValueError("secret must not be empty")
    if len(secret) < MIN_SECRET_BYTES:  # the secret itself is never shown
        raise ValueError(f"secret must be at least {MIN_SECRET_BYTES} bytes, got {len(secret)} "
                         "(make one: python -c 'import secrets; print(secrets.token_hex(32))')")
    return secret


def check_name(label: str, name: Any) -> str:
    """A client or service name, usable in a queue name."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"{label} must be 1-200 characters of letters, digits, '_', '.', "
                         f"':' or '-', got {_short(name)}")
    return name


def check_limit(max_message_size: Any) -> int:
    if isinstance(max_message_size, bool) or not isinstance(max_message_size, int) \
            or max_message_size < 1024:
        raise ValueError(f"max_message_size must be an int >= 1024 (bytes), "
                         f"got {max_message_size!r}")
    return max_message_size


def check_number(label: str, value: Any, *, minimum: float = 0.0,
                 allow_min: bool = True, allow_none: bool = True) -> Optional[float]:
    """A finite number of seconds (or a priority) at or above *minimum*."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not _finite(value):
        raise TypeError(f"{label} must be a finite number, got {_short(value)}")
    if value < minimum or (value == minimum and not allow_min):
        relation = ">=" if allow_min else ">"
        raise ValueError(f"{label} must be {relation} {minimum:g}, got {_short(value)}")
    return value


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float (10**400)
        return False


def _short(value: Any) -> str:
    """repr(*value*), cut short: a value from a message may be huge."""
    try:
        text = repr(value)
    except ValueError:  # an int with more digits than repr() allows
        return f"<{type(value).__name__} too large to show>"
    return text if len(text) <= 80 else text[:77] + "..."


def check_priority(value: Any) -> int:
    """A priority: an int, lower is more urgent (as ``Scheduler.delay`` takes it)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"priority must be an int, got {_short(value)}")
    return value


def sign(key: bytes, body: bytes) -> str:
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def frame(header: Mapping[str, Any], payload: bytes) -> bytes:
    """The body for *header* and *payload*, in the current version."""
    head = json.dumps(header, separators=(",", ":"), allow_nan=False).encode("utf-8")
    return b"".join((_PREFIX.pack(_MAGIC, PROTOCOL_VERSION, len(head)), head, payload))


def signature_of(amqp_headers: Any) -> Optional[str]:
    """The signature an AMQP header table carries, if any."""
    if not amqp_headers:
        return None
    value = amqp_headers.get(SIGNATURE_HEADER)
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return None
    return value if isinstance(value, str) else None


def verify(body: bytes, signature: Optional[str], key: Optional[bytes], max_size: int,
           kind: str, claimed_id: Any = None) -> Tuple[Dict[str, Any], bytes]:
    """Check *body* in the safe order and return its (header, payload).

    Size first (cheapest, and before anything else looks at the bytes), then
    the signature (when there is a key), then the framing, version and kind.
    Raises :class:`RejectedMessage`; never unpickles anything.
    """
    shown = shown_id(claimed_id)
    if len(body) > max_size:
        raise RejectedMessage(f"too large: {len(body)} bytes > limit {max_size}", shown)
    if key is not None:
        if signature is None:
            raise RejectedMessage("unsigned", shown)
        expected = sign(key, body)
        if not hmac.compare_digest(expected.encode("ascii"),
                                   signature.encode("ascii", "replace")):
            raise RejectedMessage("wrong signature", shown)
    header, payload = unframe(body, shown)
    if header.get("kind") != kind:
        raise RejectedMessage(f"malformed: kind {header.get('kind')!r}, expected {kind!r}",
                              shown)
    return header, payload


def unframe(body: bytes, shown: Optional[str] = None,
            versions: Tuple[int, ...] = (PROTOCOL_VERSION,)) -> Tuple[Dict[str, Any], bytes]:
    """Split a body of one of *versions* into its JSON header and its payload
    (bytes, not unpickled)."""
    if len(body) < _PREFIX.size:
        raise RejectedMessage(f"malformed: {len(body)} bytes is too short", shown)
    magic, version, length = _PREFIX.unpack_from(body)
    if magic != _MAGIC:
        raise RejectedMessage("malformed: not a pysched message", shown)
    if version not in versions:
        raise RejectedMessage(f"unknown protocol version {version} "
                              f"(this side speaks {PROTOCOL_VERSION})", shown)
    end = _PREFIX.size + length
    if end > len(body):
        raise RejectedMessage("malformed: header runs past the end of the body", shown)
    try:
        header = json.loads(body[_PREFIX.size:end].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise RejectedMessage(f"malformed: header is not JSON ({exc})", shown) from None
    except RecursionError:
        raise RejectedMessage("malformed: header nested too deeply", shown) from None
    if not isinstance(header, dict):
        raise RejectedMessage("malformed: header is not a JSON object", shown)
    return header, body[end:]


def shown_id(claimed: Any) -> Optional[str]:
    """An unverified message id, made safe to put in a log line."""
    if claimed is None:
        return None
    text = claimed if isinstance(claimed, str) else repr(claimed)
    return text[:_MAX_CLAIMED_ID]
