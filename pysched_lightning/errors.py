"""Exceptions of pysched_lightning that callers may want to catch by type."""
from __future__ import annotations

import signal as _signal
from typing import Any, Optional, Tuple

__all__ = ["WorkerCrashedError"]


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
