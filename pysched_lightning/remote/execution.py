"""Running a request's code on the service: mark the row started, load the
stored call, unpickle it, call it.

The scheduler is handed only the message id: the function and arguments are
read from the inbox, and unpickled, at the moment they run, in the thread or
process that runs them. So waiting tasks cost the scheduler no memory for
their payloads, a task whose code cannot be unpickled on the service fails
as that one task (an "error" response with the traceback), and a hard
task's code is never unpickled in the service's own process. This module
imports no broker client: a hard task's process loads only it, the inbox,
the framing and the task's own code.
"""
from __future__ import annotations

import pickle
import threading
import time
from typing import Any, Callable, Optional

from .inboxes import InboxStore
from .protocol import STORED_VERSIONS, unframe

__all__ = ["NotRun", "run_in_thread", "run_in_process", "runs_here"]

_here = threading.local()  # .inbox: whose tasks this thread runs


class NotRun(RuntimeError):
    """The row was no longer 'accepted' (or no longer this service instance's)
    when its run came: it is not run here."""


def run_in_thread(inbox: InboxStore, message_id: str) -> Any:
    _here.inbox = inbox
    return _call(message_id, inbox.start(message_id, time.time()))


def runs_here(inbox: InboxStore) -> bool:
    """True in a thread that runs *inbox*'s tasks (a worker of its service)."""
    return getattr(_here, "inbox", None) is inbox


def run_in_process(start: Callable[[str, float], Optional[bytes]], message_id: str) -> Any:
    """In a hard task's process: *start* is the inbox's ``starter()``."""
    return _call(message_id, start(message_id, time.time()))


def _call(message_id: str, body: Optional[bytes]) -> Any:
    if body is None:
        raise NotRun(f"message {message_id!r} was started before, or is another service "
                     "instance's now; it is not run here")
    fn, args, kwargs = pickle.loads(unframe(body, versions=STORED_VERSIONS)[1])
    del body
    return fn(*args, **kwargs)
