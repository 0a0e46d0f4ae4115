"""Control requests: the rules every store follows for them, in one place.

A dashboard that reads a store from another process cannot call the
scheduler, so it writes a *control request* (run now, pause, resume or
cancel one task) to the store; the store's active scheduler takes it,
applies it and writes the answer, which the dashboard reads back.

A request's life::

    pending --take--> taken --answer--> done (ok) | failed (not ok, message)
                        |
                        +-- its taker died (taken > stale_after seconds ago):
                            run_now          -> failed (ABANDONED): never run twice
                            pause/resume/cancel -> pending again, for the next taker

A run now is not retried because the dead scheduler may have started the
run before it died; running it again could run it twice, which is worse
than asking the user to look and press again. Pause, resume and cancel
leave the same state when applied twice, so they are retried (a cancel the
dead scheduler applied already is answered "no task ..." the second time).

Times (``requested``, ``taken``, ``answered``) are POSIX seconds from the
taker's and requester's own wall clocks (``time.time()``; a store shared by
several machines may use its database's clock instead).

The methods (both stores; the SQL in ``statements`` is plain enough to port):

``request_control(action, task_id, requested_by) -> int``
    Inserts a 'pending' request; returns its id, an int > 0 that is never
    given again (purged ids included). ``action`` outside CONTROL_ACTIONS:
    ValueError naming it; ``task_id``/``requested_by`` not a str: TypeError
    (``rules.check_key``). The task need not exist (the taker says so).
``take_control_requests(owner, limit=100, *, stale_after=STALE_AFTER) -> list``
    In one write transaction: first the stale ones (state 'taken' and
    ``taken`` < now - stale_after) are settled as above; then up to *limit*
    'pending' requests, lowest id first, get state 'taken', ``taken`` = now,
    ``taken_by`` = owner, and are returned as dicts of REQUEST_FIELDS (state
    'taken'). Two takers never get the same request (SQLite: BEGIN
    IMMEDIATE; PostgreSQL: ``FOR UPDATE SKIP LOCKED``). When nothing is
    pending nor stale it should cost one cheap read and no write lock: it
    runs once a second on an idle scheduler.
``answer_control(request_id, ok, message) -> None``
    A 'pending' or 'taken' request becomes 'done' (ok True) or 'failed',
    with *message* (cut to MAX_MESSAGE) and ``answered`` = now. One answered
    already keeps its first answer; an unknown id is ignored.
``control_request(request_id) -> dict | None``
    The request as a dict of REQUEST_FIELDS (``ok``: None until answered),
    or None. ``request_id`` not an int > 0: ValueError.
``purge_runs(before)``
    Also deletes the answered ('done', 'failed') requests with ``answered``
    < *before* (pending and taken ones stay).
``listen_control(callback)`` (optional, for a store that can notify)
    Calls ``callback()`` from any thread when a request is written, so that
    the scheduler takes it at once rather than at its next poll.

The methods are optional in a store (``getattr(store, 'request_control',
None)``): a store without them has a read-only dashboard.
"""
from __future__ import annotations

import numbers
from typing import Any, Dict, Optional, Tuple

from .rules import check_key

__all__ = ["CONTROL_ACTIONS", "REQUEST_FIELDS", "PENDING", "TAKEN", "DONE", "FAILED",
           "STALE_AFTER", "RETRIED_ACTIONS", "ABANDONED", "check_action", "check_request",
           "check_request_id", "check_answer", "check_take", "request_dict"]

#: The actions a request may ask for (the Scheduler's methods of these names).
CONTROL_ACTIONS = ("run_now", "pause", "resume", "cancel")
#: The states of a request.
PENDING, TAKEN, DONE, FAILED = "pending", "taken", "done", "failed"
#: The fields of a request as ``control_request()`` and ``take_control_requests()``
#: return them (``ok`` is None until answered, then a bool).
REQUEST_FIELDS = ("id", "action", "task_id", "state", "ok", "message", "requested",
                  "answered", "requested_by")
#: Seconds after which a request taken but not answered is its taker's loss.
STALE_AFTER = 30.0
#: The actions that leave the same state when applied twice: given to the
#: next taker when their first taker died.
RETRIED_ACTIONS = ("pause", "resume", "cancel")
#: The answer of a run now whose taker died before answering.
ABANDONED = ("the scheduler that took this request stopped before answering it; a run now "
             "is not tried again (it may have started): check the task's runs")
#: The longest message kept (a longer one is cut).
MAX_MESSAGE = 2000


def check_action(action: Any) -> str:
    """*action* if it is one of CONTROL_ACTIONS, else ValueError naming it."""
    if not isinstance(action, str) or action not in CONTROL_ACTIONS:
        raise ValueError(f"unknown control action {action!r}; one of "
                         f"{', '.join(map(repr, CONTROL_ACTIONS))}")
    return str.__str__(action)


def check_request(action: Any, task_id: Any, requested_by: Any) -> Tuple[str, str, str]:
    """The checked arguments of ``request_control``."""
    return (check_action(action), check_key(task_id),
            check_key(requested_by, "requested_by"))


def check_request_id(request_id: Any) -> int:
    """A request's id: an int > 0 (not a bool)."""
    if isinstance(request_id, bool) or not isinstance(request_id, numbers.Integral) \
            or request_id <= 0:
        raise ValueError(f"a control request id is an int > 0, not {request_id!r}")
    return int(request_id)


def check_answer(request_id: Any, ok: Any, message: Any) -> Tuple[int, bool, str]:
    """The checked arguments of ``answer_control`` (a long message is cut)."""
    if not isinstance(ok, bool):
        raise TypeError(f"ok must be True or False, not {ok!r}")
    text = check_key(message, "a control answer's message")
    return check_request_id(request_id), ok, text[:MAX_MESSAGE]


def check_take(owner: Any, limit: Any, stale_after: Any) -> Tuple[str, int, float]:
    """The checked arguments of ``take_control_requests``."""
    owner = check_key(owner, "owner")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be an int >= 1, not {limit!r}")
    if isinstance(stale_after, bool) or not isinstance(stale_after, numbers.Real) \
            or not float(stale_after) >= 0:
        raise ValueError(f"stale_after must be seconds >= 0, not {stale_after!r}")
    return owner, limit, float(stale_after)


def request_dict(row: Any) -> Dict[str, Any]:
    """A stored row (REQUEST_FIELDS order) as a request dict, read
    defensively: ``ok`` becomes None or a bool."""
    request = dict(zip(REQUEST_FIELDS, row))
    ok: Optional[Any] = request["ok"]
    request["ok"] = None if ok is None else bool(ok)
    return request
