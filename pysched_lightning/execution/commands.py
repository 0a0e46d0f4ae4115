"""Command tasks, which run a program on a schedule, and the result types scripts share.

``command("backup.sh --full")`` builds a plain callable that the scheduler
runs like any task. It is a class, not a closure, so it pickles with the
standard library and can be kept in a persistent store. It validates its
input when it is built, so a typo fails at ``delay()`` time instead of at the
first run, and returns a :class:`CommandResult` ``(exit_code, output, error)``,
as script tasks (:mod:`.scripts`) do.

A command runs in its own process group (:mod:`.process_group`): when it
times out -- its own ``timeout=`` or the scheduler's deadline for the run,
seen through :func:`pysched_lightning.context.current_run` -- the whole group
is killed, grandchildren included.
"""
from __future__ import annotations

import math
import numbers
import os
import shlex
import shutil
import signal
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from ..records.context import current_run
from ..records.outcomes import CommandError, CommandResult, CommandTimeout
from .process_group import run_in_group

__all__ = ["CommandResult", "CommandError", "CommandTimeout", "Command", "command"]

#: Lines of stderr quoted in a CommandError message, and their total size.
_TAIL_LINES = 3
_TAIL_CHARS = 500
_NAME_CHARS = 80

_PathLike = Union[str, "os.PathLike[str]"]


def command(cmd: Union[str, Sequence[str]], *, cwd: Optional[_PathLike] = None,
            env: Optional[Mapping[str, str]] = None, shell: bool = False,
            timeout: Optional[float] = None, max_output: int = 1 << 20) -> Command:
    """A task that runs *cmd* as a process; see :class:`Command`."""
    return Command(cmd, cwd=cwd, env=env, shell=shell, timeout=timeout,
                   max_output=max_output)


class Command:
    """A command to run as a task: calling it runs the process once.

    *cmd* is a string or a list of strings. Without a shell a string is
    split with :func:`shlex.split`; with ``shell=True`` a list is joined with
    :func:`shlex.join` and the line runs under ``/bin/sh -c``. *env* holds
    variables set over the environment of the process that runs the command
    (merged at run time, so only these overrides are stored and pickled).
    *cwd* is made absolute when the command is built. Only the last
    *max_output* bytes of stdout and of stderr are kept; what was cut is
    noted by a leading ``"[... N bytes truncated ...]"`` line.

    Calling returns a :class:`CommandResult`; a non-zero exit code raises
    :class:`CommandError`, a timeout raises :class:`CommandTimeout`.
    """

    __slots__ = ("cmd", "cwd", "env", "shell", "timeout", "max_output", "name")

    def __init__(self, cmd: Union[str, Sequence[str]], *,
                 cwd: Optional[_PathLike] = None,
                 env: Optional[Mapping[str, str]] = None, shell: bool = False,
                 timeout: Optional[float] = None,
                 max_output: int = 1 << 20) -> None:
        if not isinstance(shell, bool):
            raise TypeError(f"shell must be True or False, not {shell!r}")
        self.shell = shell
        #: A tuple of arguments, or the shell line when ``shell`` is true.
        self.cmd: Union[str, Tuple[str, ...]] = _check_cmd(cmd, shell)
        #: The absolute working directory, or None for the scheduler's own.
        self.cwd: Optional[str] = _check_cwd(cwd)
        #: The variables set over the environment when the command runs.
        self.env: Optional[Dict[str, str]] = _check_env(env)
        self.timeout: Optional[float] = _check_timeout(timeout)
        self.max_output: int = _check_max_output(max_output)
        if not shell:
            _check_program(self.cmd[0], self.cwd, self.env)
        display = self.cmd if isinstance(self.cmd, str) else shlex.join(self.cmd)
        #: A display name for the task, such as ``command 'ls -l'``.
        self.name = f"command {_shorten(display)!r}"

    def __call__(self) -> CommandResult:
        """Run the command once and wait for it; see the class docstring."""
        env = None if self.env is None else {**os.environ, **self.env}
        args: Union[str, List[str]] = self.cmd if isinstance(self.cmd, str) else list(self.cmd)
        outcome = run_in_group(args, shell=self.shell, cwd=self.cwd, env=env,
                               timeout=self.timeout, max_output=self.max_output,
                               name=self.name, ctx=current_run())
        result = CommandResult(outcome.returncode, outcome.output, outcome.error)
        if outcome.timed_out:
            if outcome.own_timeout:
                why = f"timed out after {self.timeout:g} s"
            else:
                why = "reached the run's deadline"
            raise CommandTimeout(f"{self.name} {why}; its process group was killed",
                                 result, self.timeout if outcome.own_timeout else None)
        if outcome.returncode != 0:
            raise CommandError(failure_message(self.name, outcome.returncode,
                                               result.error), result)
        return result

    def __repr__(self) -> str:
        parts = [repr(self.cmd if self.shell else list(self.cmd))]
        if self.cwd is not None:
            parts.append(f"cwd={self.cwd!r}")
        if self.env:
            # Values may be secrets: show only the names.
            parts.append(f"env=<{', '.join(sorted(self.env))}>")
        if self.shell:
            parts.append("shell=True")
        if self.timeout is not None:
            parts.append(f"timeout={self.timeout!r}")
        if self.max_output != 1 << 20:
            parts.append(f"max_output={self.max_output!r}")
        return f"Command({', '.join(parts)})"

    def _key(self) -> Tuple[object, ...]:
        env = None if self.env is None else tuple(sorted(self.env.items()))
        return (self.cmd, self.cwd, env, self.shell, self.timeout, self.max_output)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Command):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())


def _check_cmd(cmd: Any, shell: bool) -> Union[str, Tuple[str, ...]]:
    if isinstance(cmd, str):
        if not cmd.strip():
            raise ValueError(f"empty command: {cmd!r}")
        if "\0" in cmd:
            raise ValueError(f"command contains a NUL character: {cmd!r}")
        if shell:
            return cmd
        try:
            argv = shlex.split(cmd)
        except ValueError as exc:
            raise ValueError(f"cannot split command {cmd!r}: {exc}") from None
        if not argv:
            raise ValueError(f"empty command: {cmd!r}")
        return tuple(argv)
    if isinstance(cmd, (bytes, bytearray)) or not isinstance(cmd, (list, tuple)):
        raise TypeError(f"command must be a str or a list of str, not {cmd!r}")
    if not cmd:
        raise ValueError(f"empty command: {cmd!r}")
    for arg in cmd:
        if not isinstance(arg, str):
            raise TypeError(f"command arguments must be str, not {arg!r} in {cmd!r}")
        if "\0" in arg:
            raise ValueError(f"command argument contains a NUL character: {arg!r}")
    if not cmd[0]:
        raise ValueError(f"empty program name in command {cmd!r}")
    return shlex.join(cmd) if shell else tuple(cmd)


def _check_cwd(cwd: object) -> Optional[str]:
    if cwd is None:
        return None
    if not isinstance(cwd, (str, os.PathLike)):
        raise TypeError(f"cwd must be a path, not {cwd!r}")
    path = os.fspath(cwd)
    if not isinstance(path, str):
        raise TypeError(f"cwd must be a str path, not {cwd!r}")
    if not os.path.isdir(path):
        raise ValueError(f"cwd is not an existing directory: {path!r}")
    return os.path.abspath(path)


def _check_env(env: object) -> Optional[Dict[str, str]]:
    if env is None:
        return None
    if not isinstance(env, Mapping):
        raise TypeError(f"env must be a mapping of str to str, not {env!r}")
    checked = {}
    for key, value in env.items():
        if not isinstance(key, str):
            raise TypeError(f"env names must be str, not {key!r}")
        if not key or "=" in key or "\0" in key:
            raise ValueError(f"invalid environment variable name: {key!r}")
        if not isinstance(value, str):
            raise TypeError(f"env values must be str, not {value!r} for {key!r}")
        if "\0" in value:
            raise ValueError(f"env value for {key!r} contains a NUL character: {value!r}")
        checked[key] = value
    return checked


def _check_timeout(timeout: object) -> Optional[float]:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real):
        raise TypeError(f"timeout must be a number of seconds or None, not {timeout!r}")
    value = float(timeout)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"timeout must be a positive, finite number of seconds, "
                         f"not {timeout!r}")
    return value


def _check_max_output(max_output: object) -> int:
    if isinstance(max_output, bool) or not isinstance(max_output, int):
        raise TypeError(f"max_output must be an int number of bytes, not {max_output!r}")
    if max_output < 0:
        raise ValueError(f"max_output must be >= 0, not {max_output!r}")
    return max_output


def _check_program(program: str, cwd: Optional[str],
                   env: Optional[Mapping[str, str]]) -> None:
    """Fail now, not at the first run, when the program cannot be found."""
    if os.sep in program or (os.altsep and os.altsep in program):
        # Popen resolves a relative path against cwd when one is given.
        path = os.path.join(cwd or os.getcwd(), program)
        if not os.path.isfile(path):
            raise ValueError(f"program not found: {program!r}"
                             + (f" (in cwd {cwd!r})" if cwd else ""))
        if not os.access(path, os.X_OK):
            raise ValueError(f"program is not executable: {program!r}")
        return
    # Popen looks a bare name up on the PATH of the child's environment.
    search = os.environ if env is None else {**os.environ, **env}
    if shutil.which(program, path=search.get("PATH", os.defpath)) is None:
        raise ValueError(f"program not found on PATH: {program!r}")


def _shorten(text: str) -> str:
    return text if len(text) <= _NAME_CHARS else text[:_NAME_CHARS - 3] + "..."


def failure_message(name: str, code: object, error: object) -> str:
    if isinstance(code, int) and code < 0:
        try:
            signame = signal.Signals(-code).name
        except ValueError:
            signame = f"signal {-code}"
        head = f"{name} was killed by {signame} (exit code {code})"
    else:
        head = f"{name} failed with exit code {code!r}"
    tail = ""
    if error is not None:
        lines = [line for line in str(error).splitlines() if line.strip()]
        tail = "\n".join(lines[-_TAIL_LINES:])
        if len(tail) > _TAIL_CHARS:
            tail = "..." + tail[-_TAIL_CHARS:]
    return f"{head}: {tail}" if tail else head


# Stored tasks, and results and errors sent back from worker processes, are
# pickles, which name a class by its module. These classes are public names of
# the package, so their pickles name the package: they stay loadable however
# the modules inside it are arranged.
for _public in (CommandResult, CommandError, CommandTimeout, Command):
    _public.__module__ = "pysched_lightning"
del _public
