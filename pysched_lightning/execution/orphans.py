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
  process is gone: it reads their ids on a socket that closes when this
  process dies, and a hangup, Ctrl-C or SIGTERM that kills this process
  does not reach it. (It is one per process, not per scheduler, as the
  process groups it watches are; it ends when no command runs.) A command's
  child tells the guardian of its group itself, before the program starts,
  and gets the Linux parent-death signal (:func:`die_with_parent`, which
  checks that this process is still there then).
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Optional, Set, Tuple

__all__ = ["exit_with_parent", "watching_parent", "die_with_parent", "reserve_guard",
           "unreserve_guard", "guard_group", "release_group"]

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


def die_with_parent(parent: int, guardian: Optional[int] = None
                    ) -> Optional[Callable[[], None]]:
    """A ``preexec_fn`` for a child of process *parent*: it gets SIGKILL when
    its parent dies (Linux); None where that cannot be asked. With the
    *guardian*'s socket (:func:`reserve_guard`), the child tells it of its
    process group before the program starts, so that nothing the program
    starts escapes it, however soon its parent dies."""
    prctl = _PRCTL
    if prctl is None:
        return None
    line = None if guardian is None else b"+ %d\n"

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # it died before the line above
            os._exit(70)
        if line is not None:
            channel = socket.socket(fileno=guardian)
            try:
                channel.send(line % os.getpid(), socket.MSG_NOSIGNAL)
            except OSError:  # the guardian died: its parent starts another
                pass
            finally:
                channel.detach()  # (the parent's: closed at exec)
    return preexec


# The guardian's whole program: it keeps the process groups it is told of,
# and kills those left once the socket from its parent closes (or its parent
# is gone while another process holds the socket, a fork of it). It must
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
    """The guardian process of this process's command groups: started for
    the first command, told to end (its socket closed) after the last.

    Its channel is a ``SOCK_SEQPACKET`` socket pair: each line is one
    message, so a command's child may send its own "+ pid" line between
    fork and exec (see :func:`die_with_parent`), whole even beside ours,
    and without the SIGPIPE a pipe would raise if the guardian died.
    """

    def __init__(self) -> None:
        #: Guards the process, its socket, the groups and the reservations.
        self._lock = threading.Lock()
        self._process: Optional[subprocess.Popen] = None
        self._socket: Optional[socket.socket] = None
        self._owner = 0
        self._groups: Set[int] = set()
        #: Commands about to start, which the guardian must wait for.
        self._pending = 0

    def reserve(self) -> int:
        """A command is about to start: the guardian runs (and stays until
        :meth:`watch` or :meth:`unreserve`); a descriptor of the socket its
        child tells it of itself on, its own (valid whatever happens to the
        guardian meanwhile), which they close."""
        with self._lock:
            self._adopt()
            self._ensure_running()
            assert self._socket is not None
            channel = os.dup(self._socket.fileno())  # (closed at exec)
            self._pending += 1
            return channel

    def unreserve(self, channel: int) -> None:
        """The command reserved for did not start."""
        os.close(channel)
        with self._lock:
            if self._owner == os.getpid():
                self._pending -= 1
                self._end_if_idle()

    def watch(self, pgid: int, channel: int) -> None:
        """The command reserved for runs, as process group *pgid*. (Its
        child told the guardian already, unless the guardian died meanwhile:
        a new one is then told of every group.)"""
        os.close(channel)
        with self._lock:
            if self._owner != os.getpid():
                return
            self._pending -= 1
            self._groups.add(pgid)
            if self._ensure_running():
                self._send(f"+ {pgid}")

    def release(self, pgid: int) -> None:
        with self._lock:
            if self._owner != os.getpid() or pgid not in self._groups:
                return
            self._groups.discard(pgid)
            if not self._end_if_idle():
                self._send(f"- {pgid}")

    def _adopt(self) -> None:
        if self._owner != os.getpid():  # a fork: the guardian is the parent's
            self._process, self._socket, self._owner = None, None, os.getpid()
            self._groups, self._pending = set(), 0

    def _ensure_running(self) -> bool:
        """Start a guardian if none runs, told of every group; False if one
        ran already."""
        if self._process is not None and self._process.poll() is None:
            return True
        if self._socket is not None:
            self._socket.close()
        ours, its = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-S", "-c", _GUARDIAN], stdin=its.fileno(),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True)
        except BaseException:
            ours.close()
            self._process = self._socket = None
            raise
        finally:
            its.close()
        self._socket = ours
        for group in self._groups:
            self._send(f"+ {group}")
        return False

    def _end_if_idle(self) -> bool:
        """End the guardian when nothing is left to watch; True if none
        runs now."""
        if self._groups or self._pending:
            return self._process is None
        process, self._process = self._process, None
        if self._socket is not None:
            self._socket.close()  # its end of the socket reads EOF: it ends
            self._socket = None
        if process is not None:
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
        return True

    def _send(self, line: str) -> None:
        try:
            self._socket.send(line.encode() + b"\n")  # type: ignore[union-attr]
        except (OSError, AttributeError):  # it died: the next command starts another
            self._process = None


_guardian = _Guardian()


def reserve_guard() -> int:
    """Before a command starts: the guardian runs; a file descriptor of the
    socket its child tells the guardian of itself on (through
    :func:`die_with_parent`), to hand back to :func:`guard_group` once it
    started, or to :func:`unreserve_guard` if it did not."""
    return _guardian.reserve()


def unreserve_guard(channel: int) -> None:
    """The command reserved for by :func:`reserve_guard` did not start."""
    _guardian.unreserve(channel)


def guard_group(pgid: int, channel: int) -> None:
    """Kill the process group *pgid* of a command reserved for by
    :func:`reserve_guard` if this process dies before it ends."""
    _guardian.watch(pgid, channel)


def release_group(pgid: int) -> None:
    """Process group *pgid* is over (nothing of it runs any more)."""
    _guardian.release(pgid)
