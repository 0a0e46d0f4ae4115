"""What command and script tasks return or raise: their exit code and the
tails of their output, kept with the run that made them."""
from __future__ import annotations

from typing import Any, NamedTuple, Optional, Tuple, Type

__all__ = ["CommandResult", "CommandError", "CommandTimeout"]


class CommandResult(NamedTuple):
    """What a command or script task returns: ``(exit_code, output, error)``.

    For a command, ``output`` and ``error`` are the (tails of the) decoded
    stdout and stderr; for a script, whatever its function returned.
    """

    exit_code: Any
    output: Any
    error: Any


class CommandError(RuntimeError):
    """A command exited with a non-zero code (or was killed by a signal).

    ``result`` holds the :class:`CommandResult`, with the captured output.
    """

    def __init__(self, message: str, result: Optional[CommandResult] = None) -> None:
        super().__init__(message)
        self.result = result

    def __reduce__(self) -> Tuple[Type[CommandError], Tuple[str, Optional[CommandResult]]]:
        return (type(self), (self.args[0] if self.args else "", self.result))


class CommandTimeout(TimeoutError):
    """A command ran out of time; its process group was killed.

    ``result`` holds the output captured until then; ``timeout`` is the
    command's own timeout in seconds, or None when the scheduler's deadline
    for the run was reached first.
    """

    def __init__(self, message: str, result: Optional[CommandResult] = None,
                 timeout: Optional[float] = None) -> None:
        super().__init__(message)
        self.result = result
        self.timeout = timeout

    def __reduce__(self) -> Tuple[Type[CommandTimeout],
                                  Tuple[str, Optional[CommandResult], Optional[float]]]:
        return (type(self), (self.args[0] if self.args else "", self.result,
                             self.timeout))
