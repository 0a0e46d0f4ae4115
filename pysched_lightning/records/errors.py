"""Exceptions of pysched_lightning that callers may want to catch by type."""
from __future__ import annotations

import concurrent.futures
import re
import signal as _signal
import time
from typing import Any, List, Optional, Tuple

from loky.process_executor import TerminatedWorkerError

__all__ = ["WorkerCrashedError", "StoreWriteError", "install_hint"]

#: loky's TerminatedWorkerError says e.g. "The exit codes of the workers are
#: {SIGKILL(-9)}" (or "{EXIT(3)}").
_LOKY_EXIT_CODES = re.compile(r"exit codes of the workers are \{([^}]*)\}")
_CODE = re.compile(r"\((-?\d+)\)")
#: How long to wait for a dead stdlib worker's exit code (as loky does).
_EXIT_CODE_PATIENCE = 0.5


def install_hint(extra: str) -> str:
    """How to install the optional part *extra*, for a message saying it is
    missing: from the project's folder, since the index's package of a
    similar name is another project (without these extras)."""
    return f"pip install '.[{extra}]' in the pysched_lightning project's folder"


class WorkerCrashedError(RuntimeError):
    """A worker process died while it held this call: it exited, was killed
    by a signal (SIGKILL from the OOM killer, SIGSEGV from a bad C call...),
    or was killed on request.

    ``exitcode`` is the process's exit code as ``multiprocessing`` reports it
    (negative for a signal) and ``signal`` the signal's name, e.g.
    ``"SIGKILL"``; either is None when it could not be known.
    """

    def __init__(self, exitcode: Optional[int] = None, signal: Optional[str] = None,
                 message: Optional[str] = None) -> None:
        if exitcode is not None and signal is None and exitcode < 0:
            signal = signal_name(-exitcode)
        self.exitcode = exitcode
        self.signal = signal
        super().__init__(message if message is not None else describe_death(exitcode, signal))

    def __reduce__(self) -> Tuple[Any, ...]:
        # The default would call __init__ with the message as exitcode.
        return type(self), (self.exitcode, self.signal, str(self))

    @classmethod
    def from_broken_pool(cls, executor: Any,
                         exc: BaseException) -> Optional["WorkerCrashedError"]:
        """The error for calls lost when *exc* broke the process pool
        *executor*, or None when no worker died (a call or a result failed
        to unpickle). Call it at once: it may look at the pool's processes."""
        found = _LOKY_EXIT_CODES.search(str(exc))
        if found is not None:
            return cls(*_worst([int(code) for code in _CODE.findall(found.group(1))]))
        if isinstance(exc, TerminatedWorkerError):
            return cls()
        if exc.__cause__ is not None or \
                not isinstance(executor, concurrent.futures.ProcessPoolExecutor):
            return None  # loky names every death; the stdlib gives a cause otherwise
        return cls(*_worst(_stdlib_exit_codes(executor)))


def signal_name(number: int) -> str:
    """``"SIGKILL"`` for 9; ``"signal 99"`` for a number with no name here."""
    try:
        return _signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def describe_death(exitcode: Optional[int], signal: Optional[str]) -> str:
    """How a worker process ended, as a sentence for an error message."""
    if signal is not None:
        code = f" (exit code {exitcode})" if exitcode is not None else ""
        return f"the worker process died with signal {signal}{code}"
    if exitcode is not None:
        return f"the worker process died with exit code {exitcode}"
    return "the worker process died (exit code unknown)"


def _stdlib_exit_codes(executor: Any) -> List[int]:
    """The exit codes of a broken ``concurrent.futures`` pool's processes.

    The pool does not say which worker died; but it fails the calls before
    it terminates the other workers, so then the dead one is the one with an
    exit code. Its sentinel fires as its exit begins: the code may take a
    moment longer to be known.
    """
    processes = list((getattr(executor, "_processes", None) or {}).values())
    deadline = time.monotonic() + _EXIT_CODE_PATIENCE
    while True:
        codes = []
        for process in processes:
            try:
                code = process.exitcode
            except ValueError:  # closed
                continue
            if code is not None:
                codes.append(code)
        if codes or time.monotonic() > deadline:
            return codes
        time.sleep(0.01)


def _worst(codes: List[int]) -> Tuple[Optional[int], Optional[str]]:
    """The (exit code, signal) to report among *codes*; a SIGTERM may be the
    pool's own doing, so another code comes first."""
    if not codes:
        return None, None
    codes.sort(key=lambda code: code == -_signal.SIGTERM)
    code = codes[0]
    return code, signal_name(-code) if code < 0 else None


class StoreWriteError(RuntimeError):
    """The store could not keep a task: ``delay()`` scheduled nothing."""
