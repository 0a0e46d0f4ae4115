"""Applying the control requests a store holds (a dashboard's run now,
pause, resume, cancel; see ``durability.stores.controls``).

One thread per scheduler whose store has the optional request methods. It
asks the store once a second (sooner when ``wake()`` is called, e.g. by a
store's own notification listener), and only while the scheduler is the
store's active one: a standby takes nothing, so the active scheduler
applies every request. Each request is applied through the scheduler's
public methods, with no lock of this module held (they may call
listeners), and answered done or failed with the error's text.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Dict, Mapping, Optional

from .state import State

__all__ = ["ControlRequests", "POLL_SECONDS"]

_log = logging.getLogger("pysched_lightning")

#: How often the store is asked for requests when nothing wakes the thread.
POLL_SECONDS = 1.0
#: After a failed poll (the store is busy or broken), how long to wait.
ERROR_BACKOFF_SECONDS = 5.0
#: Seconds after which a request taken and never answered is its taker's
#: loss (read at each poll; see ``controls.STALE_AFTER``).
STALE_AFTER: Optional[float] = None


#: What an applied request's answer says, by action.
_DONE = {"run_now": "started an extra run of", "pause": "paused", "resume": "resumed",
         "cancel": "canceled"}


class ControlRequests:
    """Takes, applies and answers *store*'s control requests as *owner*;
    *apply* maps an action ('run_now', ...) to the scheduler's method."""

    def __init__(self, st: State, store: Any, owner: str,
                 apply: Mapping[str, Callable[[str], Any]]) -> None:
        self._st = st
        self._store = store
        self._owner = owner
        self._apply = dict(apply)
        #: Set by wake() (and stop()): poll now.
        self._woken = threading.Event()
        #: Set by stop(): the thread ends.
        self._stopping = threading.Event()
        self._thread: Optional[threading.Thread] = None

    @staticmethod
    def of(st: State, store: Any, owner: str,
           apply: Mapping[str, Callable[[str], Any]]) -> Optional["ControlRequests"]:
        """A ControlRequests for *store*, or None when it has no requests."""
        if store is None or not all(callable(getattr(store, name, None)) for name in (
                "take_control_requests", "answer_control")):
            return None
        return ControlRequests(st, store, owner, apply)

    def start(self) -> None:
        """Start polling (once; the scheduler's start() calls it)."""
        if self._thread is not None or self._stopping.is_set():
            return
        listen = getattr(self._store, "listen_control", None)
        if callable(listen):
            listen(self.wake)
        thread = threading.Thread(target=self._loop, name="pysched-control", daemon=True)
        thread.start()
        self._thread = thread  # (only once started: a stop() racing start() may join it)

    def wake(self) -> None:
        """Poll now rather than within a second (safe from any thread)."""
        self._woken.set()

    def stop(self) -> None:
        """End the thread and wait for it (unless called from it): a request
        being applied is answered first; none is taken after this."""
        self._stopping.set()
        self._woken.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    # -- the thread -------------------------------------------------------------------

    def _loop(self) -> None:
        wait = 0.0
        while not self._stopping.is_set():
            self._woken.wait(wait)
            self._woken.clear()
            if self._stopping.is_set():
                return
            wait = POLL_SECONDS
            if not self._active():
                continue
            try:
                self.poll()
            except Exception:
                _log.exception("control requests: the store %r could not be read; "
                               "trying again in %g s", self._store, ERROR_BACKOFF_SECONDS)
                wait = ERROR_BACKOFF_SECONDS

    def _active(self) -> bool:
        st = self._st
        with st.lock:
            return st.started and not st.standby and not st.closing

    def poll(self) -> int:
        """Take the pending requests and answer each; return how many."""
        kwargs: Dict[str, Any] = {} if STALE_AFTER is None else {"stale_after": STALE_AFTER}
        requests = self._store.take_control_requests(self._owner, **kwargs)
        for request in requests:
            ok, message = self._apply_one(request)
            try:
                self._store.answer_control(request["id"], ok, message)
            except Exception:
                _log.exception("control request #%s: its answer could not be written",
                               request.get("id"))
        return len(requests)

    def _apply_one(self, request: Mapping[str, Any]) -> "tuple[bool, str]":
        """Apply one request (a row from outside: read defensively)."""
        action, task_id = request.get("action"), request.get("task_id")
        method = self._apply.get(action) if isinstance(action, str) else None
        if method is None or not isinstance(action, str):
            return False, f"unknown action {action!r}"
        if not isinstance(task_id, str):
            return False, f"a task id must be a str, not {task_id!r}"
        if self._stopping.is_set():
            return False, "the scheduler shut down before applying it"
        try:
            method(task_id)
        except KeyError:
            return False, f"no task {task_id!r}"
        except Exception as exc:
            return False, f"{type(exc).__name__}: {exc}"
        _log.info("control request #%s from %s: %s task %r", request.get("id"),
                  request.get("requested_by"), action, task_id)
        return True, f"{_DONE.get(action, action)} task {task_id!r}"
