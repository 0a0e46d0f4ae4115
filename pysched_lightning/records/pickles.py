"""Pickling the parts of tasks: loading what earlier versions stored, and
checking that a call can be sent to a process.

Loading follows the classes that moved between versions, so a store or an
outcome written before a module moved still loads.
"""
from __future__ import annotations

import io
import pickle
import weakref
from typing import Any, Callable, Mapping, Optional, Tuple

import cloudpickle

__all__ = ["loads", "unpicklable_part", "check_picklable"]


#: Where classes pickled by earlier versions live now (0.3 put the modules
#: in layer folders; stores keep options, triggers and commands pickled).
_MOVED = {
    "pysched_lightning.jobs": "pysched_lightning",
    **{f"pysched_lightning.{name}": f"pysched_lightning.records.{name}"
       for name in ("runs", "task", "options", "events", "protocols", "errors", "context",
                    "validation")},
    **{f"pysched_lightning.{name}": f"pysched_lightning.timing.{name}"
       for name in ("triggers", "cron", "zones", "clock")},
    **{f"pysched_lightning.{name}": f"pysched_lightning.execution.{name}"
       for name in ("commands", "scripts", "executors", "processes", "calls")},
}


class _Unpickler(pickle.Unpickler):
    """Loads stored pickles, following classes that moved between versions."""

    def find_class(self, module: str, name: str) -> Any:
        return super().find_class(_MOVED.get(module, module), name)


def loads(data: Optional[bytes]) -> Any:
    return _Unpickler(io.BytesIO(data or b"")).load()


def unpicklable_part(fn: Any, args: Tuple[Any, ...],
                     kwargs: Mapping[str, Any]) -> Optional[Tuple[str, Exception]]:
    """The first part of a call that cloudpickle refuses, as
    ``("args[1]=<value>", error)``, or None when all of it pickles."""
    parts = [("fn", fn)]
    parts += [(f"args[{i}]", value) for i, value in enumerate(args)]
    parts += [(f"kwargs[{key!r}]", value) for key, value in kwargs.items()]
    for label, value in parts:
        try:
            cloudpickle.dumps(value)
        except Exception as exc:
            return f"{label}={value!r}", exc
    return None


def check_picklable(fn: Callable[..., Any], args: Tuple[Any, ...],
                    kwargs: Mapping[str, Any],
                    known: Optional["weakref.WeakKeyDictionary[Any, bool]"] = None) -> None:
    """Raise TypeError naming the part of a hard task that cannot be pickled.
    *known* remembers the functions that pickled (a hard task is often
    delayed again and again with the same function)."""
    check_fn = True
    if known is not None:
        try:
            check_fn = not known.get(fn)  # pickled before?
        except TypeError:  # not weakly referable: check it every time
            known = None
    bad = unpicklable_part(fn if check_fn else None, args, kwargs) \
        if check_fn or args or kwargs else None
    if bad is not None:
        part, exc = bad
        raise TypeError(f"hard task cannot be sent to a process: {part} cannot be "
                        f"pickled ({type(exc).__name__}: {exc})") from exc
    if known is not None and check_fn:
        known[fn] = True
