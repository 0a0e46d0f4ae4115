"""What travels: a task request from a client, a response from the service.

Both are framed and signed by :mod:`.protocol`. A request's payload is the
cloudpickled ``(fn, args, kwargs)``: functions that can be imported travel
by reference (module and name), others (a script's ``__main__``, lambdas,
closures) by value. A response's payload is the pickled ``(result,
exception)``; what cannot be pickled is replaced by a :class:`RemoteError`
saying so, so the response itself always goes out.
"""
from __future__ import annotations

import datetime as _dt
import logging
import pickle
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, NamedTuple, Optional, Tuple, Union

import cloudpickle

from .protocol import (RejectedMessage, check_name, check_number, check_priority, frame,
                       shown_id, unframe, verify)

__all__ = ["Request", "Response", "RemoteError", "STATUSES", "TaskHeader",
           "encode_request", "parse_task", "encode_response", "decode_response",
           "encode_rejection", "decode_reply", "new_id"]

_log = logging.getLogger("pysched_lightning.remote")

#: Every status a response can have.
STATUSES = frozenset({"completed", "error", "timeout", "canceled", "overdue", "interrupted"})


class RemoteError(Exception):
    """Stands for a remote exception or result that could not be sent as itself."""


def new_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class Request:
    """One task for the service: what :meth:`Client.push` sends.

    ``delay`` is seconds from the launch (None: run at once); ``lifetime`` is
    the run's timeout in seconds; ``hard`` runs it in a process of its own;
    a lower ``priority`` is more urgent. With ``enable_overdue=False`` a task
    whose delay has passed when the service receives it is not run.
    ``message_id`` is made when not given.
    """

    fn: Callable[..., Any]
    args: Tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    delay: Optional[float] = None
    priority: int = 1
    hard: bool = False
    lifetime: Optional[float] = None
    enable_overdue: bool = True
    message_id: Optional[str] = None

    def __post_init__(self) -> None:
        if not callable(self.fn):
            raise TypeError(f"fn must be callable, got {self.fn!r}")
        if not isinstance(self.args, (tuple, list)):
            raise TypeError(f"args must be a tuple or list, got {self.args!r}")
        object.__setattr__(self, "args", tuple(self.args))
        if not isinstance(self.kwargs, Mapping) or \
                any(not isinstance(key, str) for key in self.kwargs):
            raise TypeError(f"kwargs must be a dict with str keys, got {self.kwargs!r}")
        check_number("delay", self.delay)
        check_priority(self.priority)
        check_number("lifetime", self.lifetime, allow_min=False)
        for label in ("hard", "enable_overdue"):
            if not isinstance(getattr(self, label), bool):
                raise TypeError(f"{label} must be True or False, got {getattr(self, label)!r}")
        if self.message_id is not None:
            check_name("message_id", self.message_id)


@dataclass(frozen=True)
class Response:
    """The outcome of one request, as the service reported it.

    ``status`` is one of "completed", "error", "timeout", "canceled",
    "overdue" (not run: its delay had passed on arrival) or "interrupted"
    (the service stopped while it ran; it is not run again). ``started`` and
    ``finished`` are the service's wall-clock times (aware, UTC), or None.
    """

    message_id: str
    status: str
    result: Any = None
    exception: Optional[BaseException] = None
    traceback: Optional[str] = None
    started: Optional[_dt.datetime] = None
    finished: Optional[_dt.datetime] = None


class TaskHeader(NamedTuple):
    """A request's header, checked: what the service needs to schedule it."""

    message_id: str
    client: str
    sent: float
    delay: Optional[float]
    priority: int
    hard: bool
    lifetime: Optional[float]
    enable_overdue: bool

    @property
    def due(self) -> float:
        """When the task is due, POSIX seconds (the client's clock plus the delay)."""
        return self.sent + (self.delay or 0.0)


def encode_request(request: Request, client: str, sent: float,
                   service: str) -> Tuple[str, bytes]:
    """The message id and body for *request* to *service*, sent at *sent*
    (POSIX seconds); raises TypeError if it cannot be pickled. The service's
    name and the time are signed with the rest: a captured request runs on
    no other service, and not after the service's replay window."""
    message_id = request.message_id or new_id()
    header = {
        "kind": "task", "id": message_id, "client": client, "service": service, "sent": sent,
        "delay": request.delay, "priority": request.priority, "hard": request.hard,
        "lifetime": request.lifetime, "overdue": request.enable_overdue,
    }
    return message_id, frame(header, _pickle_call(request))


def _pickle_call(request: Request) -> bytes:
    try:
        return cloudpickle.dumps((request.fn, request.args, dict(request.kwargs)))
    except Exception as exc:
        parts = [("fn", request.fn)] + [(f"args[{i}]", a) for i, a in enumerate(request.args)]
        parts += [(f"kwargs[{k!r}]", v) for k, v in request.kwargs.items()]
        for label, part in parts:
            try:
                cloudpickle.dumps(part)
            except Exception as part_exc:
                raise TypeError(f"cannot send the task: {label} cannot be pickled "
                                f"({type(part_exc).__name__}: {part_exc})") from part_exc
        raise TypeError(f"cannot send the task: {type(exc).__name__}: {exc}") from exc


def parse_task(header: Dict[str, Any]) -> TaskHeader:
    """Check a verified request header field by field (RejectedMessage if wrong)."""
    claimed = header.get("id")
    try:
        task = TaskHeader(
            message_id=check_name("id", claimed),
            client=check_name("client", header.get("client")),
            sent=_required(check_number("sent", header.get("sent"), allow_none=False)),
            delay=check_number("delay", header.get("delay")),
            priority=check_priority(header.get("priority")),
            hard=_flag("hard", header.get("hard")),
            lifetime=check_number("lifetime", header.get("lifetime"), allow_min=False),
            enable_overdue=_flag("overdue", header.get("overdue")),
        )
    except (TypeError, ValueError) as exc:
        raise RejectedMessage(f"malformed: {exc}", shown_id(claimed)) from None
    return task


def _required(value: Optional[float]) -> float:
    assert value is not None  # check_number(allow_none=False) never returns None
    return value


def _flag(label: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{label} must be true or false, got {value!r}")
    return value


def encode_response(message_id: str, status: str, result: Any = None,
                    exception: Optional[BaseException] = None,
                    traceback: Optional[str] = None, started: Optional[float] = None,
                    finished: Optional[float] = None, max_size: int = 0) -> bytes:
    """A response body; what cannot be pickled, or would pass *max_size*, is replaced."""
    if status not in STATUSES:
        raise ValueError(f"status must be one of {sorted(STATUSES)}, got {status!r}")
    payload = _pickle_outcome(message_id, result, exception)
    if payload is None:
        status, result, exception = "error", None, RemoteError(
            f"the result of task {message_id!r} could not be pickled")
        payload = cloudpickle.dumps((None, exception))
    header = {"kind": "response", "id": message_id, "status": status, "started": started,
              "finished": finished, "traceback": traceback}
    body = frame(header, payload)
    if max_size and len(body) > max_size:
        header.update(status="error", traceback=None)
        body = frame(header, cloudpickle.dumps((None, RemoteError(
            f"the response to task {message_id!r} is {len(body)} bytes, over the "
            f"limit of {max_size}"))))
    return body


def _pickle_outcome(message_id: str, result: Any,
                    exception: Optional[BaseException]) -> Optional[bytes]:
    if exception is not None:
        try:
            return cloudpickle.dumps((None, exception))
        except Exception:
            return cloudpickle.dumps((None, RemoteError(_describe(exception))))
    try:
        return cloudpickle.dumps((result, None))
    except Exception:
        _log.warning("the result of task %r could not be pickled", message_id, exc_info=True)
        return None


def _describe(exception: BaseException) -> str:
    kind = type(exception)
    try:
        text = str(exception)
    except Exception:
        text = "<str() failed>"
    return f"{kind.__module__}.{kind.__qualname__}: {text}"


def decode_response(body: bytes, signature: Optional[str], key: Optional[bytes],
                    max_size: int, claimed_id: Any = None) -> Response:
    """Verify and decode a response body (RejectedMessage if it fails a check).

    A genuine response over *max_size* (the service's limit is larger than
    this client's) becomes an "error" response saying so, its payload not
    unpickled: the waiter hears why instead of waiting in vain. It is in
    memory already, so checking its signature costs little.
    """
    too_large = len(body) > max_size
    header, payload = verify(body, signature, key, len(body) if too_large else max_size,
                             "response", claimed_id)
    message_id = header.get("id")
    status = header.get("status")
    trace = header.get("traceback")
    if not isinstance(message_id, str) or status not in STATUSES \
            or not (trace is None or isinstance(trace, str)):
        raise RejectedMessage("malformed response header", _text(message_id))
    try:
        started = _when(header.get("started"))
        finished = _when(header.get("finished"))
    except (TypeError, ValueError, OverflowError, OSError) as exc:
        raise RejectedMessage(f"malformed response times ({exc})", message_id) from None
    if too_large:
        return Response(message_id, "error", None, RemoteError(
            f"the response to {message_id!r} is {len(body)} bytes, over this client's "
            f"max_message_size of {max_size}; its result was not read"), None, started,
            finished)
    try:
        result, exception = pickle.loads(payload)
    except Exception as exc:
        result, exception = None, RemoteError(
            f"the response to {message_id!r} could not be unpickled here: "
            f"{type(exc).__name__}: {exc}")
    return Response(message_id, status, result, exception, trace, started, finished)


def _text(value: Any) -> Optional[str]:
    return value if isinstance(value, str) else None


def _when(value: Any) -> Optional[_dt.datetime]:
    if value is None:
        return None
    number = check_number("time", value, allow_none=False)
    assert number is not None
    return _dt.datetime.fromtimestamp(number, _dt.timezone.utc)


#: The longest reason a rejection notice carries.
_MAX_REASON = 500


def encode_rejection(message_id: str, reason: str) -> bytes:
    """A notice that the service rejected *message_id*, for its sender's reply
    queue. It carries no payload and is not signed: a client whose secret is
    not the service's must be able to read it, and all it can do is end a
    wait with an error that gives the reason."""
    return frame({"kind": "rejection", "id": message_id, "reason": reason[:_MAX_REASON]}, b"")


def decode_reply(body: bytes, signature: Optional[str], key: Optional[bytes], max_size: int,
                 claimed_id: Any = None) -> Union[Response, RejectedMessage]:
    """A message from a reply queue: a :class:`Response` (checked as
    :func:`decode_response` does) or, for a rejection notice, the
    :class:`RejectedMessage` that the waiter for it raises. Raises
    RejectedMessage for anything else."""
    header: Dict[str, Any] = {}
    if len(body) <= max_size:
        try:  # only the JSON header is read: nothing is unpickled before the signature
            header = unframe(body)[0]
        except RejectedMessage:
            pass  # not a notice: decode_response says what is wrong with it
    if header.get("kind") != "rejection":
        return decode_response(body, signature, key, max_size, claimed_id)
    message_id, reason = header.get("id"), header.get("reason")
    if not isinstance(message_id, str) or not isinstance(reason, str):
        raise RejectedMessage("malformed rejection notice", _text(claimed_id))
    return RejectedMessage(f"the service rejected message {message_id!r}: "
                           f"{reason[:_MAX_REASON]}", message_id)
