"""The memory store's control requests (see :mod:`.controls` for their rules)."""
from __future__ import annotations

import functools
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional

from .controls import (ABANDONED, DONE, FAILED, PENDING, REQUEST_FIELDS, RETRIED_ACTIONS,
                       STALE_AFTER, TAKEN, check_answer, check_request, check_request_id,
                       check_take)

__all__ = ["MemoryControlRequests"]


class MemoryControlRequests:
    """The control request methods of :class:`~.memory.MemoryStore`: its
    requests by id, under its data lock, undone with a failed batch."""

    _data_lock: "threading.RLock"
    #: Control requests by id (a dict of REQUEST_FIELDS plus taken, taken_by).
    _requests: Dict[int, Dict[str, Any]]
    _request_ids: Iterator[int]
    _changed: Callable[[Callable[[], None]], None]

    def request_control(self, action: str, task_id: str, requested_by: str) -> int:
        """Store a new pending request to apply *action* ('run_now', 'pause',
        'resume', 'cancel'; another is a ValueError) to *task_id*, made by
        *requested_by*; return its id (never reused)."""
        action, task_id, requested_by = check_request(action, task_id, requested_by)
        with self._data_lock:
            request_id = next(self._request_ids)
            self._requests[request_id] = {
                "id": request_id, "action": action, "task_id": task_id, "state": PENDING,
                "ok": None, "message": None, "requested": time.time(), "answered": None,
                "requested_by": requested_by, "taken": None, "taken_by": None}
            self._changed(functools.partial(self._forget_request, request_id))
            return request_id

    def take_control_requests(self, owner: str, limit: int = 100, *,
                              stale_after: float = STALE_AFTER) -> List[Dict[str, Any]]:
        """Move up to *limit* pending requests to 'taken' by *owner* and return
        them, oldest first; a request taken more than *stale_after* seconds
        ago and never answered is settled first (a 'run_now' failed with
        ABANDONED, the others pending again). See SQLiteStore."""
        owner, limit, stale_after = check_take(owner, limit, stale_after)
        now = time.time()
        with self._data_lock:
            taken: List[Dict[str, Any]] = []
            for request_id in sorted(self._requests):
                request = self._requests[request_id]
                if request["state"] == TAKEN and request["taken"] < now - stale_after:
                    if request["action"] in RETRIED_ACTIONS:
                        self._put_request(dict(request, state=PENDING, taken=None,
                                               taken_by=None))
                    else:
                        self._put_request(dict(request, state=FAILED, ok=False,
                                               message=ABANDONED, answered=now))
                if self._requests[request_id]["state"] == PENDING and len(taken) < limit:
                    self._put_request(dict(self._requests[request_id], state=TAKEN,
                                           taken=now, taken_by=owner))
                    taken.append(self._public(self._requests[request_id]))
            return taken

    def answer_control(self, request_id: int, ok: bool, message: str) -> None:
        """Answer a request: 'done' when *ok*, else 'failed', with *message*;
        one answered already keeps its first answer, an unknown id is ignored."""
        request_id, ok, message = check_answer(request_id, ok, message)
        with self._data_lock:
            request = self._requests.get(request_id)
            if request is not None and request["state"] in (PENDING, TAKEN):
                self._put_request(dict(request, state=DONE if ok else FAILED, ok=ok,
                                       message=message, answered=time.time()))

    def control_request(self, request_id: int) -> Optional[Dict[str, Any]]:
        """The request *request_id* (a dict of REQUEST_FIELDS), or None."""
        request_id = check_request_id(request_id)
        with self._data_lock:
            request = self._requests.get(request_id)
            return None if request is None else self._public(request)

    def _forget_request(self, request_id: int) -> None:
        self._requests.pop(request_id, None)

    def _put_request(self, request: Dict[str, Any]) -> None:
        """Replace a request (with the data lock), undoably."""
        previous = self._requests[request["id"]]
        self._requests[request["id"]] = request
        self._changed(functools.partial(self._requests.__setitem__, request["id"], previous))

    @staticmethod
    def _public(request: Dict[str, Any]) -> Dict[str, Any]:
        return {name: request[name] for name in REQUEST_FIELDS}

    def _purge_requests(self, before: float) -> None:
        """Delete the answered requests older than *before* (with the data lock)."""
        for request_id, request in list(self._requests.items()):
            if request["state"] in (DONE, FAILED) and request["answered"] < before:
                del self._requests[request_id]
                self._changed(functools.partial(self._requests.__setitem__, request_id,
                                                request))
