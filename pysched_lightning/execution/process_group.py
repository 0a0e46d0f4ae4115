"""Running a program in its own process group, keeping the tails of its output.

:func:`run_in_group` starts the program in a new session, copies the last
*max_output* bytes of its stdout and stderr on two reader threads, and
waits. At a timeout -- its own, or the deadline of the scheduler's run seen
through a :class:`~pysched_lightning.context.RunContext` -- the whole group
is sent SIGTERM, then SIGKILL once the leader has exited or after a
one-second grace, whichever comes first, so grandchildren die with it.
Nothing started here outlives the call, nor this process (see :mod:`.orphans`).
"""
from __future__ import annotations

import errno
import logging
import os
import select
import signal
import subprocess
import threading
import time
from typing import List, Mapping, NamedTuple, Optional, Sequence, Union

from ..records.context import RunContext
from .orphans import (die_with_parent, guard_group, release_group, reserve_guard,
                      unreserve_guard)

__all__ = ["GroupOutcome", "run_in_group"]

_log = logging.getLogger("pysched_lightning")

#: After SIGTERM, how long a timed-out process group gets before SIGKILL.
_KILL_GRACE = 1.0
#: After the program exits, how long its output pipes may stay open (held by
#: a background process it left behind) before we stop reading them.
_PIPE_GRACE = 1.0
_CHUNK = 1 << 16


class GroupOutcome(NamedTuple):
    """How a program run by :func:`run_in_group` ended."""

    #: The exit code; negative: killed by that signal.
    returncode: int
    #: The decoded tails of stdout and stderr.
    output: str
    error: str
    #: True when a timeout killed the group; *own_timeout* says whose it was:
    #: the call's *timeout* (True) or the run's deadline (False).
    timed_out: bool
    own_timeout: bool


def run_in_group(args: Union[str, Sequence[str]], *, shell: bool, cwd: Optional[str],
                 env: Optional[Mapping[str, str]], timeout: Optional[float],
                 max_output: int, name: str,
                 ctx: Optional[RunContext] = None) -> GroupOutcome:
    """Run *args* in a new process group and wait for it; see the module docstring.

    *env* is the whole environment of the child (None: this process's). A
    deadline of *ctx* kills the group as a *timeout* does. *name* labels the
    log lines and the reader threads.
    """
    out, err = _TailBuffer(max_output), _TailBuffer(max_output)
    wake_r, wake_w = os.pipe()
    proc: Optional[subprocess.Popen[bytes]] = None
    readers: List[threading.Thread] = []
    killer: Optional[_GroupKiller] = None
    try:
        proc = _start(args, shell=shell, cwd=cwd, env=env)  # it dies with this process
        if ctx is not None:  # and if it did not, a restart kills it
            ctx.process_started(proc.pid)
        _log.debug("%s: started, pid %d", name, proc.pid)
        for pipe, buf, what in ((proc.stdout, out, "stdout"),
                                (proc.stderr, err, "stderr")):
            assert pipe is not None  # stdout and stderr are PIPE
            reader = threading.Thread(
                target=_read_pipe, args=(pipe.fileno(), wake_r, buf),
                name=f"pysched-{what}-{proc.pid}", daemon=True)
            reader.start()
            readers.append(reader)
        killer = _GroupKiller(proc.pid, name)
        if ctx is not None:
            ctx.add_timeout_callback(killer.terminate)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            killer.terminate(own_timeout=True)
            proc.wait()
    finally:
        if ctx is not None and killer is not None:
            ctx.remove_timeout_callback(killer.terminate)
        if killer is not None:
            killer.finish()
        if proc is not None and proc.returncode is None:
            # Interrupted (KeyboardInterrupt, a reader failed to start):
            # leave nothing behind.
            _killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc is not None:
            release_group(proc.pid)
        _stop_readers(readers, wake_w, name)
        for fd in (wake_r, wake_w):
            os.close(fd)
        if proc is not None:
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
    assert proc is not None and killer is not None
    return GroupOutcome(proc.returncode, out.text(), err.text(),
                        killer.timed_out, killer.own_timeout)


def _start(args: Union[str, Sequence[str]], *, shell: bool, cwd: Optional[str],
           env: Optional[Mapping[str, str]]) -> "subprocess.Popen[bytes]":
    """Start the program in a new session, under the guardian's watch before
    it runs: it dies with this process, even by SIGKILL, and so does what
    it starts, however soon that comes."""
    guardian = reserve_guard()
    try:
        proc = subprocess.Popen(
            args, shell=shell, cwd=cwd, env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, start_new_session=True,
            preexec_fn=die_with_parent(os.getpid(), guardian))
    except BaseException as exc:
        unreserve_guard(guardian)
        if isinstance(exc, OSError) and exc.errno == errno.ENOEXEC:
            raise not_runnable(exc.filename or args) from None
        raise
    guard_group(proc.pid, guardian)
    return proc


def not_runnable(program: object) -> OSError:
    """The error for a program the system cannot execute (ENOEXEC): most
    often a script without its ``#!`` line, which "Exec format error" does
    not say."""
    shown = program if isinstance(program, str) else \
        (program[0] if isinstance(program, (list, tuple)) and program else program)
    return OSError(errno.ENOEXEC, f"{shown} has no '#!' line (e.g. #!/bin/sh) as its "
                   "first line, and is not a binary this system runs")


class _TailBuffer:
    """The last *limit* bytes written to it, and how many were dropped."""

    __slots__ = ("limit", "data", "dropped", "lock")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()
        self.dropped = 0
        self.lock = threading.Lock()

    def append(self, chunk: bytes) -> None:
        with self.lock:
            self.data += chunk
            excess = len(self.data) - self.limit
            if excess > 0:
                # CPython trims the front of a bytearray without copying.
                del self.data[:excess]
                self.dropped += excess

    def text(self) -> str:
        with self.lock:
            data, dropped = bytes(self.data), self.dropped
        if not dropped:
            return data.decode("utf-8", errors="replace")
        # Do not start in the middle of a UTF-8 character.
        skip = 0
        while skip < min(3, len(data)) and data[skip] & 0xC0 == 0x80:
            skip += 1
        return (f"[... {dropped + skip} bytes truncated ...]\n"
                + data[skip:].decode("utf-8", errors="replace"))


def _read_pipe(fd: int, wake_fd: int, buf: _TailBuffer) -> None:
    """Copy *fd* into *buf* until EOF, or until *wake_fd* becomes readable."""
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        poller.register(wake_fd, select.POLLIN)
        while True:
            woken = False
            for ready, _ in poller.poll():
                if ready == wake_fd:
                    woken = True
                    continue
                chunk = os.read(fd, _CHUNK)
                if not chunk:
                    return
                buf.append(chunk)
            if woken:
                _drain(fd, buf)
                return
    except Exception:
        _log.exception("reading a command's output failed")


def _drain(fd: int, buf: _TailBuffer) -> None:
    """Take what is already in the pipe without waiting for more."""
    os.set_blocking(fd, False)
    budget = buf.limit + _CHUNK
    while budget > 0:
        try:
            chunk = os.read(fd, _CHUNK)
        except BlockingIOError:
            return
        if not chunk:
            return
        buf.append(chunk)
        budget -= len(chunk)


def _stop_readers(readers: List[threading.Thread], wake_w: int, name: str) -> None:
    """Join the reader threads; stop them if something still holds the pipes."""
    deadline = time.monotonic() + _PIPE_GRACE
    for reader in readers:
        reader.join(max(0.0, deadline - time.monotonic()))
    if any(reader.is_alive() for reader in readers):
        _log.warning("%s exited but a process it started still holds its output "
                      "pipes; the rest of its output is not captured", name)
        os.write(wake_w, b"x")
        for reader in readers:
            reader.join()


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass  # the whole group has exited already


class _GroupKiller:
    """Kills a command's process group at a timeout, without blocking.

    :meth:`terminate` may be called from any thread (the scheduler's, through
    the run's timeout callback): it sends SIGTERM and arms a timer for
    SIGKILL. :meth:`finish` is called by the command's thread once the
    leader has exited; after a timeout it sends SIGKILL to what is left of
    the group at once. Nothing is signalled after :meth:`finish`.
    """

    def __init__(self, pgid: int, name: str) -> None:
        self._pgid = pgid
        self._name = name
        self._lock = threading.Lock()
        self._finished = False
        self._timer: Optional[threading.Timer] = None
        self.timed_out = False
        self.own_timeout = False

    def terminate(self, own_timeout: bool = False) -> None:
        with self._lock:
            if self._finished or self.timed_out:
                return
            self.timed_out = True
            self.own_timeout = own_timeout
            # (the run's end says why, once: its timeout or the shutdown)
            _log.debug("%s: stopping it, terminating process group %d",
                       self._name, self._pgid)
            _killpg(self._pgid, signal.SIGTERM)
            self._timer = threading.Timer(_KILL_GRACE, self._kill)
            self._timer.daemon = True
            self._timer.start()

    def _kill(self) -> None:
        with self._lock:
            if not self._finished:
                _killpg(self._pgid, signal.SIGKILL)

    def finish(self) -> None:
        with self._lock:
            self._finished = True
            timer = self._timer
        if self.timed_out:
            # The leader is gone; whatever stayed in its group goes too.
            _killpg(self._pgid, signal.SIGKILL)
        if timer is not None:
            timer.cancel()
            timer.join()
