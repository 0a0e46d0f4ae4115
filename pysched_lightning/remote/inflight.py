"""What a service keeps in memory about the tasks it scheduled.

The scheduler holds a task's message id and due time; the service also
needs, until the task is answered, the client to answer and the lifetime
to quote in a timeout, and how many tasks are due or running: when a task
ends as the only one, its worker publishes the response itself (service.py).
"""
from __future__ import annotations

import threading
from typing import Dict, Optional, Tuple

__all__ = ["Inflight", "InflightTasks", "PURGE_EVERY"]

#: Finished tasks are dropped from the scheduler's memory in batches this big.
PURGE_EVERY = 1000


class Inflight:
    """What the service keeps in memory about a scheduled task."""

    __slots__ = ("client", "lifetime", "started", "active")

    def __init__(self, client: str, lifetime: Optional[float], active: bool) -> None:
        self.client = client
        self.lifetime = lifetime
        self.started: Optional[float] = None
        #: Due or running (counted in InflightTasks).
        self.active = active


class InflightTasks:
    """The scheduled tasks not yet answered, by message id; any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards _tasks, _active and _finished
        self._tasks: Dict[str, Inflight] = {}
        self._active = 0  # tasks due (scheduled to run now) or running
        self._finished = 0  # since the last purge of the scheduler

    def __contains__(self, message_id: object) -> bool:
        with self._lock:
            return message_id in self._tasks

    def add(self, message_id: str, client: str, lifetime: Optional[float],
            active: bool) -> None:
        """*message_id* is scheduled; *active* if it is due now."""
        with self._lock:
            self._tasks[message_id] = Inflight(client, lifetime, active)
            self._active += active

    def started(self, message_id: str, now: float) -> None:
        """*message_id*'s task started (at *now*): it counts as running."""
        with self._lock:
            info = self._tasks.get(message_id)
            if info is not None:
                info.started = now
                if not info.active:
                    info.active = True
                    self._active += 1

    def pop(self, message_id: str) -> Tuple[Optional[Inflight], bool]:
        """*message_id*'s task is over: what was kept of it (None if nothing),
        and whether no other task is due or running now."""
        with self._lock:
            info = self._tasks.pop(message_id, None)
            if info is not None and info.active:
                info.active = False
                self._active -= 1
            return info, not self._active

    def published(self, count: int) -> bool:
        """*count* responses went out; True once in :data:`PURGE_EVERY`: the
        scheduler is to forget its finished tasks (their records would
        otherwise grow without bound)."""
        with self._lock:
            self._finished += count
            due = self._finished >= PURGE_EVERY
            if due:
                self._finished = 0
        return due
