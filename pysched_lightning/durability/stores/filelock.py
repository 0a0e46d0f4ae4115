"""The SQLite store's one-active-scheduler lock: a ``flock`` on a sidecar file.

The lock is an ``fcntl.flock`` on ``<db path>.lock`` (POSIX only), taken on a
fresh open file per holder object, so it also excludes a second store object
in the same process, and the OS drops it when the holder dies. The lock file
holds the owner as one JSON line (``{"owner": ..., "pid": ..., "host": ...}``)
while held and is emptied on release; it is never deleted (deleting a lock
file races its next taker). A child made by a bare ``fork()`` shares the
parent's open lock file, and so its hold: spawn processes instead (loky and
``multiprocessing`` "spawn" do).
"""
from __future__ import annotations

import json
import os
import socket
import threading
from typing import Any, Optional

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["FileHold"]

#: How often a waiting acquire() retries the file lock, in seconds.
LOCK_POLL = 0.05


class FileHold:
    """The lock on *lock_path*, for one store object; *closed* set ends a
    waiting acquire (it then returns False) and refuses new ones."""

    def __init__(self, lock_path: str, closed: threading.Event) -> None:
        self.lock_path = lock_path
        self._closed = closed
        #: Serializes this object's holds; held while the store is held.
        self._hold = threading.Lock()
        #: Guards the held lock file's descriptor and owner.
        self._lock_state = threading.Lock()
        self._lock_fd: Optional[int] = None
        self._owner: Optional[str] = None

    def __del__(self) -> None:
        # A store dropped while held must not keep the lock until the process ends.
        if getattr(self, "_lock_fd", None) is not None:
            try:
                self.release()
            except Exception:  # pragma: no cover - interpreter shutdown
                pass

    def acquire(self, owner: str, wait: bool = False) -> bool:
        """Hold the lock as *owner*. A waiting acquire retries every
        ``LOCK_POLL`` seconds rather than blocking in ``flock``, so that
        setting *closed* can end it."""
        if not isinstance(owner, str):
            raise TypeError(f"owner must be a str, not {owner!r}")
        if fcntl is None:  # pragma: no cover
            raise OSError("SQLiteStore's lock needs fcntl.flock, which this platform "
                          "lacks (POSIX only)")
        if not self._take(self._hold, wait):
            return False
        fd, held = None, False
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            while not self._closed.is_set():
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except (BlockingIOError, PermissionError):
                    if not wait:
                        break
                    self._closed.wait(LOCK_POLL)
                    continue
                line = json.dumps({"owner": owner, "pid": os.getpid(),
                                   "host": socket.gethostname()})
                os.ftruncate(fd, 0)
                os.pwrite(fd, (line + "\n").encode(), 0)
                with self._lock_state:
                    self._lock_fd, self._owner = fd, owner
                held = True
                if self._closed.is_set():  # closed meanwhile: do not keep it
                    self.release()
                    return False
                return True
            return False
        finally:
            if not held:
                if fd is not None:
                    os.close(fd)
                self._hold.release()

    def _take(self, lock: threading.Lock, wait: bool) -> bool:
        if not wait:
            return not self._closed.is_set() and lock.acquire(blocking=False)
        while not self._closed.is_set():
            if lock.acquire(timeout=LOCK_POLL):
                return True
        return False

    def holder(self) -> Optional[str]:
        """The owner holding the lock, read from the lock file.

        A lock file left by a process that died (on this host) counts as free.
        """
        if self._owner is not None:
            return self._owner
        try:
            with open(self.lock_path, encoding="utf-8") as file:
                info = json.loads(file.readline() or "null")
        except (OSError, ValueError):
            return None
        if not isinstance(info, dict) or not isinstance(info.get("owner"), str):
            return None
        if info.get("host") == socket.gethostname() and not _alive(info.get("pid")):
            return None
        return info["owner"]

    def release(self) -> None:
        """End the hold, if this object holds it; otherwise do nothing."""
        with self._lock_state:
            fd, self._lock_fd, self._owner = self._lock_fd, None, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)  # before unlocking, so the next holder's line survives
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
            self._hold.release()


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, but another user's
    return True
