"""A dashboard's actions on a store another process's scheduler runs: the
action is written as a control request (see
``durability.stores.controls``), and its answer awaited for a few seconds.

The store's active scheduler looks for requests about once a second, so
an answer usually comes within one or two. When none comes in time (no
scheduler runs, or a standby only), the action stays requested: the page
says so and names the request, whose state ``GET /api/requests/<id>``
shows later.
"""
from __future__ import annotations

import dataclasses
import os
import socket
import time
from typing import Any, Dict, Optional

__all__ = ["Outcome", "StoreControl", "ANSWER_WAIT", "STORE_ACTIONS", "can_control"]

#: How long an action waits for the scheduler's answer, in seconds.
ANSWER_WAIT = 5.0
#: The store's name of each action the dashboard offers (by its URL name).
STORE_ACTIONS = {"pause": "pause", "resume": "resume", "run-now": "run_now",
                 "cancel": "cancel"}
_METHODS = ("request_control", "control_request")


def can_control(store: Any) -> bool:
    """Whether *store* keeps control requests (the methods are optional)."""
    return all(callable(getattr(store, name, None)) for name in _METHODS)


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What became of an action: ``state`` is 'done', 'failed' (``message``
    says why) or 'pending' (no answer yet: ``request`` names it)."""

    state: str
    message: str
    request: Optional[int] = None


class StoreControl:
    """Writes *store*'s control requests for a dashboard and waits up to
    *wait* seconds (default ANSWER_WAIT) for each answer."""

    def __init__(self, store: Any, wait: Optional[float] = None) -> None:
        self._store = store
        self._wait = ANSWER_WAIT if wait is None else wait
        #: Who asks, as the requests record it.
        self.requested_by = f"dashboard {socket.gethostname()}:{os.getpid()}"

    def act(self, action: str, task_id: str) -> Outcome:
        """Request *action* ('pause', 'resume', 'run-now', 'cancel') on
        *task_id* and wait for the answer. KeyError when the store has no
        such task (nothing is written), ValueError for another action."""
        if action not in STORE_ACTIONS:
            raise ValueError(f"unknown action {action!r}; one of {', '.join(STORE_ACTIONS)}")
        if self._store.task(task_id) is None:
            raise KeyError(task_id)
        request_id = self._store.request_control(STORE_ACTIONS[action], task_id,
                                                 self.requested_by)
        deadline = time.monotonic() + self._wait
        pause = 0.02
        while True:
            request = self.request(request_id)
            state = request.get("state") if request is not None else None
            if state in ("done", "failed"):
                message = request.get("message") if request is not None else None
                return Outcome(str(state), message if isinstance(message, str) else "",
                               request_id)
            left = deadline - time.monotonic()
            if left <= 0:
                return Outcome("pending", f"requested; no running scheduler has applied it "
                                          f"yet (request #{request_id})", request_id)
            time.sleep(min(pause, left))
            pause = min(pause * 1.5, 0.25)  # most answers come after the poll, ~1 s

    def request(self, request_id: int) -> Optional[Dict[str, Any]]:
        """The request (a dict) or None; read defensively: a row that is not
        a mapping reads as None."""
        found = self._store.control_request(request_id)
        return dict(found) if isinstance(found, dict) else None
