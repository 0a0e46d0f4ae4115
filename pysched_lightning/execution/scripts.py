"""Script tasks: call a function in a Python file on a schedule.

``script("jobs/report.py")`` builds a plain callable that the scheduler runs
like any task. It is a class, not a closure, so it pickles with the standard
library and can be kept in a persistent store. The file is loaded once when
the task is built, so a wrong path or name fails at ``delay()`` time, and
the function's return value is read as a :class:`~.commands.CommandResult`
``(exit_code, output, error)``, as a command's is.
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import re
import sys
import threading
import uuid
from types import CodeType, ModuleType
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

from .commands import CommandError, CommandResult, failure_message

__all__ = ["Script", "script"]

_PathLike = Union[str, "os.PathLike[str]"]


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
            raise CommandError(failure_message(self.name, code, result.error), result)
        return result

    def _get_module(self) -> ModuleType:
        if self.fresh:
            return _load_script(self.path)
        with self._lock:
            if self._module is None:
                self._module = _load_script(self.path)
            return self._module

    def __getstate__(self) -> Dict[str, Any]:
        return {"path": self.path, "func": self.func, "args": self.args,
                "kwargs": self.kwargs, "fresh": self.fresh, "name": self.name}

    def __setstate__(self, state: Dict[str, Any]) -> None:
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

    def _key(self) -> Tuple[object, ...]:
        return (self.path, self.func, self.args, self.kwargs, self.fresh)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Script):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash((self.path, self.func, self.fresh))


class _SourceOnlyLoader(importlib.machinery.SourceFileLoader):
    """Compiles from the source every time: no stale or written ``.pyc``."""

    def get_code(self, fullname: str) -> CodeType:
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


def _sibling_hint(exc: BaseException, path: str) -> str:
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        top = exc.name.split(".")[0]
        folder = os.path.dirname(path)
        if (os.path.isfile(os.path.join(folder, top + ".py"))
                or os.path.isdir(os.path.join(folder, top))):
            return (f" (scripts are imported without adding their folder to "
                    f"sys.path; put {folder!r} on PYTHONPATH to import {top!r})")
    return ""


def _exit_status(exc: SystemExit) -> Tuple[int, None, Optional[str]]:
    """``sys.exit(code)`` read as a process exit: None is 0, a message is 1."""
    code = exc.code
    if code is None:
        return (0, None, None)
    if isinstance(code, int):
        return (code, None, None)
    return (1, None, str(code))


def _normalize(value: object, name: str) -> CommandResult:
    """Read a script's return value as ``(exit_code, output, error)``."""
    if isinstance(value, (tuple, list)):
        if len(value) > 3:
            raise ValueError(f"{name} returned {len(value)} values; only 3 values "
                             f"(exit_code, output, error) may be returned")
        padded = tuple(value) + (None,) * (3 - len(value))
        return CommandResult(*padded)
    return CommandResult(value, None, None)


# Stored tasks pickle a Script by its class's module: the package, where it
# is a public name, rather than this module (see the end of commands.py).
Script.__module__ = "pysched_lightning"
