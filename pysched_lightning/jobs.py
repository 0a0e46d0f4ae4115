"""Command and script tasks: run a program or a Python file on a schedule.

``command("backup.sh --full")`` and ``script("jobs/report.py")`` build plain
callables that the scheduler runs like any task. They are classes, not
closures, so they pickle with the standard library and can be kept in a
persistent store. Both validate their input when they are built, so a typo
fails at ``delay()`` time instead of at the first run, and both return a
:class:`CommandResult` ``(exit_code, output, error)``.

A command runs in its own process group (session). When it times out -- its
own ``timeout=`` or the scheduler's deadline for the run, seen through
:func:`pysched_lightning.context.current_run` -- the whole group is sent
SIGTERM, then SIGKILL once the leader has exited or after a one-second grace,
whichever comes first, so grandchildren die with it.
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import logging
import math
import numbers
import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from types import ModuleType
from typing import (Any, Callable, List, Mapping, NamedTuple, Optional,
                    Sequence, Tuple, Union)

from .context import current_run

__all__ = ["CommandResult", "CommandError", "CommandTimeout", "Command",
           "Script", "command", "script"]

_log = logging.getLogger("pysched_lightning")

#: After SIGTERM, how long a timed-out process group gets before SIGKILL.
_KILL_GRACE = 1.0
#: After the command exits, how long its output pipes may stay open (held by
#: a background process it left behind) before we stop reading them.
_PIPE_GRACE = 1.0
_CHUNK = 1 << 16
#: Lines of stderr quoted in a CommandError message, and their total size.
_TAIL_LINES = 3
_TAIL_CHARS = 500
_NAME_CHARS = 80

_PathLike = Union[str, "os.PathLike[str]"]


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

    def __reduce__(self) -> Any:
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

    def __reduce__(self) -> Any:
        return (type(self), (self.args[0] if self.args else "", self.result,
                             self.timeout))


# --------------------------------------------------------------------------
# command


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
        self.env: Optional[dict] = _check_env(env)
        self.timeout: Optional[float] = _check_timeout(timeout)
        self.max_output: int = _check_max_output(max_output)
        if not shell:
            _check_program(self.cmd[0], self.cwd, self.env)
        display = self.cmd if shell else shlex.join(self.cmd)
        #: A display name for the task, such as ``command 'ls -l'``.
        self.name = f"command {_shorten(display)!r}"

    def __call__(self) -> CommandResult:
        """Run the command once and wait for it; see the class docstring."""
        ctx = current_run()
        env = None if self.env is None else {**os.environ, **self.env}
        args: Union[str, List[str]] = self.cmd if self.shell else list(self.cmd)
        out, err = _TailBuffer(self.max_output), _TailBuffer(self.max_output)
        wake_r, wake_w = os.pipe()
        proc: Optional[subprocess.Popen] = None
        readers: List[threading.Thread] = []
        killer: Optional[_GroupKiller] = None
        try:
            proc = subprocess.Popen(
                args, shell=self.shell, cwd=self.cwd, env=env,
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, start_new_session=True)
            _log.debug("%s: started, pid %d", self.name, proc.pid)
            for pipe, buf, what in ((proc.stdout, out, "stdout"),
                                    (proc.stderr, err, "stderr")):
                reader = threading.Thread(
                    target=_read_pipe, args=(pipe.fileno(), wake_r, buf),
                    name=f"pysched-{what}-{proc.pid}", daemon=True)
                reader.start()
                readers.append(reader)
            killer = _GroupKiller(proc.pid, self.name)
            if ctx is not None:
                ctx.add_timeout_callback(killer.terminate)
            try:
                proc.wait(timeout=self.timeout)
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
            _stop_readers(readers, wake_w, self.name)
            for fd in (wake_r, wake_w):
                os.close(fd)
            if proc is not None:
                for pipe in (proc.stdout, proc.stderr):
                    if pipe is not None:
                        pipe.close()
        assert proc is not None and killer is not None
        result = CommandResult(proc.returncode, out.text(), err.text())
        if killer.timed_out:
            if killer.own_timeout:
                why = f"timed out after {self.timeout:g} s"
            else:
                why = "reached the run's deadline"
            raise CommandTimeout(f"{self.name} {why}; its process group was killed",
                                 result, self.timeout if killer.own_timeout else None)
        if proc.returncode != 0:
            raise CommandError(_failure_message(self.name, proc.returncode,
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

    def _key(self) -> tuple:
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


def _check_cwd(cwd: Any) -> Optional[str]:
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


def _check_env(env: Any) -> Optional[dict]:
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


def _check_timeout(timeout: Any) -> Optional[float]:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real):
        raise TypeError(f"timeout must be a number of seconds or None, not {timeout!r}")
    value = float(timeout)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"timeout must be a positive, finite number of seconds, "
                         f"not {timeout!r}")
    return value


def _check_max_output(max_output: Any) -> int:
    if isinstance(max_output, bool) or not isinstance(max_output, int):
        raise TypeError(f"max_output must be an int number of bytes, not {max_output!r}")
    if max_output < 0:
        raise ValueError(f"max_output must be >= 0, not {max_output!r}")
    return max_output


def _check_program(program: str, cwd: Optional[str], env: Optional[dict]) -> None:
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


def _failure_message(name: str, code: Any, error: Any) -> str:
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
            _log.warning("%s: timed out, terminating process group %d",
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


# --------------------------------------------------------------------------
# script


def script(path: _PathLike, func: str = "run", *, args: Sequence[Any] = (),
           kwargs: Optional[Mapping[str, Any]] = None, fresh: bool = True) -> Script:
    """A task that calls *func* in the Python file *path*; see :class:`Script`."""
    return Script(path, func, args=args, kwargs=kwargs, fresh=fresh)


class Script:
    """A function in a Python file, run as a task.

    The file is imported once when the Script is built, to check that it
    loads and defines a callable *func*, so a wrong path or name fails at
    ``delay()`` time. Then:

    - ``fresh=True`` (the default) imports the file again at every run, so
      each run sees the current file, as cron_threads re-reads its scripts.
      Its top-level code runs at every run.
    - ``fresh=False`` imports it once and keeps the module in this Script
      object (not in a pickle of it: an unpickled Script imports again at its
      first run).

    The module gets a unique name and is not left in ``sys.modules`` (it is
    there only while its top-level code runs), the source is compiled without
    reading or writing ``__pycache__``, and ``sys.path`` is never changed:
    a script that imports sibling modules needs its directory on the path
    already (``PYTHONPATH``, or the application adding it at start-up).
    Objects of classes defined in a script cannot be pickled.

    The function's return value is read the cron_threads way, as
    ``(exit_code, output, error)``: a shorter tuple or list is padded with
    None, any other value ``v`` is ``(v, None, None)``, more than three
    values raise ValueError. ``sys.exit(code)`` in the function is read as
    that exit code (None is 0, a message is code 1 with the message as
    error). A non-zero int exit code (not a bool) raises
    :class:`CommandError`, as a command's does; otherwise the call returns a
    :class:`CommandResult`.
    """

    __slots__ = ("path", "func", "args", "kwargs", "fresh", "name",
                 "_module", "_lock")

    def __init__(self, path: _PathLike, func: str = "run", *,
                 args: Sequence[Any] = (), kwargs: Optional[Mapping[str, Any]] = None,
                 fresh: bool = True) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"script path must be a path, not {path!r}")
        given = os.fspath(path)
        if not isinstance(given, str):
            raise TypeError(f"script path must be a str path, not {path!r}")
        if not given.endswith(".py"):
            raise ValueError(f"script must be a .py file: {given!r}")
        if not os.path.isfile(given):
            raise ValueError(f"script file not found: {given!r}")
        if not isinstance(func, str) or not func:
            raise TypeError(f"func must be a function name (str), not {func!r}")
        if isinstance(args, (str, bytes)) or not isinstance(args, (list, tuple)):
            raise TypeError(f"args must be a tuple or list, not {args!r}")
        if kwargs is not None and not isinstance(kwargs, Mapping):
            raise TypeError(f"kwargs must be a mapping or None, not {kwargs!r}")
        for key in kwargs or ():
            if not isinstance(key, str):
                raise TypeError(f"kwargs names must be str, not {key!r}")
        if not isinstance(fresh, bool):
            raise TypeError(f"fresh must be True or False, not {fresh!r}")
        #: The absolute path of the file.
        self.path = os.path.abspath(given)
        self.func = func
        self.args = tuple(args)
        self.kwargs = dict(kwargs or {})
        self.fresh = fresh
        #: A display name for the task, such as ``script jobs/report.py:run``.
        self.name = f"script {given}:{func}"
        self._lock = threading.Lock()
        try:
            module = _load_script(self.path)
        except (Exception, SystemExit) as exc:
            raise ValueError(f"cannot import script {given!r}: "
                             f"{type(exc).__name__}: {exc}{_sibling_hint(exc, self.path)}"
                             ) from exc
        _get_function(module, self)
        self._module: Optional[ModuleType] = None if fresh else module

    def __call__(self) -> CommandResult:
        """Import the script (or reuse it), call the function, check the result."""
        fn = _get_function(self._get_module(), self)
        try:
            value = fn(*self.args, **self.kwargs)
        except SystemExit as exc:
            # sys.exit() in a script ends the run, not the scheduler.
            value = _exit_status(exc)
        result = _normalize(value, self.name)
        code = result.exit_code
        if isinstance(code, int) and not isinstance(code, bool) and code != 0:
            raise CommandError(_failure_message(self.name, code, result.error), result)
        return result

    def _get_module(self) -> ModuleType:
        if self.fresh:
            return _load_script(self.path)
        with self._lock:
            if self._module is None:
                self._module = _load_script(self.path)
            return self._module

    def __getstate__(self) -> dict:
        return {"path": self.path, "func": self.func, "args": self.args,
                "kwargs": self.kwargs, "fresh": self.fresh, "name": self.name}

    def __setstate__(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)
        self._module = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        parts = [repr(self.path), repr(self.func)]
        if self.args:
            parts.append(f"args={self.args!r}")
        if self.kwargs:
            parts.append(f"kwargs={self.kwargs!r}")
        if not self.fresh:
            parts.append("fresh=False")
        return f"Script({', '.join(parts)})"

    def _key(self) -> tuple:
        return (self.path, self.func, self.args, self.kwargs, self.fresh)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Script):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash((self.path, self.func, self.fresh))


class _SourceOnlyLoader(importlib.machinery.SourceFileLoader):
    """Compiles from the source every time: no stale or written ``.pyc``."""

    def get_code(self, fullname: str) -> Any:
        return self.source_to_code(self.get_data(self.path), self.path)


def _load_script(path: str) -> ModuleType:
    stem = re.sub(r"\W", "_", os.path.splitext(os.path.basename(path))[0])
    name = f"_pysched_script_{stem}_{uuid.uuid4().hex[:12]}"
    loader = _SourceOnlyLoader(name, path)
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    if spec is None:  # pragma: no cover - a .py path always gets a spec
        raise ImportError(f"cannot load {path!r}", path=path)
    module = importlib.util.module_from_spec(spec)
    # Only while the top-level code runs: dataclasses and typing look the
    # module up by name. The name is unique, so nothing else can collide.
    sys.modules[name] = module
    try:
        loader.exec_module(module)
    finally:
        if sys.modules.get(name) is module:
            del sys.modules[name]
    return module


def _get_function(module: ModuleType, owner: Script) -> Callable[..., Any]:
    try:
        fn = getattr(module, owner.func)
    except AttributeError:
        raise ValueError(f"script {owner.path!r} has no function {owner.func!r}") from None
    if not callable(fn):
        raise TypeError(f"{owner.func!r} in script {owner.path!r} is not callable: {fn!r}")
    return fn


def _sibling_hint(exc: Exception, path: str) -> str:
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        top = exc.name.split(".")[0]
        folder = os.path.dirname(path)
        if (os.path.isfile(os.path.join(folder, top + ".py"))
                or os.path.isdir(os.path.join(folder, top))):
            return (f" (scripts are imported without adding their folder to "
                    f"sys.path; put {folder!r} on PYTHONPATH to import {top!r})")
    return ""


def _exit_status(exc: SystemExit) -> Tuple[Any, Any, Any]:
    """``sys.exit(code)`` read as a process exit: None is 0, a message is 1."""
    code = exc.code
    if code is None:
        return (0, None, None)
    if isinstance(code, int):
        return (code, None, None)
    return (1, None, str(code))


def _normalize(value: Any, name: str) -> CommandResult:
    """Read a script's return value as ``(exit_code, output, error)``."""
    if isinstance(value, (tuple, list)):
        if len(value) > 3:
            raise ValueError(f"{name} returned {len(value)} values; only 3 values "
                             f"(exit_code, output, error) may be returned")
        padded = tuple(value) + (None,) * (3 - len(value))
        return CommandResult(*padded)
    return CommandResult(value, None, None)
