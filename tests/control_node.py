"""A scheduler in a process of its own, for the control request tests
(``tests/test_control_requests.py``, ``tests/test_dashboard_control.py``)::

    python -c "import control_node; control_node.main()" STORE MARKS [hang]

(with ``PYTHONPATH=<worktree>:<worktree>/tests``, so that ``mark`` is stored
by reference and loads in the test's own schedulers). It schedules the task
``report`` (every hour, first in an hour, so only a run now runs it),
prints ``ready`` once started and serves until SIGTERM. Each run of
``report`` appends a line to the file MARKS. With ``hang``, the scheduler
never answers a control request (its store's ``answer_control`` blocks):
it takes requests and applies the first one, and the test SIGKILLs it
there, as if it had died between applying a request and answering it.
"""
from __future__ import annotations

import os
import sys
import threading
from typing import Any

import pysched_lightning as psl
from pysched_lightning.durability.stores import SQLiteStore


class NeverAnswers(SQLiteStore):
    """A store whose scheduler hangs before it answers a request."""

    def answer_control(self, *args: Any) -> None:
        threading.Event().wait()


def mark(path: str) -> None:
    """A run of the task: one line in *path* (O_APPEND: whole lines)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{os.getpid()}\n".encode())
    finally:
        os.close(fd)


def marks_of(path: str) -> list:
    """The lines ``mark`` wrote to *path* (none before the first)."""
    try:
        with open(path) as stream:
            return stream.read().splitlines()
    except FileNotFoundError:
        return []


def main() -> None:
    store, marks = sys.argv[1], sys.argv[2]
    hang = sys.argv[3:] == ["hang"]
    sched = psl.Scheduler(store=NeverAnswers(store) if hang else store)
    sched.delay("recur", 3600, 1, mark, args=(marks,), task_id="report")
    sched.delay("recur", 3600, 1, mark, args=(marks + ".other",), task_id="other")
    print("ready", flush=True)
    sched.run_forever()
