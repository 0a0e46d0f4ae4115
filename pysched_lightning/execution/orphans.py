"""No orphans: the processes a scheduler starts die with its process.

* Worker processes of the pools the scheduler makes (the hard-task pool,
  the one-call processes of hard tasks with a timeout, and
  ``psl.ProcessPoolExecutor``) watch their parent: a thread of theirs ends
  the process within a second of its parent being gone, killed by SIGKILL
  included, and on Linux a watchdog process of theirs kills them then,
  should a call hold their GIL; the pool's resource trackers follow once
  its workers are gone.
* Command tasks run in process groups of their own. While some run, a
  guardian process kills their groups, grandchildren included, once this
  process is gone: it reads their ids on a pipe that closes when this
  process dies, and a hangup, Ctrl-C or SIGTERM that kills this process
  does not reach it. (It is one per process, not per scheduler, as the
  process groups it watches are; it ends when no command runs.) Until its group
  is told to the guardian, a command's leader is killed by the Linux
  parent-death signal if this process dies: set before the program starts
  (:func:`die_with_parent`), and checked then, in case it died already.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Optional, Set, Tuple

__all__ = ["exit_with_parent", "watching_parent", "die_with_parent", "guard_group",
           "release_group"]

#: How often a worker process checks that its parent is still there.
PARENT_CHECK_SECONDS = 1.0


def exit_with_parent(parent: int, initializer: Optional[Callable[..., Any]] = None,
                     initargs: Tuple[Any, ...] = ()) -> None:
    """A process pool's initializer: this worker exits once *parent* is no
    longer its parent (it died); then the pool's own *initializer* runs."""
    def watch() -> None:
        while True:
            time.sleep(PARENT_CHECK_SECONDS)
            if os.getppid() != parent:
                os._exit(70)  # nobody is left to take an outcome

    if os.getppid() != parent:  # gone before this worker even started
        os._exit(70)
    _start_watchdog(parent)
    threading.Thread(target=watch, name="pysched-parent-watch", daemon=True).start()
    if initializer is not None:
        initializer(*initargs)


# A worker's watchdog (Linux), for when its watch thread cannot run: a call
# in C code that holds the worker's GIL for minutes. A process of its own,
# it kills the worker (argv[2]) once *parent* (argv[1]) is no longer the
# worker's parent; the parent-death signal kills it when the worker ends.
_WATCHDOG = r"""
import os, signal, sys, time
for name in ("SIGHUP", "SIGINT", "SIGTERM", "SIGQUIT"):
    signal.signal(getattr(signal, name), signal.SIG_IGN)
parent, worker, every = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
while True:
    try:
        with open("/proc/%d/stat" % worker, "rb") as stat:
            ppid = int(stat.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        break
    if ppid != parent:
        os.kill(worker, signal.SIGKILL)
        break
    time.sleep(every)
"""


def _start_watchdog(parent: int) -> None:
    """In a worker: start its watchdog process, where there can be one."""
    preexec = die_with_parent(os.getpid())
    if preexec is None or not os.path.exists(f"/proc/{os.getpid()}/stat"):
        return  # the watch thread alone
    try:
        subprocess.Popen([sys.executable, "-S", "-I", "-c", _WATCHDOG, str(parent),
                          str(os.getpid()), str(PARENT_CHECK_SECONDS)],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, preexec_fn=preexec)
    except (OSError, subprocess.SubprocessError):
        pass  # (no process to spare) the watch thread alone


def watching_parent(initializer: Optional[Callable[..., Any]] = None,
                    initargs: Tuple[Any, ...] = ()) -> Tuple[Callable[..., Any],
                                                              Tuple[Any, ...]]:
    """The ``(initializer, initargs)`` of a pool whose workers exit with this
    process, running *initializer* too."""
    if initializer is exit_with_parent:  # a pool made like one of ours
        return initializer, tuple(initargs)
    return exit_with_parent, (os.getpid(), initializer, tuple(initargs))


def _prctl() -> Optional[Callable[..., int]]:
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


#: Bound once, in the parent: the child between fork and exec only calls it.
_PRCTL = _prctl()
_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> Optional[Callable[[], None]]:
    """A ``preexec_fn`` for a child of process *parent*: it gets SIGKILL when
    its parent dies (Linux); None where that cannot be asked."""
    prctl = _PRCTL
    if prctl is None:
        return None

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # it died before the line above
            os._exit(70)
    return preexec


# The guardian's whole program: it keeps the process groups it is told of,
# and kills those left once the pipe from its parent closes (or its parent
# is gone while another process holds the pipe, a fork of it). It must
# outlive its parent to do its work, so the signals that may kill that parent
# with it do not reach it: it runs in a session of its own (out of reach of
# the terminal's hangup and Ctrl-C, sent to a whole process group), and
# ignores those a service manager sends each process of a service (SIGTERM
# to its cgroup). It ends on its own.
_GUARDIAN = r"""
import os, select, signal, sys
for name in ("SIGHUP", "SIGINT", "SIGTERM", "SIGQUIT"):
    signal.signal(getattr(signal, name), signal.SIG_IGN)
parent, groups, data, fd = os.getppid(), set(), b"", sys.stdin.fileno()
while True:
    if not select.select([fd], [], [], 1.0)[0]:
        if os.getppid() != parent:
            break
        continue
    chunk = os.read(fd, 4096)
    if not chunk:
        break
    *lines, data = (data + chunk).split(b"\n")
    for line in lines:
        sign, _, pgid = line.partition(b" ")
        (groups.add if sign == b"+" else groups.discard)(int(pgid))
for pgid in groups:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass
"""


class _Guardian:
    """The guardian process of this process's command groups: started with
    the first group to watch, told to end (its pipe closed) with the last."""

    def __init__(self) -> None:
        #: Guards the process, the groups and writes to the pipe.
        self._lock = threading.Lock()
        self._process: Optional[subprocess.Popen] = None
        self._owner = 0
        self._groups: Set[int] = set()

    def watch(self, pgid: int) -> None:
        with self._lock:
            if self._owner != os.getpid():  # a fork: the groups were the parent's
                self._process, self._owner, self._groups = None, os.getpid(), set()
            self._groups.add(pgid)
            if self._process is None or self._process.poll() is not None:
                self._process = subprocess.Popen(
                    [sys.executable, "-S", "-c", _GUARDIAN], stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    start_new_session=True)
                for group in self._groups - {pgid}:
                    self._send(f"+ {group}")
            self._send(f"+ {pgid}")

    def release(self, pgid: int) -> None:
        with self._lock:
            if self._owner != os.getpid() or pgid not in self._groups:
                return
            self._groups.discard(pgid)
            process = self._process
            if process is not None and not self._groups:
                self._process = None
                _close(process)  # it ends: nothing is left to watch
            else:
                self._send(f"- {pgid}")

    def _send(self, line: str) -> None:
        process = self._process
        try:
            process.stdin.write(line.encode() + b"\n")  # type: ignore[union-attr]
            process.stdin.flush()  # type: ignore[union-attr]
        except (OSError, AttributeError):  # it died: the next group starts another
            self._process = None


def _close(process: subprocess.Popen) -> None:
    try:
        process.stdin.close()  # type: ignore[union-attr]
        process.wait(5)
    except (OSError, subprocess.TimeoutExpired):
        process.kill()


_guardian = _Guardian()


def guard_group(pgid: int) -> None:
    """Kill process group *pgid* if this process dies before it ends."""
    _guardian.watch(pgid)


def release_group(pgid: int) -> None:
    """Process group *pgid* is over (nothing of it runs any more)."""
    _guardian.release(pgid)
